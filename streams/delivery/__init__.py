"""Alert delivery: the Redis outbox (one per destination) and the loops that deliver through
the sinks, retry and dead-letter."""
