"""The inference runner: its own process, never imports Django (PROTOCOL.md section 5)."""
