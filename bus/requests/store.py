"""Requests the gateway took: state, reply and audit trail, in the state store (``bus.state_store``:
SQLite under $GRIDBUS_HOME/state, or the PostgreSQL database every host shares).

One row per request (id = the request's message id on the bus).  The gateway
writes it before publishing; the gateway's reply consumer writes the reply
whenever it comes, so a reply that arrives after the requester gave up is kept
for ``GET /requests/{id}``; `gridbus commands` approves, rejects and cancels.

Command states (the 2020 lesson: every step recorded, nothing executed late):

    requested → pending-approval → sent → executed | failed
                        │              ├→ unknown (no answer: the HES may have run it) → executed | failed
                        │              └→ expired (the worker found it past its expiry)
                        ├→ rejected | cancelled
                        └→ expired (not approved in time)

Reads and determinants: requested → sent → replied.

Only commands get a row in ``audit`` for each step (who, what, when, approval,
result: the 2020 lesson).  A read's or determinants request's trail is its
own row: taken and sent at ``created`` by ``requested_by``, answered at
``updated`` with ``result``; ``trail`` shows it in the same shape.  At 200
on-demand reads/s, three audit rows per read were a third of the pages every
commit wrote (docs/benchmarks.md, "bench rpc"), and told nothing the row does not.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bus.errors import ConfigError, GridbusError
from bus.requests import replies
from bus.state_store import open_state_db, state_store_url

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY, system TEXT NOT NULL, requested_by TEXT, kind TEXT NOT NULL, route TEXT NOT NULL,
    client_key TEXT, action TEXT, meters INTEGER NOT NULL DEFAULT 0, state TEXT NOT NULL,
    created {REAL} NOT NULL, updated {REAL} NOT NULL, expires {REAL}, approved_by TEXT,
    reply_address TEXT, correlation_id TEXT, document TEXT NOT NULL, reply TEXT, result TEXT)""",
    "DROP INDEX IF EXISTS requests_client_key",
    "DROP INDEX IF EXISTS requests_state",
    "DROP INDEX IF EXISTS requests_client_key_given",
    """CREATE UNIQUE INDEX IF NOT EXISTS requests_client_key_route ON requests (system, client_key, route)
    WHERE client_key IS NOT NULL""",
    "CREATE INDEX IF NOT EXISTS requests_commands ON requests (state, created) WHERE kind = 'commands'",
    """CREATE TABLE IF NOT EXISTS audit (
    seq {ID_KEY}, request_id TEXT NOT NULL, at {REAL} NOT NULL,
    who TEXT NOT NULL, event TEXT NOT NULL, detail TEXT)""",
    "CREATE INDEX IF NOT EXISTS audit_request ON audit (request_id, seq)",
]
# PostgreSQL has no rowid to find old requests by (``prune``): there an index on ``created``
# does it, paid by every insert, which a database server on its own host can afford
POSTGRES_SCHEMA = ["CREATE INDEX IF NOT EXISTS requests_prunable ON requests (created) WHERE kind <> 'commands'"]
# A client key (MessageID, commandId) is the asking system's, on one route (one hop): the MDMS
# forwarding billing's request under billing's MessageID is another request, never a repeat.
# Why the indexes are partial: a read without a client key, or a read at all, has no entry
# to write (a NULL key is never a duplicate; only commands are listed by state), so each
# commit touches fewer pages.  audit.seq is a plain rowid: AUTOINCREMENT wrote sqlite_sequence
# on every insert, and audit rows are never deleted, so seq still only grows.

# "refused": a command the gateway turned down before it was a request (wrong system, over the
# disconnect rate, expired, invalid), kept for the security officer; "rejected": one a second
# user turned down at approval
FINAL = {"executed", "failed", "expired", "rejected", "cancelled", "replied", "refused"}
PRUNE_CHUNK = 1_000  # rows a prune deletes in one transaction: the requests' commits wait for it
COLUMNS = ("id", "system", "requested_by", "kind", "route", "client_key", "action", "meters", "state",
           "created", "updated", "expires", "approved_by", "reply_address", "correlation_id", "document",
           "reply", "result")
