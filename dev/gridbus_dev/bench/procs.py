"""Child processes of a benchmark run, and the peak memory of a process tree."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time

import psutil
import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(argv: list[str], env: dict, log_path) -> subprocess.Popen:
    log = open(log_path, "ab")
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def terminate(proc: subprocess.Popen | None, timeout_s: float = 15) -> None:
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


class PeakRss:
    """Samples the resident memory of a process and all its children (a Celery pool)."""

    def __init__(self, pid: int, every_s: float = 0.1):
        self.pid, self.every_s = pid, every_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        try:
            root = psutil.Process(self.pid)
            return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
        except psutil.Error:
            return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.every_s)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def wait_http(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout_s}s")


def broker_pid(amqp_port: int) -> int | None:
    """The RabbitMQ node (beam.smp) listening on ``amqp_port``, for CPU accounting."""
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == amqp_port and conn.pid:
            return conn.pid
    return None


class CpuMeter:
    """CPU seconds (user + system) spent by named process trees between two snapshots.

    Per-process CPU, not wall time, is what says where a round trip's cost goes on a
    machine that other work shares: the figures add up whatever else is running."""

    def __init__(self, pids: dict[str, int | tuple[int, ...]], alone: set[str] = frozenset()):
        self.pids = pids  # a name may stand for several processes (a baseline's consumers): their sum
        # processes counted without their children (the bench itself spawned the rest); always the
        # broker: the beam's children (erl_child_setup, inet_gethost, the disk monitor's df) come and
        # go, and one that exited between two snapshots took its CPU out of the sum (a negative
        # figure in CI: -0.0055 s per 1,000 rows)
        self.alone = {"rabbitmq", *alone}

    @staticmethod
    def _tree_cpu(pid: int, children: bool = True) -> float:
        try:
            root = psutil.Process(pid)
            total = 0.0
            for p in [root, *(root.children(recursive=True) if children else [])]:
                try:
                    t = p.cpu_times()
                    total += t.user + t.system
                except psutil.Error:
                    pass
            return total
        except psutil.Error:
            return 0.0

    def snapshot(self) -> dict[str, float]:
        """CPU seconds so far, by name.  A child that has exited but not been waited for (a zombie)
        still counts: take the last snapshot before anything polls or terminates it."""
        return {name: sum(self._tree_cpu(pid, name not in self.alone)
                          for pid in (pids if isinstance(pids, tuple) else (pids,)))
                for name, pids in self.pids.items()}

    @staticmethod
    def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {name: after[name] - before.get(name, 0.0) for name in after}
