"""Events: validation at the edge, the durable event log, impressions."""
