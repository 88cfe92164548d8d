"""docker/compose.yaml is checked here, since no Docker engine runs in CI: it starts every role
`gridbus dev up` starts, each command parses, and the shipped routes load with its environment."""
from __future__ import annotations

import importlib
from pathlib import Path

import click
import pytest
import yaml

from gridbus_dev.cli.dev import SERVICES
from bus.cli.main import cli as gridbus
from bus.routes import load_routes

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())["services"]
GRIDBUS_ROLES = {name: s["command"] for name, s in COMPOSE.items() if "command" in s}
STAND_INS = {name: s["entrypoint"] for name, s in COMPOSE.items() if s.get("entrypoint", [None])[0] == "python"}


def parsed(args: list[str]) -> click.Context:
    """``gridbus args`` as click parses it; an unknown command or option raises."""
    root = click.Context(gridbus, info_name="gridbus")
    command = gridbus.get_command(root, args[0])
    assert command is not None, f"no command gridbus {args[0]}"
    return command.make_context(args[0], list(args[1:]), parent=root)


def test_compose_runs_every_role_of_the_dev_stack():
    # Given the roles and stand-ins `gridbus dev up` starts
    # Then compose has a service of the same name for each
    assert set(SERVICES) <= set(COMPOSE), set(SERVICES) - set(COMPOSE)
    # and the request routes have an event-loop worker of their own, the rest a worker too
    assert parsed(GRIDBUS_ROLES["worker-requests"]).params["kind"] == "requests"
    assert parsed(GRIDBUS_ROLES["worker-requests"]).params["pool"] == "asyncio"
    assert parsed(GRIDBUS_ROLES["worker"]).params["kind"] == "deliveries"


@pytest.mark.parametrize("service", sorted(GRIDBUS_ROLES))
def test_each_gridbus_command_in_compose_parses(service):
    # Given a service's command line, When click parses it, Then it names a real command and options
    ctx = parsed(GRIDBUS_ROLES[service])
    assert ctx.info_name == GRIDBUS_ROLES[service][0]


@pytest.mark.parametrize("service", sorted(STAND_INS))
def test_each_stand_in_command_in_compose_parses(service, monkeypatch):
    # Given a stand-in's entry point, When its own argument parser reads it (no server started)
    _, _, module_name, *args = STAND_INS[service]
    module = importlib.import_module(module_name)
    started = []
    monkeypatch.setattr("simulators.control.serve_until_signalled", lambda server: started.append(server) or 0)
    monkeypatch.setattr(module, "serve_until_signalled", lambda server: started.append(server) or 0, raising=False)
    for name in [n for n in vars(module) if n.endswith("Server") and isinstance(getattr(module, n), type)]:
        monkeypatch.setattr(module, name, lambda *a, **kw: a)
    # Then it parses, and the stand-in listens where the gridbus services are told to find it
    assert module.main(args) == 0
    host, port, name = started[0][:3]
    assert (host, port, name) == ("0.0.0.0", 8080, service)


def test_the_shipped_routes_load_with_the_environment_compose_gives_gridbus():
    # Given the environment every gridbus service gets in compose
    env = COMPOSE["worker"]["environment"]
    # When the shipped route files load with it, Then no variable is missing and every value is valid
    table = load_routes([ROOT / "routes"], env=env)
    assert len(table.of_kind("requests")) and len(table.of_kind("deliveries"))
    # and every stand-in URL points at a compose service
    for var, url in env.items():
        if var.endswith("_URL") and not var.startswith("GRIDBUS_"):
            assert url.split("//")[1].split(":")[0] in COMPOSE, var


def test_gridbus_services_run_the_runtime_image_and_stand_ins_the_development_one():
    # Given the Dockerfile's stages: the runtime wheel alone, and the stand-ins with gridbus-dev
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    runtime = dockerfile.split("AS runtime")[1]
    assert "gridbus-*.whl" in runtime and "gridbus_dev" not in runtime and "/dist/dev" not in runtime
    assert "gridbus_dev-*.whl" in dockerfile.split("AS stand-ins")[1].split("AS runtime")[0]
    # Then every gridbus role builds the runtime target and every stand-in the stand-ins target
    for name in GRIDBUS_ROLES:
        assert COMPOSE[name]["build"]["target"] == "runtime", name
    for name in STAND_INS:
        assert COMPOSE[name]["build"]["target"] == "stand-ins", name


