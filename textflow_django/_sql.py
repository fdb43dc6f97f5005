"""What the database can do in one statement: the one home of the rule the hot path's
single-statement forms (the rate-limit store's upsert, verify-code's attempt) are chosen by.
"""

from __future__ import annotations

from django.db import connections

__all__ = ["returning"]


def returning(alias: str) -> bool:
    """Whether the database ``alias`` runs an ``INSERT ... ON CONFLICT DO UPDATE`` and an
    ``UPDATE`` with ``RETURNING``, and a sub-``SELECT`` of the table being written: PostgreSQL
    and SQLite 3.35+. Elsewhere (MySQL and MariaDB) the hot path takes more statements, the
    same rules (see the README's "What each request costs")."""
    connection = connections[alias]
    return connection.vendor in ("postgresql", "sqlite") and bool(
        connection.features.can_return_columns_from_insert
    )
