"""A throw-away PostgreSQL server for the PostgreSQL trace-store tests (loopback only).

Debian's server binaries are used when present; as root the server runs as the
``postgres`` user (PostgreSQL refuses root).  Without binaries the tests that
need it are skipped, saying so.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support import free_port

# port -> (bin dir, data dir, base dir) of each server ``postgres_url`` started (``restart_postgres``)
_SERVERS: dict[int, tuple[Path, Path, Path]] = {}


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@pytest.fixture(scope="session")
def postgres_url():
    bin_dir = _bin_dir()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server here (/usr/lib/postgresql/*/bin missing; `apt-get install "
                    "postgresql`): the PostgreSQL trace store is not tested on this machine")
    base = Path(tempfile.mkdtemp(prefix="gridbus-pg-"))
    data = base / "data"
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
        os.chmod(base, 0o700)
    port = free_port()
    subprocess.run(_as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                                 "-E", "UTF8"]), check=True, capture_output=True)
    subprocess.run(_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w",
                                 "-o", f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off",
                                 "start"]), check=True, capture_output=True)
    _SERVERS[port] = (bin_dir, data, base)
    try:
        subprocess.run(_as_postgres([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U",
                                     "postgres", "gridbus_trace"]), check=True, capture_output=True)
        yield f"postgresql://postgres@127.0.0.1:{port}/gridbus_trace"
    finally:
        subprocess.run(_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def own_database(url: str, name: str) -> str:
    """A fresh, empty database ``name`` on the server of ``url`` (dropped first if a test left
    one), for tests that must not see other tests' tables; its URL."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.rsplit("/", 1)[0] + "/" + name


def restart_postgres(url: str, mode: str = "immediate") -> None:
    """``pg_ctl restart -m immediate`` of the server of ``url`` (a crash and a start: every
    connection is cut, uncommitted transactions are gone); returns once it accepts connections."""
    port = int(url.split("@", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    bin_dir, data, base = _SERVERS[port]
    subprocess.run(_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w",
                                 "-m", mode, "restart"]), check=True, capture_output=True, timeout=120)


def _pg_ctl(url: str, *args: str) -> None:
    port = int(url.split("@", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    bin_dir, data, base = _SERVERS[port]
    subprocess.run(_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w", *args]),
                   check=True, capture_output=True, timeout=120)


def stop_postgres(url: str) -> None:
    """``pg_ctl stop -m immediate`` of the server of ``url``: down until ``start_postgres``."""
    _pg_ctl(url, "-m", "immediate", "stop")


def start_postgres(url: str) -> None:
    """Start the server of ``url`` again, with the options it was started with; returns once it
    accepts connections."""
    port = int(url.split("@", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    _pg_ctl(url, "-o", f"-p {port} -k {_SERVERS[port][2]} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
