"""Alembic migrations of the store (run by `audiorouter db upgrade` or at start-up)."""
