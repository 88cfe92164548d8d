"""The two databases of the state store, for tests of a store written once for both.

``state_url``: ``""`` (the SQLite file the test names) or a PostgreSQL URL whose tables
live in a schema of the test's own (``search_path``), so that the session's one server
serves every test with nothing left over from the last (a schema costs a millisecond, a
database a few hundred).
"""
from __future__ import annotations

import uuid
from urllib.parse import quote

import pytest

from tests.postgres import postgres_url  # noqa: F401 - the server the PostgreSQL cases use


def own_schema(url: str) -> str:
    """``url`` with its tables in a new, empty schema."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    return f"{url}{'&' if '?' in url else '?'}options={quote(f'-c search_path={name}')}"


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request) -> str:
    if request.param == "sqlite":
        return ""
    return own_schema(request.getfixturevalue("postgres_url"))
