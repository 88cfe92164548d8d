"""The CPU figures of `gridbus bench ingest`: per 1,000 rows, in the table and in the JSON."""
from __future__ import annotations

import json
import subprocess
import sys
import time

from gridbus_dev.bench.ingest import Run
from gridbus_dev.bench.procs import CpuMeter
from gridbus_dev.cli.bench import cpu_table

BUSY = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"


def test_cpu_per_thousand_rows_is_the_run_cpu_over_its_rows():
    # Given a run of 20,000 rows whose worker spent 4 s of CPU and RabbitMQ 1 s
    run = Run("gridbus", 20_000, 120_000, 10.0, 80.0, {"worker": 4.0, "rabbitmq": 1.0})
    # Then per 1,000 rows: 0.2 s and 0.05 s, in the JSON summary too
    assert run.cpu_s_per_1000_rows() == {"worker": 0.2, "rabbitmq": 0.05}
    summary = json.loads(json.dumps(run.summary()))
    assert summary["cpu_s_per_1000_rows"] == {"worker": 0.2, "rabbitmq": 0.05}
    assert summary["reads_per_s"] == 2000.0


def test_the_cpu_table_has_a_column_per_process_blank_where_a_run_had_none():
    # Given a gridbus run and a baseline run with different processes
    runs = [Run("gridbus", 1000, 6000, 1.0, None, {"worker": 0.5, "rabbitmq": 0.25}),
            Run("baseline (pika)", 1000, 6000, 1.0, None, {"baseline consumers": 0.125, "rabbitmq": 0.25})]
    # When tabled
    lines = cpu_table(runs).splitlines()
    # Then a column per process and a total, and the baseline has no worker figure
    assert lines[0].split() == ["pipeline", "reads", "worker", "rabbitmq", "baseline", "consumers", "total"]
    assert lines[2].split() == ["gridbus", "1,000", "0.5000", "0.2500", "0.7500"]
    assert lines[3].split() == ["baseline", "(pika)", "1,000", "0.2500", "0.1250", "0.3750"]


def test_a_group_of_processes_counts_as_the_sum_and_an_exited_child_still_counts():
    # Given two busy children, one measured before it has been waited for
    children = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(2)]
    meter = CpuMeter({"consumers": tuple(c.pid for c in children)})
    deadline = time.monotonic() + 30
    while any(open(f"/proc/{c.pid}/stat").read().split(")")[-1].split()[0] != "Z" for c in children):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # When the meter reads them after they exited (zombies: not yet waited for)
    spent = meter.snapshot()["consumers"]
    for c in children:
        c.wait()
    # Then both children's CPU is in the sum
    assert spent >= 0.55, spent
