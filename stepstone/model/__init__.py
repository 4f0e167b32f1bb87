"""The vocabulary and the rules, with no I/O: statuses and the action table, the records the
stores keep and return, the history fold, retention's resolution, the webhook and operator
records. Everything above imports it; it imports only ``stepstone.errors``."""
