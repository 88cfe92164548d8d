"""Routes of method ``ordered`` (the billing routes of network updates): loaded and checked by the
route loader like every route, compiled to the partition queues delivery_topology.py names, never
run by the Celery worker, and handed to ``gridbus network deliver`` as BillingRoutes."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from click.testing import CliRunner

from bus import naming
from bus.cli import routes as routes_cli
from bus.errors import RouteValidationError
from bus.network import delivery_topology as topo
from bus.network.delivery_routes import BillingRoute, load_billing_routes
from bus.routes import load_routes
from bus.topology import Topology, compile_topology
from bus.worker.app import celery_queues
from tests.support import ROOT, ROUTE_ENV

SHIPPED = ROOT / "routes" / "uc9-billing.yaml"

GOOD = """\
use_case: 9
routes:
  - id: network-to-billing-1
    source: {system: network, connector: network-store}
    method: ordered
    transform: [billing_network_json]
    destinations:
      - {system: billing-1, connector: billing-rest, url: "${BILLING_1_URL}/consumers/updates"}
    ordered: {partitions: 3, batch_max: 100, window_ms: 50}
    retry: {first_delay_s: 0.2, max_delay_s: 5}
"""


def write(tmp_path: Path, text: str, name: str = "uc9-billing.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def errors_of(path: Path) -> list[str]:
    with pytest.raises(RouteValidationError) as caught:
        load_routes([path], env=ROUTE_ENV)
    return [str(e) for e in caught.value.errors]


def test_the_shipped_billing_routes_load_as_ordered_routes_of_the_route_table():
    # Given the repository's routes/ folder and the addresses a deployment gives
    # When it is loaded as every gridbus command loads it
    table = load_routes([ROOT / "routes"], env=ROUTE_ENV)
    # Then both billing routes are in it, ordered, each with its own transformer and partitions
    billing = {r.id: r for r in table.ordered_routes()}
    assert set(billing) == {"network-to-billing-1", "network-to-billing-2"}
    assert billing["network-to-billing-1"].transform == ("billing_network_json",)
    assert billing["network-to-billing-2"].transform == ("billing_network_xml",)
    assert all(r.ordered.partitions == 4 and r.file == str(SHIPPED) for r in billing.values())
    # and routes/ordered/ is gone: one folder of route files, one loader
    assert not (ROOT / "routes" / "ordered").exists()


def test_an_ordered_route_becomes_the_billing_route_the_delivery_process_reads(tmp_path):
    # Given an ordered route with its options set
    path = write(tmp_path, GOOD)
    # When the delivery process's routes are loaded from it
    [route] = load_billing_routes(path, ROUTE_ENV)
    # Then every option reaches the BillingRoute, the destination as the connector sends with it
    assert route == BillingRoute(
        id="network-to-billing-1", transform="billing_network_json",
        destination={"system": "billing-1", "connector": "billing-rest",
                     "url": "http://127.0.0.1:9/consumers/updates", "timeout_s": 10.0},
        partitions=3, batch_max=100, window_ms=50, first_delay_s=0.2, max_delay_s=5.0)
    assert route.system == "billing-1" and route.line == 3


def test_defaults_are_those_the_delivery_process_had(tmp_path):
    # Given an ordered route without ordered: or retry:
    path = write(tmp_path, GOOD.replace("    ordered: {partitions: 3, batch_max: 100, window_ms: 50}\n", "")
                 .replace("    retry: {first_delay_s: 0.2, max_delay_s: 5}\n", ""))
    # When loaded  Then 4 partitions, batches of 500 within 200 ms, retries from 0.5 s to 30 s
    [route] = load_billing_routes(path, ROUTE_ENV)
    assert (route.partitions, route.batch_max, route.window_ms, route.first_delay_s, route.max_delay_s) == \
        (4, 500, 200, 0.5, 30.0)


def test_the_worker_never_gets_an_ordered_route():
    # Given the shipped routes
    table = load_routes([ROOT / "routes"], env=ROUTE_ENV)
    # When a worker of any kind takes its routes, and its Celery queues are built from them
    for kind in ("all", "requests", "deliveries"):
        worker_routes = table.of_kind(kind)
        # Then no ordered route is among them (Celery's pool and broker retries would reorder)
        assert not any(r.method == "ordered" for r in worker_routes)
        assert not any(".ordered." in q.name or "network-to-billing" in q.name for q in celery_queues(worker_routes))
    # and a worker started for an ordered route alone finds nothing to run
    assert len(table.select(["network-to-billing-1"]).of_kind("all")) == 0


def test_plan_and_deliver_declare_the_same_objects_by_the_same_names():
    # Given the shipped routes compiled as `routes plan/apply` compile them
    table = load_routes([ROOT / "routes"], env=ROUTE_ENV)
    compiled = compile_topology(table)
    # When the delivery process's own declaration is described for the same routes
    declared = Topology()
    for route in table.ordered_routes():
        topo.add_route(declared, route.id, route.ordered.partitions)
    # Then every object it declares is in the plan, with the same arguments
    for name, spec in declared.queues.items():
        assert compiled.queues[name] == spec
    assert compiled.exchanges[topo.UPDATES_EXCHANGE] == declared.exchanges[topo.UPDATES_EXCHANGE]
    assert declared.bindings <= compiled.bindings
    # and they are the partition queues by delivery_topology's names, each bound to its slots
    rid = "network-to-billing-1"
    for p in range(4):
        queue = topo.partition_queue_name(rid, p)
        assert compiled.queues[queue].args == {"x-queue-type": "quorum", "x-single-active-consumer": True}
        keys = {b.routing_key for b in compiled.bindings if b.destination == queue}
        assert keys == {topo.slot_key(s) for s in topo.partition_slots(p, 4)}
    replays = topo.replays_queue_name(rid)
    assert any(b.source == naming.INGRESS_EXCHANGE and b.destination == replays
               and b.routing_key == naming.route_binding_key(rid) for b in compiled.bindings)
    assert naming.dead_letter_queue_name(rid) in compiled.queues
    # and nothing of Celery's: no route queue, no dead-letter exchange, no delayed-retry binding
    assert naming.route_queue_name(rid) not in compiled.queues
    assert naming.dead_letter_exchange_name(rid) not in compiled.exchanges
    assert not any(b.routing_key == naming.route_binding_key(rid) and b.source == "celery_delayed_delivery"
                   for b in compiled.bindings)


@pytest.mark.parametrize("change, line, words", [
    # partitions outside 1..64 (a slot per partition at most)
    (("partitions: 3", "partitions: 0"), 9, "ordered.partitions: Must be greater than or equal to 1"),
    (("partitions: 3", "partitions: 65"), 9, "less than or equal to 64"),
    (("batch_max: 100", "batch_max: 0"), 9, "ordered.batch_max"),
    (("window_ms: 50", "window_ms: 50, windw_ms: 3"), 9, "unknown key 'windw_ms'"),
    # an unknown key of the route, with the schema's words
    (("    method: ordered\n", "    method: ordered\n    partitions: 4\n"), 6, "unknown key 'partitions'"),
    (("[billing_network_json]", "[billing_network_jsn]"), 6,
     "unknown transformer 'billing_network_jsn' (did you mean 'billing_network_json'?)"),
    (("[billing_network_json]", "[billing_network_json, to_cim_xml]"), 6, "exactly one transformer"),
    (("connector: billing-rest", "connector: billing-rst"), 8, "did you mean 'billing-rest'"),
    (("connector: billing-rest", "connector: rest"), 8, "cannot take an ordered route's batches"),
    (("connector: network-store}", "connector: file-drop}"), 4, "source is the network store's outbox"),
    (("connector: network-store}", "connector: network-store, path: x}"), 4, "unknown key 'path'"),
    (("first_delay_s: 0.2", "first_delay_s: 0.2, attempts: 3"), 10, "unknown key 'attempts'"),
    (("max_delay_s: 5", "max_delay_s: 0.1"), 10, "max_delay_s must not be smaller than first_delay_s"),
    (("    retry:", "    queue: {delivery_limit: 5}\n    retry:"), 10, "queues are its partitions"),
])
def test_a_bad_ordered_route_is_named_with_file_and_line(tmp_path, change, line, words):
    # Given an ordered route with one mistake
    old, new = change
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    # When it is loaded  Then the mistake is reported at its file and line
    errors = errors_of(path)
    assert any(e.startswith(f"{path}:{line}: ") and words in e for e in errors), errors


def test_ordered_options_on_a_route_of_another_method_are_refused(tmp_path):
    # Given a push route that carries an ordered: block
    path = write(tmp_path, """\
        routes:
          - id: hes-a-alarms
            source: {system: hes-a, connector: http-push, path: hes-a/alarms}
            method: push
            transform: [hes_alarm_json, to_mdms_json]
            destinations:
              - {system: mdms-1, connector: rest, url: "http://127.0.0.1:9"}
            ordered: {partitions: 4}
        """)
    # When loaded  Then it is an error at that line
    assert errors_of(path) == [f"{path}:8: ordered: only a route of method 'ordered' has it"]


def test_the_network_store_is_no_source_of_other_methods(tmp_path):
    # Given a push route that claims the network store as its source (nothing would feed it)
    path = write(tmp_path, GOOD.replace("method: ordered", "method: push")
                 .replace("    ordered: {partitions: 3, batch_max: 100, window_ms: 50}\n", "")
                 .replace("    retry: {first_delay_s: 0.2, max_delay_s: 5}\n", ""))
    # When loaded  Then the connector is refused as a source
    assert f"{path}:4: connector 'network-store' cannot be a source" in errors_of(path)


def test_a_billing_destination_is_refused_on_a_route_the_worker_would_run(tmp_path):
    # Given a push route delivering to billing-rest (the worker has no way to call it: it sends batches)
    path = write(tmp_path, """\
        routes:
          - id: hes-a-alarms
            source: {system: hes-a, connector: http-push, path: hes-a/alarms}
            method: push
            transform: [hes_alarm_json, to_mdms_json]
            destinations:
              - {system: billing-1, connector: billing-rest, url: "http://127.0.0.1:9"}
        """)
    # When loaded  Then the destination's line says it takes only ordered routes' batches
    assert errors_of(path) == [f"{path}:7: connector 'billing-rest' takes only an ordered route's batches "
                               "(method: ordered)"]


def test_two_ordered_routes_may_share_the_outbox_but_not_an_id(tmp_path):
    # Given the shipped billing routes twice, once under other ids
    other = SHIPPED.read_text().replace("id: network-to-billing-", "id: network-to-billing-copy-")
    write(tmp_path, other, "copy.yaml")
    (tmp_path / "uc9-billing.yaml").write_text(SHIPPED.read_text())
    # When loaded  Then both pairs read the same outbox (each gets every update) without a claim error
    assert len(load_routes([tmp_path], env=ROUTE_ENV).ordered_routes()) == 4
    # but the same id twice is an error, as for any route
    (tmp_path / "copy.yaml").write_text(SHIPPED.read_text())
    assert any("duplicate route id 'network-to-billing-1'" in e for e in errors_of(tmp_path))


def test_routes_validate_names_file_and_line_of_a_bad_ordered_route(tmp_path):
    # Given an ordered route with partitions 0, an unknown key and an unknown transformer
    path = write(tmp_path, GOOD.replace("partitions: 3", "partitions: 0")
                 .replace("    method: ordered\n", "    method: ordered\n    partitons: 4\n")
                 .replace("[billing_network_json]", "[billing_network_jsn]"))
    # When `gridbus routes validate` checks it
    done = subprocess.run([sys.executable, "-m", "bus.cli.main", "routes", "validate", str(path)],
                          capture_output=True, text=True, env={**ROUTE_ENV, "GRIDBUS_HOME": str(tmp_path),
                                                               "PATH": "/usr/bin:/bin"}, cwd=ROOT)
    # Then it exits 1 with each problem at its file and line
    assert done.returncode == 1
    assert f"{path}:6: unknown key 'partitons'" in done.stderr
    assert f"{path}:7: unknown transformer 'billing_network_jsn'" in done.stderr
    assert f"{path}:10: ordered.partitions: Must be greater than or equal to 1" in done.stderr


@pytest.fixture
def shipped_env(tmp_path, monkeypatch):
    """The shipped routes and their addresses, as a deployment's environment gives them."""
    for name, value in {**ROUTE_ENV, "GRIDBUS_HOME": str(tmp_path), "GRIDBUS_ENV_FILE": str(tmp_path / "none.env"),
                        "GRIDBUS_ROUTES": str(ROOT / "routes")}.items():
        monkeypatch.setenv(name, value)


