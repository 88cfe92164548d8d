"""`gridbus bench rpc` runs end to end: both gridbus paths and the three baselines answer, and it reports.

Not a speed test (speeds are measured by the benchmark itself, never asserted
here): a short, slow run that proves the benchmark and its baselines work on
a real broker with real stand-ins, so the README's figures can be re-made.
"""
from __future__ import annotations

import pytest

from tests.support import run_cli

pytestmark = pytest.mark.broker


def test_bench_rpc_measures_gridbus_and_its_baselines(bus_env):
    # Given a broker with the management plugin (the benchmark makes its own vhost)
    # When the benchmark runs briefly at a low rate (its shortest run: 5 requests per pipeline,
    # after its 20 warm-up requests; the setup of its processes is most of the time anyway)
    done = run_cli(bus_env, "bench", "rpc", "--rate", "5", "--seconds", "1", timeout=300)
    # Then it succeeds and every pipeline answered every request
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {line.split("  ")[0]: line.split() for line in done.stdout.splitlines()
            if line.startswith(("gridbus:", "baseline:"))}
    for pipeline in ("gridbus: mdms-1", "gridbus: billing-1", "baseline: minimal pika RPC",
                     "baseline: minimal asyncio RPC", "baseline: direct HTTP"):
        row = next((cells for name, cells in rows.items() if name.startswith(pipeline)), None)
        assert row is not None, f"{pipeline} missing from:\n{done.stdout}"
    assert "CPU ms per request, by process" in done.stdout
    assert "highest rate asked with zero errors" in done.stdout
    # and no request failed: the 'errors' column is 0 in every row of the latency table
    latency_rows = done.stdout.split("CPU ms per request")[0].splitlines()
    for line in latency_rows:
        if line.startswith(("gridbus:", "baseline:")):
            cells = line.split()
            assert cells[cells.index("5") + 3] == "0", line  # asked/s, sent/s, ok, errors
