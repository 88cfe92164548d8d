"""`gridbus`: the command operators and connector teams use.

Commands of other distributions join through the ``gridbus.cli`` entry points, loaded only when
named: gridbus-dev (``dev/``) adds ``demo``, ``bench`` and ``dev``.  The runtime never imports
them; without gridbus-dev those names still exist and say what to install.
"""
from __future__ import annotations

import atexit
import sys
from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points

import click

from bus import __version__, hooks
from bus.cli.broker import broker
from bus.cli.commands import commands
from bus.cli.dlq import dlq
from bus.cli.gateway import gateway
from bus.cli.keeper import keeper
from bus.cli.network import network
from bus.cli.operators import operators
from bus.cli.outages import outages
from bus.cli.routes import routes_group
from bus.cli.run import ingress, send, worker
from bus.cli.trace import recorder, trace
from bus.tracing import emitter

PLUGIN_GROUP = "gridbus.cli"
# the development tools gridbus-dev adds, and the make target that runs each from a checkout
DEV_TOOLS = {"demo": "make demo", "bench": "make bench", "dev": "make dev-up"}


def not_installed_hint(name: str) -> str:
    return (f"gridbus {name} is a development tool and is not part of this install: "
            f"from a checkout run `{DEV_TOOLS[name]}`, or `pip install -e ./dev` (gridbus-dev)")


@lru_cache(maxsize=1)
def plugins() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=PLUGIN_GROUP)}


def not_installed(name: str) -> click.Command:
    """A stand-in for a development command that is not installed: any use prints the hint, exit 1."""
    def explain(args):
        click.echo(f"error: {not_installed_hint(name)}", err=True)
        sys.exit(1)
    return click.Command(name, callback=explain, add_help_option=False,
                         params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)],
                         context_settings={"ignore_unknown_options": True},
                         help=not_installed_hint(name),
                         short_help="[not installed] development tool: pip install -e ./dev")


class GridbusGroup(click.Group):
    """The built-in commands, then the ``gridbus.cli`` entry points, then hints for absent dev tools."""

    def list_commands(self, ctx):
        return sorted({*super().list_commands(ctx), *plugins(), *DEV_TOOLS})

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is None and name in plugins():
            command = plugins()[name].load()
        if command is None and name in DEV_TOOLS:
            command = not_installed(name)
        return command


@click.group(cls=GridbusGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gridbus")
def cli():
    """gridbus: enterprise service bus on RabbitMQ for smart-meter IT/OT integration.

    Configuration comes from the environment (GRIDBUS_BROKER_URL,
    GRIDBUS_MANAGEMENT_URL, GRIDBUS_HOME, GRIDBUS_ROUTES, GRIDBUS_TRACE_STORE) or
    $GRIDBUS_HOME/dev.env.  GRIDBUS_TRACING=off turns trace events off.

    TLS: amqps:// and https:// URLs, verified against GRIDBUS_TLS_CA, client
    certificate GRIDBUS_TLS_CERT/GRIDBUS_TLS_KEY, GRIDBUS_BROKER_AUTH=external to
    log in by it.  Secrets: GRIDBUS_<NAME>_FILE reads GRIDBUS_<NAME> from a file
    (Docker secrets); GRIDBUS_BROKER_USER / GRIDBUS_BROKER_PASSWORD fill the
    addresses that name none.  The default account guest is refused beyond this
    machine, and anywhere with GRIDBUS_DEPLOYMENT=production (docs/security.md).
    """
    if emitter.enabled():
        hooks.subscribe(emitter.hook)
        # short-lived commands (send, dlq replay) hand their last events over before exiting
        atexit.register(emitter.flush_at_exit)


for command in (routes_group, worker, ingress, gateway, broker, commands, send, dlq, keeper, recorder,
                trace, operators, network, outages):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="gridbus")


if __name__ == "__main__":
    main()
