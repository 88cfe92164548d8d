"""`gridbus dev up|down|status`: the local stack (RabbitMQ node, stand-ins, worker, ingress, gateway)."""
from __future__ import annotations

import os
from pathlib import Path

import click

from bus import registry
from bus.cli.common import fails_cleanly, routes_from, settings
from bus.settings import DEV_AMQP_PORT, DEV_MANAGEMENT_PORT
from bus.topology import compile_topology
from bus.topology.apply import declare_all
from gridbus_dev import devstack
from gridbus_dev.devstack import ProcessSet, Service

SERVICES = ("recorder", "keeper", "gateway", "ingress", "worker-requests", "worker",
            *(s[0] for s in devstack.STAND_INS))


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
    }


def _write_env_file(values: dict[str, str]) -> None:
    path = devstack.home() / "dev.env"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# written by `gridbus dev up`; the process environment wins over it\n" +
                    "".join(f"{k}={v}\n" for k, v in values.items()))


def _meter_assignment(path: Path) -> None:
    """Which HES serves which meter: the demo's meters alternate between HES-A and HES-B."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("meter,hes\n" + "".join(f"UPM{n:08d},{'hes-a' if n % 2 else 'hes-b'}\n"
                                                  for n in range(1, 40_001)))


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
@fails_cleanly
def up(concurrency):
    """Start RabbitMQ, the stand-ins (MDMS-1, WFM, FMS, ADMS, HES-A, HES-B), the workers, the
    ingress and the gateway; apply the routes."""
    home = devstack.home()
    values = dev_env()
    _write_env_file(values)
    env = {**os.environ, **values}
    devstack.start_rabbitmq(home / "rabbitmq", log=click.echo)
    os.environ.update(values)
    table_ = routes_from(None)
    declare_all(compile_topology(table_), values["GRIDBUS_BROKER_URL"])
    click.echo(f"routes     {len(table_)} applied")
    procs = ProcessSet(home / "run")
    _meter_assignment(Path(values["GRIDBUS_METER_ASSIGNMENT"]))
    for name, module, port, var in devstack.STAND_INS:
        argv = [devstack.python(), "-m", module, "--port", str(port), "--name", name]
        if name == "mdms-1":  # its on-demand reads and commands go on to the HES through the bus
            argv += ["--bus-url", f"{values['GRIDBUS_GATEWAY_URL']}/v1/requests/mdms-1",
                     "--bus-key", _dev_key("mdms-1")]
        procs.start(Service(name, argv, port), env)
        click.echo(f"{name:10} {values[var]}  (stand-in)")
    # requests wait on their destination: they get a worker of their own (Route.waits_on_destination)
    procs.start(Service("worker", devstack.gridbus_argv("worker", "-c", str(concurrency),
                                                        "--kind", "deliveries")), env)
    click.echo(f"worker     pid {procs.pid('worker')}  log {home / 'run' / 'worker.log'}")
    if len(table_.of_kind("requests")):
        procs.start(Service("worker-requests", devstack.gridbus_argv(
            "worker", "--pool", "asyncio", "--kind", "requests")), env)
        click.echo(f"worker-requests pid {procs.pid('worker-requests')}  (event loop, request-response routes)")
    procs.start(Service("ingress", devstack.gridbus_argv("ingress")), env)
    click.echo(f"ingress    pid {procs.pid('ingress')}  inbox {values['GRIDBUS_INBOX']}")
    procs.start(Service("gateway", devstack.gridbus_argv("gateway", "--port", str(devstack.GATEWAY_PORT)),
                        devstack.GATEWAY_PORT), env)
    click.echo(f"gateway    {values['GRIDBUS_GATEWAY_URL']}/docs  (keys: gridbus gateway keys add SYSTEM)")
    procs.start(Service("recorder", devstack.gridbus_argv("recorder", "--metrics-port", str(devstack.METRICS_PORT)),
                        devstack.METRICS_PORT), env)
    click.echo(f"recorder   pid {procs.pid('recorder')}  traces -> {home / 'state' / 'trace.sqlite'}, "
               f"metrics {devstack.METRICS_URL}")
    procs.start(Service("keeper", devstack.gridbus_argv("keeper")), env)
    click.echo(f"keeper     pid {procs.pid('keeper')}  dead letters -> {home / 'state' / 'dead-letters.sqlite'}")
    click.echo("up; `gridbus dev status` to check, `gridbus dev down` to stop")


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


@dev.command("status")
@fails_cleanly
def status():
    """Which parts of the local stack run, and the depth of every gridbus queue."""
    home = devstack.home()
    procs = ProcessSet(home / "run")
    up_ = devstack.port_open(DEV_AMQP_PORT)
    click.echo(f"{'rabbitmq':10} {'up on ' + str(DEV_AMQP_PORT) if up_ else 'down'}")
    for name in SERVICES:
        pid = procs.pid(name)
        extra = f"  metrics {devstack.METRICS_URL}" if name == "recorder" and pid else ""
        click.echo(f"{name:10} {'pid ' + str(pid) if pid else 'not running'}{extra}")
    if up_ and devstack.port_open(DEV_MANAGEMENT_PORT):
        from bus.broker_admin import BrokerAdmin
        from bus import naming
        queues = [q for q in BrokerAdmin(settings().management_url, settings().vhost).queues()
                  if q["name"].startswith(naming.PREFIX + ".")]
        for q in sorted(queues, key=lambda q: q["name"]):
            click.echo(f"  {q['name']:50} {q.get('messages', 0):>8} messages")
