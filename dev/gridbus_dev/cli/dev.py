"""`gridbus dev up|down|status`: the local stack (RabbitMQ node, stand-ins, worker, ingress, gateway)."""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote, urlsplit

import click

from bus import registry
from bus.broker_users import reads_of
from bus.cli.common import fails_cleanly, routes_from, settings
from bus.errors import GridbusError
from bus.settings import DEV_AMQP_PORT, DEV_MANAGEMENT_PORT
from bus.topology import compile_topology
from bus.topology.apply import declare_all
from gridbus_dev import devstack
from gridbus_dev import tls as dev_tls
from gridbus_dev.cli import dev_cluster
from gridbus_dev.devstack import ProcessSet, Service
from simulators.network import SHARED_NETWORK_ENV, shared_env, shared_model

# use case 9 out: the outbox publisher and the delivery to billing are two processes, as in
# production: the publisher is one leader (a lease in the broker) while deliver is run twice for
# a standby per partition; apart, each has its own log and `dev status` line, and one can be
# stopped to show the other's behaviour (billing waits, the outbox fills) without the other.
NETWORK_SERVICES = ("network-publish", "network-deliver")
# use case 3: `gridbus outages run`, the correlator (router, partitions, ticker in one process)
OUTAGE_SERVICES = ("outages",)
SERVICES = ("recorder", "keeper", "gateway", "ingress", "worker-requests", "worker", *NETWORK_SERVICES,
            *OUTAGE_SERVICES, *(s[0] for s in devstack.STAND_INS))
# The ADMS stand-in takes its CIM Outages from this queue (the amqp destination of the route
# outages-to-adms, routes/uc3-outages.yaml) as the broker user `adms`, which may read only it.
ADMS_USER = "adms"
ADMS_QUEUE = "adms.outages"
# the generated secrets dev up keeps in dev.env (the file is readable by its owner only)
SECRET_VARS = ("ADMS_AMQP_URL",)


def dev_env() -> dict[str, str]:
    home = devstack.home()
    return {
        "GRIDBUS_HOME": str(home),
        "GRIDBUS_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{DEV_AMQP_PORT}//",
        "GRIDBUS_MANAGEMENT_URL": f"http://guest:guest@127.0.0.1:{DEV_MANAGEMENT_PORT}",
        "GRIDBUS_INBOX": str(home / "inbox"),
        "GRIDBUS_OUTBOX": str(home / "outbox"),
        **{var: f"http://127.0.0.1:{port}" for _name, _module, port, var in devstack.STAND_INS},
        "GRIDBUS_GATEWAY_URL": f"http://127.0.0.1:{devstack.GATEWAY_PORT}",
        "GRIDBUS_METER_ASSIGNMENT": str(home / "meter-assignment.csv"),
        # the network all stand-ins generate; the environment of `dev up` may change it
        **{var: os.environ.get(var) or value for var, value in shared_env(devstack.DEV_NETWORK).items()},
        "ADMS_AMQP_QUEUE": ADMS_QUEUE,
    }


def _env_file() -> Path:
    return devstack.home() / "dev.env"


def _write_env_file(values: dict[str, str]) -> None:
    """dev.env: the addresses (and the generated secrets, ``SECRET_VARS``, kept from the file
    written before unless ``values`` has new ones); owner-only, since it holds a password."""
    path = _env_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    kept = {k: v for k, v in _read_env_file().items() if k in SECRET_VARS and k not in values}
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text("# written by `gridbus dev up`; the process environment wins over it\n" +
                    "".join(f"{k}={v}\n" for k, v in {**values, **kept}.items()))


def _read_env_file() -> dict[str, str]:
    path = _env_file()
    if not path.exists():
        return {}
    return dict(line.split("=", 1) for line in path.read_text().splitlines()
                if "=" in line and not line.lstrip().startswith("#"))


def _adms_url(password: str, amqp_port: int = DEV_AMQP_PORT) -> str:
    """The ADMS stand-in's broker URL: its own user (not guest), the dev node's vhost /."""
    return f"amqp://{ADMS_USER}:{quote(password, safe='')}@127.0.0.1:{amqp_port}/%2F"


