"""docker/prometheus-alerts.yaml names only metrics the recorder serves, and only their labels."""
from __future__ import annotations

import re

import yaml
from prometheus_client import generate_latest

from bus.tracing.metrics import TraceMetrics
from tests.support import ROOT

RULES = yaml.safe_load((ROOT / "docker" / "prometheus-alerts.yaml").read_text())["groups"]
SERVED_BY_OTHERS = {"up"}  # Prometheus's own


def served() -> dict[str, set[str]]:
    """Every sample name the recorder serves (with _total, _bucket, ... as exposed) → its labels."""
    metrics = TraceMetrics()
    metrics.observe([{"kind": k, "route": "r", "destination": "d", "status": "200", "waited_s": 0.1,
                      "duration_s": 0.1, "readings": 1, "events": 1, "rejected": 1, "source": "s", "code": "c",
                      "dropped_before": 1}
                     for k in ("received", "consumed", "transformed", "delivered", "retried", "dead-lettered",
                               "replayed", "refused")])
    names: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    assert generate_latest(metrics.registry)  # and they render
    return names


def test_every_alert_names_a_served_metric_with_its_labels():
    # Given the recorder's metrics and the shipped alerting rules
    names = served()
    rules = [rule for group in RULES for rule in group["rules"]]
    assert rules
    for rule in rules:
        # When the metrics an expression selects are read off it
        selected = re.findall(r"\b([a-z_]+)\s*(?:\{([^}]*)\})?\s*(?:\[|\)|==|>|$)", rule["expr"])
        used = {m for m, _ in selected if m.startswith("gridbus_") or m in SERVED_BY_OTHERS}
        # Then each is served, and each label it matches on is one of that metric's
        assert used, rule["alert"]
        for metric, matchers in selected:
            if metric in SERVED_BY_OTHERS or not metric.startswith("gridbus_"):
                continue
            assert metric in names, f"{rule['alert']}: {metric} is not served"
            for label in re.findall(r"([a-z_]+)\s*=~?", matchers):
                assert label in names[metric], f"{rule['alert']}: {metric} has no label {label}"
        for by in re.findall(r"by \(([^)]*)\)", rule["expr"]):
            for label in (x.strip() for x in by.split(",")):
                assert label == "le" or any(label in names[m] for m, _ in selected if m in names), \
                    f"{rule['alert']}: no metric of it has a label {label}"
