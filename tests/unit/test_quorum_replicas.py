"""GRIDBUS_QUORUM_REPLICAS: every quorum queue of the routes starts on that many nodes
(``x-quorum-initial-group-size``), and nothing changes when it is unset."""
from __future__ import annotations

from pathlib import Path

import pytest

from bus.errors import ConfigError
from bus.network import delivery_topology
from bus.routes import load_routes
from bus.topology import compile_topology
from bus.topology.compile import replicate
from bus.topology.model import Topology
from bus.topology.replicas import ARGUMENT, SETTING, quorum_replicas
from bus.worker.app import celery_queues
from tests.support import ROUTE_ENV

ROUTES = Path(__file__).parents[2] / "routes"


@pytest.fixture
def table():
    return load_routes([ROUTES], env=ROUTE_ENV)


@pytest.fixture
def no_env_file(monkeypatch, tmp_path):
    """The setting comes from the process environment alone (no dev.env of a developer's stack)."""
    monkeypatch.setenv("GRIDBUS_ENV_FILE", str(tmp_path / "none.env"))
    monkeypatch.delenv(SETTING, raising=False)


def _quorum(topology) -> dict:
    return {name: q.args for name, q in topology.queues.items() if q.args.get("x-queue-type") == "quorum"}


def test_unset_no_queue_gets_the_argument_so_existing_queues_stay_equivalent(table, no_env_file):
    # Given no GRIDBUS_QUORUM_REPLICAS  When the shipped routes compile
    topology = compile_topology(table)
    # Then no queue names an initial group size (the broker's default: every node)
    assert not [name for name, args in _quorum(topology).items() if ARGUMENT in args]
    # and the arguments are those of a compile that asks for none
    assert topology.queues == compile_topology(table, replicas=None).queues


def test_every_quorum_queue_of_ours_starts_on_the_chosen_number_of_nodes(table, no_env_file, monkeypatch):
    # Given GRIDBUS_QUORUM_REPLICAS=2
    monkeypatch.setenv(SETTING, "2")
    # When the shipped routes compile
    queues = _quorum(compile_topology(table))
    # Then route queues, dead-letter queues, partitions, replies and the ADMS's amqp queue say 2
    for kind in ("gridbus.route.", "gridbus.dlq.", "gridbus.ordered.", "gridbus.outages.", "adms.outages",
                 "gridbus.replies", "gridbus.trace", "gridbus.unroutable"):
        named = [n for n in queues if n.startswith(kind)]
        assert named, kind
        assert all(queues[n][ARGUMENT] == 2 for n in named), kind
    # but Celery's delay levels, which every worker declares itself with kombu's arguments, do not
    assert queues["celery_delayed_0"].get(ARGUMENT) is None and queues["celery_delayed_27"].get(ARGUMENT) is None


def test_the_worker_and_the_ordered_delivery_declare_what_routes_apply_declares(table, no_env_file, monkeypatch):
    # Given GRIDBUS_QUORUM_REPLICAS=3 and the routes as `routes apply` compiles them
    monkeypatch.setenv(SETTING, "3")
    compiled = compile_topology(table)
    # When the Celery worker builds its queues, Then each has the same arguments (no PRECONDITION_FAILED)
    for queue in celery_queues(table.of_kind("all")):
        assert queue.queue_arguments == compiled.queues[queue.name].args
        assert queue.queue_arguments[ARGUMENT] == 3
    # and the network delivery's own declaration (delivery_topology.declare) agrees too
    declared = Topology()
    for route in table.ordered_routes():
        delivery_topology.add_route(declared, route.id, route.ordered.partitions)
    for name, spec in replicate(declared).queues.items():
        assert compiled.queues[name] == spec


def test_an_explicit_count_wins_over_the_setting(table, no_env_file, monkeypatch):
    # Given the setting says 3, When a caller compiles with replicas=1, Then 1
    monkeypatch.setenv(SETTING, "3")
    assert {args[ARGUMENT] for name, args in _quorum(compile_topology(table, replicas=1)).items()
            if not name.startswith("celery_delayed_")} == {1}


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", "3 nodes"])
def test_a_setting_that_is_not_a_whole_number_of_nodes_is_refused_naming_it(value):
    # Given GRIDBUS_QUORUM_REPLICAS with a bad value  When read  Then a ConfigError names it
    with pytest.raises(ConfigError, match=SETTING):
        quorum_replicas({SETTING: value})


def test_a_blank_setting_is_unset_and_spaces_around_a_number_are_fine():
    assert quorum_replicas({SETTING: ""}) is None and quorum_replicas({}) is None
    assert quorum_replicas({SETTING: " 5 "}) == 5
