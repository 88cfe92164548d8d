"""API keys of the source systems that push to the gateway: stored hashed, outside route files.

A key is ``<key id>.<secret>``; the store keeps the key id, the system, a SHA-256
of the secret and when it was made and revoked, never the secret.  ``gridbus
gateway keys add SYSTEM`` prints a new key once.

The keys live in the state store (``bus.state_store``): SQLite under
$GRIDBUS_HOME/state, or the PostgreSQL database every gateway shares.  The
gateway looks a key up on every request (one primary-key lookup) and keeps no
copy: a key revoked from any host's command line is refused by every gateway
on its very next request.  A copy kept for even a second would let a leaked
key in for that second on every gateway that had cached it.

Keys kept before the state store (the JSON file ``GRIDBUS_GATEWAY_KEYS``, or
$GRIDBUS_HOME/state/gateway-keys.json) are imported once, hashes only, when
the store has no keys at all; the file is then no longer read.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from pathlib import Path

from bus.errors import ConfigError
from bus.state_store import open_state_db

log = logging.getLogger("gridbus.gateway.keys")
SCHEMA = ["""CREATE TABLE IF NOT EXISTS gateway_keys (
    key_id TEXT PRIMARY KEY, system TEXT NOT NULL, sha256 TEXT NOT NULL, created {REAL} NOT NULL,
    revoked_at {REAL})"""]
# two gateways starting at once on an empty shared store import the file once ("KEYS" in ASCII)
IMPORT_LOCK_KEY = 0x4B455953
MAX_KEY_ID = 64  # ours are 12 hex digits; an imported one may be longer, none is this long


def keys_path(state_dir: Path) -> Path:
    """The SQLite file of the keys (unused when the state store is PostgreSQL)."""
    return state_dir / "gateway-keys.sqlite"


def import_path(state_dir: Path) -> Path:
    """The JSON key file of gridbus before the state store, imported once."""
    return Path(os.environ.get("GRIDBUS_GATEWAY_KEYS") or state_dir / "gateway-keys.json")


def open_key_store(state_dir: Path, wait_s: float | None = None) -> "KeyStore":
    """The keys every gateway and `gridbus gateway keys` use, with the old JSON file imported."""
    return KeyStore(keys_path(state_dir), import_from=import_path(state_dir), wait_s=wait_s)


def _digest(secret: str) -> str:
    # surrogatepass: a header's text may hold anything; a wrong key is a 401, never a 500
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def _entries(path: Path) -> list[tuple]:
    """(key id, system, sha256, created) of each key in a JSON key file; ``ConfigError`` naming
    the file and the key for anything else (a hand-edited file is the likely source)."""
    try:
        keys = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not a JSON key file: {exc}", str(path)) from exc
    if not isinstance(keys, dict):
        raise ConfigError("not a JSON key file: expected an object of key id -> entry", str(path))
    rows = []
    for key_id, entry in keys.items():
        digest = entry.get("sha256") if isinstance(entry, dict) else None
        if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)
                and isinstance(entry.get("system"), str) and entry["system"]
                and 0 < len(key_id) <= MAX_KEY_ID and key_id.isprintable() and "." not in key_id):
            raise ConfigError(f"key {key_id[:MAX_KEY_ID]!r}: expected a key id without '.', a system and a "
                              "sha256 of 64 hex digits", str(path))
        created = entry.get("created")
        rows.append((key_id, entry["system"], digest,
                     float(created) if isinstance(created, (int, float)) else time.time()))
    return rows


class KeyStore:
    def __init__(self, path: Path, import_from: Path | None = None, url: str | None = None,
                 wait_s: float | None = None):
        """``path``: the SQLite file, unless ``GRIDBUS_STATE_STORE`` (or ``url``) names PostgreSQL;
        ``import_from``: a JSON key file to import when the store has no keys."""
        self._db = open_state_db("gateway-keys", SCHEMA, path, url=url, wait_s=wait_s)
        self.shared = self._db.shared
        if import_from is not None and import_from.exists():
            try:
                self._import(import_from)
            except BaseException:
                self._db.close()
                raise

    def _import(self, path: Path) -> None:
        rows = _entries(path)
        with self._db.writing():
            self._db.lock(IMPORT_LOCK_KEY)
            if self._db.rows("SELECT COUNT(*) FROM gateway_keys")[0][0]:
                return  # imported before, or keys made since: the store is the truth
            self._db.executemany("INSERT INTO gateway_keys (key_id, system, sha256, created) VALUES (?, ?, ?, ?) "
                                 "ON CONFLICT (key_id) DO NOTHING", rows)
        if rows:
            log.warning("imported %d gateway key(s) (their hashes) from %s into the state store %s; "
                        "the file is no longer read", len(rows), path, self._db.location)

    def add(self, system: str) -> str:
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(24)
        self._db.execute("INSERT INTO gateway_keys (key_id, system, sha256, created) VALUES (?, ?, ?, ?)",
                         (key_id, system, _digest(secret), time.time()))
        return f"{key_id}.{secret}"

    def revoke(self, key_id: str) -> bool:
        """False for a key that does not exist or was revoked before."""
        return self._db.execute("UPDATE gateway_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                                (time.time(), key_id)) > 0

    def system_of(self, key: str | None) -> str | None:
        """The system a presented key belongs to, or None (constant-time comparison).
        ``StateStoreError`` when the store cannot be read (the gateway answers 503)."""
        if not key or "." not in key:
            return None
        key_id, secret = key.split(".", 1)
        # a caller's header never reaches the database unless it can be one of our key ids
        # (PostgreSQL refuses a NUL in text: that would be a 503, not the 401 it deserves)
        if not 0 < len(key_id) <= MAX_KEY_ID or not key_id.isprintable():
            return None
        rows = self._db.rows("SELECT system, sha256 FROM gateway_keys WHERE key_id = ? AND revoked_at IS NULL",
                             (key_id,))
        if rows and hmac.compare_digest(rows[0][1], _digest(secret)):
            return rows[0][0]
        return None

    def listing(self, revoked: bool = False) -> list[dict]:
        """Key ids, systems and times (never a hash); revoked keys too with ``revoked``."""
        rows = self._db.rows("SELECT key_id, system, created, revoked_at FROM gateway_keys"
                             + ("" if revoked else " WHERE revoked_at IS NULL") + " ORDER BY created")
        return [{"key_id": k, "system": s, "created": c, "revoked_at": r} for k, s, c, r in rows]

    def close(self) -> None:
        self._db.close()
