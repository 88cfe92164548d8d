"""The network half of `gridbus demo` (use case 9): the GIS stand-in's generated network goes
into the bus's network store (pushed whole through the gateway into an empty store, else as a
nightly snapshot file the bus diffs), then one DT moves to another feeder; every consumer under
it reaches billing-1 (JSON) and billing-2 (XML) with its new path and a higher version."""
from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import click
import requests

from bus.errors import GridbusError
from bus.network.store import open_store

IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
BILLING = {"billing-1": "BILLING_1_URL", "billing-2": "BILLING_2_URL"}


def _get(url: str) -> dict:
    answer = requests.get(url, timeout=30)
    if answer.status_code != 200:
        raise GridbusError(f"GET {url} answered {answer.status_code}: {answer.text[:300]}")
    return answer.json()


def _post(url: str, body: dict) -> dict:
    answer = requests.post(url, json=body, timeout=120)
    if answer.status_code != 200:
        raise GridbusError(f"POST {url} answered {answer.status_code}: {answer.text[:300]}")
    return answer.json()


def _billing_stats(env: dict) -> dict[str, dict]:
    return {b: _get(f"{env[var]}/stats") for b, var in BILLING.items()}


def _held(env: dict, billing: str, consumer: str) -> dict | None:
    """What ``billing`` holds for ``consumer`` ({"version", "path", ...}), None when nothing."""
    answer = requests.get(f"{env[BILLING[billing]]}/consumers/{consumer}", timeout=30)
    return answer.json() if answer.status_code == 200 else None


def _wait_for(what: str, done, timeout: float, started: float) -> None:
    while not done():
        if time.monotonic() - started > timeout:
            raise GridbusError(f"{what} not within {timeout:.0f}s; see $GRIDBUS_HOME/run/network-*.log")
        time.sleep(0.3)


def _wait_report(folder: Path, name: str, timeout: float, started: float) -> dict:
    """The ingress's report of snapshot file ``name`` (archived under a time prefix)."""
    found: list[Path] = []

    def reported() -> bool:
        found[:] = list((folder / "archive").glob(f"*{name}.report.json"))
        return bool(found)
    _wait_for(f"the snapshot {name} reported", reported, timeout, started)
    return json.loads(found[0].read_text())


def _load(env: dict, gis: str, timeout: float) -> None:
    """The GIS's network into the store: pushed whole when the store is empty, else a snapshot
    the bus diffs (a demo run again: nothing or little changes, and nothing is applied twice)."""
    store = open_store()
    before = _billing_stats(env)
    network = _get(f"{gis}/stats")
    started = time.monotonic()
    if not store.counts().get("consumer"):
        click.echo(f"GIS pushes its network ({network['consumers']:,} consumers, {network['dts']} DTs, "
                   f"{network['feeders']} feeders, {network['substations']} substations) to the gateway ...")
        pushed = _post(f"{gis}/push", {"stream": "full"})
        if pushed["stopped"] or pushed["sent"] != pushed["changes"]:
            raise GridbusError(f"the gateway did not take the network: {pushed['stopped'] or pushed['status']}")
        emitted = network["consumers"]      # one consumer-path update each
        click.echo(f"  {pushed['changes']:,} changes in {pushed['documents']} document(s), answers {pushed['status']}")
    else:
        name = f"demo-consumer-index-{int(time.time() * 1000)}.csv"
        click.echo(f"the store has the network already: the GIS drops its nightly snapshot {name} instead ...")
        _post(f"{gis}/snapshot", {"name": name})
        report = _wait_report(Path(env["GRIDBUS_INBOX"]) / "gis-snapshots", name, timeout, started)
        if report["status"] not in ("applied", "unchanged"):
            raise GridbusError(f"the snapshot was {report['status']}: see {report['archived_as']}.report.json")
        click.echo(f"  {report['rowsRead']:,} rows, {report['changes']} change(s) {report['byKind'] or ''} "
                   f"({report['status']}: the bus emits only what differs from its store)")
        emitted = None          # how many updates a diff fans out to is the store's business: wait till quiet
    counts = store.counts()
    if counts.get("consumer") != network["consumers"]:
        raise GridbusError(f"the store holds {counts.get('consumer')} consumers, the GIS {network['consumers']}")

    last: list[dict] = []

    def delivered() -> bool:
        if store.stats()["outboxPending"]:
            return False
        now = _billing_stats(env)
        if emitted is not None:
            return all(now[b]["stored"] - before[b]["stored"] >= emitted for b in BILLING)
        # nothing waits in the outbox and the billing systems stored nothing for a second
        quiet = bool(last) and all(now[b]["stored"] == last[0][b]["stored"] for b in BILLING)
        last[:] = [now]
        time.sleep(0 if quiet else 1.0)
        return quiet
    _wait_for("the network's consumer paths at both billing systems", delivered, timeout, started)
    after = _billing_stats(env)
    click.echo(f"  store: {counts['substation']} substations, {counts['feeder']} feeders, {counts['dt']} DTs, "
               f"{counts['consumer']:,} consumers; " + ", ".join(
                   f"{b} holds {after[b]['consumers']:,} consumers (+{after[b]['stored'] - before[b]['stored']:,})"
                   for b in BILLING) + f"  {time.monotonic() - started:.1f}s")
    stale = {b: after[b]["stale_409"] - before[b]["stale_409"] for b in BILLING}
    if any(stale.values()):
        raise GridbusError(f"a billing system was sent an older version than it held (409s {stale})")


