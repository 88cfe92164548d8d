"""`gridbus demo`: use case 1 (HES files → MDMS), the alarms of use cases 2, 4 and 5
(HES → gateway → MDMS-1, WFM, FMS, ADMS), the requests of use cases 6, 7 and 8, the
network of use case 9 (GIS → network store → billing-1, billing-2) and the outage
identification of use case 3 (a feeder trip → the correlator → one CIM Outage at the ADMS over
AMQP) end to end against the local stack, with a summary.  Every meter is one of the dev
stack's shared generated network
(GRIDBUS_DEV_NETWORK_*: UPM00010000..UPM00011999 by default)."""
from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import requests

from bus.cli.common import Progress, fails_cleanly
from bus.errors import GridbusError
from bus.settings import DEV_AMQP_PORT, environment
from gridbus_dev import devstack
from gridbus_dev.cli.demo_alarms import run_alarms
from gridbus_dev.cli.demo_metrics import run_metrics
from gridbus_dev.cli.demo_network import run_network
from gridbus_dev.cli.demo_outages import run_outages
from gridbus_dev.cli.demo_requests import run_requests

# (inbox folder, generator arguments); distinct meter ranges so every file adds new reads, all
# within the shared network's meters (the generator numbers meters in a row, so a file holds
# meters of both HES: the files go to the MDMS, not back to a HES)
DEMO_FILES = [
    ("hes-a", ["--profile", "block-load", "--format", "csv", "--meters", "300", "--days", "2",
               "--first-serial", "10000"]),
    ("hes-a", ["--profile", "daily", "--format", "csv", "--meters", "300", "--days", "7",
               "--first-serial", "10000"]),
    ("hes-a", ["--profile", "events", "--format", "csv", "--meters", "300", "--days", "2",
               "--first-serial", "10000"]),
    ("hes-a", ["--profile", "block-load", "--format", "xml", "--meters", "50", "--days", "1",
               "--first-serial", "10300", "--xml-envelope"]),
    ("hes-b", ["--profile", "block-load", "--format", "csv", "--meters", "50", "--days", "1",
               "--first-serial", "10350", "--source", "hes-b"]),
]


FIRST_DAY = dt.date(2026, 11, 1)


def _run_day(env: dict) -> dt.date:
    """The first day of this run's files: a week after the previous run's (the daily profile spans
    7 days).  The MDMS keeps reads by meter, reading type and instant, so a demo run again on the
    same meters and days would store nothing new, and its count check would fail."""
    path = Path(env["GRIDBUS_HOME"]) / "state" / "demo-runs"
    runs = int(path.read_text() or 0) if path.exists() else 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(str(runs + 1))
    return FIRST_DAY + dt.timedelta(days=7 * runs)


def _generate(folder: Path, args: list[str], seed: int, day: dt.date) -> dict:
    staging = Path(tempfile.mkdtemp(prefix="gridbus-demo-"))
    done = subprocess.run([sys.executable, "-m", "simulators.hes_files", "--out", str(staging),
                           "--seed", str(seed), "--start-date", day.isoformat(), *args],
                          capture_output=True, text=True)
    if done.returncode:
        raise GridbusError(f"HES file generator failed: {done.stderr[-1000:]}")
    summary = json.loads(done.stdout)
    source = Path(summary["path"])
    folder.mkdir(parents=True, exist_ok=True)
    summary["dropped_as"] = str(folder / source.name)
    summary["staged"] = str(source)
    return summary


