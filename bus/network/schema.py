"""The network store's tables, one set for SQLite and PostgreSQL, and what differs between them.

Effective dating: an element is a series of rows (``version`` 1, 2, ...), each valid over
[valid_from, valid_to).  A change closes the element's open row at its effectiveFrom and opens the
next one; a retire closes it and opens none.  Rows are never edited otherwise, so the store can
answer "as of T" for any T.  An open row has ``valid_to = OPEN`` (not NULL): "as of T" is then one
range condition, ``valid_from <= T AND valid_to > T``, that an index serves.

Times are epoch seconds (UTC), as in every other store of the bus.
"""
from __future__ import annotations

OPEN = 253402300800.0  # 10000-01-01T00:00:00Z: "still valid"

TABLES = [
    # one row per version of an element; meter = the element's own meter serial (consumer meter,
    # DT meter, feeder-head meter) so a meter → element lookup is an index range scan
    """CREATE TABLE IF NOT EXISTS elements (
        mrid TEXT NOT NULL, version INTEGER NOT NULL, type TEXT NOT NULL, parent TEXT, name TEXT,
        meter TEXT, attributes TEXT NOT NULL, valid_from DOUBLE PRECISION NOT NULL,
        valid_to DOUBLE PRECISION NOT NULL, born DOUBLE PRECISION NOT NULL, change_id TEXT NOT NULL,
        PRIMARY KEY (mrid, version))""",
    # every change applied (refused ones are not: a corrected resend under the same id is tried again);
    # what it did is in the element rows it wrote (elements.change_id), or the row it closed (retire)
    """CREATE TABLE IF NOT EXISTS changes (
        change_id TEXT PRIMARY KEY, sequence BIGINT NOT NULL, mrid TEXT NOT NULL, kind TEXT NOT NULL,
        type TEXT NOT NULL, effective_from DOUBLE PRECISION NOT NULL, applied_at DOUBLE PRECISION NOT NULL,
        document TEXT){WITHOUT_ROWID}""",
    # the last consumer-path version handed to the outbox, per consumer
    "CREATE TABLE IF NOT EXISTS path_versions (consumer TEXT PRIMARY KEY, version BIGINT NOT NULL){WITHOUT_ROWID}",
    # the transactional outbox: written in the transaction of the change, published later
    """CREATE TABLE IF NOT EXISTS outbox (
        id {ID_KEY}, consumer TEXT NOT NULL, version BIGINT NOT NULL, change_id TEXT NOT NULL,
        effective_from DOUBLE PRECISION NOT NULL, body TEXT NOT NULL, published_at DOUBLE PRECISION)""",
    # snapshots held for a human (they would retire too much of the network): the file is kept and
    # diffed again, as of the same instant, when approved
    """CREATE TABLE IF NOT EXISTS held_documents (
        id TEXT PRIMARY KEY, received DOUBLE PRECISION NOT NULL, reason TEXT NOT NULL, counts TEXT NOT NULL,
        snapshot TEXT NOT NULL, effective_from DOUBLE PRECISION NOT NULL, state TEXT NOT NULL,
        decided_by TEXT, decided_at DOUBLE PRECISION)""",
    # PostgreSQL: one row counting the write transactions, so a reader (the outage correlator's
    # topology cache) can tell cheaply whether anything was written since it last looked
    "CREATE TABLE IF NOT EXISTS store_version (id INTEGER PRIMARY KEY, v BIGINT NOT NULL)",
    "INSERT INTO store_version (id, v) VALUES (1, 0) ON CONFLICT DO NOTHING",
]
INDEXES = [
    "CREATE INDEX IF NOT EXISTS elements_parent ON elements (parent, valid_to, valid_from)",
    "CREATE INDEX IF NOT EXISTS elements_meter ON elements (meter, valid_to, valid_from) WHERE meter IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS changes_mrid ON changes (mrid, sequence)",
    "CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (id) WHERE published_at IS NULL",
]
ELEMENT_COLUMNS = ("mrid", "version", "type", "parent", "name", "meter", "attributes", "valid_from", "valid_to",
                   "born", "change_id")


class Dialect:
    """What the two databases spell differently.  Statements are written with ``?`` placeholders."""

    placeholder = "?"
    # SQLite: tables keyed by text are stored in key order (no second copy of the key in an index);
    # INTEGER PRIMARY KEY is the rowid itself
    ddl = {"WITHOUT_ROWID": " WITHOUT ROWID", "ID_KEY": "INTEGER PRIMARY KEY"}
    # a whole list of values as one parameter (a JSON array): one statement whatever its length
    values_of = "SELECT value FROM json_each(?)"
    ids_of = values_of  # the same for a list of whole numbers

    def sql(self, text: str) -> str:
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)

    def schema(self) -> list[str]:
        return [statement.format(**self.ddl) for statement in TABLES] + INDEXES


class SqliteDialect(Dialect):
    pass


class PostgresDialect(Dialect):
    placeholder = "%s"
    ddl = {"WITHOUT_ROWID": "", "ID_KEY": "BIGINT PRIMARY KEY"}
    values_of = "SELECT json_array_elements_text(?::json)"
    ids_of = "SELECT CAST(json_array_elements_text(?::json) AS BIGINT)"
