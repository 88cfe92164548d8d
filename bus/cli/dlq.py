"""`gridbus dlq list|show|replay|purge|export`: dead letters for the operator on call."""
from __future__ import annotations

import base64
import json
import os
import sys
import time
from pathlib import Path
from xml.dom import minidom

import click

from bus import naming, task_message
from bus.broker_admin import BrokerAdmin
from bus.cli.common import Progress, echo_json, echo_list, fails_cleanly, json_option, quiet_option, settings, utc_clock
from bus.deadletters import replay as replays
from bus.deadletters.collect import collect
from bus.deadletters.store import DeadLetter, DeadLetterStore
from bus.errors import BrokerError, ConfigError
from bus.messaging.publisher import ConfirmingPublisher
from bus.worker.pipeline import SOURCE_CHUNK


def store_path() -> Path:
    return settings().state_dir / "dead-letters.sqlite"


def _dlq_names() -> list[str]:
    """Every route's dead-letter queue on the broker (found there, so a broken route file
    never hides dead letters)."""
    s = settings()
    prefix = naming.dead_letter_queue_name("")
    return sorted(q["name"] for q in BrokerAdmin(s.management_url, s.vhost).queues()
                  if q["name"].startswith(prefix))


def open_store(collect_first: bool = True) -> DeadLetterStore:
    """The store, after moving in whatever waits in the dead-letter queues now."""
    store = DeadLetterStore(store_path())
    if collect_first:
        try:
            collect(settings().broker_url, _dlq_names(), store)
        except BrokerError as exc:
            click.echo(f"warning: broker unreachable, showing the store only: {exc}", err=True)
    return store


def _age(ts: float | None) -> str:
    if not ts:
        return "?"
    s = max(0, time.time() - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s / size:.1f}{unit}"
    return f"{s:.0f}s"


@click.group("dlq")
def dlq():
    """Dead letters: why messages failed, and sending them again once the cause is fixed.

    Dead letters are moved from each route's dead-letter queue into a durable store
    ($GRIDBUS_HOME/state/dead-letters.sqlite, or the PostgreSQL database every host shares
    when GRIDBUS_STATE_STORE is set) by `gridbus keeper` and by every dlq command, byte for
    byte; listing reads the store and never consumes a queue."""


@dlq.command("list")
@click.option("--route", help="Only this route.")
@click.option("--group", is_flag=True, help="Group by fingerprint (route + error class + normalised message).")
@json_option
@fails_cleanly
def list_(route, group, as_json):
    """Counts per route (or per failure group) with the age of the oldest.

    \b
    Examples:
      gridbus dlq list --group
      gridbus dlq list --json | jq -r '.[] | select(.count > 100) | .route'
    """
    rows = open_store().summary(route, group)
    if group:
        columns = {"route": "route", "fingerprint": "fingerprint", "count": "count",
                   "oldest": lambda r: _age(r["oldest"]), "error": "error_class",
                   "example reason": lambda r: (r["reason"] or "")[:70]}
    else:
        columns = {"route": "route", "dead letters": "count", "oldest": lambda r: _age(r["oldest"])}
    echo_list(rows, as_json, columns, "no dead letters")


def _one(store: DeadLetterStore, ident: str, states=("dead", "replaying", "replayed")) -> DeadLetter:
    found = store.select([ident], states=states)
    if not found:
        raise ConfigError(f"no dead letter {ident!r} (give its id or its message id; see `gridbus dlq list`)")
    if len(found) > 1:
        raise ConfigError(f"{ident!r} matches {len(found)} dead letters: "
                          f"{', '.join(x.dl_id for x in found)}; give one of these ids")
    return found[0]


def editable_text(letter: DeadLetter) -> tuple[str, str]:
    """(text an operator can read and edit, kind) of a route message body."""
    try:
        payload = task_message.decode_body(letter.body)
    except (ValueError, TypeError, IndexError, KeyError):
        return letter.body.decode("utf-8", "replace"), "raw"
    if isinstance(payload, dict) and payload.get("kind") == SOURCE_CHUNK:
        return payload["text"], payload.get("format", "csv")
    return json.dumps(payload, indent=2, ensure_ascii=False) + "\n", "json"


def body_from_text(letter: DeadLetter, text: str) -> bytes:
    payload = task_message.decode_body(letter.body)
    if isinstance(payload, dict) and payload.get("kind") == SOURCE_CHUNK:
        return task_message.encode_body({**payload, "text": text})
    try:
        return task_message.encode_body(json.loads(text))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"edited body is not JSON: line {exc.lineno}: {exc.msg}") from exc


