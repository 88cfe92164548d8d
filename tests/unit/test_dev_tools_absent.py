"""Without gridbus-dev (a runtime-only install) `gridbus demo`, `bench` and `dev` still exist by
name, say what to install and fail; with it, they are gridbus-dev's commands."""
from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from bus.cli import main


@pytest.fixture
def runtime_only(monkeypatch):
    monkeypatch.setattr(main, "plugins", lambda: {})
    return main.cli


@pytest.mark.parametrize("argv", [["demo"], ["bench", "ingest", "--reads", "10"], ["dev", "up"], ["demo", "--help"]])
def test_a_development_command_from_a_runtime_only_install_says_what_to_install(runtime_only, argv):
    # Given gridbus without gridbus-dev, When a development command runs
    done = CliRunner().invoke(runtime_only, argv)
    # Then it fails and names what to run instead
    assert done.exit_code == 1
    assert f"gridbus {argv[0]} is a development tool and is not part of this install" in done.output
    assert "pip install -e ./dev" in done.output and "make " in done.output


def test_help_of_a_runtime_only_install_lists_the_development_commands_as_not_installed(runtime_only):
    # Given gridbus without gridbus-dev, When asked for help
    text = CliRunner().invoke(runtime_only, ["--help"]).output
    # Then demo, bench and dev are listed, marked as not installed
    for name in ("demo", "bench", "dev"):
        line = next(line for line in text.splitlines() if line.strip().startswith(name + " "))
        assert "[not installed]" in line, line


def test_with_gridbus_dev_installed_the_commands_are_its_own():
    # Given the development environment (gridbus-dev installed: make venv)
    # When its commands are looked up, Then they come from the gridbus.cli entry points
    ctx = click.Context(main.cli, info_name="gridbus")
    for name in ("demo", "bench", "dev"):
        command = main.cli.get_command(ctx, name)
        assert command.callback.__module__.startswith("gridbus_dev."), name
