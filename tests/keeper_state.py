"""The keeper side's stores on both databases: ``state_url`` is "" (a SQLite file) or the URL of a
PostgreSQL database of these tests' own (``tests/postgres.py``); ``clean`` empties tables there."""
from __future__ import annotations

import pytest

from tests.postgres import own_database, postgres_url  # noqa: F401

DEAD_LETTER_TABLES = ("dead_letters", "dead_letter_audit")


@pytest.fixture(scope="session")
def keeper_state_database(postgres_url):  # noqa: F811
    return own_database(postgres_url, "gridbus_keeper_state")


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request) -> str:
    """"" for SQLite files, else a PostgreSQL URL; tests empty the tables they use (``clean``)."""
    if request.param == "sqlite":
        return ""
    return request.getfixturevalue("keeper_state_database")


def clean(url: str, *tables: str) -> None:
    """Empty ``tables`` of the PostgreSQL database ``url`` (nothing for SQLite: each test has its files)."""
    if not url:
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for table in tables:
            conn.execute(f"DO $$ BEGIN IF to_regclass('{table}') IS NOT NULL THEN "
                         f"EXECUTE 'TRUNCATE {table} RESTART IDENTITY'; END IF; END $$")
