"""Keys, credits, usage ledger, BYOK and limits: one Store per process, sharing state with other replicas
through the database (PostgreSQL) and Redis."""
from .state import Store

__all__ = ["Store"]
