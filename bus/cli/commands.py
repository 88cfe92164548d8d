"""`gridbus commands`: the command requests (connect, disconnect, ...) and their approval.

A command over its route's ``approval_above`` meters waits as pending-approval
until a second user, not the one who asked, approves it here.  Approving and
rejecting take an operator account with the ``approver`` role and its password
(`gridbus operators add NAME --role approver`); cancelling takes any operator.
The requester and the approver are compared after normalising both names, so
``Alice`` cannot approve what ``alice`` asked for.  Approving
publishes it exactly as the gateway would have; an expired command can no
longer be approved.  Every step is in the audit trail (`commands show ID`).
"""
from __future__ import annotations

import getpass

import click

from bus.cli.common import echo_json, echo_list, fails_cleanly, json_option, routes_from, settings, utc_clock
from bus.cli.operators import authenticated, password_stdin_option
from bus.operators import normalised
from bus.errors import ConfigError
from bus.messaging.publisher import ConfirmingPublisher
from bus.requests.dispatch import publish_callback, publish_request
from bus.requests.replies import failed
from bus.requests.store import RequestStateError, RequestStore, requests_path


def _store() -> RequestStore:
    return RequestStore(requests_path(settings().state_dir))


_user = click.option("--user", default=getpass.getuser, show_default="the login name",
                     help="The operator account doing this (recorded in the audit trail).")


@click.group("commands")
def commands():
    """Command requests to meters: list, show, approve, reject, cancel (with their audit trail)."""


@commands.command("list")
@click.option("--state", help="Only this state, e.g. pending-approval.")
@click.option("--limit", default=50, show_default=True)
@json_option
@fails_cleanly
def list_commands(state, limit, as_json):
    """The latest commands, newest first (pending ones past their expiry are shown expired).

    \b
    Examples:
      gridbus commands list --state pending-approval
      gridbus commands list --json | jq -r '.[] | select(.meters > 1000) | .request_id'
    """
    store = _store()
    store.expire_overdue()
    echo_list([r.summary() for r in store.listing("commands", state, limit)], as_json, {
        "id": "request_id", "action": "action", "meters": "meters", "system": "system", "by": "requested_by",
        "state": "state", "result": "result", "created": lambda r: utc_clock(r["created"]),
        "expires": lambda r: utc_clock(r["expires"]), "approved by": "approved_by"}, "no commands")


@commands.command("show")
@click.argument("request_id")
@json_option
@fails_cleanly
def show(request_id, as_json):
    """One command: what, who, its state, its reply and the audit trail, as JSON.

    Always the JSON object (--json is accepted, for scripts that pass it to every show
    command); times are seconds since the epoch (UTC).

    \b
    Example:
      gridbus commands show 0b6f3c1e --json | jq '.audit[] | [.who, .event]'
    """
    request = _store().get(request_id)
    if request is None:
        raise ConfigError(f"no request {request_id}")
    echo_json({**request.summary(), "request": request.document.get("Request"), "reply": request.reply,
               "audit": _store().trail(request)})


def _finish_without_reply(store: RequestStore, request, state: str) -> None:
    """A command that ended before it was sent: an async requester is told."""
    if request.reply_address:
        reply = failed("EndDeviceControls", request.correlation_id or request.id, state.upper(),
                       f"the command was {state}")
        store.attach_reply(request.id, reply)
        publisher = ConfirmingPublisher(settings().broker_url, "gridbus-commands")
        try:
            publish_callback(publisher, list(routes_from(None)), store.get(request.id), reply)
        finally:
            publisher.close()


@commands.command("approve")
@click.argument("request_id")
@_user
@password_stdin_option
@fails_cleanly
def approve(request_id, user, password_stdin):
    """Approve a pending command (as an approver other than the one who asked) and send it.

    \b
    Example:
      gridbus commands approve 0b6f3c1e --user bob
    """
    user = authenticated(user, password_stdin, ("approver",)).name
    store = _store()
    request = store.get(request_id)
    if request is None or request.kind != "commands":
        raise ConfigError(f"no command {request_id}")
    if request.state != "pending-approval":
        raise RequestStateError(f"command {request_id} is {request.state}, not pending-approval")
    if request.expired:
        store.transition(request_id, "expired", user, {"pending-approval"}, "approval came after its expiry")
        _finish_without_reply(store, request, "expired")
        raise RequestStateError(f"command {request_id} expired at {utc_clock(request.expires)}; it will never be sent")
    if normalised(user) == normalised(request.requested_by or ""):
        raise RequestStateError(f"{user} asked for command {request_id}; a second, different user must approve it")
    route = routes_from(None).get(request.route)
    request = store.transition(request_id, "requested", user, {"pending-approval"}, "approved", approved_by=user)
    publisher = ConfirmingPublisher(settings().broker_url, "gridbus-commands")
    try:
        publish_request(publisher, route, request, store, user)
    finally:
        publisher.close()
    click.echo(f"approved and sent {request_id} ({request.action}, {request.meters} meters)")


@commands.command("reject")
@click.argument("request_id")
@click.option("--reason", default="", help="Why (kept in the audit trail).")
@_user
@password_stdin_option
@fails_cleanly
def reject(request_id, reason, user, password_stdin):
    """Reject a pending command: it is never sent.

    \b
    Example:
      gridbus commands reject 0b6f3c1e --user bob --reason "wrong feeder"
    """
    user = authenticated(user, password_stdin, ("approver",)).name
    store = _store()
    request = store.transition(request_id, "rejected", user, {"pending-approval"}, reason or None)
    _finish_without_reply(store, request, "rejected")
    click.echo(f"rejected {request_id}")


@commands.command("cancel")
@click.argument("request_id")
@_user
@password_stdin_option
@fails_cleanly
def cancel(request_id, user, password_stdin):
    """Cancel a command that has not been sent yet.

    \b
    Example:
      echo "$PASSWORD" | gridbus commands cancel 0b6f3c1e --user carol --password-stdin
    """
    user = authenticated(user, password_stdin, ("approver", "operator")).name
    store = _store()
    request = store.transition(request_id, "cancelled", user, {"pending-approval", "requested"})
    _finish_without_reply(store, request, "cancelled")
    click.echo(f"cancelled {request_id}")
