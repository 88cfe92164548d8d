"""The arithmetic of `gridbus bench rpc`: percentiles, CPU per request, the highest rate within target."""
from __future__ import annotations

import subprocess
import sys
import time

import click
import pytest

from gridbus_dev.bench.procs import CpuMeter
from gridbus_dev.bench.rpc import RpcRun, runs_within_target, within_target
from gridbus_dev.cli.bench import _rates


def run(pipeline, rate, latencies, errors=0):
    r = RpcRun(pipeline, rate, 10.0)
    r.latencies_ms, r.errors = list(latencies), errors
    return r


def test_percentiles_are_read_off_the_sorted_latencies():
    r = run("p", 10, range(1, 101))  # 1 … 100 ms
    assert (r.pct(50), r.pct(99)) == (51, 99)
    assert RpcRun("empty", 1, 1).pct(99) != RpcRun("empty", 1, 1).pct(99)  # NaN when nothing answered


def test_the_highest_rate_within_target_needs_zero_errors_and_p99_within_50_ms():
    # Given one pipeline within target at 50/s and 100/s, slow at 150/s, and one with an error at 50/s
    runs = [run("gridbus", 50, [10] * 100), run("gridbus", 100, [20] * 100), run("gridbus", 150, [80] * 100),
            run("pika", 50, [5] * 100, errors=1)]
    # Then gridbus's best is 100/s and the other pipeline has none
    assert within_target(runs) == {"gridbus": 100, "pika": None}


def test_a_rate_asked_several_times_counts_the_runs_that_met_the_target():
    # Given gridbus at 200/s three times (within, slow, within but with an error) and 100/s once
    runs = [run("gridbus", 200, [20] * 100), run("gridbus", 200, [90] * 100),
            run("gridbus", 200, [20] * 100, errors=1), run("gridbus", 100, [10] * 100)]
    # Then one of the three runs at 200/s met it, and the one at 100/s did
    assert runs_within_target(runs) == {("gridbus", 200): (1, 3), ("gridbus", 100): (1, 1)}


def test_cpu_per_request_divides_what_each_process_spent_by_the_requests_made():
    r = run("p", 10, [1.0] * 8, errors=2)
    r.cpu_s = {"gateway": 0.05, "worker": 0.02}
    assert r.cpu_ms_per_request() == pytest.approx({"gateway": 5.0, "worker": 2.0})


def test_the_cpu_meter_counts_what_a_busy_process_spends_and_not_an_idle_one():
    # Given a process that burns CPU for a second and one that sleeps
    busy = subprocess.Popen([sys.executable, "-c", "import time\nend=time.time()+1.5\nwhile time.time()<end: pass"])
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
    try:
        time.sleep(0.3)  # both started
        meter = CpuMeter({"busy": busy.pid, "idle": idle.pid})
        before = meter.snapshot()
        # When half a second passes
        time.sleep(0.5)
        spent = CpuMeter.delta(before, meter.snapshot())
    finally:
        busy.kill()
        idle.kill()
        busy.wait()
        idle.wait()
    # Then the busy one spent a good part of it on a core, the idle one next to nothing
    assert spent["busy"] > 0.15
    assert spent["idle"] < 0.05


@pytest.mark.parametrize("value, rates", [("200", [200.0]), ("50,100, 200", [50.0, 100.0, 200.0])])
def test_rates_are_numbers_separated_by_commas(value, rates):
    assert _rates(None, None, value) == rates


@pytest.mark.parametrize("value", ["fast", "0", "50,,abc", "20000"])
def test_a_bad_rate_is_refused_with_the_reason(value):
    with pytest.raises(click.BadParameter):
        _rates(None, None, value)
