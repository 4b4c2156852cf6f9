"""What autogenerate and the models-vs-migrations test leave alone: database objects written by hand in a
migration that the models cannot describe (the catalog's SQLite FTS5 table and its shadow tables, the
PostgreSQL full-text GIN expression index)."""

from __future__ import annotations

HAND_WRITTEN_TABLE_PREFIXES = ("product_fts",)
HAND_WRITTEN_INDEXES = frozenset({"ix_product_search_fts"})


def include_name(name: str | None, type_: str, _parent_names: object) -> bool:
    """Alembic ``include_name`` hook: skip the hand-written search objects."""
    if name is None:
        return True
    if type_ == "table":
        return not name.startswith(HAND_WRITTEN_TABLE_PREFIXES)
    if type_ == "index":
        return name not in HAND_WRITTEN_INDEXES
    return True
