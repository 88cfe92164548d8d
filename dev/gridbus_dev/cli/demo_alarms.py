"""The alarm half of `gridbus demo`: a feeder trip with health and fraud alarms, pushed to the
gateway as HES-A, fanned out to MDMS-1, WFM, FMS and the ADMS (use cases 2, 4 and 5)."""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import requests

from bus import registry
from bus.errors import GridbusError
from bus.settings import Settings

# subscriber: (its class, the variable of its address, the stats counter of distinct events)
SUBSCRIBERS = {"mdms-1": ("critical", "MDMS_1_URL", "events"), "wfm": ("health", "WFM_URL", "events"),
               "fms": ("fraud", "FMS_URL", "evidence"), "adms": ("outage", "ADMS_URL", "events")}


TRIPPED = ("FDR-0001", "FDR-0002")


def _alarms(work: Path, at: str, env: dict) -> tuple[Path, dict[str, int]]:
    """A trip of two feeders (last gasps, then first breaths) and 300 health and fraud alarms, on
    the dev stack's shared network (the generator reads GRIDBUS_DEV_NETWORK_*, from dev.env here),
    so each alarm's meter hangs under the DT and feeder the GIS and the network store say."""
    shared = {k: v for k, v in env.items() if k.startswith("GRIDBUS_DEV_NETWORK_")}
    if not shared:
        raise GridbusError("no shared network (GRIDBUS_DEV_NETWORK_*) in dev.env: run `gridbus dev up` again")
    runs = [["trip", *(a for f in TRIPPED for a in ("--feeder", f)), "--restore-after-s", "900"],
            ["mixed", "--count", "300", "--mix", "health=2,fraud=1", "--window-s", "600"]]
    alarms, classes = [], {}
    for i, argv in enumerate(runs):
        out = work / f"alarms-{i}.json"
        done = subprocess.run([sys.executable, "-m", "simulators.hes_alarms", *argv, "--at", at, "--out", str(out)],
                              capture_output=True, text=True, env={**os.environ, **shared})
        if done.returncode:
            raise GridbusError(f"alarm generator failed: {done.stderr[-1000:]}")
        classes.update(json.loads(done.stdout)["code_classes"])
        alarms += json.loads(out.read_text())
    path = work / "alarms.json"
    path.write_text(json.dumps(alarms))
    expected = {s: sum(1 for a in alarms if cls in classes[str(a["code"])]) for s, (cls, _, _) in SUBSCRIBERS.items()}
    return path, expected


def _counts(env: dict) -> dict[str, dict]:
    return {s: requests.get(f"{env[var]}/stats", timeout=10).json() for s, (_, var, _) in SUBSCRIBERS.items()}


def run_alarms(env: dict, timeout: float) -> None:
    gateway = env.get("GRIDBUS_GATEWAY_URL")
    if not gateway or any(var not in env for _, var, _ in SUBSCRIBERS.values()):
        raise GridbusError("the gateway or a stand-in is not configured: run `gridbus dev up` again")
    keys = registry.connector("http-push").key_store(Settings.load())
    key = keys.add("hes-a")  # the demo's own key, revoked when it is done
    work = Path(tempfile.mkdtemp(prefix="gridbus-demo-alarms-"))
    try:
        # a new trip each run (alarm ids carry the time), so nothing is a duplicate of the last demo
        at = dt.datetime.now(dt.timezone(dt.timedelta(hours=5, minutes=30))).replace(microsecond=0).isoformat()
        path, expected = _alarms(work, at, env)
        before = _counts(env)
        total = len(json.loads(path.read_text()))
        click.echo(f"pushing {total:,} HES-A alarms (feeder trip {'+'.join(TRIPPED)}, health, fraud) to {gateway} ...")
        started = time.monotonic()
        sent = subprocess.run([sys.executable, "-m", "simulators.hes_alarms", "send", str(path), "--url",
                               f"{gateway}/v1/push/hes-a/alarms", "--key", key, "--batch", "500"],
                              capture_output=True, text=True)
        if sent.returncode:
            raise GridbusError(f"the gateway did not accept every alarm: {sent.stdout[-1000:]}")
        while True:
            now = _counts(env)
            got = {s: now[s][c] - before[s][c] for s, (_, _, c) in SUBSCRIBERS.items()}
            if all(got[s] >= expected[s] for s in SUBSCRIBERS):
                break
            if time.monotonic() - started > timeout:
                raise GridbusError(f"alarms not all delivered within {timeout}s: {got} of {expected}")
            time.sleep(0.3)
        seconds = time.monotonic() - started
        click.echo("")
        for s, (cls, _, counter) in SUBSCRIBERS.items():
            extra = ""
            if s == "wfm":
                extra = f"  work items open {now['wfm']['open_items']:,} (one per meter and problem)"
            elif s == "fms":
                extra = f"  cases {now['fms']['cases']:,} (a meter's tamper events of a day in one)"
            click.echo(f"  {s:8} {cls:9} {got[s]:>6,} new events (expected {expected[s]:,}){extra}")
        click.echo(f"alarms delivered to every subscriber in {seconds:.1f}s")
    finally:
        keys.revoke(key.split(".", 1)[0])