def _can_log_in(url: str) -> bool:
    """Whether ``url``'s user and password open a connection (the broker may have been reset
    since the password was written)."""
    from bus.errors import BrokerError
    from bus.messaging import pika_connect

    try:  # through the bus's own client, so an amqps:// URL is spoken over TLS (GRIDBUS_TLS_*)
        pika_connect(url, "gridbus-dev-check").close()
        return True
    except BrokerError:
        return False


def _adms_broker_user(table_, procs: ProcessSet, amqp_port: int = DEV_AMQP_PORT) -> tuple[str, bool]:
    """The ADMS's broker URL, and whether its password is new.  The user `adms` may read only
    the ADMS's queue (``gridbus broker users add adms``); its password is made once and kept in
    dev.env.  A password that no longer logs in (a new broker node) is replaced, and a running
    ADMS stand-in is stopped so that it starts again with it."""
    stored = _read_env_file().get("ADMS_AMQP_URL")
    if stored and _can_log_in(stored):
        return stored, False
    from bus.broker_admin import BrokerAdmin
    from bus.broker_users import SourceUsers

    s = settings()
    password = SourceUsers(BrokerAdmin(s.management_url, s.vhost), table_).add(ADMS_USER)
    procs.stop("adms")
    return _adms_url(password, amqp_port), True


def _meter_assignment(path: Path, values: dict[str, str]) -> int:
    """Which HES serves which meter: every meter of the shared network (consumer, DT and
    feeder-head meters), odd serials HES-A, even HES-B, as the HES stand-ins' fleets.  Written
    each time, so that it follows a change of GRIDBUS_DEV_NETWORK_*."""
    return shared_model(values).write_meter_assignment(path)


def _stand_in_argv(name: str, module: str, port: int, values: dict[str, str]) -> list[str]:
    argv = [devstack.python(), "-m", module, "--port", str(port), "--name", name]
    if name == "mdms-1":  # its on-demand reads and commands go on to the HES through the bus
        argv += ["--bus-url", f"{values['GRIDBUS_GATEWAY_URL']}/v1/requests/mdms-1",
                 "--bus-key", _dev_key("mdms-1")]
    elif name == "gis":   # pushes change documents to the gateway, drops snapshots for the ingress
        argv += ["--bus-url", f"{values['GRIDBUS_GATEWAY_URL']}/v1/push/gis/network",
                 "--bus-key", _dev_key("gis"), "--drop-dir", str(Path(values["GRIDBUS_INBOX"]) / "gis-snapshots")]
    elif module == "simulators.billing_network":
        argv += ["--format", "json" if name == "billing-1" else "xml"]
    return argv


def _dev_key(system: str) -> str:
    """The dev stack's own key for ``system`` (kept in .gridbus/run, made once)."""
    path = devstack.home() / "run" / f"{system}.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(registry.connector("http-push").key_store(settings()).add(system))
        path.chmod(0o600)
    return path.read_text().strip()


@click.group("dev")
def dev():
    """Local stack under $GRIDBUS_HOME (default .gridbus/): its own RabbitMQ node and ports."""


@dev.command("up")
@click.option("--concurrency", "-c", type=int, default=2, show_default=True, help="Worker processes.")
@click.option("--nodes", type=click.IntRange(1, dev_cluster.MAX_NODES), default=1, show_default=True,
              help="RabbitMQ nodes: more than one is a cluster (ports 5691.., 15691..), quorum queues on all.")
@click.option("--broker", "broker_url", default=None, metavar="URL",
              help="Use this running RabbitMQ (amqp://user:password@host:port/vhost) instead of starting the "
                   "stack's own node; the only way `dev up` attaches to a broker it did not start.")
@click.option("--management", "management_url", default=None, metavar="URL",
              help="With --broker: its management API (default: http://<the broker's user and host>:15672, "
                   "https://...:15671 for an amqps:// broker).")
