"""`gridbus dev up` owns what it reports (issue 22): real stacks on the dev stack's fixed ports.

A second GRIDBUS_HOME does not join the first one's broker; "up" means every process answers
its check; `dev status` exits 1 when a part is down.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from bus import readiness
from gridbus_dev import devstack
from tests.support import run_cli

pytestmark = [pytest.mark.broker, pytest.mark.slow]

PORTS = [5679, 15679, devstack.DEV_DIST_PORT, devstack.GATEWAY_PORT, devstack.METRICS_PORT,
         *(port for _n, _m, port, _v in devstack.STAND_INS)]


def _env(home: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRIDBUS_", "RABBITMQ_"))}
    env.update(GRIDBUS_HOME=str(home), PYTHONUNBUFFERED="1", **extra)
    return env


def _pid(home: Path, name: str) -> int:
    return int((home / "run" / f"{name}.pid").read_text())


def test_dev_up_owns_its_ports_says_up_only_when_up_and_status_tells_what_is_down(tmp_path):
    taken = [p for p in PORTS if devstack.port_open(p)]
    if taken:
        pytest.skip(f"another dev stack holds ports {taken}: `gridbus dev up` has fixed ports")
    home_a, home_b = tmp_path / "checkout-a", tmp_path / "checkout-b"
    env_a, env_b = _env(home_a), _env(home_b)
    try:
        # Given a stack brought up from one checkout
        up = run_cli(env_a, "dev", "up", "-c", "1", timeout=600)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        assert up.stdout.rstrip().splitlines()[-1].startswith("up;")
        # Then, the moment it says up, the ingress serves: its marker is its own and every inbox exists
        marker = readiness.read(home_a / "state", "ingress")
        assert marker and marker["pid"] == _pid(home_a, "ingress")
        for folder in ("hes-a", "hes-b"):
            assert (home_a / "inbox" / folder).is_dir()

        # When a second checkout runs `dev up` on the same machine
        second = run_cli(env_b, "dev", "up", "-c", "1", timeout=300)
        # Then it refuses, naming the ports and who holds them, and starts nothing
        assert second.returncode == 1, second.stdout + second.stderr
        assert "not starting" in second.stderr and "port 5679 (rabbitmq amqp) is held by pid" in second.stderr
        assert "Nothing was started" in second.stderr
        assert not list((home_b / "run").glob("*.pid")) if (home_b / "run").exists() else True

        # And `dev status` of the first exits 0 while everything runs
        status = run_cli(env_a, "dev", "status", timeout=120)
        assert status.returncode == 0, status.stdout + status.stderr

        # When its keeper is killed, Then `dev status` exits 1 naming it
        os.kill(_pid(home_a, "keeper"), signal.SIGKILL)
        status = run_cli(env_a, "dev", "status", timeout=120)
        assert status.returncode == 1 and "down: keeper" in status.stderr, status.stdout + status.stderr

        # When a process cannot come up (the recorder, given a trace store it cannot open)
        os.killpg(_pid(home_a, "recorder"), signal.SIGKILL)
        broken = run_cli(_env(home_a, GRIDBUS_TRACE_STORE="/proc/no-such/trace.sqlite"), "dev", "up", "-c", "1",
                         "--timeout", "60", timeout=300)
        # Then `dev up` exits 1 naming it and its log (while waiting for its port, or for its check,
        # whichever it meets first); the keeper, started again meanwhile, is not named
        assert broken.returncode == 1, broken.stdout[-2000:] + broken.stderr[-2000:]
        first = broken.stderr.strip().splitlines()[0]
        assert "recorder" in first and "exited" in first and "recorder.log" in broken.stderr, broken.stderr[-2000:]
        assert "keeper" not in first, broken.stderr[-2000:]

        # And run again as it should be, it is up
        again = run_cli(env_a, "dev", "up", "-c", "1", timeout=600)
        assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    finally:
        run_cli(env_a, "dev", "down", timeout=300)
