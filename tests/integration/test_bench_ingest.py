"""`gridbus bench ingest` runs end to end and says where each row's CPU goes, by process.

Not a speed test (the benchmark measures speeds, never asserted here): a small
run that proves the benchmark, its baseline and its CPU accounting work on a
real broker with a real MDMS stand-in.
"""
from __future__ import annotations

import pytest

from tests.support import run_cli

pytestmark = pytest.mark.broker

GRIDBUS_PROCESSES = ("ingress", "worker", "recorder", "rabbitmq", "MDMS stand-in")
BASELINE_PROCESSES = ("baseline consumers", "baseline publisher", "rabbitmq", "MDMS stand-in")


def cpu_rows(stdout: str) -> dict[str, dict[str, str]]:
    """The CPU-per-1,000-rows table: pipeline → process → figure ('' where not in that run)."""
    lines = stdout.split("CPU s per 1,000 rows, by process:")[1].strip().splitlines()
    header, widths = lines[0], [len(cell) for cell in lines[1].split("  ")]
    starts = [sum(widths[:i]) + 2 * i for i in range(len(widths))]

    def cells(line):
        return [line[a:a + w].strip() for a, w in zip(starts, widths)]
    names = cells(header)
    return {row[0]: dict(zip(names[2:], row[2:])) for row in map(cells, lines[2:])}


def test_bench_ingest_reports_cpu_per_thousand_rows_for_every_process(bus_env):
    # Given a broker with the management plugin (the benchmark makes its own vhost)
    # When the benchmark moves a small file through gridbus and through the baseline
    done = run_cli(bus_env, "bench", "ingest", "--reads", "20000", timeout=600)
    # Then it succeeds, with the throughput table and the CPU table
    assert done.returncode == 0, done.stderr[-3000:]
    assert "gridbus/baseline" in done.stdout
    rows = cpu_rows(done.stdout)
    assert set(rows) == {"gridbus", "baseline (pika)"}, done.stdout
    # and every process of each pipeline spent a positive, plausible CPU time per 1,000 rows
    for pipeline, processes in (("gridbus", GRIDBUS_PROCESSES), ("baseline (pika)", BASELINE_PROCESSES)):
        for process in processes:
            figure = rows[pipeline].get(process)
            # the recorder takes trace events after the fact: in a run of half a second (a warm
            # machine) they may all come after the last reading stored, so its share may be 0
            least = 0 if process == "recorder" else 1e-9
            assert figure and least <= float(figure) < 100, f"{pipeline} {process}: {figure!r}\n{done.stdout}"
        assert float(rows[pipeline]["total"]) >= sum(float(rows[pipeline][p]) for p in processes) - 1e-3
    # and the gridbus processes are blank in the baseline's row (not in that run), and vice versa
    assert rows["baseline (pika)"]["worker"] == "" and rows["gridbus"]["baseline publisher"] == ""