@click.option("--timeout", "timeout_s", type=click.FloatRange(5, 1800), default=180.0, show_default=True,
              help="Seconds every process has to answer its health check before `dev up` gives up (exit 1).")
@click.option("--tls", is_flag=True,
              help="RabbitMQ speaks TLS only (amqps:// on 5679, management https:// on 15679, loopback), client "
                   "certificates required; a throw-away CA and certificates in $GRIDBUS_HOME/tls; dev.env gets "
                   "GRIDBUS_TLS_CA/CERT/KEY and every process connects over TLS (docs/security.md#tls).")
@fails_cleanly
def up(concurrency, nodes, broker_url, management_url, timeout_s, tls):
    """Start RabbitMQ, the stand-ins (MDMS-1, WFM, FMS, ADMS, HES-A, HES-B, GIS, billing-1 and
    billing-2 for network updates), the workers, the ingress, the gateway, the recorder, the
    keeper, the network publisher and delivery and the outage correlator; apply the routes;
    make the bus's service users (each process connects as its role's user, e.g. gridbus-worker,
    passwords in $GRIDBUS_HOME/secrets) and the ADMS's broker user (it reads its outage queue
    over AMQP as `adms`, password in dev.env).  The stand-ins share one generated network (GRIDBUS_DEV_NETWORK_*, default 2,000
    consumers).  With --nodes N, RabbitMQ is a cluster of N nodes and every process gets all
    their addresses (GRIDBUS_BROKER_URL, ``;``-separated)."""
    home = devstack.home()
    if broker_url and nodes > 1:
        raise click.UsageError("--broker and --nodes exclude each other: the cluster is the stack's own")
    if tls and (broker_url or nodes > 1):
        raise click.UsageError("--tls is for the stack's own single node (a given broker's TLS: amqps:// in --broker "
                               "and GRIDBUS_TLS_* in the environment)")
    _refuse_foreign_ports(home, own_broker=not broker_url and nodes == 1)
    tls_files = dev_tls.make(home / "tls", clients=dev_tls.DEV_STACK_CLIENTS) if tls else None
    values = {**dev_env(), **(dev_cluster.settings(home, nodes) if nodes > 1 else {}),
              **(_given_broker(broker_url, management_url) if broker_url else {}),
              **(dev_tls.dev_stack_env(tls_files, DEV_AMQP_PORT, DEV_MANAGEMENT_PORT) if tls_files else {})}
    _write_env_file(values)
    env = {**os.environ, **values}
    rabbit_cluster = dev_cluster.start(home, nodes) if nodes > 1 else None
    if rabbit_cluster is None and not broker_url:
        devstack.start_rabbitmq(home / "rabbitmq", log=click.echo, tls=tls_files and devstack.TlsNode(
            tls_files.ca, tls_files.server_cert, tls_files.server_key, require_client_cert=True, cert_login=True))
    elif broker_url:
        click.echo(f"rabbitmq   {_without_password(broker_url)} (given with --broker; not started by this stack)")
    adms_port = rabbit_cluster.nodes[0].amqp_port if rabbit_cluster else (
        urlsplit(broker_url).port or 5672 if broker_url else DEV_AMQP_PORT)
    os.environ.update(values)
    table_ = routes_from(None)
    declare_all(compile_topology(table_), values["GRIDBUS_BROKER_URL"])
    click.echo(f"routes     {len(table_)} applied")
    if rabbit_cluster:
        dev_cluster.spread_leaders(rabbit_cluster)
    procs = ProcessSet(home / "run")
    # the ADMS reads its outage queue (declared above with the routes) as its own broker user
    if ADMS_QUEUE in reads_of(table_, ADMS_USER):
        adms_url, new_password = _adms_broker_user(table_, procs, adms_port)
        values["ADMS_AMQP_URL"] = dev_tls.as_tls_url(adms_url) if tls_files else adms_url
        _write_env_file(values)
        click.echo(f"broker     user {ADMS_USER} may read {ADMS_QUEUE} only (password "
                   f"{'made' if new_password else 'kept'}, in {_env_file()})")
    as_roles = _service_user_envs(values)  # after the routes: sync derives permissions from them
    meters = _meter_assignment(Path(values["GRIDBUS_METER_ASSIGNMENT"]), values)
    stand_ins = [Service(name, _stand_in_argv(name, module, port, values), port)
                 for name, module, port, _var in devstack.STAND_INS]
    # requests wait on their destination: they get a worker of their own (Route.waits_on_destination)
    workers = [Service("worker", devstack.gridbus_argv("worker", "-c", str(concurrency), "--kind", "deliveries"))]
    if len(table_.of_kind("requests")):
        workers.append(Service("worker-requests", devstack.gridbus_argv("worker", "--pool", "asyncio",
                                                                        "--kind", "requests")))
    gateway = Service("gateway", devstack.gridbus_argv("gateway", "--port", str(devstack.GATEWAY_PORT)),
                      devstack.GATEWAY_PORT)
    recorder = Service("recorder", devstack.gridbus_argv("recorder", "--metrics-port", str(devstack.METRICS_PORT)),
                       devstack.METRICS_PORT)
    # the billing routes' file is the CLI's default (no --routes), wherever it lives
    network = [Service("network-publish", devstack.gridbus_argv("network", "publish", "--poll-s", "0.2")),
               Service("network-deliver", devstack.gridbus_argv("network", "deliver"))]
    outages = outage_services(table_)
    # Everything starts side by side, then we wait for the ports: each process spends a second or
    # more importing, and nothing needs another to be listening before it starts (the stand-ins
    # and the GIS reach the gateway only when asked to push).
    for service in [*stand_ins, *workers, Service("ingress", devstack.gridbus_argv("ingress")), gateway, recorder,
                    Service("keeper", devstack.gridbus_argv("keeper")), *network, *outages]:
        procs.start(service, {**_env_of(service.name, env, values), **as_roles.get(service.name, {})}, wait=False)
    for service, (name, _module, _port, var) in zip(stand_ins, devstack.STAND_INS):
        procs.wait_listening(service)
        click.echo(f"{name:10} {values[var]}  (stand-in)")
    n = {arg: values[var] for var, arg in SHARED_NETWORK_ENV.items()}
    click.echo(f"network    {int(n['consumers']):,} consumers, seed {n['seed']} (GRIDBUS_DEV_NETWORK_*): "
               f"the GIS, HES-A/B and alarm stand-ins' network; {meters:,} meters in the meter assignment")
    click.echo(f"worker     pid {procs.pid('worker')}  log {home / 'run' / 'worker.log'}")
    if len(workers) > 1:
        click.echo(f"worker-requests pid {procs.pid('worker-requests')}  (event loop, request-response routes)")
    click.echo(f"ingress    pid {procs.pid('ingress')}  inbox {values['GRIDBUS_INBOX']}")
    procs.wait_listening(gateway)
    click.echo(f"gateway    {values['GRIDBUS_GATEWAY_URL']}/docs  (keys: gridbus gateway keys add SYSTEM)")
    procs.wait_listening(recorder)
    click.echo(f"recorder   pid {procs.pid('recorder')}  traces -> {_store('GRIDBUS_TRACE_STORE', 'trace.sqlite')}, "
               f"metrics {devstack.METRICS_URL}")
    click.echo(f"keeper     pid {procs.pid('keeper')}  dead letters -> {_store(None, 'dead-letters.sqlite')}")
    click.echo(f"network-publish pid {procs.pid('network-publish')}, network-deliver pid "
               f"{procs.pid('network-deliver')}  network store -> billing-1, billing-2")
    if outages:
        click.echo(f"outages    pid {procs.pid('outages')}  outage correlator -> ADMS over AMQP ({ADMS_QUEUE}), "
                   f"store {_store('GRIDBUS_OUTAGE_STORE', 'outages.sqlite')}  (gridbus outages list|show)")
    _wait_up(home, procs, table_, values, [s.name for s in stand_ins], [w.name for w in workers],
             [o.name for o in outages], timeout_s)
    click.echo("up; `gridbus dev status` to check, `gridbus dev down` to stop")


