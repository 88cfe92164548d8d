"""What `gridbus dev up` waits for before it says "up", and who holds the ports it needs.

Up means every process answers its own check: the stand-ins and the gateway their ``/health``,
the recorder its metrics and the trace queue, the workers, keeper, network delivery and outage
correlator a consumer on every queue they serve, the ingress its readiness marker (its inboxes
exist and are watched: bus/readiness.py).  A process that exits meanwhile fails at once, named
with the end of its log.

A port is this stack's when the process listening on it is one this ``$GRIDBUS_HOME`` started
(a pid file under ``run/``, or a descendant: RabbitMQ's VM is a child of its start script).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import requests

from bus import readiness

Check = Callable[[], "str | None"]  # None when healthy, else what is missing


@dataclass
class Waited:
    name: str
    check: Check
    healthy: bool = False
    why: str = "not checked yet"


@dataclass
class Outcome:
    failed: list[tuple[str, str]] = field(default_factory=list)  # (service, why)

    @property
    def up(self) -> bool:
        return not self.failed


def http_ok(url: str) -> Check:
    def check() -> str | None:
        try:
            status = requests.get(url, timeout=2).status_code
        except requests.RequestException as exc:
            return f"{url} does not answer ({exc.__class__.__name__})"
        return None if status == 200 else f"{url} answers {status}"
    return check


class QueueConsumers:
    """Consumers per queue, one management call per round for every check of the round."""

    def __init__(self, admin, every_s: float = 0.5):
        self.admin, self.every_s = admin, every_s
        self.at, self.counts = 0.0, {}

    def _fresh(self) -> dict[str, int]:
        if time.monotonic() - self.at > self.every_s:
            self.counts = self.admin.consumer_counts()
            self.at = time.monotonic()
        return self.counts

    def on(self, queues: list[str]) -> Check:
        def check() -> str | None:
            try:
                counts = self._fresh()
            except Exception as exc:  # noqa: BLE001 - the broker's API is itself being waited for
                return f"the management API does not answer ({exc.__class__.__name__})"
            missing = [q for q in queues if not counts.get(q)]
            return None if not missing else (f"no consumer on {missing[0]}" +
                                              (f" and {len(missing) - 1} more queue(s)" if len(missing) > 1 else ""))
        return check


def ingress_ready(state_dir: Path, pid: Callable[[], int | None]) -> Check:
    def check() -> str | None:
        marker = readiness.read(state_dir, "ingress")
        if not marker or marker.get("pid") != pid():
            return "not serving yet (its inboxes are not watched yet)"
        return None
    return check


def all_of(*checks: Check) -> Check:
    def check() -> str | None:
        return next((why for why in (c() for c in checks) if why), None)
    return check


def wait_up(waited: list[Waited], pid_of: Callable[[str], int | None], log_of: Callable[[str], Path],
            timeout_s: float, echo=print) -> Outcome:
    """Until every check passes, a process exits, or ``timeout_s``; each service echoed once up."""
    deadline = time.monotonic() + timeout_s
    dead: dict[str, str] = {}
    while True:
        for w in waited:
            if w.healthy or w.name in dead:
                continue
            if pid_of(w.name) is None:
                dead[w.name] = f"exited; the end of {log_of(w.name)}:\n{_tail(log_of(w.name))}"
                continue
            w.why = w.check() or ""
            w.healthy = not w.why
            if w.healthy:
                echo(w.name)
        if all(w.healthy or w.name in dead for w in waited) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    failed = [(name, why) for name, why in dead.items()]
    failed += [(w.name, f"{w.why} after {timeout_s:.0f} s") for w in waited if not w.healthy and w.name not in dead]
    return Outcome(failed)


def _tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return "    (no log)"
    return "\n".join("    " + line for line in text)


# ------------------------------------------------------------------------------ ports

def listening_pids(port: int) -> set[int] | None:
    """Pids of the processes listening on TCP ``port`` (any address); None if that cannot be
    told (no /proc, or sockets of processes we may not look into)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                        inodes.add(parts[9])
        except OSError:
            return None
    if not inodes:
        return set()
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            for fd in os.listdir(f"/proc/{entry}/fd"):
                target = os.readlink(f"/proc/{entry}/fd/{fd}")
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    found.add(int(entry))
                    break
        except OSError:
            continue
    return found or None


def describe(pids: set[int] | None) -> str:
    if not pids:
        return "a process this user cannot see"
    out = []
    for pid in sorted(pids)[:3]:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            cmd, cwd = "?", "?"
        out.append(f"pid {pid} ({cmd[:100]}; in {cwd})")
    return ", ".join(out)


def foreign_ports(wanted: dict[str, int], ours: set[int], port_open: Callable[[int], bool]) -> list[str]:
    """``what: port taken by ...`` for each wanted port held by a process not in ``ours``."""
    problems = []
    for what, port in wanted.items():
        if not port_open(port):
            continue
        holders = listening_pids(port)
        if holders and holders <= ours:
            continue
        problems.append(f"port {port} ({what}) is held by {describe(holders)}")
    return problems


def our_pids(run_dir: Path, descendants: Callable[[int], list[int]], alive: Callable[[int], bool]) -> set[int]:
    """The processes this home started (pid files under ``run/``) and their descendants."""
    out: set[int] = set()
    for pid_file in run_dir.glob("*.pid"):
        try:
            pid = int(pid_file.read_text().strip() or 0)
        except (OSError, ValueError):
            continue
        if pid and alive(pid):
            out.add(pid)
            out.update(descendants(pid))
    return out

