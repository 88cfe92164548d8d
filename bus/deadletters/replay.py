"""Send dead letters back onto their route: new message id, same correlation id,
``gridbus-replayed-from``, attempt count reset.

Killed half-way, a replay leaves each dead letter either still dead or replayed
once: rows are marked ``replaying`` with their new id (committed) before the
publish, ``replayed`` after the broker confirms.  Rows found ``replaying`` by
the next run are published again *with the same new id* and then marked: at
most one replay id per dead letter, and a repeat publish of it is the ordinary
at-least-once redelivery every destination already absorbs.

A dead letter is replayed at most once per replay request, even with two
operators replaying it at the same moment: the change of its row to
``replaying`` is a compare-and-set (``dead`` → ``replaying``, committed before
any publish), and only the run whose update changed the row publishes it and
audits it.  A run that lost a row publishes nothing for it and reports it
(:class:`NotReplayed`: being replayed, or already replayed, by another run,
with that run's replay id).
"""
from __future__ import annotations

import getpass
import hashlib
import os
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from bus import hooks, naming
from bus.deadletters import headers as dl
from bus.deadletters.store import DeadLetter, DeadLetterStore, ReplayRun
from bus.errors import GridbusError
from bus.envelope import H_ATTEMPT, H_TRACEPARENT, child_traceparent
from bus.messaging import ConfirmingPublisher

BATCH = 500
# broker annotations and retry bookkeeping that must not follow a replay
_DROP = ("x-death", "x-first-death-exchange", "x-first-death-queue", "x-first-death-reason",
         "x-last-death-exchange", "x-last-death-queue", "x-last-death-reason", "x-delivery-count",
         dl.FIRST_FAILURE, "gridbus-last-error")


def operator() -> str:
    return os.environ.get("GRIDBUS_USER") or getpass.getuser()


def replay_message(letter: DeadLetter, replay_id: str, body: bytes | None = None) -> tuple[bytes, dict, dict]:
    headers = {k: v for k, v in dl.original_headers(letter.headers).items() if k not in _DROP}
    headers.update({H_ATTEMPT: 1, "retries": 0, "id": replay_id, "root_id": replay_id,
                    dl.REPLAYED_FROM: letter.message_id,
                    H_TRACEPARENT: child_traceparent(headers.get(H_TRACEPARENT))})
    properties = dict(letter.properties)
    properties["message_id"] = replay_id
    properties.setdefault("delivery_mode", 2)
    return body if body is not None else letter.body, properties, headers


def _publish(pub: ConfirmingPublisher, letter: DeadLetter, replay_id: str, body: bytes | None = None) -> None:
    body, props, headers = replay_message(letter, replay_id, body)
    pub.publish(naming.INGRESS_EXCHANGE, naming.route_routing_key(letter.route), body, props, headers)
    hooks.emit("replayed", route=letter.route, message_id=replay_id, replayed_from=letter.message_id,
               causation_id=letter.message_id, correlation_id=letter.correlation_id,
               traceparent=headers.get(H_TRACEPARENT), attempt=1)


def new_replay_id(letter: DeadLetter) -> str:
    return f"replay-{uuid.uuid4()}"


@dataclass
class NotReplayed:
    """A dead letter this run did not replay: another run changed its row first."""
    letter: DeadLetter
    state: str | None        # its row now: replaying, replayed, or None (purged meanwhile)
    replay_id: str | None    # the replay id the other run gave it

    def why(self) -> str:
        if self.state == "replaying":
            return f"being replayed by another run (replay id {self.replay_id})"
        if self.state == "replayed":
            return f"already replayed by another run (replay id {self.replay_id})"
        if self.state is None:
            return "no longer in the store (purged)"
        return f"{self.state}, not replayable"


class ReplayLost(GridbusError):
    """An edited replay that did not win its dead letter: nothing was sent."""

    def __init__(self, lost: NotReplayed):
        self.lost = lost
        super().__init__(f"not replayed: {lost.letter.dl_id} is {lost.why()}; the edited body was not sent")


@dataclass
class Replayed:
    done: list[tuple[DeadLetter, str]] = field(default_factory=list)  # (dead letter, replay id) published
    lost: list[NotReplayed] = field(default_factory=list)              # won by another run: not published


@dataclass
class Resumed:
    done: list[DeadLetter] = field(default_factory=list)  # half-way replays of killed runs, completed now
    busy: int = 0  # rows ``replaying`` in runs still alive: theirs to finish, left alone


@contextmanager
def _held(store: DeadLetterStore, run: ReplayRun | None) -> Iterator[ReplayRun]:
    """The caller's run, or a run of this call only."""
    if run is not None:
        yield run
        return
    with store.replay_run() as own:
        yield own


def _lost(store: DeadLetterStore, letters: list[DeadLetter]) -> list[NotReplayed]:
    now = store.replay_states([x.dl_id for x in letters])
    return [NotReplayed(x, *now.get(x.dl_id, (None, None))) for x in letters]