# each bus process connects as its role's service user (bus/service_users.py), never as the administrator
SERVICE_ROLES = {"worker": "worker", "worker-requests": "request-worker", "ingress": "ingress", "gateway": "gateway",
                 "recorder": "recorder", "keeper": "keeper", "network-publish": "network",
                 "network-deliver": "network", "outages": "outages"}


def _service_user_envs(values: dict[str, str]) -> dict[str, dict[str, str]]:
    """`gridbus broker users sync --passwords $GRIDBUS_HOME/secrets` as the administrator (dev.env's
    URLs), then each bus process's GRIDBUS_BROKER_URL and GRIDBUS_MANAGEMENT_URL as its role's user
    (the keeper reads the management API; the others never do).  The passwords stay in the
    secrets folder (0700, files 0600), made once and kept; never printed."""
    from bus import secret_files
    from bus.broker_admin import BrokerAdmin
    from bus.service_users import ServiceUsers, roles

    s = settings()
    secrets_dir = devstack.home() / "secrets"
    table_ = routes_from(None)
    done = ServiceUsers(BrokerAdmin(values["GRIDBUS_MANAGEMENT_URL"], s.vhost), table_).sync(secrets_dir)
    click.echo(f"broker     {len(done)} service users (gridbus-worker, gridbus-gateway, ...): each process runs as "
               f"its role's, passwords in {secrets_dir}")
    users = {role.name: role.user for role in roles(table_)}
    envs = {}
    for service, role in SERVICE_ROLES.items():
        user = users[role]
        password, _made = secret_files.password(secrets_dir, user)
        envs[service] = {"GRIDBUS_BROKER_URL": _as_user(values["GRIDBUS_BROKER_URL"], user, password),
                         "GRIDBUS_MANAGEMENT_URL": _as_user(values["GRIDBUS_MANAGEMENT_URL"], user, password)}
    return envs


