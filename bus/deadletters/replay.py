"""Send dead letters back onto their route: new message id, same correlation id,
``gridbus-replayed-from``, attempt count reset.

Killed half-way, a replay leaves each dead letter either still dead or replayed
once: rows are marked ``replaying`` with their new id (committed) before the
publish, ``replayed`` after the broker confirms.  Rows found ``replaying`` by
the next run are published again *with the same new id* and then marked: at
most one replay id per dead letter, and a repeat publish of it is the ordinary
at-least-once redelivery every destination already absorbs.
"""
from __future__ import annotations

import getpass
import hashlib
import os
import uuid
from typing import Callable, Iterable

from bus import hooks, naming
from bus.deadletters import headers as dl
from bus.deadletters.store import DeadLetter, DeadLetterStore
from bus.envelope import H_ATTEMPT, H_TRACEPARENT, child_traceparent
from bus.publisher import ConfirmingPublisher

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


def finish_interrupted(store: DeadLetterStore, pub: ConfirmingPublisher) -> int:
    """Complete replays a killed run left half-way (same replay ids)."""
    stuck = store.select(states=("replaying",))
    for letter in stuck:
        _publish(pub, letter, letter.replay_id, store.replay_body(letter.dl_id))
    pub.flush()
    with store.transaction():
        store.mark_replayed([x.dl_id for x in stuck])
    return len(stuck)


def replay(store: DeadLetterStore, pub: ConfirmingPublisher, letters: list[DeadLetter],
           progress: Callable[[int], None] | None = None) -> list[tuple[DeadLetter, str]]:
    """Replay ``letters`` in batches; returns (dead letter, replay id) pairs."""
    who = operator()
    done: list[tuple[DeadLetter, str]] = []
    for start in range(0, len(letters), BATCH):
        batch = [(x, new_replay_id(x)) for x in letters[start:start + BATCH]]
        with store.transaction():
            store.mark_replaying([(x.dl_id, rid) for x, rid in batch], who)
        for letter, rid in batch:
            _publish(pub, letter, rid)
        pub.flush()
        with store.transaction():
            store.mark_replayed([x.dl_id for x, _ in batch])
            for letter, rid in batch:
                store.audit(letter.dl_id, "replay", who, {"replay_id": rid, "route": letter.route})
        done.extend(batch)
        if progress:
            progress(len(batch))
    return done


def replay_edited(store: DeadLetterStore, pub: ConfirmingPublisher, letter: DeadLetter,
                  new_body: bytes) -> str:
    """Replay an edited copy; the audit keeps the original body and who edited it."""
    who = operator()
    rid = new_replay_id(letter)
    with store.transaction():
        store.mark_replaying([(letter.dl_id, rid)], who, new_body)
        store.audit(letter.dl_id, "edit", who, {
            "replay_id": rid, "original_sha256": hashlib.sha256(letter.body).hexdigest(),
            "original_body": letter.body.decode("utf-8", "replace"),
            "edited_sha256": hashlib.sha256(new_body).hexdigest()})
    _publish(pub, letter, rid, new_body)
    pub.flush()
    with store.transaction():
        store.mark_replayed([letter.dl_id])
    return rid


def describe(letters: Iterable[DeadLetter]) -> str:
    return ", ".join(x.dl_id for x in letters)