def finish_interrupted(store: DeadLetterStore, pub: ConfirmingPublisher, run: ReplayRun | None = None) -> Resumed:
    """Complete replays a killed run left half-way (same replay ids).

    Rows ``replaying`` are taken only from runs that are gone, never from a live run in
    the middle of publishing them: a run holds a lock for its whole life (bus/deadletters/runs.py:
    a flock, or a PostgreSQL advisory lock) and the kernel or the server releases it when the process dies, SIGKILL included.
    That is exact where an age limit ("replaying for more than N seconds") is a guess:
    a live batch held up by a blocked broker can outlast any N and would be published
    twice, and a killed run's rows would wait N seconds for nothing.  The taking over is
    itself a compare-and-set on the row's run, so two runs finishing the same orphans
    publish each once.  Completed here, a plain replay is audited here (its own run died
    before its audit); an edited one was audited with its edit."""
    who = operator()
    resumed = Resumed()
    with _held(store, run) as mine:
        stuck = [x for x in store.select(states=("replaying",)) if x.replay_run != mine.token]
        by_run: dict[str | None, list[DeadLetter]] = {}
        for letter in stuck:
            by_run.setdefault(letter.replay_run, []).append(letter)
        orphans: list[tuple[DeadLetter, str | None]] = []
        for owner, letters in by_run.items():
            if store.run_alive(owner):
                resumed.busy += len(letters)
                continue
            with store.transaction():
                won = set(store.take_over([x.dl_id for x in letters], owner, mine.token))
            orphans += [(x, owner) for x in letters if x.dl_id in won]
        if not orphans:
            return resumed
        edited = {}
        mine.check()  # still holding its rows: another run may not have taken them meanwhile
        for letter, _ in orphans:
            edited[letter.dl_id] = store.replay_body(letter.dl_id)
            _publish(pub, letter, letter.replay_id, edited[letter.dl_id])
        pub.flush()
        with store.transaction():
            marked = set(store.mark_replayed([x.dl_id for x, _ in orphans], mine.token))
            for letter, owner in orphans:
                if letter.dl_id in marked and edited[letter.dl_id] is None:
                    store.audit(letter.dl_id, "replay", letter.replayed_by or who,
                                {"replay_id": letter.replay_id, "route": letter.route,
                                 "completed_by": who, "interrupted_run": owner})
        resumed.done = [x for x, _ in orphans if x.dl_id in marked]
    return resumed


def replay(store: DeadLetterStore, pub: ConfirmingPublisher, letters: list[DeadLetter],
           progress: Callable[[int], None] | None = None, run: ReplayRun | None = None) -> Replayed:
    """Replay ``letters`` in batches.  Only the letters whose row this run moves from
    ``dead`` to ``replaying`` are published (``.done``: dead letter, replay id); the
    ones another run moved first are not (``.lost``)."""
    who = operator()
    result = Replayed()
    with _held(store, run) as mine:
        for start in range(0, len(letters), BATCH):
            planned = [(x, new_replay_id(x)) for x in letters[start:start + BATCH]]
            with store.transaction():
                won = set(store.mark_replaying([(x.dl_id, rid) for x, rid in planned], who, mine.token))
                result.lost += _lost(store, [x for x, _ in planned if x.dl_id not in won])
            batch = [(x, rid) for x, rid in planned if x.dl_id in won]
            mine.check()
            for letter, rid in batch:
                _publish(pub, letter, rid)
            pub.flush()
            with store.transaction():
                marked = set(store.mark_replayed([x.dl_id for x, _ in batch], mine.token))
                for letter, rid in batch:
                    if letter.dl_id in marked:
                        store.audit(letter.dl_id, "replay", who, {"replay_id": rid, "route": letter.route})
            result.done.extend(batch)
            if progress:
                progress(len(planned))
    return result


def replay_edited(store: DeadLetterStore, pub: ConfirmingPublisher, letter: DeadLetter,
                  new_body: bytes, run: ReplayRun | None = None) -> str:
    """Replay an edited copy; the audit keeps the original body and who edited it.
    Raises ReplayLost, having sent nothing, when another run moved the row first."""
    who = operator()
    rid = new_replay_id(letter)
    with _held(store, run) as mine:
        with store.transaction():
            if not store.mark_replaying([(letter.dl_id, rid)], who, mine.token, new_body):
                [lost] = _lost(store, [letter])
                raise ReplayLost(lost)
            store.audit(letter.dl_id, "edit", who, {
                "replay_id": rid, "original_sha256": hashlib.sha256(letter.body).hexdigest(),
                "original_body": letter.body.decode("utf-8", "replace"),
                "edited_sha256": hashlib.sha256(new_body).hexdigest()})
        mine.check()
        _publish(pub, letter, rid, new_body)
        pub.flush()
        with store.transaction():
            store.mark_replayed([letter.dl_id], mine.token)
    return rid


def describe(letters: Iterable[DeadLetter]) -> str:
    return ", ".join(x.dl_id for x in letters)
