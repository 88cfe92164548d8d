"""The outage half of `gridbus demo` (use case 3): one feeder of the dev stack's shared network
trips.  Its meters' last gasps (IS 15959 101) go through a real HES alarm route (HES-A's vendor
JSON pushed to the gateway, the route `hes-a-alarms`), the HES stand-ins put the same meters
out so that the correlator's verification (an AMI ping through the on-demand reads) finds them
dead, and `gridbus outages run` sends the ADMS one feeder Outage over AMQP, not one per DT.
Then every meter but a few breathes (102): the feeder outage closes once the route's
``restore_wait_s`` has passed, and the meters still out become a nested outage; their breaths
close it too, so a demo run leaves no outage open.

The thresholds are those of routes/uc3-outages.yaml (the production file, not a copy): the
feeder outage arrives within seconds, its close ``restore_wait_s`` (60 s) after the restoration,
so this step takes about 65 s.  The feeder is one the alarm step does not trip, as the network
store has it now (``pick_feeder``: each demo run's network step moves a DT between feeders)."""
from __future__ import annotations

import datetime as dt
import os
import random
import subprocess
import sys
import time
from typing import Any, Callable

import click
import requests

from bus import registry
from bus.cli.common import Progress
from bus.errors import GridbusError
from bus.settings import Settings

IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
ROUTE = "outages-to-adms"
POWER_FAILURE, POWER_RESTORED = 101, 102
GASP_SPREAD_S, BREATH_SPREAD_S = 3.0, 2.0  # how far before the push each alarm's time is drawn
LEFT_OUT = 5                      # meters that stay out after the restoration: the nested outage
HES_URLS = ("HES_A_URL", "HES_B_URL")
DEFAULTS = {"restore_wait_s": 60.0, "feeder_hold_s": 15.0}   # routes/uc3-outages.yaml, if it cannot be read


def alarms(meters: list[str], code: int, at: float, spread_s: float, rng: random.Random,
           hes: str = "hes-a") -> list[dict[str, Any]]:
    """HES-A vendor alarms (docs/alarm-formats.md) of ``code`` from ``meters``, their meter times
    within ``spread_s`` before ``at``, heard by the HES a second or two later; the alarm id is
    the meter, code and meter time, as the HES stand-ins make it (a new one each run)."""
    out = []
    for meter in meters:
        occurred = int(at - rng.uniform(0, spread_s))
        received = occurred + rng.randint(1, 2)
        out.append({"alarm_id": f"{hes}-{meter}-{code}-{occurred}", "meter": meter, "code": code,
                    "occurred_at": dt.datetime.fromtimestamp(occurred, IST).isoformat(),
                    "received_at": dt.datetime.fromtimestamp(received, IST).isoformat(),
                    "details": {"voltage": 0 if code == POWER_FAILURE else rng.randint(226, 242)}})
    return sorted(out, key=lambda a: (a["received_at"], a["alarm_id"]))


class Feeder:
    """A feeder of the network store now: its head meter, and the DTs (with their DT meter and
    consumer meters) that trip with it, ``dts``; ``skipped``: its other DTs (see ``pick_feeder``)."""

    def __init__(self, topology, mrid: str, at: float, dts: list[str], skipped: list[str] = ()):
        info = topology.feeder(mrid, at)
        if info is None:
            raise GridbusError(f"the network store has no feeder {mrid}")
        self.mrid, self.name, self.head_meter = info.mrid, info.name, info.head_meter
        found = {d: topology.dt(d, at) for d in dts}
        self.dts = {d: i for d, i in found.items() if i is not None and i.meters}
        self.skipped = list(skipped)

    @property
    def consumers(self) -> list[str]:
        return [m for d in self.dts.values() for m in d.meters]

    @property
    def equipment_meters(self) -> list[str]:
        return [m for m in [self.head_meter, *(d.dt_meter for d in self.dts.values())] if m]

    @property
    def meters(self) -> list[str]:
        return self.equipment_meters + self.consumers

    def left_out(self, n: int = LEFT_OUT) -> list[str]:
        """``n`` consumer meters of one DT (its last ones) that stay out after the restoration."""
        biggest = max(self.dts.values(), key=lambda d: len(d.meters))
        return list(biggest.meters[-n:])


