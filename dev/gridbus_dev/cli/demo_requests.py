"""The request half of `gridbus demo`: billing-1 asks for determinants, an on-demand read and
commands (use cases 6, 7 and 8), through gateway → MDMS-1 → gateway → HES-A/HES-B."""
from __future__ import annotations

import datetime as dt
import time

import click
import requests

from bus import registry
from bus.errors import GridbusError
from bus.settings import Settings

DEMO_METER = "UPM00010000"  # a meter of the demo's block-load file (use case 1), served by HES-B
# 60 meters of the shared network, half on each HES, none in the demo's files
BULK_METERS = [f"UPM{n:08d}" for n in range(10401, 10461)]


def _ask(gateway: str, key: str, path: str, request: dict, user: str = "demo-operator") -> dict:
    answer = requests.post(f"{gateway}/v1/requests/billing-1/{path}", json={"Header": {}, "Request": request},
                           headers={"X-API-Key": key, "X-User": user}, timeout=60)
    if answer.status_code not in (200, 202):
        raise GridbusError(f"{path}: the gateway answered {answer.status_code}: {answer.text[:300]}")
    return answer.json()


def run_requests(env: dict, day: dt.date = dt.date(2026, 11, 1)) -> None:
    """``day``: the first day of the demo's block-load files, whose IST day the determinants cover."""
    gateway = env.get("GRIDBUS_GATEWAY_URL")
    if not gateway or "HES_A_URL" not in env:
        raise GridbusError("the gateway or the HES stand-ins are not configured: run `gridbus dev up` again")
    keys = registry.connector("http-push").key_store(Settings.load())
    key = keys.add("billing-1")  # the demo's own key, revoked when it is done
    try:
        started = time.monotonic()
        ist_day = (f"{day - dt.timedelta(days=1)}T18:30:00Z", f"{day}T18:30:00Z")   # IST midnight to midnight
        det = _ask(gateway, key, "billing-determinants", {"usagePoint": f"UP-{DEMO_METER}",
                                                           "from": ist_day[0], "to": ist_day[1]})
        click.echo(f"billing determinants  UP-{DEMO_METER}, {day.day} {day:%b %Y} (IST day): {det['Reply']['Result']}")
        if det["Reply"]["Result"] == "OK":
            d = det["Payload"]["BillingDeterminants"]
            zones = ", ".join(f"{z} {v:.3f}" for z, v in d["kwh_import"]["zones"].items())
            click.echo(f"  kWh import {d['kwh_import']['total']:.3f} ({zones}); kVAh {d['kvah_import']['total']:.3f}; "
                       f"export kWh {d['kwh_export']['total']:.3f}")
            click.echo(f"  max demand {d['max_demand_kw']['value']:.3f} kW at {d['max_demand_kw']['at']}; "
                       f"average PF {d['average_pf']}; {d['intervals']} intervals, {d['missing_intervals']} missing")
        meters = [f"UPM{n:08d}" for n in (10001, 10002, 10003)] + ["UPM99999999"]
        read = _ask(gateway, key, "meter-readings", {"meters": meters})
        errors = {e["meter"]: e["code"] for e in read["Reply"].get("Error", [])}
        got = [r["meter"] for r in read["Payload"]["MeterReadings"]["MeterReading"]] if read.get("Payload") else []
        click.echo(f"on-demand read        {len(meters)} meters on HES-A and HES-B: {read['Reply']['Result']} "
                   f"(read {', '.join(got)}; failed {errors})")
        command_id = f"demo-{int(time.time())}"
        small = _ask(gateway, key, "commands", {"commandId": command_id, "action": "connect", "meters": meters[:2]})
        click.echo(f"connect               2 meters, command {command_id}: {small['Reply']['Result']} "
                   f"({small['state']})")
        again = _ask(gateway, key, "commands", {"commandId": command_id, "action": "connect", "meters": meters[:2]})
        click.echo(f"  the same command id again: {again['state']}, duplicate={again.get('duplicate', False)} "
                   "(not executed twice)")
        big = _ask(gateway, key, "commands", {"commandId": f"{command_id}-bulk", "action": "disconnect",
                                              "meters": BULK_METERS})
        click.echo(f"disconnect            60 meters: {big['state']}; an approver other than demo-operator "
                   "approves it with")
        click.echo("  gridbus operators add NAME --role approver   (once: an account with its own password)")
        click.echo(f"  gridbus commands approve {big['request_id']} --user NAME   (gridbus commands list / show ID)")
        click.echo(f"requests answered in {time.monotonic() - started:.1f}s")
    finally:
        keys.revoke(key.split(".", 1)[0])