@dlq.command("show")
@click.argument("ident")
@click.option("--raw", is_flag=True, help="Write the body bytes exactly as stored, nothing else.")
@json_option
@fails_cleanly
def show(ident, raw, as_json):
    """Headers, error, traceback and body (pretty-printed) of one dead letter.

    IDENT is its dead-letter id or its message id.

    \b
    Examples:
      gridbus dlq show 5f0c2a9e
      gridbus dlq show 5f0c2a9e --json | jq -r .reason
      gridbus dlq show 5f0c2a9e --raw > body.bin
    """
    letter = _one(open_store(), ident)
    if raw:
        sys.stdout.buffer.write(letter.body)
        return
    if as_json:
        echo_json({**_record(letter), "correlation_id": letter.correlation_id, "state": letter.state,
                   "worker_host": letter.worker_host, "traceback": letter.traceback,
                   "replay_id": letter.replay_id, "replayed_at": letter.replayed_at,
                   "replayed_by": letter.replayed_by})
        return
    click.echo(f"dead letter   {letter.dl_id}  ({letter.state})")
    click.echo(f"message id    {letter.message_id}\ncorrelation   {letter.correlation_id}")
    click.echo(f"route         {letter.route}\ndestination   {letter.destination}")
    click.echo(f"error         {letter.error_class}: {letter.reason}")
    click.echo(f"fingerprint   {letter.fingerprint}\nattempts      {letter.attempts}")
    click.echo(f"first failure {time.ctime(letter.first_failure or 0)}\nlast failure  "
               f"{time.ctime(letter.last_failure or 0)} on {letter.worker_host}")
    if letter.replay_id:
        click.echo(f"replayed as   {letter.replay_id} by {letter.replayed_by}")
    click.echo("\nheaders:")
    for key in sorted(letter.headers):
        if key != "gridbus-dl-traceback":
            click.echo(f"  {key}: {letter.headers[key]}")
    if letter.traceback:
        click.echo("\ntraceback:\n" + letter.traceback.rstrip())
    text, kind = editable_text(letter)
    if kind == "xml":
        try:
            text = minidom.parseString(text.encode()).toprettyxml(indent="  ")
        except Exception:  # show what is there, even if it is not well-formed
            pass
    click.echo(f"\nbody ({kind}):\n{text.rstrip()}")


@dlq.command("replay")
@click.argument("idents", nargs=-1)
@click.option("--route", help="With --all: every dead letter of this route.")
@click.option("--all", "all_", is_flag=True, help="Every dead letter (of --route, if given).")
@click.option("--fingerprint", help="Every dead letter of this failure group.")
@click.option("--edit", is_flag=True, help="Open the body in $EDITOR and replay the edited copy.")
@click.option("--body-file", type=click.File("rb"), help="Replay with this body instead (same form as --edit).")
@click.option("--dry-run", is_flag=True, help="Show what would be replayed; send nothing.")
@quiet_option
@fails_cleanly
def replay_cmd(idents, route, all_, fingerprint, edit, body_file, dry_run, quiet):
    """Send dead letters back onto their route (new message id, same correlation id,
    `gridbus-replayed-from`, attempt count reset).

    Each dead letter is sent by one run only: a letter another replay (running at the
    same time) marked first is not sent again, and is listed as not replayed.

    \b
    Examples:
      gridbus dlq replay 5f0c2a9e
      gridbus dlq replay --all --route hes-a-csv-to-mdms-1 --dry-run
      gridbus dlq replay --fingerprint 3b1d9c --quiet
    """
    if not (idents or all_ or fingerprint):
        raise ConfigError("say which: IDS..., --all [--route R], or --fingerprint F")
    store = open_store()
    letters = store.select(list(idents) or None, route=route, fingerprint=fingerprint)
    if idents and len(letters) < len(idents):
        known = {x.dl_id for x in letters} | {x.message_id for x in letters}
        missing = [i for i in idents if i not in known]
        raise ConfigError(f"not dead (unknown, or already replayed): {', '.join(missing)}")
    if dry_run:
        for x in letters:
            click.echo(f"would replay {x.dl_id}  {x.route}  {x.error_class}: {(x.reason or '')[:60]}")
        click.echo(f"{len(letters)} dead letter(s); nothing sent")
        return
    s = settings()
    with ConfirmingPublisher(s.broker_url, "gridbus-dlq-replay") as pub, store.replay_run() as run:
        resumed = replays.finish_interrupted(store, pub, run)
        if resumed.done:
            click.echo(f"completed {len(resumed.done)} replay(s) an earlier run left half-way")
        if resumed.busy:
            click.echo(f"{resumed.busy} replay(s) in progress in another run: left to it", err=True)
        if edit or body_file:
            if len(letters) != 1:
                raise ConfigError("--edit and --body-file replay one dead letter at a time")
            letter = letters[0]
            if body_file:
                text = body_file.read().decode("utf-8")
            else:
                original, kind = editable_text(letter)
                text = click.edit(original, extension=f".{kind if kind != 'raw' else 'txt'}")
                if text is None or text == original:
                    click.echo("not changed: nothing replayed")
                    return
            rid = replays.replay_edited(store, pub, letter, body_from_text(letter, text), run)
            click.echo(f"replayed edited {letter.dl_id} as {rid} (original kept in the audit trail)")
            return
        progress, sent = Progress(quiet=quiet), 0

        def replayed(n: int) -> None:
            nonlocal sent
            sent += n
            progress.show(f"replaying: {sent} / {len(letters)}")

        result = replays.replay(store, pub, letters, replayed, run)
        progress.done()
    for letter, rid in result.done[:20]:
        click.echo(f"{letter.dl_id} -> {rid}")
    click.echo(f"replayed {len(result.done)} dead letter(s)")
    if result.lost:
        click.echo(f"{len(result.lost)} not replayed: already being replayed / replayed by another run", err=True)
        for lost in result.lost[:20]:
            click.echo(f"  {lost.letter.dl_id}: {lost.why()}", err=True)
        if idents:  # named ones this run did not send: as for those found already replayed above
            sys.exit(1)