# A DT that came onto its feeder within this many seconds does not trip with it: the running
# correlator keeps the network's answers for an hour either side of an event it has seen (bus/
# outages/topology.py StoreTopology, span_s), and may still place that DT under its old feeder.
# Each demo run moves a DT (the network step), so this keeps one run's move out of the next runs.
MOVED_S = 7200.0
# A feeder whose DTs changed within this many seconds is tripped only when no other can be: the
# correlator counts a feeder's DTs as they were at the start of a 5-minute bucket.
SETTLED_S = 600.0


def pick_feeder(network, topology, candidates: list[str], at: float, busy: Callable[[str], bool],
                avoid: dict[str, list[str]]) -> Feeder:
    """The feeder to trip, as the network store has it at ``at``.  Its DTs that trip are those
    that have been on it for ``MOVED_S`` and were never under a feeder of ``avoid`` (the alarm
    step trips those feeders' meters as the generated network first had them, wherever they hang
    now; their gasps are the alarm step's).  A feeder with an open outage (``busy``) is never
    tripped; of the others: one not in ``avoid``, then one without a DT of theirs, then one
    unchanged for ``SETTLED_S``, then the one with the most DTs that trip, the first of equals.
    The head meter trips the feeder whatever its DTs.  (The generated network moves a DT only
    between the feeders of its substation, so with the default network FDR-0003 and FDR-0004
    never hold a DT of FDR-0001 or FDR-0002.)"""
    dirty = {d for dts in avoid.values() for d in dts}
    found = []
    for i, mrid in enumerate(candidates):
        if busy(mrid):
            continue
        now_dts = network.children(mrid, at)
        trip, skipped = [], []
        for d in now_dts:
            row = network.element(d, at) or {}
            since = dt.datetime.fromisoformat(row["validFrom"]).timestamp() if row.get("validFrom") else at
            (skipped if d in dirty or since > at - MOVED_S else trip).append(d)
        try:
            feeder = Feeder(topology, mrid, at, trip, skipped)
        except GridbusError:
            continue
        if not feeder.dts:
            continue
        settled = now_dts == network.children(mrid, at - SETTLED_S)
        clean = not any(d in dirty for d in now_dts)   # the alarm step's gasps land nowhere on it
        found.append(((mrid not in avoid, clean, settled, len(feeder.dts), -i), feeder))
    if not found:
        raise GridbusError(f"no feeder among {', '.join(candidates)} without an open outage and with a DT to trip "
                           "in the network store (the network step loads it; `gridbus outages list --open`)")
    return max(found, key=lambda f: f[0])[1]


def _options(env: dict) -> dict:
    try:
        from bus.routes import load_routes

        route = load_routes([Settings.load().routes_path], env=env).get(ROUTE)
        return {**DEFAULTS, **(route.options or {})}
    except Exception:  # noqa: BLE001 - the thresholds are only printed and waited for
        return dict(DEFAULTS)


def _adms(env: dict) -> list[dict]:
    answer = requests.get(f"{env['ADMS_URL']}/outages", timeout=10)
    answer.raise_for_status()
    return answer.json()["outages"]


def _hes_outages(env: dict, body: dict) -> None:
    """The HES stand-ins simulate the outage: a meter out answers a read METER_UNREACHABLE (a
    HES answers so for a meter it does not serve anyway, so both get every meter)."""
    for var in HES_URLS:
        answer = requests.post(f"{env[var]}/_outages", json=body, timeout=30)
        if answer.status_code != 200:
            raise GridbusError(f"POST {env[var]}/_outages answered {answer.status_code}: {answer.text[:300]}")


def _push(url: str, key: str, sent: list[dict]) -> None:
    from simulators.hes_alarms import send

    summary = send(sent, url, key, batch=500)
    if not summary.ok:
        raise GridbusError(f"the gateway did not accept every alarm: {summary.status} {summary.examples}")


