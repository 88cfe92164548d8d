"""Shared CLI plumbing: settings, loading routes, turning GridbusError into exit codes."""
from __future__ import annotations

import functools
import logging
import sys

import click

from bus.errors import ConfigError, GridbusError, RouteValidationError
from bus.routes import RouteTable, load_routes
from bus.settings import Settings


def settings() -> Settings:
    return Settings.load()


def routes_from(paths: tuple[str, ...] | list[str] | None, only: str | None = None) -> RouteTable:
    table = load_routes(list(paths) if paths else [settings().routes_path])
    return table.select([r.strip() for r in only.split(",")] if only else None)


def fails_cleanly(func):
    """GridbusError → message on stderr and exit 1 (2 for usage); no traceback for users."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except RouteValidationError as exc:
            for error in exc.errors:
                click.echo(str(error), err=True)
            click.echo(f"{len(exc.errors)} error(s)", err=True)
            sys.exit(1)
        except ConfigError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except GridbusError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
    return wrapper


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def table(rows: list[list], headers: list[str]) -> str:
    cells = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def parse_duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
    except (ValueError, IndexError) as exc:
        raise ConfigError(f"not a duration: {text!r} (e.g. 90s, 15m, 2h, 7d)") from exc


class Progress:
    """A progress line on stderr: rewritten in place on a terminal; into a pipe or a log file a
    plain line at most every ``every_s`` (a ``\\r`` there made one 300 kB line of the log)."""

    def __init__(self, every_s: float = 10.0, stream=None):
        import time

        self._clock = time.monotonic
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every_s, self._last, self._shown = every_s, float("-inf"), False

    def show(self, text: str) -> None:
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
