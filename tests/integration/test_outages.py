"""Use case 3 end to end with real processes: outage events on the correlate route's queue,
`gridbus outages run`, CIM Outages at the ADMS stand-in over AMQP, and the outage store behind
`gridbus outages list|show`.  Thresholds are the stack's short ones (outage_stack.py)."""
from __future__ import annotations

import json
import time

import pytest

from tests.integration.outage_stack import OutageStack, kind, now, of
from tests.support import drop_vhost, env_of_its_own, run_cli, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shared(rabbitmq_proc, management_url, tmp_path_factory):
    """One correlator for the module's tests (each on feeders of its own): 15 s to build."""
    tmp = tmp_path_factory.mktemp("outages")
    env, vhost = env_of_its_own(rabbitmq_proc, management_url, tmp)
    s = OutageStack(env, tmp)
    s.start()
    s.wait_consuming()
    yield s
    s.stop()
    drop_vhost(management_url, vhost)


@pytest.fixture
def stack(shared):
    assert all(p.popen.poll() is None for p in shared.correlators), shared.log_tail()
    return shared


def test_a_feeder_trip_is_one_feeder_outage_at_the_adms_not_one_per_dt(stack):
    # Given the correlator running
    feeder = stack.feeder(2)
    meters = stack.feeder_meters(feeder)
    # When every consumer meter of a feeder gasps within 5 s
    t0 = now()
    stack.send([(m, 101, t0 + 5 * i / len(meters)) for i, m in enumerate(meters)])
    # Then the ADMS gets one feeder outage of that feeder, and no DT outage
    stack.wait_adms(lambda os: any(kind(o) == "feeder" for o in os), 30, "a feeder outage")
    time.sleep(3)  # past the feeder hold: a DT outage would have been announced by now
    outages = of(stack.adms_outages(), feeder)
    assert [(kind(o), o["Outage"]["Equipment"]["mRID"]) for o in outages] == [("feeder", feeder)], outages
    doc = outages[0]["Outage"]
    assert doc["metersAffected"] == len(meters) and doc["actualPeriod"]["start"] is not None
    assert [m["verb"] for m in outages[0]["messages"]] == ["created"]
    # And `gridbus outages list --open` and `show` tell the operator the same
    listed = run_cli(stack.env, "outages", "list", "--open", "--feeder", feeder, "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["kind"], r["equipment"], r["state"]) for r in rows] == [("feeder", feeder, "open")]
    shown = run_cli(stack.env, "outages", "show", rows[0]["mRID"])
    assert shown.returncode == 0, shown.stderr
    assert "gasps joined" in shown.stdout and "created" in shown.stdout and "sent" in shown.stdout


def test_a_partial_dt_below_the_share_stays_single_customer_outages(stack):
    # Given the correlator running
    dt = stack.topo.feeders[stack.feeder(4)].dts[1]
    meters = stack.dt_meters(dt)
    few = meters[:3]  # far below 60 % of the DT
    # When three of its meters gasp
    t0 = now()
    stack.send([(m, 101, t0 + i) for i, m in enumerate(few)])
    # Then after the single hold each is a single-customer outage of its own, and there is no DT outage
    stack.wait_adms(lambda os: len(of(os, *few)) == 3, 30, "three single-customer outages")
    time.sleep(1)
    outages = of(stack.adms_outages(), dt, *few)
    assert sorted((kind(o), o["Outage"]["Equipment"]["mRID"]) for o in outages) == [("single", m) for m in sorted(few)]


def test_a_late_gasp_joins_its_outage_and_a_restoration_leaving_5_out_nests_them(stack):
    # Given a DT outage announced
    dt = stack.topo.feeders[stack.feeder(6)].dts[0]
    meters = stack.dt_meters(dt)
    late_meter, rest = meters[-1], meters[:-1]
    t0 = now()
    stack.send([(m, 101, t0 + i * 0.01) for i, m in enumerate(rest)])
    created = stack.wait_adms(lambda os: [o for o in of(os, dt) if kind(o) == "dt"], 30, "the DT outage")
    mrid = created[0]["mRID"]
    # When one more gasp arrives 8 s late, with its own (earlier) event time
    time.sleep(2)
    stack.send([(late_meter, 101, t0 + 1)])
    # Then it joins that outage (the timeline says so), and makes no outage of its own
    def joined():
        rows = stack.store().timeline(mrid)
        return any(late_meter in r.get("meters", []) for r in rows if r["what"] == "gasps joined")
    wait_for(joined, 15, f"the late gasp of {late_meter} joining {mrid}")
    # When all but 5 meters breathe
    back = meters[:-5]
    t1 = now()
    stack.send([(m, 102, t1 + i * 0.01) for i, m in enumerate(back)])
    # Then the outage closes, restored, and a nested outage of the 5 stays open under it
    def settled(os):
        parent = next((o for o in os if o["mRID"] == mrid), None)
        nested = [o for o in of(os, dt) if kind(o) == "nested"]
        return parent and parent["verb"] == "closed" and nested and (parent, nested)
    parent, nested = stack.wait_adms(settled, 30, "the restoration and the nested outage")
    assert parent["Outage"]["closedReason"] == "restored"
    assert len(nested) == 1 and nested[0]["open"]
    assert sorted(nested[0]["Outage"]["meters"]) == sorted(meters[-5:])
    assert nested[0]["Outage"]["parentOutage"] == mrid


def test_a_40_second_interruption_is_momentary(stack):
    # Given the correlator running
    dt = stack.topo.feeders[stack.feeder(8)].dts[2]
    meters = stack.dt_meters(dt)
    # When a DT's meters gasp and all breathe 40 s (event time) later
    t0 = now() - 45
    stack.send([(m, 101, t0 + i * 0.01) for i, m in enumerate(meters)])
    stack.wait_adms(lambda os: [o for o in of(os, dt) if kind(o) == "dt"], 30, "the DT outage")
    stack.send([(m, 102, t0 + 40 + i * 0.01) for i, m in enumerate(meters)])
    # Then the outage closes as momentary (IEEE 1366: MAIFI, not SAIFI)
    closed = stack.wait_adms(lambda os: [o for o in of(os, dt) if kind(o) == "dt" and o["verb"] == "closed"], 30,
                             "the DT outage closed")
    assert closed[0]["Outage"]["durationKind"] == "momentary"
    assert closed[0]["Outage"]["closedReason"] == "restored"


@pytest.fixture
def verifying(bus_env, tmp_path):
    s = OutageStack(bus_env, tmp_path, verify=True)
    yield s
    s.stop()


def test_verification_confirms_a_dead_dt_and_closes_a_dt_whose_meters_answer_as_a_false_alarm(verifying):
    stack = verifying
    stack.start()
    stack.wait_consuming()
    real, false = stack.topo.feeders[stack.feeder(1)].dts[0], stack.topo.feeders[stack.feeder(3)].dts[0]
    # Given one DT really out (its meters do not answer the HES) and one whose gasps are false
    stack.out_at_hes(stack.dt_meters(real))
    t0 = now()
    # When both DTs' meters gasp
    stack.send([(m, 101, t0 + i * 0.01) for i, m in enumerate(stack.dt_meters(real) + stack.dt_meters(false))])
    # Then the real one is created and then verified (changed, outageKind verified)
    def settled(os):
        by_eq = {o["Outage"]["Equipment"]["mRID"]: o for o in os}
        r, f = by_eq.get(real), by_eq.get(false)
        return r and f and r["Outage"]["outageKind"] == "verified" and f["verb"] == "closed" and (r, f)
    r, f = stack.wait_adms(settled, 60, "the verification of both")
    assert [m["verb"] for m in r["messages"]] == ["created", "changed"]
    assert r["open"] and r["Outage"]["verification"]["dead"]
    # And the false one is closed as a false alarm, with its reason, and no end of an interruption
    assert [m["verb"] for m in f["messages"]] == ["created", "closed"]
    assert f["Outage"]["closedReason"].startswith("false alarm: 3 of 3")
    assert f["Outage"]["actualPeriod"]["end"] is None
    # And the timeline of `gridbus outages show` says who was asked and what they answered
    rows = stack.store().timeline(f["mRID"])
    assert [r_["what"] for r_ in rows if r_["what"].startswith("verification")] == [
        "verification asked", "verification answered"]
