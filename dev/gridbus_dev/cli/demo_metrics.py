"""The end of `gridbus demo`: what the recorder's Prometheus metrics counted (since it started)."""
from __future__ import annotations

import time
from collections import defaultdict

import click
import requests
from prometheus_client.parser import text_string_to_metric_families

from gridbus_dev import devstack

SETTLE_S = 1.0  # trace events arrive in batches every 50 ms; the recorder is niced


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) → value."""
    text = requests.get(url, timeout=5).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def settled(url: str, timeout_s: float = 15.0) -> dict:
    """The metrics once the trace events of what just happened have been counted: two scrapes
    SETTLE_S apart that agree."""
    deadline, last = time.monotonic() + timeout_s, None
    while True:
        now = scrape(url)
        if now == last or time.monotonic() > deadline:
            return now
        last = now
        time.sleep(SETTLE_S)


def total(samples: dict, name: str) -> float:
    """The sum of a metric's samples over all its labels."""
    return sum(v for (n, _), v in samples.items() if n == name)


def run_metrics() -> None:
    url = devstack.METRICS_URL
    try:
        samples = settled(url)
    except requests.RequestException as exc:
        click.echo(f"metrics: the recorder does not answer at {url} ({exc.__class__.__name__})")
        return
    by_destination: dict[str, float] = defaultdict(float)
    for (name, labels), value in samples.items():
        if name == "gridbus_deliveries_total":
            lab = dict(labels)
            by_destination[f"{lab['destination']} {lab['status']}"] += value
    click.echo(f"metrics since the recorder started ({url}, counted from the trace events):")
    items = [f"{k}: {v:,.0f}" for k, v in sorted(by_destination.items())]
    for n, start in enumerate(range(0, len(items), 5)):  # five destinations and statuses a line
        click.echo(("  deliveries       " if n == 0 else " " * 19) + ", ".join(items[start:start + 5]))
    click.echo(f"  readings         {total(samples, 'gridbus_readings_total'):,.0f}   rows rejected "
               f"{total(samples, 'gridbus_rows_rejected_total'):,.0f}")
    click.echo(f"  retries          {total(samples, 'gridbus_retries_total'):,.0f}   dead letters "
               f"{total(samples, 'gridbus_dead_letters_total'):,.0f}   requests refused "
               f"{total(samples, 'gridbus_requests_refused_total'):,.0f}   trace events dropped "
               f"{total(samples, 'gridbus_trace_events_dropped_total'):,.0f}")
