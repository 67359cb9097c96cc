"""Tables of the outbox app (added by the issue that builds it)."""
