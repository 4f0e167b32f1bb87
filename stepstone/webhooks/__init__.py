"""Lifecycle webhooks (a Stepstone extension): config, outbox records, signing, delivery.

The transaction that changes an instance's status writes an outbox row (a trigger in each
dialect), so no transition is lost between commit and send; workers deliver due rows from a
periodic job, each under a lease, at least once, with exponential backoff.
"""
