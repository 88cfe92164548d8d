"""`gridbus operators`: the accounts that may approve, reject and cancel commands."""
from __future__ import annotations

import os
import sys

import click

from bus.cli.common import echo_list, fails_cleanly, json_option, settings, utc_clock
from bus.errors import ConfigError
from bus.operators import ROLES, Operator, OperatorStore, operators_path

PASSWORD_ENV = "GRIDBUS_OPERATOR_PASSWORD"


def operator_store() -> OperatorStore:
    return OperatorStore(operators_path(settings().state_dir))


def password(password_stdin: bool, confirm: bool = False) -> str:
    """The password: one line on stdin (``--password-stdin``), else $GRIDBUS_OPERATOR_PASSWORD
    (for scripts), else asked on the terminal without echo."""
    if password_stdin:
        return sys.stdin.readline().rstrip("\n")
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    if not sys.stdin.isatty():
        raise ConfigError(f"no password: give --password-stdin, set {PASSWORD_ENV}, or run on a terminal")
    return click.prompt("password", hide_input=True, confirmation_prompt=confirm)


password_stdin_option = click.option("--password-stdin", is_flag=True,
                                     help=f"Read the password from one line on stdin (else ${PASSWORD_ENV}, "
                                          "else a prompt).")


def authenticated(user: str, password_stdin: bool, roles: tuple[str, ...]) -> Operator:
    return operator_store().authenticate(user, password(password_stdin), roles)


@click.group("operators")
def operators():
    """Operator accounts (name, role, password hash) for approving and rejecting commands."""


@operators.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True,
              help="approver: approve, reject and cancel commands; operator: cancel.")
@password_stdin_option
@fails_cleanly
def add(name, role, password_stdin):
    """Add an operator; the password (12 characters or more) is stored as a scrypt hash.

    \b
    Example:
      gridbus operators add bob --role approver
    """
    added = operator_store().add(name, role, password(password_stdin, confirm=True))
    click.echo(f"operator {added.name} added ({added.role})")


@operators.command("remove")
@click.argument("name")
@fails_cleanly
def remove(name):
    """Remove an operator.

    \b
    Example:
      gridbus operators remove bob
    """
    if not operator_store().remove(name):
        raise ConfigError(f"no operator {name}")
    click.echo(f"operator {name} removed")


@operators.command("list")
@json_option
@fails_cleanly
def list_operators(as_json):
    """The operators and their roles.

    \b
    Examples:
      gridbus operators list
      gridbus operators list --json | jq -r '.[] | select(.role == "approver") | .name'
    """
    rows = [{"name": n, "role": r, "added": c} for n, r, c in operator_store().listing()]
    echo_list(rows, as_json, {"name": "name", "role": "role", "added": lambda r: utc_clock(r["added"])},
              "no operators")
