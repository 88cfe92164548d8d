"""Operator accounts: who may approve, reject and cancel commands (``gridbus operators``).

The two-person rule is only as strong as the names it compares.  A name that a
system asserts (``X-User``) or that anyone types (``--user``) proves nothing, so
approving a command needs an operator account with its own password and the
``approver`` role, and the approver is compared with the requester after both
names are normalised (Unicode NFKC, case folded, whitespace collapsed): ``Alice``
and ``alice `` are one person.

Accounts live in ``$GRIDBUS_HOME/state/operators.sqlite``, or in the PostgreSQL state store
every host shares (``GRIDBUS_STATE_STORE``: an approver added on one host approves on any); passwords are kept
as scrypt hashes (the standard library's ``hashlib.scrypt``, a memory-hard key
derivation function: a stolen file does not give the passwords away cheaply)
with a salt per account, compared in constant time.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import re
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from bus.errors import ConfigError, GridbusError
from bus.state_store import open_state_db

ROLES = ("approver", "operator")  # approver: approve, reject, cancel; operator: cancel
_NAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")
# what a requesting system may assert as its user: printable ASCII without separators, bounded
_ASSERTED = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
_SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1, "dklen": 32}
MIN_PASSWORD = 12

SCHEMA = ["""CREATE TABLE IF NOT EXISTS operators (
    name TEXT PRIMARY KEY, role TEXT NOT NULL, salt {BLOB} NOT NULL, hash {BLOB} NOT NULL, created {REAL} NOT NULL)"""]


class AuthenticationError(GridbusError):
    """Unknown operator, wrong password, or a role that may not do this."""


def normalised(name: str) -> str:
    """The one spelling of a person's name that the two-person rule compares."""
    return " ".join(unicodedata.normalize("NFKC", name).casefold().split())


def asserted_user(value: str | None) -> str | None:
    """The ``X-User`` a requesting system sent, if it is a plausible user name; raises
    ConfigError naming the problem (a 400) for one that is not: too long, two headers
    joined by a comma, characters outside printable ASCII."""
    if value is None or value == "":
        return None
    if not _ASSERTED.fullmatch(value):
        raise ConfigError(f"X-User must be one user name of 1-64 characters from A-Z a-z 0-9 . _ @ + - "
                          f"(got {len(value)} characters{', several headers' if ',' in value else ''})")
    return value


@dataclass(frozen=True)
class Operator:
    name: str
    role: str


class OperatorStore:
    """``path``: the SQLite file, used when no shared state store is set (``url`` as
    ``open_state_db`` takes it)."""

    def __init__(self, path: Path, url: str | None = None):
        self.path = path
        self.db = open_state_db("operators", SCHEMA, path, url=url)

    def close(self) -> None:
        self.db.close()

    def add(self, name: str, role: str, password: str) -> Operator:
        key = _valid_name(name)
        if role not in ROLES:
            raise ConfigError(f"role {role!r}: choose one of {', '.join(ROLES)}")
        if len(password) < MIN_PASSWORD:
            raise ConfigError(f"a password has at least {MIN_PASSWORD} characters")
        salt = os.urandom(16)
        added = self.db.execute("INSERT INTO operators (name, role, salt, hash, created) VALUES (?, ?, ?, ?, ?) "
                                "ON CONFLICT (name) DO NOTHING", (key, role, salt, _hash(password, salt), time.time()))
        if added != 1:
            raise ConfigError(f"operator {key} exists (gridbus operators remove {key} first)")
        return Operator(key, role)

    def remove(self, name: str) -> bool:
        return self.db.execute("DELETE FROM operators WHERE name = ?", (normalised(name),)) == 1

    def listing(self) -> list[tuple[str, str, float]]:
        return [tuple(r) for r in self.db.rows("SELECT name, role, created FROM operators ORDER BY name")]

    def authenticate(self, name: str, password: str, roles: tuple[str, ...]) -> Operator:
        """The operator, if the password is theirs and their role is one of ``roles``."""
        key = normalised(name)
        rows = self.db.rows("SELECT role, salt, hash FROM operators WHERE name = ?", (key,))
        row = (rows[0][0], bytes(rows[0][1]), bytes(rows[0][2])) if rows else None
        # a hash is computed for an unknown name too: the answer takes as long either way
        role, salt, stored = row if row else ("", b"\0" * 16, b"")
        if not hmac.compare_digest(_hash(password, salt), stored) or row is None:
            raise AuthenticationError(f"operator {key}: unknown, or not that password")
        if role not in roles:
            raise AuthenticationError(f"operator {key} is {role}; this needs {' or '.join(roles)}")
        return Operator(key, role)


def _valid_name(name: str) -> str:
    key = normalised(name)
    if not _NAME.fullmatch(key):
        raise ConfigError(f"operator name {name!r}: 1-64 characters from a-z 0-9 . _ @ -, starting with a "
                          "letter or digit")
    return key


def _hash(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)


def operators_path(state_dir: Path) -> Path:
    return state_dir / "operators.sqlite"
