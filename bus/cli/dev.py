"""`gridbus dev up|down|status`: the local stack (RabbitMQ node, stand-in MDMS, worker, ingress)."""
from __future__ import annotations

import os

import click

from bus import devstack
from bus.cli.common import fails_cleanly, routes_from, settings
from bus.devstack import ProcessSet, Service
from bus.settings import DEV_AMQP_PORT, DEV_MANAGEMENT_PORT
from bus.topology import compile_topology
from bus.topology.apply import declare_all

SERVICES = ("recorder", "keeper", "ingress", "worker", "mdms-1")


def dev_env() -> dict[str, str]:
    home = devstack.home()
    return {
        "GRIDBUS_HOME": str(home),
        "GRIDBUS_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{DEV_AMQP_PORT}//",
        "GRIDBUS_MANAGEMENT_URL": f"http://guest:guest@127.0.0.1:{DEV_MANAGEMENT_PORT}",
        "GRIDBUS_INBOX": str(home / "inbox"),
        "GRIDBUS_OUTBOX": str(home / "outbox"),
        "MDMS_1_URL": f"http://127.0.0.1:{devstack.MDMS_1_PORT}",
    }


def _write_env_file(values: dict[str, str]) -> None:
    path = devstack.home() / "dev.env"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# written by `gridbus dev up`; the process environment wins over it\n" +
                    "".join(f"{k}={v}\n" for k, v in values.items()))


@click.group("dev")
def dev():
    """Local stack under $GRIDBUS_HOME (default .gridbus/): its own RabbitMQ node and ports."""


@dev.command("up")
@click.option("--concurrency", "-c", type=int, default=2, show_default=True, help="Worker processes.")
@fails_cleanly
def up(concurrency):
    """Start RabbitMQ, the stand-in MDMS, a worker and the ingress; apply the routes."""
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
    procs.start(Service("mdms-1", [devstack.python(), "-m", "simulators.mdms", "--port",
                                   str(devstack.MDMS_1_PORT), "--name", "mdms-1"],
                        devstack.MDMS_1_PORT), env)
    click.echo(f"mdms-1     {values['MDMS_1_URL']}")
    procs.start(Service("worker", devstack.gridbus_argv("worker", "-c", str(concurrency))), env)
    click.echo(f"worker     pid {procs.pid('worker')}  log {home / 'run' / 'worker.log'}")
    procs.start(Service("ingress", devstack.gridbus_argv("ingress")), env)
    click.echo(f"ingress    pid {procs.pid('ingress')}  inbox {values['GRIDBUS_INBOX']}")
    procs.start(Service("recorder", devstack.gridbus_argv("recorder")), env)
    click.echo(f"recorder   pid {procs.pid('recorder')}  traces -> {home / 'state' / 'trace.sqlite'}")
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
        click.echo(f"{name:10} {'pid ' + str(pid) if pid else 'not running'}")
    if up_ and devstack.port_open(DEV_MANAGEMENT_PORT):
        from bus.broker_admin import BrokerAdmin
        from bus import naming
        queues = [q for q in BrokerAdmin(settings().management_url, settings().vhost).queues()
                  if q["name"].startswith(naming.PREFIX + ".")]
        for q in sorted(queues, key=lambda q: q["name"]):
            click.echo(f"  {q['name']:50} {q.get('messages', 0):>8} messages")