def _as_user(url: str, user: str, password: str) -> str:
    """``url`` (possibly several, ``;``-separated) with this user and password instead of its own."""
    from urllib.parse import urlunsplit

    def one(part: str) -> str:
        parts = urlsplit(part)
        host = f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname
        return urlunsplit((parts.scheme, f"{quote(user, safe='')}:{quote(password, safe='')}@{host}",
                           parts.path, parts.query, parts.fragment))
    return ";".join(one(part.strip()) for part in url.split(";") if part.strip())


def _refuse_foreign_ports(home: Path, own_broker: bool) -> None:
    """Exit 1, starting nothing, if a port this stack needs is held by a process it did not
    start (another checkout's stack, another GRIDBUS_HOME): its processes would otherwise join
    that stack's broker, or die at start while `dev up` reported them."""
    from gridbus_dev import pids
    from gridbus_dev.stack_health import foreign_ports, our_pids

    wanted = {name: port for name, _module, port, _var in devstack.STAND_INS}
    wanted.update({"gateway": devstack.GATEWAY_PORT, "recorder metrics": devstack.METRICS_PORT})
    if own_broker:
        wanted.update({"rabbitmq amqp": DEV_AMQP_PORT, "rabbitmq management": DEV_MANAGEMENT_PORT,
                       "rabbitmq distribution": devstack.DEV_DIST_PORT})
    problems = foreign_ports(wanted, our_pids(home / "run", pids.descendants, pids.alive), devstack.port_open)
    if problems:
        raise GridbusError(
            f"not starting: ports this stack (GRIDBUS_HOME={home}) needs are held by processes it did not "
            "start:\n  " + "\n  ".join(problems) + "\nStop that stack (`gridbus dev down` with its GRIDBUS_HOME), "
            "or use a broker on purpose with --broker URL. Nothing was started.")