def _wait(what: str, found: Callable[[], Any], timeout: float, line: Progress | None = None,
          note: Callable[[], str] | None = None) -> Any:
    """``found()`` once it is true; ``timeout`` seconds from now at most."""
    started = time.monotonic()
    while True:
        got = found()
        if got:
            if line:
                line.done()
            return got
        if time.monotonic() - started > timeout:
            raise GridbusError(f"{what} not within {timeout:.0f}s; see $GRIDBUS_HOME/run/outages.log, "
                               "worker.log and adms.log, and `gridbus outages list`")
        if line:
            line.show(note() if note else f"{what} {time.monotonic() - started:.0f}s")
        time.sleep(0.3)


def _describe(kept: dict) -> str:
    o = kept["Outage"]
    eq = o.get("Equipment") or {}
    verbs = "/".join(m["verb"] for m in kept["messages"])
    return (f"{kept['mRID']}  {o.get('kind')} {eq.get('mRID')} ({eq.get('name')})  meters affected "
            f"{o.get('metersAffected')}, restored {o.get('customersRestored')}, {o.get('outageKind')}"
            f"{', ' + o['durationKind'] if o.get('durationKind') else ''}"
            f"{', ' + o['closedReason'] if o.get('closedReason') else ''}  [{verbs}]")


def _show(env: dict, mrid: str, lines: int = 18) -> None:
    done = subprocess.run([sys.executable, "-m", "bus.cli.main", "outages", "show", mrid],
                          capture_output=True, text=True, env={**os.environ, **env}, timeout=60)
    if done.returncode:
        raise GridbusError(f"gridbus outages show {mrid} failed: {done.stderr[-500:]}")
    out = done.stdout.rstrip().splitlines()
    click.echo(f"$ gridbus outages show {mrid}")
    for text in out[:lines]:
        click.echo(f"  {text}")
    if len(out) > lines:
        click.echo(f"  ... ({len(out) - lines} more lines)")


