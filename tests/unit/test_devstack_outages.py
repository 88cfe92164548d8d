"""Use case 3 in the dev stack: `gridbus dev up` runs the outage correlator, makes the ADMS's
least-privilege broker user (its password in dev.env, owner-only) and gives it to the ADMS
stand-in alone; the demo's outage step trips a feeder through HES-A's alarm JSON.  No stack is
started here: the pieces are checked as `dev up` and the demo wire them."""
from __future__ import annotations

import datetime as dt
import random
import stat
import time

import pytest

from bus.errors import GridbusError
from bus.broker_users import reads_of
from bus.outages.events import from_canonical
from bus.routes import load_routes
from bus.transform import TransformContext
from gridbus_dev import devstack
from gridbus_dev.cli import dev as dev_cli
from gridbus_dev.cli import demo_outages
from gridbus_dev.cli.demo_alarms import TRIPPED
from gridbus_dev.cli.dev import SERVICES, dev_env, outage_services
from simulators.network import SHARED_NETWORK_ENV, NetworkModel
from tests.support import ROOT, ROUTE_ENV
from transformers.hes_alarm_json import HesAlarmJsonDecoder


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("GRIDBUS_HOME", str(tmp_path))
    for var in SHARED_NETWORK_ENV:
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def shipped_routes():
    return load_routes([ROOT / "routes"], env=ROUTE_ENV)


def test_dev_up_runs_the_correlator_and_lists_and_stops_it_with_the_rest(home):
    # Given the shipped route files (routes/uc3-outages.yaml has a route of method correlate)
    services = outage_services(shipped_routes())
    # Then dev up starts `gridbus outages run` (every partition, the router and the ticker) ...
    assert [(s.name, s.argv[-2:]) for s in services] == [("outages", ["outages", "run"])]
    assert services[0].argv[:3] == [devstack.python(), "-m", "bus.cli.main"]
    # ... which `dev status` lists and `dev down` stops, as every other process
    assert "outages" in SERVICES
    # and with route files that have no correlate route, nothing
    assert outage_services(shipped_routes().select(["hes-a-alarms"])) == []


def test_the_adms_queue_of_dev_env_is_the_one_the_shipped_route_lets_the_adms_user_read(home):
    # Given the environment dev up gives its processes, and the shipped routes
    values = dev_env()
    # Then the ADMS stand-in's queue is the amqp destination's queue, the only one user adms may read
    assert values["ADMS_AMQP_QUEUE"] == dev_cli.ADMS_QUEUE
    assert reads_of(shipped_routes(), dev_cli.ADMS_USER) == (dev_cli.ADMS_QUEUE,)
    # and no secret is computed into it (the password is made by the broker user, kept in dev.env)
    assert "ADMS_AMQP_URL" not in values


def test_the_adms_broker_url_is_its_own_user_on_the_dev_vhost():
    url = dev_cli._adms_url("p/w+d=", 5679)
    assert url == "amqp://adms:p%2Fw%2Bd%3D@127.0.0.1:5679/%2F"


def test_the_password_is_kept_in_dev_env_owner_only_and_survives_a_rewrite(home):
    # Given dev up writing dev.env with the ADMS's broker URL
    values = dev_env()
    dev_cli._write_env_file({**values, "ADMS_AMQP_URL": "amqp://adms:secret@127.0.0.1:5679/%2F"})
    path = home / "dev.env"
    # Then only its owner may read it
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # When the next dev up writes the addresses first (before the broker runs)
    dev_cli._write_env_file(values)
    # Then the password is still there, and settings read every value back
    assert dev_cli._read_env_file()["ADMS_AMQP_URL"] == "amqp://adms:secret@127.0.0.1:5679/%2F"
    assert dev_cli._read_env_file()["GIS_URL"] == values["GIS_URL"]
    # and a new password replaces it
    dev_cli._write_env_file({**values, "ADMS_AMQP_URL": "amqp://adms:new@127.0.0.1:5679/%2F"})
    assert dev_cli._read_env_file()["ADMS_AMQP_URL"].endswith(":new@127.0.0.1:5679/%2F")


