"""API keys of the source systems that push to the gateway: stored hashed, outside route files.

A key is ``<key id>.<secret>``; the file keeps the key id, the system and a
SHA-256 of the secret, never the secret.  ``gridbus gateway keys add SYSTEM``
prints a new key once.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path

from bus.changing_file import ChangingFile
from bus.errors import ConfigError


def keys_path(state_dir: Path) -> Path:
    return Path(os.environ.get("GRIDBUS_GATEWAY_KEYS") or state_dir / "gateway-keys.json")


def _parse_keys(path: Path) -> dict[str, dict]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not JSON: line {exc.lineno}: {exc.msg}", str(path)) from exc


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore:
    # how long a read of the key file is trusted for keys it holds: a key an operator revokes
    # stops working within this, and a busy gateway does not stat the file on every request;
    # a key it does not hold makes it look again at once
    RECHECK_S = 1.0

    def __init__(self, path: Path):
        self.path = path
        self._file = ChangingFile(path, _parse_keys, missing={})
        self._keys: dict[str, dict] = {}

    def _load(self, fresh: bool = True) -> None:
        self._keys = self._file.read(0.0 if fresh else self.RECHECK_S)

    def add(self, system: str) -> str:
        self._load()
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(24)
        self._keys[key_id] = {"system": system, "sha256": _digest(secret), "created": time.time()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name("." + self.path.name + ".part")
        tmp.write_text(json.dumps(self._keys, indent=2))
        os.chmod(tmp, 0o600)
        tmp.replace(self.path)
        return f"{key_id}.{secret}"

    def revoke(self, key_id: str) -> bool:
        self._load()
        if self._keys.pop(key_id, None) is None:
            return False
        tmp = self.path.with_name("." + self.path.name + ".part")
        tmp.write_text(json.dumps(self._keys, indent=2))
        tmp.replace(self.path)
        return True

    def system_of(self, key: str | None) -> str | None:
        """The system a presented key belongs to, or None (constant-time comparison)."""
        if not key or "." not in key:
            return None
        self._load(fresh=False)
        key_id, secret = key.split(".", 1)
        entry = self._keys.get(key_id)
        if entry is None:  # a key added since the last read works at once (a stat, as for every miss)
            self._load()
            entry = self._keys.get(key_id)
        if entry and hmac.compare_digest(entry["sha256"], _digest(secret)):
            return entry["system"]
        return None

    def listing(self) -> list[dict]:
        self._load()
        return [{"key_id": k, "system": v["system"], "created": v["created"]} for k, v in self._keys.items()]