def test_routes_list_and_show_know_the_ordered_routes_and_their_queues(shipped_env):
    # When the shipped routes are listed as a script reads them
    listed = json.loads(CliRunner().invoke(routes_cli.routes_group, ["list", "--json"]).output)
    billing = {r["id"]: r for r in listed if r["method"] == "ordered"}
    # Then both billing routes are there, run by `network deliver`, with their partition queues
    assert set(billing) == {"network-to-billing-1", "network-to-billing-2"}
    one = billing["network-to-billing-1"]
    assert one["kind"] == "ordered" and one["ordered"] == {"partitions": 4, "batch_max": 500, "window_ms": 200}
    assert one["queues"] == [topo.partition_queue_name("network-to-billing-1", p) for p in range(4)] \
        + [topo.replays_queue_name("network-to-billing-1")]
    assert one["retry"]["in_place"] and one["retry"]["max_delay_s"] == 30
    # and `routes show` names what runs it and lists its own broker objects
    done = CliRunner().invoke(routes_cli.routes_group, ["show", "network-to-billing-1"])
    assert done.exit_code == 0, done.output
    assert "gridbus network deliver" in done.output
    assert f"    {topo.partition_queue_name('network-to-billing-1', 3)}\n" in done.output
    assert "gridbus.network.updates -> gridbus.ordered.network-to-billing-1.0 [slot.0]" in done.output
    shown = json.loads(CliRunner().invoke(routes_cli.routes_group, ["show", "network-to-billing-2", "--json"]).output)
    assert shown["broker"]["exchanges"] == [topo.UPDATES_EXCHANGE]
    assert len(shown["broker"]["bindings"]) == topo.SLOTS + 1  # every slot once, and the replays binding
