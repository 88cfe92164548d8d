"""`gridbus bench fairness` runs end to end on a real broker and gateway (issue 22).

Not a speed test: the figures are the benchmark's (docs/benchmarks.md); here a short run proves
it measures what it says, HES-B's pushes alone and under HES-A's flood, and what HES-A was told.
"""
from __future__ import annotations

import json

import pytest

from tests.support import run_cli

pytestmark = pytest.mark.broker


def test_bench_fairness_measures_the_steady_system_alone_and_under_a_flood(bus_env):
    # Given a broker with the management plugin (the benchmark makes its own vhost and gateway)
    # When one short round runs: HES-B at 10/s alone, then beside HES-A at 5x a rate of 50/s
    done = run_cli(bus_env, "bench", "fairness", "--rounds", "1", "--seconds", "2", "--steady-rate", "10",
                   "--rate-per-system", "50", "--json", timeout=300)
    # Then it succeeds with both phases
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    alone, flood = out["phases"]
    assert alone["name"] == "alone 1" and flood["name"] == "flood 1"
    # and every one of HES-B's pushes was accepted in both, with latencies measured
    for phase in (alone, flood):
        assert phase["steady"]["statuses"] == {"202": 20}, phase
        assert 0 < phase["p50_ms"] <= phase["p99_ms"]
    # and HES-A's flood met its rate limit: accepted up to it, refused beyond
    assert set(flood["flood"]["statuses"]) == {"202", "429"}, flood
    assert flood["flood"]["statuses"]["429"] > flood["flood"]["statuses"]["202"]
    assert out["p99_ratio_median"] > 0
