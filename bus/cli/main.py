"""`gridbus`: the command operators and connector teams use."""
from __future__ import annotations

import atexit

import click

from bus import __version__, hooks
from bus.cli.bench import bench
from bus.cli.broker import broker
from bus.cli.commands import commands
from bus.cli.demo import demo
from bus.cli.dev import dev
from bus.cli.dlq import dlq
from bus.cli.gateway import gateway
from bus.cli.keeper import keeper
from bus.cli.operators import operators
from bus.cli.routes import routes_group
from bus.cli.run import ingress, send, worker
from bus.cli.trace import recorder, trace
from bus.tracing import emitter


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gridbus")
def cli():
    """gridbus: enterprise service bus on RabbitMQ for smart-meter IT/OT integration.

    Configuration comes from the environment (GRIDBUS_BROKER_URL,
    GRIDBUS_MANAGEMENT_URL, GRIDBUS_HOME, GRIDBUS_ROUTES, GRIDBUS_TRACE_STORE) or
    $GRIDBUS_HOME/dev.env.  GRIDBUS_TRACING=off turns trace events off.
    """
    if emitter.enabled():
        hooks.subscribe(emitter.hook)
        # short-lived commands (send, dlq replay) hand their last events over before exiting
        atexit.register(emitter.flush_at_exit)


for command in (routes_group, worker, ingress, gateway, broker, commands, send, dev, demo, bench, dlq, keeper, recorder,
                trace, operators):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="gridbus")


if __name__ == "__main__":
    main()
