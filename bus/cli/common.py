"""Shared CLI plumbing: settings, loading routes, turning GridbusError into exit codes, and
output fit for scripts (``--json``) and for pipes (progress only where someone watches)."""
from __future__ import annotations

import base64
import datetime as dt
import functools
import json
import logging
import sys
from typing import Callable

import click

from bus.errors import ConfigError, GridbusError, RouteValidationError
from bus.routes import RouteTable, load_routes
from bus.settings import Settings


def settings() -> Settings:
    return Settings.load()


def routes_from(paths: tuple[str, ...] | list[str] | None, only: str | None = None) -> RouteTable:
    table = load_routes(list(paths) if paths else [settings().routes_path])
    return table.select([r.strip() for r in only.split(",")] if only else None)


def fails_cleanly(func=None, *, code: int = 1):
    """GridbusError → message on stderr and exit ``code`` (1; a command whose 1 means "a check
    failed" gives 2 to its errors); no traceback for users.  ``@fails_cleanly`` or
    ``@fails_cleanly(code=2)``."""
    if func is None:
        return functools.partial(fails_cleanly, code=code)

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except RouteValidationError as exc:
            for error in exc.errors:
                click.echo(str(error), err=True)
            click.echo(f"{len(exc.errors)} error(s)", err=True)
            sys.exit(code)
        except GridbusError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(code)
    return wrapper


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def table(rows: list[list], headers: list[str]) -> str:
    cells = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


json_option = click.option(
    "--json", "as_json", is_flag=True,
    help="One JSON document on stdout, nothing else (a list, or an object for one item); "
         "times are seconds since the epoch (UTC).")

quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress lines on stderr.")


def _jsonable(value):
    """What ``json`` cannot write itself: times become epoch seconds like every other time in
    the output; bytes become text when they are UTF-8, else ``{"base64": ...}``."""
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)).timestamp()
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    return str(value)  # a Path, a Decimal: their text is what a script would compare


def echo_json(document) -> None:
    """``--json`` output: exactly one JSON document on stdout, for ``jq`` and scripts.

    The one shape for every list and show command: a list of objects for a list command
    (``[]`` when there is nothing, never a sentence), an object for a show command; times
    as seconds since the epoch (UTC), as numbers, as the stores keep them."""
    # ASCII (\u escapes): a lone surrogate in a stored reply prints too, whatever the locale
    click.echo(json.dumps(document, indent=2, default=_jsonable))


def echo_list(records: list[dict], as_json: bool, columns: dict[str, str | Callable[[dict], object]],
              nothing: str) -> None:
    """A list command's output: ``records`` as JSON with ``--json``; else a table whose
    ``columns`` map each header to a record key or to a function of the record; else ``nothing``."""
    if as_json:
        echo_json(records)
    elif records:
        cells = [[cell(r) if callable(cell) else r.get(cell, "") for cell in columns.values()] for r in records]
        click.echo(table([["" if c is None else c for c in row] for row in cells], list(columns)))
    else:
        click.echo(nothing)


def utc_clock(ts: float | None) -> str:
    """An epoch time for people: 2026-12-04 09:30:00Z ('-' for none)."""
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ") if ts else "-"


def parse_duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
    except (ValueError, IndexError) as exc:
        raise ConfigError(f"not a duration: {text!r} (e.g. 90s, 15m, 2h, 7d)") from exc


class Progress:
    """A progress line on stderr: rewritten in place on a terminal; into a pipe or a log file a
    plain line at most every ``every_s`` (a ``\\r`` there made one 300 kB line of the log);
    nothing with ``quiet`` (``--quiet``)."""

    def __init__(self, every_s: float = 10.0, stream=None, quiet: bool = False):
        import time

        self._clock = time.monotonic
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.quiet = quiet
        self.every_s, self._last, self._shown = every_s, float("-inf"), False

    def show(self, text: str) -> None:
        if self.quiet:
            return
        if self.tty:
            self.stream.write(f"\r  {text}   ")
        elif self._clock() - self._last >= self.every_s:
            self._last = self._clock()
            self.stream.write(f"  {text}\n")
        else:
            return
        self._shown = True
        self.stream.flush()

    def done(self) -> None:
        if self.tty and self._shown:
            self.stream.write("\n")
            self.stream.flush()
        self._shown = False
