"""`gridbus routes new SYSTEM --sample FILE`: a starting route, mapping and route test from a sample CSV."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from bus.cli.common import echo_json, json_option


@click.command("new")
@click.argument("system")
@click.option("--sample", "sample", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A CSV file the new HES exported (its first 1 MiB / 2,000 lines are read).")
@click.option("--out", "out", default="routes", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write <system>-csv.yaml and <system>-csv_test.yaml into.")
@click.option("--force", is_flag=True, help="Overwrite those files if they exist.")
@json_option
def new(system, sample, out, force, as_json):
    """Write a starting route for a new HES's CSV files, from a sample file.

    Guesses the encoding, the banner lines before the header, the delimiter, quote and
    decimal mark, the meter and time columns (and the time format, the zone, the interval),
    a wide or long (OBIS codes) layout, the values meaning "missing", and ReadingTypes from
    the column names; writes OUT/SYSTEM-csv.yaml (a file-drop route SYSTEM-csv-to-mdms-1,
    csv_readings > to_mdms_json, each guess commented with its evidence, TODO where it could
    not guess) and OUT/SYSTEM-csv_test.yaml (the sample's first rows and what the guessed
    mapping makes of them, checked to pass). Prints what it guessed, what it could not, and
    what to run next. Exit 1 with the reason for a sample it cannot read (empty, binary,
    one column, no header) or files that exist (without --force).

    \b
    Example:
      gridbus routes new hes-c --sample ~/Downloads/hes-c-export.csv
      gridbus routes test routes/hes-c-csv_test.yaml && gridbus routes validate routes/
    """
    from bus.errors import GridbusError
    from bus.routes.scaffold import scaffold

    try:
        result = scaffold(system, sample, out, force)
    except GridbusError as exc:
        if as_json:
            echo_json({"error": str(exc)})
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    summary = result.summary()
    if as_json:
        echo_json(summary)
        return
    click.echo(f"wrote {', '.join(summary['files'].values())}")
    click.echo("\nguessed:")
    for g in summary["guessed"]:
        value = "" if g["value"] is None else f" = {g['value']!r}" if isinstance(g["value"], str) else \
            f" = {g['value']}"
        click.echo(f"  {g['item']}{value}: {g['evidence']}")
    click.echo("\ncould not guess (edit these):")
    for u in summary["could_not_guess"] or [{"edit": "nothing: still read every guessed line", "written": None}]:
        click.echo(f"  - {u['edit']}")
    test = summary["test"]
    click.echo(f"\nroute test: {test.get('rows', 0)} sample row(s), {test.get('readings', 0)} reading(s), "
               f"{len(test.get('rejections', []))} rejection(s); "
               + ("passes as written" if test.get("passes") else
                  "written WITHOUT an expected document (see above)" if not test.get("expected_written") else
                  "does NOT pass: " + "; ".join(test.get("problems", []))))
    click.echo("\nnext steps:")
    for step in summary["next_steps"]:
        click.echo(f"  {step}")


def register(group) -> None:
    """Add this module's command to `gridbus routes`."""
    group.add_command(new)
