"""The operations page in the admin: orders, revenue, outbox lag and dead letters at a glance."""
