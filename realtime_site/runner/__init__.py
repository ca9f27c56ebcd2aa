"""The inference runner, its own process that never imports Django (docs/protocol.md section 5): the
apps and their engines, sessions, the fair scheduler, execution in worker threads, image decoding."""
