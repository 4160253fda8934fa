"""Alembic migrations for the GridWatch schema (run with ``gridwatch db upgrade``)."""
