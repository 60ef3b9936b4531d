"""The durable outbox: messages written with the state change that causes them, delivered later, in order per
destination, with retries and dead letters (ARCHITECTURE invariant 4). See docs/outbox.md.

- ``store.SqlOutbox``: the ``app.outbox.Outbox`` port on a unit of work's connection (enqueue);
- ``dispatcher.OutboxDispatcher``: one delivery worker per configured destination (start/stop/notify);
- ``operations.OutboxOperations``: list, inspect, resend, queue statistics;
- ``metrics.OutboxMetrics``: Prometheus counters, ACK latency histogram, depth and oldest-pending gauges.
"""