def run_network(env: dict, timeout: float) -> None:
    gis = env.get("GIS_URL")
    if not gis or any(var not in env for var in BILLING.values()):
        raise GridbusError("the GIS or the billing stand-ins are not configured: run `gridbus dev up` again")
    _load(env, gis, timeout)
    # A GIS stand-in started again begins at its generated sequences; the store already applied
    # those change ids once, and would acknowledge a new change under an old id without applying it.
    _post(f"{gis}/_sequence", {"after": open_store().last_sequence()})
    before = _billing_stats(env)
    at = dt.datetime.now(IST).replace(microsecond=0).isoformat()
    started = time.monotonic()
    moved = _post(f"{gis}/push", {"stream": "dt-moves", "count": 1, "at": at})
    if moved["stopped"] or moved["changes"] != 1:
        raise GridbusError(f"the DT move was not taken: {moved}")
    change = _get(f"{gis}/network/changes?since={moved['first_sequence'] - 1}")["changes"][0]
    truth = _get(f"{gis}/network/dts/{change['mrid']}")
    consumers = truth["consumers"]
    one = consumers[0]
    old = {b: _held(env, b, one) for b in BILLING}
    click.echo(f"GIS moves {change['mrid']} to feeder {truth['feeder']} effective {at} "
               f"(change {change['changeId']}): {len(consumers)} consumers under it ...")

    def arrived() -> bool:
        now = _billing_stats(env)
        return all(now[b]["stored"] - before[b]["stored"] >= len(consumers) for b in BILLING)
    _wait_for(f"{len(consumers)} consumer updates at both billing systems", arrived, timeout, started)
    seconds = time.monotonic() - started
    after = _billing_stats(env)
    held = {b: _get(f"{env[var]}/consumers")["consumers"] for b, var in BILLING.items()}
    wrong = {b: [c for c in consumers if ((held[b].get(c) or {}).get("path") or {}).get("feeder") != truth["feeder"]]
             for b in BILLING}
    for b in BILLING:
        got = after[b]["stored"] - before[b]["stored"]
        click.echo(f"  {b:9} {got:>5,} updates stored (expected {len(consumers):,}), "
                   f"{len(consumers) - len(wrong[b])} on {truth['feeder']}, 409s {after[b]['stale_409']}")
    for b in BILLING:
        new = _held(env, b, one) or {}
        was = old[b]
        was_text = (f"{was['path']['dt']} → {was['path']['feeder']} → {was['path']['substation']} v{was['version']}"
                    if was else "not held (billing started after the load)")
        path = new.get("path") or {}
        click.echo(f"  {b} {one}: before {was_text}; after {path.get('dt')} → {path.get('feeder')} → "
                   f"{path.get('substation')} v{new.get('version')}")
    click.echo(f"DT move delivered to both billing systems in {seconds:.1f}s")
    for b in BILLING:
        got = after[b]["stored"] - before[b]["stored"]
        if got != len(consumers) or wrong[b] or after[b]["stale_409"] != before[b]["stale_409"]:
            raise GridbusError(f"{b} did not get exactly the moved consumers' new paths: {got} stored, "
                               f"{len(wrong[b])} not on {truth['feeder']} (e.g. {wrong[b][:3]}), "
                               f"409s {after[b]['stale_409'] - before[b]['stale_409']}")
        new = _held(env, b, one)
        if old[b] and new["version"] <= old[b]["version"]:
            raise GridbusError(f"{b}: {one}'s version did not grow ({old[b]['version']} -> {new['version']})")