@click.command("demo")
@click.option("--timeout", default=300, show_default=True, help="Seconds to wait for delivery.")
@fails_cleanly
def demo(timeout):
    """Generate HES files (CSV and XML), drop them in the inboxes, wait for MDMS-1 and MDMS-2;
    then load the GIS's network into the bus and move a DT, and wait for billing-1 and
    billing-2; then push a feeder trip with health and fraud alarms through the gateway and wait
    for MDMS-1, WFM, FMS and ADMS; then ask, as billing-1, for billing determinants, an on-demand
    read and commands; then trip another feeder of the network and wait for its Outage at the
    ADMS over AMQP, its restoration and the nested outage of the meters left out; print what
    happened, and what the metrics counted.  Needs `gridbus dev up`."""
    env = environment()
    if not devstack.port_open(DEV_AMQP_PORT) or "MDMS_1_URL" not in env:
        raise GridbusError("the local stack is not up: run `gridbus dev up` first")
    mdms = env["MDMS_1_URL"]
    inbox, outbox = Path(env["GRIDBUS_INBOX"]), Path(env["GRIDBUS_OUTBOX"]) / "mdms-2"
    seed = int(time.time())  # new content each run, so the files are not duplicates of the last demo
    click.echo("generating HES files ...")
    day = _run_day(env)
    summaries = [_generate(inbox / folder, args, seed + i, day) for i, (folder, args) in enumerate(DEMO_FILES)]
    before = requests.get(f"{mdms}/stats", timeout=10).json()
    mdms2_before = len(list(outbox.glob("*.xml"))) if outbox.exists() else 0
    expected_mdms1 = sum(s["expected_readings"] for s, (f, _) in zip(summaries, DEMO_FILES)
                         if f == "hes-a" and s["profile"] != "events")
    expected_events = sum(s["expected_readings"] for s in summaries if s["profile"] == "events")
    started = time.monotonic()
    for s in summaries:
        Path(s["staged"]).replace(s["dropped_as"])  # rename: the ingress sees only complete files
    click.echo(f"dropped {len(summaries)} files into {inbox}; waiting for delivery ...")
    reports = _wait(summaries, timeout, started)
    seconds = time.monotonic() - started
    after = requests.get(f"{mdms}/stats", timeout=10).json()
    readings = after["readings"] - before["readings"]
    events = after["events"] - before["events"]
    mdms2_files = (len(list(outbox.glob("*.xml"))) if outbox.exists() else 0) - mdms2_before
    rows = sum(r["rows_read"] for r in reports)
    rejected = sum(r["rows_rejected"] for r in reports)
    interval_rows = sum(r["rows_read"] for r, s in zip(reports, summaries) if s["profile"] != "events")
    click.echo("")
    for r in reports:
        click.echo(f"  {r['file']:48} rows {r['rows_read']:>7,}  accepted {r['rows_accepted']:>7,}  "
                   f"rejected {r['rows_rejected']:>3}  -> {r['route']}")
        for rej in r["rejections"][:3]:
            click.echo(f"      line {rej['line']}: {rej['reason']}")
    click.echo("")
    click.echo(f"files            {len(reports)}")
    click.echo(f"rows read        {rows:,}  (rejected {rejected}, with line numbers in each report)")
    click.echo(f"MDMS-1 readings  {readings:,} new (expected {expected_mdms1:,}); events {events:,} "
               f"(expected {expected_events:,})")
    click.echo(f"MDMS-2 files     {mdms2_files} CIM XML in {outbox}")
    click.echo(f"seconds          {seconds:.1f}")
    click.echo(f"reads/s          {interval_rows / seconds:,.0f} interval rows/s "
               f"({readings / seconds:,.0f} readings/s) end to end")
    if readings != expected_mdms1 or events != expected_events:
        raise GridbusError("MDMS-1 does not hold exactly the expected reads; see .gridbus/run/*.log")
    click.echo("")
    # The network first: the outage correlator locates every last gasp in the network store, so
    # the alarm step's feeder trip and the outage step find the network there (a gasp of a meter
    # the store does not have yet is counted unknown, and the answer is cached for a while).
    run_network(env, timeout)
    click.echo("")
    run_alarms(env, timeout)
    click.echo("")
    run_requests(env, day)
    click.echo("")
    run_outages(env, timeout)
    click.echo("")
    run_metrics()


def _wait(summaries: list[dict], timeout: float, started: float) -> list[dict]:
    """Every dropped file's reconciliation report (written once each chunk has an outcome)."""
    pending = {s["dropped_as"]: s for s in summaries}
    found: dict[str, dict] = {}
    line = Progress()
    while time.monotonic() - started < timeout:
        for dropped in list(pending):
            name = Path(dropped).name
            archive = Path(dropped).parent / "archive"
            for report in archive.rglob(f"{name}.report.json"):
                found[dropped] = json.loads(report.read_text())
                pending.pop(dropped)
                break
        if not pending:
            line.done()
            return [found[s["dropped_as"]] for s in summaries]
        line.show(f"{len(found)}/{len(summaries)} files reconciled, {time.monotonic() - started:.0f}s")
        time.sleep(0.5)
    raise GridbusError(f"not reconciled within {timeout}s: {', '.join(Path(p).name for p in pending)}")
