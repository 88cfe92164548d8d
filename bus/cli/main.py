"""`gridbus`: the command operators and connector teams use."""
from __future__ import annotations

import click

from bus import __version__
from bus.cli.routes import routes_group
from bus.cli.run import ingress, send, worker


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gridbus")
def cli():
    """gridbus: enterprise service bus on RabbitMQ for smart-meter IT/OT integration.

    Configuration comes from the environment (GRIDBUS_BROKER_URL,
    GRIDBUS_MANAGEMENT_URL, GRIDBUS_HOME, GRIDBUS_ROUTES) or $GRIDBUS_HOME/dev.env.
    """


cli.add_command(routes_group)
cli.add_command(worker)
cli.add_command(ingress)
cli.add_command(send)


def _optional(module: str, name: str) -> None:
    import importlib
    try:
        cli.add_command(getattr(importlib.import_module(module), name))
    except ImportError:
        pass


for _module, _name in (("bus.cli.dev", "dev"), ("bus.cli.demo", "demo"), ("bus.cli.bench", "bench")):
    _optional(_module, _name)


def main() -> None:
    cli(prog_name="gridbus")


if __name__ == "__main__":
    main()
