"""Pub-sub: alarms pushed once reach each subscriber by class, each on its own queue and retries."""
from __future__ import annotations

import textwrap

import pytest
import requests

from tests.support import Mdms, Proc, gridbus, run_cli, start_gateway, wait_for

pytestmark = pytest.mark.broker


def alarm(n: int, code: int) -> dict:
    return {"alarm_id": f"hes-a-{n:06d}", "meter": f"UPM{n:08d}", "code": code,
            "occurred_at": "2026-11-01T10:15:02+05:30"}


@pytest.fixture
def pubsub(bus_env, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    wfm, fms = Mdms(bus_env, logs, "wfm"), Mdms(bus_env, logs, "fms")
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / "alarms.yaml").write_text(textwrap.dedent(f"""\
        use_case: 4
        routes:
          - id: hes-a-alarms
            source: {{system: hes-a, connector: http-push, path: hes-a/alarms}}
            method: pub-sub
            message: {{noun: EndDeviceEvents}}
            transform: [hes_alarm_json]
            destinations:
              - {{system: events, connector: events}}
          - id: health-to-wfm
            source: {{system: wfm, connector: subscription, topic: "EndDeviceEvents.created.*", classes: [health]}}
            method: pub-sub
            transform: [to_mdms_json]
            destinations:
              - {{system: wfm, connector: rest, url: "{wfm.url}/messages"}}
            retry: {{attempts: 10, first_delay_s: 1, max_delay_s: 2, jitter: 0}}
          - id: fraud-to-fms
            source: {{system: fms, connector: subscription, topic: "EndDeviceEvents.#", classes: [fraud]}}
            method: pub-sub
            transform: [to_mdms_json]
            destinations:
              - {{system: fms, connector: rest, url: "{fms.url}/messages"}}
            retry: {{attempts: 10, first_delay_s: 1, max_delay_s: 2, jitter: 0}}
        """))
    env = {**bus_env, "GRIDBUS_ROUTES": str(routes)}
    key = run_cli(env, "gateway", "keys", "add", "hes-a").stdout.strip()
    gateway, url = start_gateway(env, logs)
    procs = [gateway, Proc("worker", gridbus("worker", "-c", "2"), env, logs).start()]
    yield {"url": url, "key": key, "wfm": wfm, "fms": fms, "env": env}
    for p in procs:
        p.stop()
    wfm.stop()
    fms.stop()


def test_each_subscriber_gets_its_classes_and_a_dead_one_holds_back_no_other(pubsub):
    # Given the fraud system is down
    pubsub["fms"].control(mode="down")
    # When HES-A pushes an outage, a health and a fraud alarm in one burst
    burst = [alarm(1, 101), alarm(2, 205), alarm(3, 201)]
    answer = requests.post(f"{pubsub['url']}/v1/push/hes-a/alarms", json=burst, timeout=10,
                           headers={"X-API-Key": pubsub["key"]})
    assert answer.status_code == 202, answer.text
    # Then WFM receives the health event only, while FMS is still down
    wait_for(lambda: pubsub["wfm"].stats()["events"] == 1, 30, "the health event at WFM")
    got = requests.get(f"{pubsub['wfm'].url}/events?meter=UPM00000002", timeout=5).json()
    assert got["count"] == 1
    assert pubsub["fms"].stats()["events"] == 0
    # and when FMS comes back, its own retries deliver the fraud event only
    pubsub["fms"].control(mode="healthy")
    wait_for(lambda: pubsub["fms"].stats()["events"] == 1, 30, "the fraud event at FMS after its retries")
    assert requests.get(f"{pubsub['fms'].url}/events?meter=UPM00000003", timeout=5).json()["count"] == 1
    assert pubsub["wfm"].stats()["events"] == 1
