"""The correlator as a hostile sender would meet it: messages on its route queue and on its
partition queues that are not what they claim, deep, huge, duplicated or from the future.  None
stops it or makes an outage; what cannot be read is dead-lettered with its reason; and the operator
can trace which outage a meter's gasp joined."""
from __future__ import annotations

import json

import pytest

from bus import naming
from bus.outages.events import iso
from tests.integration.outage_stack import ROUTE, OutageStack, kind, now, of
from tests.support import Proc, drop_vhost, env_of_its_own, gridbus, run_cli, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(rabbitmq_proc, management_url, tmp_path_factory):
    """One correlator and trace recorder for the module's tests (each on feeders of its own)."""
    tmp = tmp_path_factory.mktemp("outages-hostile")
    env, vhost = env_of_its_own(rabbitmq_proc, management_url, tmp)
    env["GRIDBUS_TRACE_STORE"] = str(tmp / "trace.sqlite")
    s = OutageStack(env, tmp)
    s.recorder = Proc("recorder", gridbus("recorder"), s.env, s.logs).start()
    s.start()
    s.wait_consuming()
    yield s
    s.recorder.stop()
    s.stop()
    drop_vhost(management_url, vhost)


def dead_letters(stack) -> int:
    return stack.admin.queue(naming.dead_letter_queue_name(ROUTE)).get("messages", 0)


def test_hostile_messages_are_dead_lettered_with_their_reason_and_the_correlator_goes_on(stack):
    t0 = now()
    # Given messages that are not route messages, or whose canonical document cannot be used
    stack.send_raw(b"\xff\xfe not json at all")
    stack.send_raw(b"[" * 100_000 + b"]" * 100_000)                       # deep
    stack.send_document(["not", "a", "document"])
    # and documents whose events are each wrong in another way: skipped, never fatal
    stack.send_document({"noun": "EndDeviceEvents", "source": "hes-a", "EndDeviceEvent": [
        {"meter": 12, "isCode": 101, "createdDateTime": iso(t0)},
        {"meter": "UPM00000001", "isCode": "101", "createdDateTime": iso(t0)},
        {"meter": "UPM00000001", "isCode": 101, "createdDateTime": "yesterday"},
        {"meter": "UPM00000001", "isCode": 101, "createdDateTime": "2100-01-01T00:00:00Z"},   # the future
        {"meter": "NOT-A-METER", "isCode": 101, "createdDateTime": iso(t0)},                # unknown
        "a string", None, {"meter": "UPM00000001"}]})
    # and a huge document: 60,000 gasps of one feeder in one message, sent twice (a redelivery)
    feeder = stack.feeder(5)
    meters = stack.feeder_meters(feeder)
    events = [{"meter": meters[i % len(meters)], "isCode": 101, "createdDateTime": iso(t0 + (i % 600) / 100),
               "alarmId": f"H{i}"} for i in range(60_000)]
    huge = {"noun": "EndDeviceEvents", "source": "hes-a", "EndDeviceEvent": events}
    stack.send_document(huge, message_id="huge-1")
    stack.send_document(huge, message_id="huge-1")
    # and inputs published straight to a partition queue that are no input of the correlator
    for body in (b"{", b'{"t": "ev", "ev": [[1, 2]]}', b'{"t": "tick", "w": "soon"}', b'{"t": "nope"}', b"[]"):
        stack.publisher.publish("", f"gridbus.outages.{ROUTE}.0", body, {"delivery_mode": 2}, {})
    stack.publisher.flush()
    # Then the feeder is one feeder outage at the ADMS, and nothing else is
    stack.wait_adms(lambda os: any(kind(o) == "feeder" for o in os), 60, "the feeder outage")
    outages = stack.adms_outages()
    assert [(kind(o), o["Outage"]["Equipment"]["mRID"]) for o in of(outages, feeder)] == [("feeder", feeder)]
    assert not [o for o in outages if o not in of(outages, feeder, stack.feeder(7))], outages
    assert [m["verb"] for m in outages[0]["messages"]] == ["created"]
    # And the three unreadable route messages and the five bad partition inputs are dead letters
    wait_for(lambda: dead_letters(stack) == 8, 30, f"8 dead letters (have {dead_letters(stack)})")
    listed = run_cli(stack.env, "dlq", "list", "--route", ROUTE, "--group", "--json")
    assert listed.returncode == 0, listed.stderr
    groups = json.loads(listed.stdout)
    assert sum(g["count"] for g in groups) == 8
    reasons = " | ".join(g["reason"] for g in groups)
    for why in ("JSONDecodeError", "levels deep", "not a canonical document", "unknown input type",
                "not an event row", "a tick without a usable watermark", "not a JSON object"):
        assert why in reasons, reasons
    # And every process is still running
    assert all(p.popen.poll() is None for p in stack.correlators), stack.log_tail()


def test_trace_meter_shows_which_outage_a_meters_gasp_joined(stack):
    dt = stack.topo.feeders[stack.feeder(7)].dts[3]
    meters = stack.dt_meters(dt)
    t0 = now()
    stack.send([(m, 101, t0 + i * 0.01) for i, m in enumerate(meters)])
    [found] = stack.wait_adms(lambda os: [o for o in of(os, dt) if kind(o) == "dt"], 30, "the DT outage")
    # When the operator traces a meter of the DT after a few late gasps joined the outage
    late = meters[0]
    stack.send([(late, 101, t0 + 0.5)], hes="hes-b")

    def traced():
        done = run_cli(stack.env, "trace", "--meter", late, "--json")
        return done.returncode == 0 and found["mRID"] in done.stdout and done.stdout
    out = wait_for(traced, 30, f"the trace of {late} naming {found['mRID']}")
    events = json.loads(out)
    assert any(e.get("kind") == "outage.correlated" and e.get("outage") == found["mRID"] for e in events)
