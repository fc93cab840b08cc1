"""PostgreSQL: the pools and transactions, the schema and migrations, the stores, the event log,
idempotency and pagination. The only layer that speaks SQL.
"""
