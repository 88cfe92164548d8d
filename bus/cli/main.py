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
    GRIDBUS_TRACING=off turns trace events off.
    """
    from bus import hooks
    from bus.tracing import emitter

    if emitter.enabled():
        import atexit

        hooks.subscribe(emitter.hook)
        atexit.register(emitter.flush_at_exit)


cli.add_command(routes_group)
cli.add_command(worker)
cli.add_command(ingress)
cli.add_command(send)


from bus.cli.bench import bench  # noqa: E402
from bus.cli.demo import demo  # noqa: E402
from bus.cli.dev import dev  # noqa: E402
from bus.cli.dlq import dlq  # noqa: E402
from bus.cli.keeper import keeper  # noqa: E402
from bus.cli.trace import recorder, trace  # noqa: E402

cli.add_command(dev)
cli.add_command(demo)
cli.add_command(bench)
cli.add_command(dlq)
cli.add_command(keeper)
cli.add_command(recorder)
cli.add_command(trace)


def main() -> None:
    cli(prog_name="gridbus")


if __name__ == "__main__":
    main()