def run_outages(env: dict, timeout: float) -> None:
    from bus.network.store import open_store
    from bus.outages.store import open_outage_store
    from bus.outages.topology import StoreTopology
    from gridbus_dev.cli.demo_alarms import TRIPPED
    from simulators.network import shared_model

    gateway = env.get("GRIDBUS_GATEWAY_URL")
    if not gateway or any(var not in env for var in ("ADMS_URL", *HES_URLS)):
        raise GridbusError("the gateway, the ADMS or a HES stand-in is not configured: run `gridbus dev up` again")
    amqp = requests.get(f"{env['ADMS_URL']}/stats", timeout=10).json().get("amqp")
    if not amqp:
        raise GridbusError("the ADMS stand-in does not consume its outage queue over AMQP: run `gridbus dev up` again")
    options = _options(env)
    now = time.time()
    store, network = open_outage_store(), open_store()
    tree = shared_model(env).feeder_tree()
    feeder = pick_feeder(network, StoreTopology(network), list(tree), now,
                         busy=lambda f: bool(store.outages(True, f, 1)),
                         avoid={f: list(tree.get(f, {})) for f in TRIPPED})
    meters, left = feeder.meters, feeder.left_out()
    mine = set(meters)
    before = {o["mRID"] for o in _adms(env)}

    def new_outages() -> list[dict]:
        return [o for o in _adms(env) if o["mRID"] not in before and set((o.get("Outage") or {}).get("meters") or ()) & mine]

    keys = registry.connector("http-push").key_store(Settings.load())
    key = keys.add("hes-a")  # the demo's own key, revoked when it is done
    rng = random.Random(int(now))
    url = f"{gateway}/v1/push/hes-a/alarms"
    started = time.monotonic()
    try:
        click.echo(f"feeder {feeder.mrid} ({feeder.name}) trips: {len(feeder.dts)} DTs, {len(feeder.consumers):,} "
                   f"consumer meters and {len(feeder.equipment_meters)} DT/head meters send last gasps (101) as "
                   f"HES-A alarms to {url}; the HES stand-ins put them out ...")
        if feeder.skipped:
            click.echo(f"  ({', '.join(feeder.skipped)} of this feeder stay(s) up: moved here lately, or under a "
                       f"feeder the alarm step trips)")
        _hes_outages(env, {"meters": meters})
        tripped_at = time.time()
        _push(url, key, alarms(meters, POWER_FAILURE, tripped_at, GASP_SPREAD_S, rng))

        def feeder_outage():
            return next((o for o in new_outages() if o["Outage"].get("kind") == "feeder"
                         and o["Outage"]["Equipment"]["mRID"] == feeder.mrid), None)
        found = _wait("the feeder outage at the ADMS", feeder_outage, timeout)
        mrid = found["mRID"]
        click.echo(f"  ADMS (AMQP, queue adms.outages) {time.monotonic() - started:.1f}s: {_describe(found)}")
        verified = _wait(f"the verification of {mrid}",
                         lambda: next((o for o in _adms(env) if o["mRID"] == mrid
                                       and o["Outage"].get("outageKind") == "verified"), None), timeout)
        asked = (verified["Outage"].get("verification") or {}).get("asked") or []
        click.echo(f"  verified {time.monotonic() - started:.1f}s: {len(asked)} meters pinged through the on-demand "
                   f"reads ({', '.join(asked)}) do not answer")
        _show(env, mrid)

        back = [m for m in meters if m not in set(left)]
        click.echo(f"power is back: {len(back):,} meters send first breaths (102); {len(left)} meters of "
                   f"{next(d.mrid for d in feeder.dts.values() if left[0] in d.meters)} stay out ...")
        # a breath's time is drawn up to BREATH_SPREAD_S back: power comes back late enough that it
        # always follows its meter's gasp (a breath before its gasp is rightly no restore, and with
        # a fast verification two meters once stayed "out" in CI)
        time.sleep(max(0.0, tripped_at + BREATH_SPREAD_S + 1 - time.time()))
        _hes_outages(env, {"restore": back})
        restored_at = time.monotonic()
        _push(url, key, alarms(back, POWER_RESTORED, time.time(), BREATH_SPREAD_S, rng))

        def closed_with_nested():
            os_ = {o["mRID"]: o for o in new_outages()}
            parent = os_.get(mrid)
            nested = [o for o in os_.values() if o["Outage"].get("parentOutage") == mrid]
            return parent and parent["verb"] == "closed" and nested and (parent, nested)
        wait_s = float(options["restore_wait_s"])
        parent, nested = _wait("the restoration and the nested outage", closed_with_nested, timeout + wait_s,
                               Progress(), lambda: f"the close waits restore_wait_s ({wait_s:.0f} s in "
                               f"{ROUTE}) for late first breaths: {time.monotonic() - restored_at:.0f} s so far")
        click.echo(f"  ADMS {time.monotonic() - started:.1f}s: {_describe(parent)}")
        for n in nested:
            click.echo(f"  ADMS nested: {_describe(n)}")
        click.echo(f"  still out (nested under {mrid}): {', '.join(m for n in nested for m in n['Outage']['meters'])}")

        _hes_outages(env, {"restore": left})
        _push(url, key, alarms(left, POWER_RESTORED, time.time(), 1.0, rng))
        nested_ids = {n["mRID"] for n in nested}
        def nested_closed():
            kept = [o for o in _adms(env) if o["mRID"] in nested_ids]
            return kept if all(o["verb"] == "closed" for o in kept) else None
        done = _wait("the nested outage closed", nested_closed, timeout)
        for n in done:
            click.echo(f"  last {len(left)} meters back: {_describe(n)}")
        outages = new_outages()
        by_kind = {}
        for o in outages:
            by_kind[o["Outage"].get("kind")] = by_kind.get(o["Outage"].get("kind"), 0) + 1
        click.echo(f"outages at the ADMS for this trip: {', '.join(f'{n} {k}' for k, n in sorted(by_kind.items()))} "
                   f"(one feeder outage, not one per DT), {sum(len(o['messages']) for o in outages)} messages, "
                   f"in {time.monotonic() - started:.1f}s")
        if by_kind.get("feeder") != 1 or by_kind.get("dt") or by_kind.get("single") \
                or sorted(m for n in nested for m in n["Outage"]["meters"]) != sorted(left):
            raise GridbusError(f"the ADMS did not get one feeder outage and one nested outage of {left}: "
                               f"{[(o['mRID'], o['Outage'].get('kind')) for o in outages]}")
    finally:
        keys.revoke(key.split(".", 1)[0])
        try:
            _hes_outages(env, {"restore": meters})     # whatever happened, the HES have power again
        except (GridbusError, requests.RequestException):
            pass