class FakeProcs:
    def __init__(self):
        self.stopped = []

    def stop(self, name):
        self.stopped.append(name)
        return True


class FakeUsers:
    added: list = []

    def __init__(self, admin, routes):
        self.routes = routes

    def add(self, system):
        FakeUsers.added.append(system)
        return "fresh-password"


@pytest.fixture
def fake_broker(monkeypatch):
    FakeUsers.added = []
    monkeypatch.setattr("bus.broker_users.SourceUsers", FakeUsers)
    monkeypatch.setattr("bus.broker_admin.BrokerAdmin", lambda *a, **kw: None)
    return FakeUsers


def test_a_stored_password_that_logs_in_is_kept_and_the_running_adms_left_alone(home, fake_broker, monkeypatch):
    # Given a dev.env with the ADMS's URL from the last dev up, and a broker that accepts it
    dev_cli._write_env_file({**dev_env(), "ADMS_AMQP_URL": "amqp://adms:old@127.0.0.1:5679/%2F"})
    monkeypatch.setattr(dev_cli, "_can_log_in", lambda url: True)
    procs = FakeProcs()
    # When dev up runs again
    url, new = dev_cli._adms_broker_user(shipped_routes(), procs)
    # Then the user keeps its password and the ADMS stand-in keeps running
    assert (url, new) == ("amqp://adms:old@127.0.0.1:5679/%2F", False)
    assert fake_broker.added == [] and procs.stopped == []


@pytest.mark.parametrize("stored", [None, "amqp://adms:stale@127.0.0.1:5679/%2F"])
def test_a_missing_or_refused_password_is_made_anew_and_the_adms_restarted_with_it(home, fake_broker, monkeypatch,
                                                                                  stored):
    # Given no password yet, or one the broker refuses (a new node under $GRIDBUS_HOME)
    dev_cli._write_env_file({**dev_env(), **({"ADMS_AMQP_URL": stored} if stored else {})})
    monkeypatch.setattr(dev_cli, "_can_log_in", lambda url: False)
    procs = FakeProcs()
    # When dev up makes the ADMS's broker user
    url, new = dev_cli._adms_broker_user(shipped_routes(), procs)
    # Then `broker users add adms` made a password, and the stand-in is stopped to start with it
    assert fake_broker.added == ["adms"] and new
    assert url == f"amqp://adms:fresh-password@127.0.0.1:{dev_cli.DEV_AMQP_PORT}/%2F"
    assert procs.stopped == ["adms"]


def test_only_the_adms_stand_in_gets_its_broker_url(home):
    # Given the environment of dev up's processes, with the ADMS's URL in it
    values = {**dev_env(), "ADMS_AMQP_URL": "amqp://adms:secret@127.0.0.1:5679/%2F"}
    env = {"PATH": "/bin", **values}
    # Then the ADMS stand-in consumes its queue over AMQP as user adms ...
    adms = dev_cli._env_of("adms", env, values)
    assert adms["ADMS_AMQP_URL"] == values["ADMS_AMQP_URL"] and adms["ADMS_AMQP_QUEUE"] == "adms.outages"
    # ... and no other process sees its password (nor consumes its queue)
    for name in ("outages", "worker", "gateway", "mdms-1", "hes-a"):
        other = dev_cli._env_of(name, env, values)
        assert "ADMS_AMQP_URL" not in other and "ADMS_AMQP_QUEUE" not in other and other["PATH"] == "/bin"
    # and without a broker user (no route delivers to the ADMS over AMQP) the ADMS takes REST only
    assert "ADMS_AMQP_URL" not in dev_cli._env_of("adms", env, {k: v for k, v in values.items()
                                                               if k != "ADMS_AMQP_URL"})


