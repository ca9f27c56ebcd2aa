"""What was used: one ``ConnectionRecord`` per connection (``Usage`` counters written in batches by the
recorder), per-minute rollups, and the Prometheus metrics. No views: the staff side reads these."""
