"""The realtime gateway in daphne: admission, per-user limits, the runner pool, the relay between a
client and its runner session (and what it counts), backpressure, staff actions on live
connections, daphne's lifecycle, the drawing page and the ``serve`` command."""