_KIND = COLUMNS.index("kind")


class RequestStateError(GridbusError):
    """A change of state the request's current state does not allow (e.g. approving an expired command)."""


@dataclass
class Request:
    id: str
    system: str
    requested_by: str | None
    kind: str
    route: str
    client_key: str | None
    action: str | None
    meters: int
    state: str
    created: float
    updated: float
    expires: float | None
    approved_by: str | None
    reply_address: str | None
    correlation_id: str | None
    document: dict
    reply: dict | None
    result: str | None

    @property
    def expired(self) -> bool:
        return self.expires is not None and time.time() >= self.expires

    def summary(self) -> dict[str, Any]:
        return {"request_id": self.id, "kind": self.kind, "action": self.action, "system": self.system,
                "requested_by": self.requested_by, "meters": self.meters, "state": self.state,
                "result": self.result, "created": self.created, "updated": self.updated,
                "expires": self.expires, "approved_by": self.approved_by}


def _dumps(value: Any) -> str:
    # orjson: a request's document and reply are written on every request (NaN becomes null);
    # the standard library for what orjson refuses (an integer beyond 64 bits, a lone surrogate
    # in a string), so a reply a destination sent is always kept, never requeued for ever
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value, default=str)


def _loads(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # written by the fallback of _dumps (a lone surrogate)
        return json.loads(text)


def _row(row) -> Request:
    d = dict(zip(COLUMNS, row))
    d["document"] = _loads(d["document"])
    d["reply"] = _loads(d["reply"]) if d["reply"] else None
    return Request(**d)


@dataclass(frozen=True)
class Retention:
    """How long the gateway keeps reads and determinants requests (``keep_s``, 0: for ever), and
    how often it looks for ones to delete."""
    keep_s: float = 7 * 86400
    every_s: float = 60.0

    def __post_init__(self) -> None:
        if self.every_s <= 0:
            raise ConfigError(f"pruning every {self.every_s:g} s: give a positive interval")


class RequestStore:
    def __init__(self, path: Path, checkpoint_s: float | None = None, url: str | None = None,
                 wait_s: float | None = None):
        """The SQLite file ``path``, or the shared PostgreSQL database when ``GRIDBUS_STATE_STORE``
        is set (``url``: that database whatever the setting; ``""``: the file).  ``checkpoint_s``:
        the gateway's SQLite store checkpoints from a thread of its own; a CLI leaves it to SQLite.
        ``wait_s``: how long a call waits for a PostgreSQL connection (``open_state_db``)."""
        self.path = path
        url = url if url is not None else state_store_url()
        # NORMAL: a commit is durable once the WAL is synced at checkpoint; a power cut may
        # lose the last requests' states, never corrupt the file
        self._db = open_state_db("requests", SCHEMA + (POSTGRES_SCHEMA if url else []), path,
                                 synchronous="NORMAL", url=url or "", checkpoint_s=checkpoint_s, wait_s=wait_s)
        self.shared = self._db.shared

    def batch(self):
        """Several of the calls below in one transaction, one commit (``StateDb.batch``)."""
        return self._db.batch()

    def close(self) -> None:
        self._db.close()

    def _audit(self, request_id: str, who: str, event: str, detail: str | None = None) -> None:
        self._db.execute("INSERT INTO audit (request_id, at, who, event, detail) VALUES (?, ?, ?, ?, ?)",
                         (request_id, time.time(), who, event, detail))

    def _one(self, where: str, args: tuple) -> Request | None:
        rows = self._db.rows(f"SELECT {', '.join(COLUMNS)} FROM requests WHERE {where}", args)
        return _row(rows[0]) if rows else None

    def create(self, *, id: str, system: str, requested_by: str | None, kind: str, route: str,
               client_key: str | None, action: str | None, meters: int, state: str, expires: float | None,
               reply_address: str | None, correlation_id: str | None, document: dict,
               sent_on: str | None = None) -> Request | None:
        """Insert a new request; None if ``(system, client_key)`` exists (then ``by_client_key``).

        ``sent_on`` (a route id): the caller publishes it at once, so it is written as requested
        and then sent in the same transaction (both audited); one commit instead of two on the
        path every synchronous request takes."""
        now = time.time()
        final_state = "sent" if sent_on else state
        # DO NOTHING rather than a caught unique violation: on PostgreSQL a failed statement
        # spoils its whole transaction, and a second gateway inserting the same client key at
        # once waits for the first's commit and then finds it taken (rowcount 0)
        insert = (f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
                  "ON CONFLICT DO NOTHING",
                  (id, system, requested_by, kind, route, client_key, action, meters, final_state, now,
                   now, expires, None, reply_address, correlation_id, _dumps(document), None, None))
        if kind != "commands":  # one statement, atomic as it is: no savepoint (two round trips on PostgreSQL)
            if not self._db.execute(*insert):
                return None
        else:
            with self._db.writing():  # the command and its audit rows, or none of them
                if not self._db.execute(*insert):  # the client key is taken
                    return None
                self._audit(id, requested_by or system, state, _taken(kind, action, meters, system))
                if sent_on:
                    self._audit(id, requested_by or system, "sent", _published(sent_on))
        return Request(id=id, system=system, requested_by=requested_by, kind=kind, route=route,
                       client_key=client_key, action=action, meters=meters, state=final_state, created=now,
                       updated=now, expires=expires, approved_by=None, reply_address=reply_address,
                       correlation_id=correlation_id, document=document, reply=None, result=None)

    def get(self, request_id: str) -> Request | None:
        return self._one("id = ?", (request_id,))

    def replied_among(self, request_ids: list[str]) -> list[Request]:
        """Those of ``request_ids`` that have their reply (kept by any process sharing the store)."""
        found = []
        for start in range(0, len(request_ids), 500):  # within SQLite's limit on bound variables
            chunk = request_ids[start:start + 500]
            found += [_row(r) for r in self._db.rows(
                f"SELECT {', '.join(COLUMNS)} FROM requests WHERE id IN ({', '.join('?' * len(chunk))}) "
                "AND reply IS NOT NULL", chunk)]
        return found

    def by_client_key(self, system: str, route: str, client_key: str) -> Request | None:
        return self._one("system = ? AND client_key = ? AND route = ?", (system, client_key, route))

    def by_client_key_any_route(self, system: str, client_key: str) -> list[Request]:
        """The requests ``system`` sent with this MessageID or commandId, newest first."""
        rows = self._db.rows(f"SELECT {', '.join(COLUMNS)} FROM requests WHERE system = ? AND client_key = ? "
                             "ORDER BY created DESC", (system, client_key))
        return [_row(r) for r in rows]

    def release_key(self, request_id: str, who: str, detail: str) -> None:
        """The request keeps its record but gives up its client key, which a new request takes
        (a command that no HES took, sent again with the same id); audited."""
        with self._db.writing():
            self._db.execute("UPDATE requests SET client_key = NULL, updated = ? WHERE id = ?",
                             (time.time(), request_id))
            self._audit(request_id, who, "released", detail)

    def approved_commands(self, client_key: str) -> list[Request]:
        """The commands with this id that a second user approved (an onward hop of one needs no
        second approval: ``RequestApi`` checks it is the same command, forwarded)."""
        rows = self._db.rows(
            f"SELECT {', '.join(COLUMNS)} FROM requests WHERE client_key = ? AND kind = 'commands' "
            "AND approved_by IS NOT NULL ORDER BY created", (client_key,))
        return [_row(r) for r in rows]

    def transition(self, request_id: str, to: str, who: str, allowed_from: set[str], detail: str | None = None,
                   **columns: Any) -> Request:
        """Move to state ``to`` if the request is in one of ``allowed_from``; audited.

        One conditional UPDATE: of two processes (gateways, CLIs on other hosts) moving the same
        request at once, the second finds the state changed and gets ``RequestStateError``, so a
        command is approved, rejected, cancelled or expired once."""
        sets = {"state": to, "updated": time.time(), **columns}
        with self._db.writing():
            rows = self._db.rows(
                f"UPDATE requests SET {', '.join(f'{k} = ?' for k in sets)} WHERE id = ? AND "
                f"state IN ({', '.join('?' * len(allowed_from))}) RETURNING {', '.join(COLUMNS)}",
                (*sets.values(), request_id, *allowed_from))
            if not rows:
                was = self._db.rows("SELECT state FROM requests WHERE id = ?", (request_id,))
                if not was:
                    raise RequestStateError(f"no request {request_id}")
                raise RequestStateError(f"request {request_id} is {was[0][0]}; cannot become {to}")
            self._audit(request_id, who, to, detail)
        return _row(rows[0])

    def record_reply(self, request_id: str, reply: dict, state: str, who: str = "gridbus") -> Request | None:
        """Keep the reply (whenever it comes); None for a request this store does not hold.

        A redelivered reply, or the same reply kept by another gateway, finds the request final
        and changes nothing: the first one stands (a conditional UPDATE)."""
        result = replies.result_in(reply)
        update = (f"UPDATE requests SET state = ?, reply = ?, result = ?, updated = ? WHERE id = ? "
                  f"AND state NOT IN ({', '.join('?' * len(FINAL))}) AND kind {{}} 'commands' "
                  f"RETURNING {', '.join(COLUMNS)}")
        values = (state, _dumps(reply), result, time.time(), request_id, *FINAL)
        # a read's reply is one statement, atomic as it is (no savepoint: two round trips on
        # PostgreSQL, on the path of every read); a command's is audited in the same transaction
        rows = self._db.rows(update.format("<>"), values)
        if not rows:
            with self._db.writing():
                rows = self._db.rows(update.format("="), values)
                if rows:
                    self._audit(request_id, who, state, _answered(result, reply))
        return _row(rows[0]) if rows else self.get(request_id)

    def attach_reply(self, request_id: str, reply: dict) -> None:
        """The answer of a request that ended without reaching a system (rejected, expired, cancelled)."""
        self._db.execute("UPDATE requests SET reply = ?, result = ? WHERE id = ? AND reply IS NULL",
                         (_dumps(reply), replies.result_in(reply), request_id))

    def audit_of(self, request_id: str) -> list[dict]:
        """The rows of ``audit``: each step of a command; of a read, only an unusual end (failed)."""
        rows = self._db.rows("SELECT at, who, event, detail FROM audit WHERE request_id = ? ORDER BY seq",
                             (request_id,))
        return [{"at": at, "who": who, "event": event, "detail": detail} for at, who, event, detail in rows]

    def trail(self, request: Request) -> list[dict]:
        """Who did what and when: a command's audit rows; a read's or determinants request's
        steps as its row records them, with any audited step (a failure) in between."""
        audited = self.audit_of(request.id)
        if request.kind == "commands" or any(a["event"] == "requested" for a in audited):
            return audited  # a command, or a read stored by a gridbus that audited every step
        who = request.requested_by or request.system
        steps = [{"at": request.created, "who": who, "event": "requested",
                  "detail": _taken(request.kind, request.action, request.meters, request.system)}]
        if request.state != "requested":
            steps.append({"at": request.created, "who": who, "event": "sent", "detail": _published(request.route)})
        steps += audited
        if request.reply is not None and request.state in FINAL and not audited:
            steps.append({"at": request.updated, "who": "gridbus", "event": request.state,
                          "detail": _answered(request.result, request.reply)})
        return steps

    def listing(self, kind: str | None = None, state: str | None = None, limit: int = 100) -> list[Request]:
        where, args = [], []
        if kind:
            where.append("kind = ?")
            args.append(kind)
        if state:
            where.append("state = ?")
            args.append(state)
        sql = (f"SELECT {', '.join(COLUMNS)} FROM requests" + (f" WHERE {' AND '.join(where)}" if where else "")
               + " ORDER BY created DESC LIMIT ?")
        return [_row(r) for r in self._db.rows(sql, (*args, limit))]

    def prune(self, before: float, limit: int = PRUNE_CHUNK) -> int:
        """Delete up to ``limit`` reads and determinants requests created before ``before``, with
        any audit rows they have; how many went.  Commands are never pruned: they are the
        audit trail a security officer keeps."""
        with self._db.writing():
            ids = self._prunable(before, limit)
            for start in range(0, len(ids), 500):  # within SQLite's limit on bound variables
                chunk = ids[start:start + 500]
                marks = ", ".join("?" * len(chunk))
                self._db.execute(f"DELETE FROM audit WHERE request_id IN ({marks})", chunk)
                self._db.execute(f"DELETE FROM requests WHERE id IN ({marks})", chunk)
        return len(ids)

    def _prunable(self, before: float, limit: int) -> list[str]:
        """Up to ``limit`` ids of reads and determinants requests created before ``before``.

        SQLite: found by rowid, not by a scan of ``created``: rows are appended in the order
        they were taken, so rowid grows with ``created`` and a binary search of it (a few
        lookups) finds the cut.  An index on ``created`` would cost every request's commit a
        write to find what a prune finds this way.  PostgreSQL has no rowid; its partial index
        on ``created`` (``POSTGRES_SCHEMA``) finds them."""
        if self._db.dialect.name != "sqlite":
            return [r[0] for r in self._db.rows(
                "SELECT id FROM requests WHERE created < ? AND kind <> 'commands' ORDER BY created LIMIT ?",
                (before, limit))]
        cut = self._last_rowid_before(before)
        if cut is None:
            return []
        return [r[0] for r in self._db.rows(
            "SELECT id FROM requests WHERE rowid <= ? AND kind != 'commands' ORDER BY rowid LIMIT ?", (cut, limit))]

    def _last_rowid_before(self, before: float) -> int | None:
        """The highest rowid whose row was created before ``before`` (None: no such row)."""
        # two statements: SQLite reads one end of the b-tree for a lone min() or max(), but scans
        # the whole table for both in one (12 ms at 150,000 rows)
        low, high = (self._db.rows(f"SELECT {end}(rowid) FROM requests")[0][0] for end in ("min", "max"))
        if low is None:
            return None
        found = None
        while low <= high:  # rowids may have gaps (pruned rows): look at the nearest row at or above
            middle = (low + high) // 2
            rows = self._db.rows("SELECT rowid, created FROM requests WHERE rowid >= ? ORDER BY rowid LIMIT 1",
                                 (middle,))
            if not rows or rows[0][1] >= before:
                high = middle - 1
            else:
                found, low = rows[0][0], rows[0][0] + 1
        return found

    def expire_overdue(self, who: str = "gridbus") -> list[str]:
        """Pending commands past their expiry become expired (never sent); each by a conditional
        ``transition``, so a command approved meanwhile (on any host) is left alone."""
        ids = [r[0] for r in self._db.rows(
            "SELECT id FROM requests WHERE kind = 'commands' AND state = 'pending-approval' AND expires IS NOT NULL "
            "AND expires <= ?", (time.time(),))]
        expired = []
        for request_id in ids:
            try:
                self.transition(request_id, "expired", who, {"pending-approval"}, "not approved before its expiry")
                expired.append(request_id)
            except RequestStateError:
                pass
        return expired


def _taken(kind: str, action: str | None, meters: int, system: str) -> str:
    return f"{kind}{' ' + action if action else ''} for {meters} meter(s) by {system}"


def _published(route: str) -> str:
    return f"published on route {route}"


def _answered(result: str | None, reply: dict) -> str:
    errors = (reply.get("Reply") or {}).get("Error") or []
    return f"Result {result}" + (f"; {len(errors)} error(s): {errors[0].get('reason')}" if errors else "")


def requests_path(state_dir: Path) -> Path:
    return state_dir / "requests.sqlite"
