"""A snapshot into the store: diffed, then applied as one document, or held for a human when it
would retire more than a share of the network (a truncated export must not wipe the tree).

A held snapshot keeps its file; ``approve`` diffs it again as of the same instant (the store may
have moved on meanwhile: the changes then are those still real) and applies it whatever it
retires.  Its change ids come from the file's checksum, so approving twice applies nothing twice.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from bus.errors import ConfigError
from bus.network.model import ApplyResult
from bus.network.snapshot import SnapshotDiff, diff_snapshot
from bus.network.store import NetworkStore

DEFAULT_MAX_RETIRE_SHARE = 0.05


@dataclass
class SnapshotOutcome:
    diff: SnapshotDiff
    held_id: str | None = None
    held_reason: str = ""
    result: ApplyResult | None = None
    extra: dict = field(default_factory=dict)

    @property
    def status(self) -> str:
        if self.held_id:
            return "held"
        if self.result is None or not self.result.outcomes:
            return "unchanged"
        return "applied" if not self.result.refused else "partial"

    def report(self) -> dict:
        out = {"status": self.status, **self.diff.summary(),
               "rejectedLines": [{"line": n, "reason": r} for n, r in self.diff.rejected_lines]}
        if self.held_id:
            out.update(heldId=self.held_id, heldReason=self.held_reason)
        if self.result is not None:
            out["apply"] = self.result.summary()
            out["refusedChanges"] = [o.as_dict() for o in self.result.refused[:1000]]
        return out


def held_id_of(diff: SnapshotDiff) -> str:
    return f"snapshot-{diff.checksum[:16]}"


def import_snapshot(store: NetworkStore, path: str | os.PathLike, at: float,
                    max_retire_share: float = DEFAULT_MAX_RETIRE_SHARE, force: bool = False,
                    progress=None) -> SnapshotOutcome:
    """Diff the snapshot at ``path`` as of ``at`` and apply its changes in one transaction, unless
    it would retire more than ``max_retire_share`` of the store's consumers (then hold it)."""
    with diff_snapshot(store, path, at) as diff:
        outcome = SnapshotOutcome(diff)
        if not force and diff.retire_share > max_retire_share:
            outcome.held_id = held_id_of(diff)
            outcome.held_reason = (f"would retire {diff.retired_consumers:,} of {diff.store_consumers:,} consumers "
                                   f"({diff.retire_share:.1%}, more than {max_retire_share:.1%}): a truncated export?")
            store.hold(outcome.held_id, outcome.held_reason, diff.summary(), str(Path(path).resolve()), at)
            return outcome
        if diff.total:
            outcome.result = store.apply(diff.changes(parsed=True), document_id=held_id_of(diff), progress=progress)
        return outcome


def approve_held(store: NetworkStore, held_id: str, user: str, progress=None) -> SnapshotOutcome:
    """Apply a held snapshot (diffed again as of its instant), and mark it approved by ``user``."""
    held = store.held(held_id)
    if not held:
        raise ConfigError(f"no held snapshot {held_id} (see gridbus network held)")
    doc = held[0]
    if not Path(doc["snapshot"]).is_file():
        raise ConfigError(f"held snapshot {held_id}: its file {doc['snapshot']} is gone; discard it")
    outcome = import_snapshot(store, doc["snapshot"], doc["effectiveFrom"], force=True, progress=progress)
    store.decide_held(held_id, "approved", user)
    return outcome


def discard_held(store: NetworkStore, held_id: str, user: str) -> None:
    if not store.decide_held(held_id, "discarded", user):
        raise ConfigError(f"no held snapshot {held_id} (see gridbus network held)")