def test_the_demo_trip_is_hes_a_alarm_json_that_the_route_decodes_into_outage_events():
    # Given the demo's last gasps and first breaths of three meters, as HES-A sends them
    at = time.time()
    meters = ["UPM00010001", "UPM00010002", "DTM00000001"]
    sent = demo_outages.alarms(meters, 101, at, 3.0, random.Random(1)) + \
        demo_outages.alarms(meters, 102, at + 20, 2.0, random.Random(2))
    # When the hes-a-alarms route's transformer decodes them, as the worker does
    context = TransformContext("hes-a-alarms", "hes-a", "msg-1", "corr-1")
    doc = HesAlarmJsonDecoder()(sent, context)
    events = from_canonical(doc)
    # Then every one is an outage event of its meter, at its meter time (within the spread)
    assert sorted((e.meter, e.code) for e in events) == sorted((m, c) for m in meters for c in (101, 102))
    assert all(at - 3 <= e.at <= at for e in events if e.code == 101)
    assert all(at + 17 <= e.at <= at + 20 for e in events if e.code == 102)
    # and each has an id of its own (the gateway drops a repeated alarm_id), new with each run
    assert len({a["alarm_id"] for a in sent}) == len(sent)
    assert all(a["occurred_at"].endswith("+05:30") for a in sent)


@pytest.fixture
def network(tmp_path):
    """The dev stack's shared network in a network store, with one DT moved from FDR-0003 to
    FDR-0004 ten minutes ago, as the demo's network step does."""
    from bus.network.store import open_store

    model = NetworkModel.generate(**devstack.DEV_NETWORK)
    store = open_store(tmp_path / "network.sqlite")
    store.apply(model.creates())
    first = model.feeder_tree()   # the network as generated (the alarm step's trip uses it)
    moved_at = time.time() - 600
    store.apply(model.dt_moves(count=1, from_feeder="FDR-0003", to_feeder="FDR-0004",
                               at=dt.datetime.fromtimestamp(moved_at, dt.timezone.utc).isoformat()))
    return first, store


def test_the_demo_trips_a_feeder_the_alarm_step_does_not_without_a_dt_that_moved_lately(network):
    from bus.outages.topology import StoreTopology

    tree, store = network
    moved = sorted(set(store.children("FDR-0004")) - set(tree["FDR-0004"]))
    assert len(moved) == 1
    avoid = {f: list(tree[f]) for f in TRIPPED}
    now = time.time()
    # When the demo picks its feeder with FDR-0003 busy (an open outage)
    feeder = demo_outages.pick_feeder(store, StoreTopology(store), list(tree), now,
                                      busy=lambda f: f == "FDR-0003", avoid=avoid)
    # Then it is FDR-0004, not a feeder the alarm step trips, and the DT that came onto it lately
    # stays up (the running correlator may still place it under FDR-0003)
    assert feeder.mrid == "FDR-0004" and feeder.skipped == moved
    assert set(feeder.dts) == set(tree["FDR-0004"]) and moved[0] not in feeder.dts
    # and its meters are the head meter, the DT meters and the consumers of those DTs
    assert feeder.head_meter and feeder.meters[0] == feeder.head_meter
    assert set(feeder.consumers) == {m for d in tree["FDR-0004"].values() for m in d}
    left = feeder.left_out()
    assert len(left) == demo_outages.LEFT_OUT and len({store.dts_of(left)[m] for m in left}) == 1
    # When FDR-0004 is busy too, Then no feeder is left whose DTs are not the alarm step's (its
    # trip gasps them wherever they hang), and the demo says so rather than tripping one of them
    with pytest.raises(GridbusError, match="no feeder among FDR-0001, FDR-0002, FDR-0003, FDR-0004"):
        demo_outages.pick_feeder(store, StoreTopology(store), list(tree), now,
                                 busy=lambda f: f in ("FDR-0003", "FDR-0004"), avoid=avoid)
