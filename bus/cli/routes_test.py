"""`gridbus routes test`: run route test files (``*_test.yaml``) without a broker."""
from __future__ import annotations

import sys

import click

from bus.cli.common import echo_json, fails_cleanly, json_option, settings


@click.command("test")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("-k", "--match", "match", metavar="TEXT", help="Only the cases whose name holds TEXT.")
@json_option
@fails_cleanly(code=2)  # 1 is "a case failed": a test file that cannot be run is not that
def test(paths, match, as_json):
    """Run route tests: sample inputs through a route's chain, no broker, no HTTP.

    PATHS are test files or folders (default: $GRIDBUS_ROUTES or ./routes); in a folder
    every *_test.yaml runs.  A test file sits beside its route file
    (uc1-meter-data-files_test.yaml tests uc1-meter-data-files.yaml) and lists cases:
    a route id, an input (inline `input`, or `input_file` beside the test file) and what
    must come of it: `expect` (the canonical document, partially; a list ending with "..."
    may hold more items), `expect_rejections` ({line, reason fragment}: exactly these, none
    when left out), `expect_output` (content_type, noun, readings, events, empty,
    body_contains, body_json) or `expect_error` (the whole message refused).

    Variables the route file needs and this machine does not set get a placeholder.
    Exit 0 when every case passes, 1 when one fails, 2 for a test file that cannot be run
    (errors as file:line).

    \b
    Example (routes/uc1-meter-data-files_test.yaml):
      cases:
        - name: daily file, one bad date
          route: hes-a-csv-to-mdms-1
          input: |
            meter_serial,read_date,kwh_imp_cum,kwh_exp_cum,kvah_imp_cum,kvah_exp_cum
            UPM00012345,2026-11-01,1234.5,12.0,1301.2,12.5
            UPM00099999,01/11/2026,1.0,0,1.0,0
          expect:
            noun: MeterReadings
            MeterReading: [{meter: UPM00012345}]
          expect_rejections:
            - {line: 3, reason: read_date}

    \b
      gridbus routes test
      gridbus routes test routes/uc1-meter-data-files_test.yaml -k daily
      gridbus routes test --json | jq -r '.[] | select(.passed | not) | .name'
    """
    from bus.routes import testing

    suites = testing.load_test_files(list(paths) or [settings().routes_path])
    results = testing.run(suites, match)
    failed = [r for r in results if not r.passed]
    if as_json:
        echo_json([r.as_dict() for r in results])
    else:
        for result in results:
            case = result.case
            click.echo(f"{'PASS' if result.passed else 'FAIL'}  {case.name}  ({case.file}:{case.line})")
            for problem in result.problems:
                click.echo(f"      {problem.text()}")
        if not suites:
            click.echo("no route tests (*_test.yaml) found", err=True)
        else:
            click.echo(f"{len(results) - len(failed)} passed, {len(failed)} failed "
                       f"({len(suites)} test file{'s' if len(suites) != 1 else ''})")
    sys.exit(1 if failed else 0)


def register(group) -> None:
    """Add this module's command to `gridbus routes`."""
    group.add_command(test)