def test_compose_runs_the_outage_correlator_and_the_adms_reads_its_queue_as_its_own_user():
    # Given the outage correlator's service (use case 3), as `gridbus dev up` runs it
    ctx = parsed(GRIDBUS_ROLES["outages"])
    # Then it is `gridbus outages run` on the runtime image, over every partition (no --partitions)
    assert GRIDBUS_ROLES["outages"][:2] == ["outages", "run"] and ctx.info_name == "outages"
    sub = ctx.command.get_command(ctx, "run").make_context("run", GRIDBUS_ROLES["outages"][2:], parent=ctx)
    assert sub.params["partitions_text"] is None and not sub.params["no_router"]
    # and the shipped routes give it a route to run, whose amqp destination only the ADMS's
    # broker user may read
    from bus.broker_users import reads_of
    table = load_routes([ROOT / "routes"], env=COMPOSE["outages"]["environment"])
    assert [r.id for r in table.correlated_routes()] == ["outages-to-adms"]
    assert reads_of(table, "adms") == ("adms.outages",)
    # and the ADMS stand-in takes its broker URL and queue from docker/.env, both or neither
    assert set(COMPOSE["adms"]["environment"]) == {"ADMS_AMQP_URL", "ADMS_AMQP_QUEUE"}
    assert all(v.endswith(":-}") for v in COMPOSE["adms"]["environment"].values())


RABBITMQ_NODES = sorted(name for name in COMPOSE if name.startswith("rabbitmq-"))


def test_compose_runs_a_three_node_rabbitmq_cluster_that_every_gridbus_service_reaches_by_all_addresses():
    # Given compose's RabbitMQ services
    # Then there are three nodes of 3.10 (Debian's version, which the tests run), each its own host
    # name (its node name rabbit@<hostname>) and volume, all with one Erlang cookie
    assert RABBITMQ_NODES == ["rabbitmq-1", "rabbitmq-2", "rabbitmq-3"]
    nodes = [COMPOSE[name] for name in RABBITMQ_NODES]
    assert all(n["image"] == "rabbitmq:3.10-management" for n in nodes)
    assert [n["hostname"] for n in nodes] == RABBITMQ_NODES
    assert len({n["volumes"][0].split(":")[0] for n in nodes}) == 3
    assert len({n["environment"]["RABBITMQ_ERLANG_COOKIE"] for n in nodes}) == 1
    # and they cluster by classic-config peer discovery listing the three, nodes 2 and 3 starting
    # once node 1 is healthy (blank 3.10 nodes booted side by side may each form a cluster of one)
    conf_mounts = {v.split(":")[0] for n in nodes for v in n["volumes"] if v.endswith("20-cluster.conf:ro")}
    assert conf_mounts == {"./rabbitmq/cluster.conf"}
    conf = dict(line.split(" = ") for line in (ROOT / "docker" / "rabbitmq" / "cluster.conf").read_text().splitlines()
                if line and not line.startswith("#"))
    assert conf["cluster_formation.peer_discovery_backend"] == "classic_config"
    assert {v for k, v in conf.items() if k.startswith("cluster_formation.classic_config.nodes.")} == \
        {f"rabbit@{name}" for name in RABBITMQ_NODES}
    assert "depends_on" not in COMPOSE["rabbitmq-1"]
    assert all(COMPOSE[n]["depends_on"] == {"rabbitmq-1": {"condition": "service_healthy"}}
               for n in RABBITMQ_NODES[1:])
    # and every gridbus service gets the three addresses in the one broker setting, and waits for them
    from bus.messaging.addresses import broker_addresses
    for name in GRIDBUS_ROLES:
        env = COMPOSE[name]["environment"]
        assert [(a.host, a.port) for a in broker_addresses(env["GRIDBUS_BROKER_URL"])] == \
            [(node, 5672) for node in RABBITMQ_NODES], name
        assert set(RABBITMQ_NODES) <= set(COMPOSE[name]["depends_on"]), name


def test_compose_runs_postgresql_and_every_gridbus_service_keeps_its_shared_state_there():
    # Given compose's PostgreSQL service
    pg = COMPOSE["postgres"]
    # Then it is PostgreSQL 16 with a health check, its own volume and a database for gridbus
    assert pg["image"] == "postgres:16" and "pg_isready" in pg["healthcheck"]["test"]
    assert pg["volumes"][0].startswith("postgres:")
    # and every gridbus service's GRIDBUS_STATE_STORE is a postgresql:// URL of that database,
    # user and password, which the state store accepts, and the service starts once it is healthy
    from urllib.parse import urlsplit

    from bus.state_store import state_store_url
    for name in GRIDBUS_ROLES:
        url = state_store_url(COMPOSE[name]["environment"])
        parts = urlsplit(url)
        assert (parts.scheme, parts.hostname, parts.port) == ("postgresql", "postgres", 5432), name
        assert parts.path == "/" + pg["environment"]["POSTGRES_DB"], name
        assert parts.username == pg["environment"]["POSTGRES_USER"], name
        assert parts.password == pg["environment"]["POSTGRES_PASSWORD"], name
        assert COMPOSE[name]["depends_on"]["postgres"] == {"condition": "service_healthy"}, name