def _given_broker(broker_url: str, management_url: str | None) -> dict[str, str]:
    parts = urlsplit(broker_url.split(";")[0])
    if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
        raise click.BadParameter("an AMQP URL, e.g. amqp://user:password@127.0.0.1:5672/%2F", param_hint="--broker")
    if management_url is None:
        auth = f"{parts.username}:{parts.password}@" if parts.username else ""
        management_url = (f"https://{auth}{parts.hostname}:15671" if parts.scheme == "amqps" else
                          f"http://{auth}{parts.hostname}:15672")
    return {"GRIDBUS_BROKER_URL": broker_url, "GRIDBUS_MANAGEMENT_URL": management_url}


def _without_password(url: str) -> str:
    parts = urlsplit(url.split(";")[0])
    return url if not parts.password else url.replace(f":{parts.password}@", ":***@", 1)


def _wait_up(home: Path, procs: ProcessSet, table_, values: dict[str, str], stand_ins: list[str],
             workers: list[str], outages: list[str], timeout_s: float) -> None:
    """Exit 1 naming what did not come up unless every process answers its check (stack_health.py)."""
    from bus import naming
    from bus.broker_admin import BrokerAdmin
    from bus.settings import Settings
    from gridbus_dev.stack_health import QueueConsumers, Waited, all_of, http_ok, ingress_ready, wait_up

    s = Settings.load()
    consumers = QueueConsumers(BrokerAdmin(values["GRIDBUS_MANAGEMENT_URL"], s.vhost))
    urls = {name: values[var] for name, _module, _port, var in devstack.STAND_INS}
    waited = [Waited(name, http_ok(f"{urls[name]}/health")) for name in stand_ins]
    kinds = {"worker": "deliveries", "worker-requests": "requests"}
    waited += [Waited(w, consumers.on([r.queue_name for r in table_.of_kind(kinds[w])])) for w in workers]
    inbound = [naming.inbound_queue_name(r.id) for r in table_ if r.source and r.source.connector == "amqp-in"]
    waited.append(Waited("ingress", all_of(ingress_ready(s.state_dir, lambda: procs.pid("ingress")),
                                           consumers.on(inbound))))
    waited.append(Waited("gateway", http_ok(f"{values['GRIDBUS_GATEWAY_URL']}/health")))
    waited.append(Waited("recorder", all_of(http_ok(devstack.METRICS_URL), consumers.on([naming.TRACE_QUEUE]))))
    waited.append(Waited("keeper", consumers.on([naming.dead_letter_queue_name(r.id) for r in table_.of_kind("all")])))
    waited.append(Waited("network-publish", lambda: None))
    waited.append(Waited("network-deliver", consumers.on([q for r in table_.ordered_routes() for q in r.queues])))
    waited += [Waited(o, consumers.on([q for r in table_.correlated_routes() for q in r.queues])) for o in outages]
    outcome = wait_up(waited, procs.pid, lambda name: home / "run" / f"{name}.log", timeout_s,
                      lambda name: None)
    if not outcome.up:
        raise GridbusError("not up: " + "; ".join(f"{name}: {why}" for name, why in outcome.failed) +
                           "\n`gridbus dev status` shows what runs; `gridbus dev down` stops the rest")


def _store(own_setting: str | None, sqlite_name: str) -> str:
    """Where a store lives, as the processes find it (GRIDBUS_STATE_STORE included), no password."""
    from bus.state_store import store_location

    where = str(store_location(own_setting or "GRIDBUS_NO_OWN_SETTING", sqlite_name))
    return "postgresql://" + where.split("@")[-1] if where.startswith(("postgresql://", "postgres://")) else where


def outage_services(table_) -> list[Service]:
    """Use case 3: `gridbus outages run`, which runs every route of method correlate in the route
    files (all partitions, the router and the ticker), when there is one."""
    return [Service("outages", devstack.gridbus_argv("outages", "run"))] if list(table_.correlated_routes()) else []


