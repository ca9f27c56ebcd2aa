"""The staff side: the usage admin (records, users and their limits, disconnecting), the dashboard and
its live feed, the runners page, and ``/metrics``. It reads the usage records and the gateway's pool
and sends the gateway's staff actions; nothing below it imports it."""
