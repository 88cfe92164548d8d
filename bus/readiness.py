"""A process says it is serving: ``$GRIDBUS_HOME/state/ready/<name>.json`` with its pid.

For what cannot be seen from outside: the ingress is serving once its inbox folders exist and
are watched, which no port or queue shows.  `gridbus dev up` waits for it (and a deployment's
health check may read it); the pid tells a marker of this process from one left by an earlier
one.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path


def marker(state_dir: Path, name: str) -> Path:
    return state_dir / "ready" / f"{name}.json"


def announce(state_dir: Path, name: str, **detail) -> None:
    """Write the marker for this process (atomically: a reader never sees half of it)."""
    path = marker(state_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps({"pid": os.getpid(), "at": time.time(), **detail}))
    tmp.replace(path)


def withdraw(state_dir: Path, name: str) -> None:
    marker(state_dir, name).unlink(missing_ok=True)


def read(state_dir: Path, name: str) -> dict | None:
    try:
        return json.loads(marker(state_dir, name).read_text())
    except (OSError, ValueError):
        return None