def _env_of(name: str, env: dict[str, str], values: dict[str, str]) -> dict[str, str]:
    """The environment of process ``name``: the ADMS stand-in alone gets its broker URL (with
    its password) and queue, and consumes its outages over AMQP; the others never see it."""
    env = {k: v for k, v in env.items() if k not in (*SECRET_VARS, "ADMS_AMQP_QUEUE")}
    if name == "adms" and values.get("ADMS_AMQP_URL"):
        env.update(ADMS_AMQP_URL=values["ADMS_AMQP_URL"], ADMS_AMQP_QUEUE=values["ADMS_AMQP_QUEUE"])
    return env


@dev.command("down")
@fails_cleanly
def down():
    """Stop everything `dev up` started (data stays in $GRIDBUS_HOME)."""
    home = devstack.home()
    procs = ProcessSet(home / "run")
    for name in SERVICES:
        click.echo(f"{name:10} {'stopped' if procs.stop(name) else 'not running'}")
    devstack.stop_rabbitmq(home / "rabbitmq")
    procs.stop("rabbitmq", timeout_s=20)
    click.echo("rabbitmq   stopped")
    dev_cluster.stop(home)  # the nodes of an earlier `dev up --nodes N`, if any


@dev.command("status")
@fails_cleanly
def status():
    """Which parts of the local stack run, and the depth of every gridbus queue.

    Exits 1 when a part is down (RabbitMQ, or any process `dev up` starts), so scripts can use it."""
    home = devstack.home()
    procs = ProcessSet(home / "run")
    down_ = []
    clustered = int(_read_env_file().get(dev_cluster.DEV_NODES_VAR, "1")) > 1
    up_ = devstack.port_open(DEV_AMQP_PORT) and not clustered
    given = _read_env_file().get("GRIDBUS_BROKER_URL", "")
    own_node = not clustered and f"127.0.0.1:{DEV_AMQP_PORT}/" in given or not given
    if not clustered and own_node:
        click.echo(f"{'rabbitmq':10} {'up on ' + str(DEV_AMQP_PORT) if up_ else 'down'}")
        if not up_:
            down_.append("rabbitmq")
    elif not clustered:
        click.echo(f"{'rabbitmq':10} {_without_password(given)} (given with --broker)")
    urls = {name: f"  {dev_env()[var]}" for name, _module, _port, var in devstack.STAND_INS}
    for name in SERVICES:
        pid = procs.pid(name)
        extra = f"  metrics {devstack.METRICS_URL}" if name == "recorder" else urls.get(name, "")
        if name == "outages":
            extra = "  " + _outage_counts()
        extra = extra if pid else ""
        click.echo(f"{name:10} {'pid ' + str(pid) if pid else 'not running'}{extra}")
        if not pid and name in _expected_services():
            down_.append(name)
    if clustered:
        dev_cluster.status(home)
    if up_ and devstack.port_open(DEV_MANAGEMENT_PORT):
        from bus.broker_admin import BrokerAdmin
        from bus import naming
        queues = [q for q in BrokerAdmin(settings().management_url, settings().vhost).queues()
                  if q["name"].startswith(naming.PREFIX + ".")]
        for q in sorted(queues, key=lambda q: q["name"]):
            click.echo(f"  {q['name']:50} {q.get('messages', 0):>8} messages")
    if down_:
        click.echo(f"down: {', '.join(down_)}", err=True)
        raise SystemExit(1)


def _expected_services() -> set[str]:
    """What `dev up` starts for the routes at hand: outages and worker-requests only when there are such routes."""
    expected = set(SERVICES)
    try:
        table_ = routes_from(None)
        if not list(table_.correlated_routes()):
            expected.discard("outages")
        if not len(table_.of_kind("requests")):
            expected.discard("worker-requests")
    except Exception:  # noqa: BLE001 - routes that do not load: every service counts
        pass
    return expected


def _outage_counts() -> str:
    """``gridbus outages status`` in one line (the outage store; the process need not run)."""
    try:
        from bus.outages.store import open_outage_store

        counts = open_outage_store().counts()
    except Exception as exc:  # noqa: BLE001 - a status line, never a failure of `dev status`
        return f"outage store: {exc.__class__.__name__}"
    return "outages " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none yet")
