"""Storage: the data model, engines and sessions, and schema migrations."""

from gridwatch.storage.db import (
    DatabaseError,
    create_db_engine,
    current_revision,
    head_revision,
    session_scope,
    upgrade_database,
)

__all__ = [
    "DatabaseError",
    "create_db_engine",
    "current_revision",
    "head_revision",
    "session_scope",
    "upgrade_database",
]
