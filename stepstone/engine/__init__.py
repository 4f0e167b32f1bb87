"""The replay engine: step semantics, activations and the worker loop."""