@dlq.command("purge")
@click.option("--route", help="Only this route.")
@click.option("--yes", is_flag=True, help="Do not ask.")
@fails_cleanly
def purge(route, yes):
    """Delete dead letters, after writing them to an archive (JSON lines).

    \b
    Example:
      gridbus dlq purge --route hes-a-csv-to-mdms-1 --yes
    """
    store = open_store()
    letters = store.select(route=route)
    if not letters:
        click.echo("no dead letters")
        return
    if not yes:
        click.confirm(f"delete {len(letters)} dead letter(s){' of ' + route if route else ''}?", abort=True)
    archive = settings().home / "dlq-archive" / f"purge-{time.strftime('%Y%m%dT%H%M%S')}.jsonl"
    _write_jsonl(archive, letters)
    with store.transaction():
        store.delete([x.dl_id for x in letters])
        store.audit(None, "purge", replays.operator(), {"count": len(letters), "route": route,
                                                        "archive": str(archive)})
    click.echo(f"purged {len(letters)}; archive {archive}")


@dlq.command("export")
@click.option("--route", help="Only this route.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="File (default: standard output).")
@fails_cleanly
def export(route, output):
    """Write dead letters as JSON lines (body as text, or base64 when not UTF-8).

    One object a line, as `dlq show --json` writes one: a stream to archive or to split,
    where `--json` of the list commands is one document.

    \b
    Example:
      gridbus dlq export --route hes-a-csv-to-mdms-1 -o hes-a.jsonl
    """
    letters = open_store().select(route=route)
    if output:
        _write_jsonl(Path(output), letters)
        click.echo(f"exported {len(letters)} to {output}", err=True)
    else:
        for letter in letters:
            click.echo(json.dumps(_record(letter)))


@dlq.command("audit")
@click.argument("ident", required=False)
@json_option
@fails_cleanly
def audit(ident, as_json):
    """Who replayed, edited or purged what, and when (of one dead letter, or of all).

    \b
    Examples:
      gridbus dlq audit 5f0c2a9e
      gridbus dlq audit --json | jq '.[] | select(.action == "purge")'
    """
    store = open_store(collect_first=False)
    dl_id = _one(store, ident).dl_id if ident else None
    echo_list(store.audit_trail(dl_id), as_json,
              {"at": lambda e: utc_clock(e["at"]), "action": "action", "who": "who", "dead letter": "dl_id",
               "detail": lambda e: _detail(e["detail"])}, "no audit entries")


def _detail(detail: dict) -> str:
    """An audit entry's detail on one line of a table (an edited body is in `--json`)."""
    return ", ".join(f"{k}={v}" for k, v in detail.items() if k != "original_body")[:80]


def _record(letter: DeadLetter) -> dict:
    from bus.deadletters.store import to_json
    try:
        body = {"body": letter.body.decode("utf-8")}
    except UnicodeDecodeError:
        body = {"body_base64": base64.b64encode(letter.body).decode()}
    return {"dl_id": letter.dl_id, "message_id": letter.message_id, "route": letter.route,
            "destination": letter.destination, "fingerprint": letter.fingerprint,
            "error_class": letter.error_class, "reason": letter.reason, "attempts": letter.attempts,
            "first_failure": letter.first_failure, "last_failure": letter.last_failure,
            "properties": to_json(letter.properties), "headers": to_json(letter.headers), **body}


def _write_jsonl(path: Path, letters: list[DeadLetter]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".part")
    with open(tmp, "w", encoding="utf-8") as f:
        for letter in letters:
            f.write(json.dumps(_record(letter)) + "\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
