"""Alembic migrations of the LACE schema; applied by `lace migrate` and at embedded start-up."""
