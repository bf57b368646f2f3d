"""Pure scoring: minute windows and events in, scores (0-1) out; no I/O, no wall clock.
One module per detector; registry.py lists them."""
