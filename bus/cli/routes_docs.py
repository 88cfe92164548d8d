"""`gridbus routes docs`: the route-file reference (docs/reference/), written from the schemas."""
from __future__ import annotations

import sys

import click

from bus.routes import reference


@click.command("docs")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=str(reference.REFERENCE_DIR),
              show_default=True, help="Folder of the reference pages.")
@click.option("--check", is_flag=True,
              help="Write nothing; exit 1 naming the pages that differ from what would be written.")
def docs(out_dir, check):
    """Write the route-file reference from the schemas that validate route files.

    Every key of a route file and of a route, every connector's options per role and every
    transformer's route options: type, default, limits, required, description (the field's
    metadata).  A connector or transformer that cannot be loaded is left out with a warning.

    \b
    Examples:
      gridbus routes docs                 # writes docs/reference/
      gridbus routes docs --check         # exit 1 when the committed pages are stale (CI)
    """
    ref = reference.build(warn=lambda line: click.echo(line, err=True))
    if ref.undescribed:
        click.echo(f"note: {len(ref.undescribed)} option(s) without a description "
                   "(tests/unit/test_reference_docs.py lists them)", err=True)
    if check:
        stale = reference.stale(out_dir, ref.files)
        for path in stale:
            click.echo(f"stale: {path}", err=True)
        if stale:
            click.echo(f"{len(stale)} page(s) differ from the schemas: run `{reference.COMMAND}`"
                       + (f" --out {out_dir}" if str(out_dir) != str(reference.REFERENCE_DIR) else "")
                       + " and commit them", err=True)
            sys.exit(1)
        click.echo(f"{out_dir}: up to date ({len(ref.files)} pages)")
        return
    written = reference.write(out_dir, ref.files)
    for path in written:
        click.echo(f"wrote {path}")
    if not written:
        click.echo(f"{out_dir}: up to date ({len(ref.files)} pages)")


def register(group) -> None:
    """Add this module's command to `gridbus routes`."""
    group.add_command(docs)
