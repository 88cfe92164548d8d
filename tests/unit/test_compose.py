"""docker/compose.yaml is checked here, since no Docker engine runs in CI: it starts every role
`gridbus dev up` starts, each command parses, and the shipped routes load with its environment."""
from __future__ import annotations

import importlib
import shutil
import subprocess
from pathlib import Path

import click
import pytest
import yaml

from gridbus_dev.cli.dev import SERVICE_ROLES, SERVICES
from bus.cli.main import cli as gridbus
from bus.routes import load_routes

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
COMPOSE = COMPOSE_FILE["services"]
GRIDBUS_ROLES = {name: s["command"] for name, s in COMPOSE.items() if "command" in s}
STAND_INS = {name: s["entrypoint"] for name, s in COMPOSE.items() if s.get("entrypoint", [None])[0] == "python"}


@pytest.fixture(scope="module", autouse=True)
def made_secrets(tmp_path_factory):
    """docker/make-secrets run as an operator would, in a copy of docker/ (the checkout stays clean)."""
    global SECRETS
    folder = tmp_path_factory.mktemp("docker")
    shutil.copy(ROOT / "docker" / "make-secrets", folder / "make-secrets")
    made = subprocess.run(["bash", str(folder / "make-secrets")], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    SECRETS = folder / "secrets"
    return folder


def with_secrets(env: dict, service: str) -> dict:
    """A service's environment as its process sees it: each /run/secrets/X it names is the file
    make-secrets wrote, which the service must list among its secrets."""
    mounted = {s if isinstance(s, str) else s["target"] for s in COMPOSE[service].get("secrets", [])}
    resolved = {}
    for name, value in env.items():
        if isinstance(value, str) and value.startswith("/run/secrets/"):
            secret = value.removeprefix("/run/secrets/")
            assert secret in mounted, f"{service}: {name} names {value}, which is not among its secrets"
            value = str(SECRETS / secret)
        resolved[name] = value
    from bus.settings import _from_files
    return {**resolved, **_from_files(resolved)}


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
            [(node, 5671) for node in RABBITMQ_NODES], name
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
    assert pg["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres" and pg["secrets"] == ["postgres"]
    for name in GRIDBUS_ROLES:
        env = with_secrets(COMPOSE[name]["environment"], name)
        url = state_store_url(env)
        parts = urlsplit(url)
        assert (parts.scheme, parts.hostname, parts.port) == ("postgresql", "postgres", 5432), name
        assert parts.path == "/" + pg["environment"]["POSTGRES_DB"], name
        assert parts.username == pg["environment"]["POSTGRES_USER"], name
        assert parts.password == (SECRETS / "postgres").read_text().strip(), name
        assert COMPOSE[name]["depends_on"]["postgres"] == {"condition": "service_healthy"}, name


# the role each service runs as, as `gridbus dev up` runs it
SERVICE_USERS = {service: f"gridbus-{role}" for service, role in SERVICE_ROLES.items()}


def test_each_role_logs_in_as_its_own_service_user_with_its_password_from_a_secret(monkeypatch):
    # Given every gridbus service of compose but the one-shot setup
    roles = {name: cmd for name, cmd in GRIDBUS_ROLES.items()}
    assert set(roles) == set(SERVICE_USERS), set(roles) ^ set(SERVICE_USERS)
    from bus.messaging.addresses import broker_addresses
    from bus.settings import Settings
    for name, user in SERVICE_USERS.items():
        env = with_secrets(COMPOSE[name]["environment"], name)
        # Then it is a production deployment that names its role's user, its password a mounted secret
        assert env["GRIDBUS_DEPLOYMENT"] == "production", name
        assert env["GRIDBUS_BROKER_USER"] == user, name
        assert COMPOSE[name]["environment"]["GRIDBUS_BROKER_PASSWORD_FILE"] == f"/run/secrets/{user}", name
        assert "rabbitmq-admin" not in COMPOSE[name]["secrets"], name
        # only the keeper calls the management API (it finds the dead-letter queues there), as itself
        if name == "keeper":
            assert (env["GRIDBUS_MANAGEMENT_USER"], env["GRIDBUS_MANAGEMENT_PASSWORD"]) == \
                (user, (SECRETS / user).read_text().strip())
        else:
            assert "GRIDBUS_MANAGEMENT_URL" not in env, name
        # and its settings load to every node as that user, with that password
        for var in [v for v in list(__import__("os").environ) if v.startswith("GRIDBUS_")]:
            monkeypatch.delenv(var)
        for var, value in env.items():
            monkeypatch.setenv(var, value)
        monkeypatch.setenv("GRIDBUS_ENV_FILE", "/nonexistent")
        addresses = broker_addresses(Settings.load().broker_url)
        assert {(a.userid, a.password) for a in addresses} == {(user, (SECRETS / user).read_text().strip())}, name
    # and each role's user has a secret of its own, made by make-secrets and declared in compose
    assert set(SERVICE_USERS.values()) <= set(COMPOSE_FILE["secrets"])
    assert all((SECRETS / user).stat().st_size > 30 for user in SERVICE_USERS.values())


def test_only_the_setup_service_is_the_administrator_and_every_role_waits_for_it():
    # Given the setup service
    setup = COMPOSE["setup"]
    # Then it applies the topology and syncs the service users from the mounted secrets, as gridbus-admin
    script = setup["entrypoint"][-1]
    assert "gridbus routes apply" in script and "gridbus broker users sync --passwords /run/secrets" in script
    env = setup["environment"]
    assert env["GRIDBUS_BROKER_USER"] == env["GRIDBUS_MANAGEMENT_USER"] == "gridbus-admin"
    assert {"rabbitmq-admin", *SERVICE_USERS.values()} <= set(setup["secrets"])
    # and the nodes make that administrator from a secret (no guest on them)
    admin_conf = (SECRETS / "rabbitmq-admin.conf").read_text()
    assert "default_user = gridbus-admin" in admin_conf
    assert f"default_pass = {(SECRETS / 'rabbitmq-admin').read_text().strip()}" in admin_conf
    for node in RABBITMQ_NODES:
        assert {"source": "rabbitmq-admin.conf", "target": "/etc/rabbitmq/conf.d/11-admin.conf"} in COMPOSE[node]["secrets"]
    # and every role starts once setup has finished
    for name in SERVICE_USERS:
        assert COMPOSE[name]["depends_on"]["setup"] == {"condition": "service_completed_successfully"}, name


def test_every_link_is_tls_and_verified_against_the_deployment_ca():
    # Given the nodes' configuration file, mounted over the image's defaults (which open 5672/15672)
    conf = dict(line.split(" = ", 1) for line in (ROOT / "docker" / "rabbitmq" / "tls.conf").read_text().splitlines()
                if line and not line.startswith("#"))
    for node in RABBITMQ_NODES:
        assert "./rabbitmq/tls.conf:/etc/rabbitmq/conf.d/10-defaults.conf:ro" in COMPOSE[node]["volumes"]
        assert [p.rsplit(":", 1)[1] for p in COMPOSE[node]["ports"]] == ["5671", "15671"]
    # Then the nodes listen TLS only, with the certificates of make-secrets
    assert conf["listeners.tcp"] == "none" and conf["listeners.ssl.default"] == "5671"
    assert conf["management.ssl.port"] == "15671" and not any(k.startswith("management.tcp") for k in conf)
    assert conf["ssl_options.certfile"] == "/run/secrets/rabbitmq.crt" and conf["ssl_options.verify"] == "verify_peer"
    # and every gridbus service connects with amqps:// and verifies against the mounted CA
    for name in [*SERVICE_USERS, "setup"]:
        env = COMPOSE[name]["environment"]
        assert all(url.startswith("amqps://") for url in env["GRIDBUS_BROKER_URL"].split(";")), name
        assert env["GRIDBUS_TLS_CA"] == "/run/secrets/ca.crt" and "ca.crt" in COMPOSE[name]["secrets"], name
    assert all(url.startswith("https://") for url in COMPOSE["setup"]["environment"]["GRIDBUS_MANAGEMENT_URL"].split(";"))
    # and the gateway serves HTTPS with its certificate, which the CA signed for its host name
    gateway = parsed(GRIDBUS_ROLES["gateway"]).params
    assert (gateway["tls_cert"], gateway["tls_key"]) == ("/run/secrets/gateway.crt", "/run/secrets/gateway.key")
    assert COMPOSE["mdms-1"]["environment"]["MDMS_BUS_URL"].startswith("https://gateway:8443/")
    for cert, hosts in (("rabbitmq.crt", RABBITMQ_NODES), ("gateway.crt", ["gateway"])):
        verified = subprocess.run(["openssl", "verify", "-CAfile", str(SECRETS / "ca.crt"), str(SECRETS / cert)],
                                  capture_output=True, text=True)
        assert verified.returncode == 0, verified.stderr
        san = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(SECRETS / cert)],
                             capture_output=True, text=True).stdout
        assert all(f"DNS:{host}" in san for host in hosts), san


def test_make_secrets_never_replaces_a_secret_and_keeps_the_folder_to_its_owner(made_secrets):
    # Given the secrets made once
    before = {p.name: p.read_bytes() for p in SECRETS.iterdir()}
    # When make-secrets runs again
    again = subprocess.run(["bash", str(made_secrets / "make-secrets")], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    # Then every secret is what it was (a rerun cannot lock running services out)
    assert {p.name: p.read_bytes() for p in SECRETS.iterdir()} == before
    # and the folder is its owner's alone, the CA key too; the Erlang cookie is in the env file
    assert SECRETS.stat().st_mode & 0o777 == 0o700 and (SECRETS / "ca.key").stat().st_mode & 0o777 == 0o600
    assert (made_secrets / ".env").read_text().count("RABBITMQ_ERLANG_COOKIE=") == 1
    # and every file compose takes a secret from is one make-secrets writes
    assert {Path(s["file"]).name for s in COMPOSE_FILE["secrets"].values()} <= set(before)
