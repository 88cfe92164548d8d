"""The network store alone (a real SQLite file, no broker): validation of each change, as-of
queries, and the outbox of consumer-path updates."""
from __future__ import annotations

import datetime as dt
import itertools

import pytest

from bus.network import open_store
from bus.network.model import Reason

NOV1 = "2026-11-01T00:00:00+05:30"
NOV3 = "2026-11-03T02:00:00+05:30"


class Gis:
    """Change documents as a GIS writes them: ids and sequences that only grow."""

    def __init__(self):
        self.numbers = itertools.count(1)

    def change(self, kind, type_, mrid, parent=None, at=NOV1, **attributes):
        n = next(self.numbers)
        out = {"changeId": f"gis-{n:06d}", "sequence": n, "effectiveFrom": at, "kind": kind, "type": type_,
               "mrid": mrid, "attributes": attributes}
        if parent:
            out["parent"] = parent
        return out

    def network(self, dts=2, consumers_per_dt=3):
        """SS-1 → FDR-1, FDR-2 → DT-1..n under FDR-1 → consumers C-d-i with meters M-d-i."""
        docs = [self.change("create", "substation", "SS-1", voltage_kv="33/11"),
                self.change("create", "feeder", "FDR-1", "SS-1", voltage_kv=11, head_meter="FH-1"),
                self.change("create", "feeder", "FDR-2", "SS-1", voltage_kv=11, head_meter="FH-2")]
        for d in range(1, dts + 1):
            docs.append(self.change("create", "dt", f"DT-{d}", "FDR-1", rating_kva=100, dt_meter=f"DM-{d}"))
            for i in range(1, consumers_per_dt + 1):
                docs.append(self.change("create", "consumer", f"C-{d}-{i}", f"DT-{d}", meter=f"M-{d}-{i}",
                                        consumer_no=f"{d}{i:04d}", category="domestic", circle="LKO",
                                        division="LKO-2", subdivision="LKO-2-3"))
        return docs


@pytest.fixture
def store(tmp_path):
    return open_store(tmp_path / "network.sqlite")


@pytest.fixture
def gis():
    return Gis()


def at(text):
    return dt.datetime.fromisoformat(text)


def test_a_document_with_bad_changes_is_partial_good_ones_applied_each_bad_one_named(store, gis):
    # Given a network with two DTs under FDR-1
    store.apply(gis.network())
    applied_before = gis.change("create", "consumer", "C-OLD", "DT-1", meter="M-OLD")
    store.apply([applied_before])
    stale = gis.change("update", "consumer", "C-1-1", category="commercial")
    newer = gis.change("update", "consumer", "C-1-1", category="industrial")
    store.apply([newer])
    # When one document brings good changes, a bad parent, a cycle, a wrong parent type, a stale
    # sequence, a repeated change id (from before and within the document) and a taken meter
    good1 = gis.change("create", "consumer", "C-NEW", "DT-2", meter="M-NEW")
    bad_parent = gis.change("create", "consumer", "C-X", "DT-404", meter="M-X")
    cycle = gis.change("move", "feeder", "FDR-1", "DT-1")
    wrong_type = gis.change("create", "dt", "DT-9", "SS-1", rating_kva=25)
    good2 = gis.change("update", "dt", "DT-2", rating_kva=250)
    in_doc_twice = dict(good2)
    meter_taken = gis.change("create", "consumer", "C-Y", "DT-2", meter="M-1-2")
    result = store.apply([good1, bad_parent, cycle, wrong_type, stale, applied_before, good2, in_doc_twice,
                          meter_taken])
    # Then the reply is PARTIAL and names each refused change with its reason
    assert result.result == "PARTIAL"
    outcomes = {(o.index, o.status, o.code) for o in result.outcomes}
    assert outcomes == {(0, "applied", None), (1, "refused", Reason.UNKNOWN_PARENT), (2, "refused", Reason.CYCLE),
                        (3, "refused", Reason.WRONG_PARENT_TYPE), (4, "refused", Reason.STALE),
                        (5, "duplicate", Reason.DUPLICATE), (6, "applied", None), (7, "duplicate", Reason.DUPLICATE),
                        (8, "refused", Reason.METER_IN_USE)}
    errors = [o.as_error() for o in result.refused]
    assert [e["xpath"] for e in errors] == ["Payload.changes[1]", "Payload.changes[2]", "Payload.changes[3]",
                                            "Payload.changes[4]", "Payload.changes[8]"]
    assert "DT-404" in errors[0]["reason"] and errors[0]["details"] == bad_parent["changeId"]
    # and the good ones are applied, the refused ones not
    assert store.element("C-NEW")["parent"] == "DT-2"
    assert store.element("DT-2")["attributes"]["rating_kva"] == 250
    assert store.element("DT-9") is None and store.element("C-X") is None and store.element("C-Y") is None
    assert store.element("FDR-1")["parent"] == "SS-1"
    assert store.element("C-1-1")["attributes"]["category"] == "industrial"
    assert len(store.history("DT-2")) == 2  # the repeated change id did not make a third version


def test_a_parent_created_earlier_in_the_same_document_is_a_parent(store, gis):
    # Given an empty store  When one document creates a whole branch, parents first
    result = store.apply(gis.network(dts=1, consumers_per_dt=2))
    # Then all of it is applied and the consumer's path reaches the substation
    assert result.result == "OK" and result.count("applied") == 6
    assert [e["mrid"] for e in store.path("C-1-2")] == ["C-1-2", "DT-1", "FDR-1", "SS-1"]
    assert store.children_counts("FDR-1") == {"dt": 1, "consumer": 2}


def test_the_parent_must_exist_at_effective_from_not_only_later(store, gis):
    # Given a DT created on 3 November
    store.apply(gis.network(dts=0))
    store.apply([gis.change("create", "dt", "DT-L", "FDR-1", at=NOV3)])
    # When a consumer is created under it effective 1 November
    result = store.apply([gis.change("create", "consumer", "C-EARLY", "DT-L", at=NOV1, meter="M-EARLY")])
    # Then it is refused: the DT did not exist then
    assert result.refused[0].code is Reason.UNKNOWN_PARENT and "does not exist at" in result.refused[0].reason


def test_create_of_a_known_mrid_and_changes_of_unknown_ones_are_refused(store, gis):
    store.apply(gis.network(dts=1, consumers_per_dt=1))
    result = store.apply([gis.change("create", "dt", "DT-1", "FDR-1"),
                          gis.change("update", "dt", "DT-77", rating_kva=25),
                          gis.change("update", "feeder", "DT-1", voltage_kv=11),
                          gis.change("update", "dt", "DT-1", "FDR-2", rating_kva=63)])
    assert [o.code for o in result.outcomes] == [Reason.EXISTS, Reason.UNKNOWN_ELEMENT, Reason.WRONG_TYPE,
                                                 Reason.INVALID]
    assert result.result == "FAILED"


def test_retiring_a_dt_with_consumers_is_refused_and_allowed_once_they_are_gone(store, gis):
    # Given DT-1 with one consumer
    store.apply(gis.network(dts=1, consumers_per_dt=1))
    # When the DT is retired  Then it is refused, naming what hangs under it
    refused = store.apply([gis.change("retire", "dt", "DT-1", at=NOV3)])
    assert refused.refused[0].code is Reason.HAS_CHILDREN and "C-1-1" in refused.refused[0].reason
    # When the consumer is retired first, in the same document  Then both apply
    done = store.apply([gis.change("retire", "consumer", "C-1-1", at=NOV3), gis.change("retire", "dt", "DT-1", at=NOV3)])
    assert done.result == "OK"
    assert store.element("DT-1") is None and store.element("DT-1", at=at(NOV1))["type"] == "dt"
    # and the consumer's last path says retired; its meter is free for a new consumer after
    assert store.updates_of("C-1-1")[-1].body["retired"] is True
    assert store.apply([gis.change("create", "dt", "DT-2", "FDR-1", at=NOV3),
                        gis.change("create", "consumer", "C-NEW", "DT-2", at=NOV3, meter="M-1-1")]).result == "OK"


def test_a_meter_replacement_moves_the_serial_and_frees_the_old_one(store, gis):
    # Given consumer C-1-1 with meter M-1-1
    store.apply(gis.network(dts=1, consumers_per_dt=1))
    # When the meter is replaced on 3 November
    assert store.apply([gis.change("update", "consumer", "C-1-1", at=NOV3, meter="M-NEW")]).result == "OK"
    # Then each serial finds the consumer in its own time, and the old one no longer after
    assert store.consumer_of("M-1-1", at(NOV1)) == "C-1-1" and store.consumer_of("M-1-1") is None
    assert store.consumer_of("M-NEW") == "C-1-1" and store.consumer_of("M-NEW", at(NOV1)) is None
    assert store.updates_of("C-1-1")[-1].body["meter"] == "M-NEW"


def test_as_of_a_dt_move_the_old_feeder_before_effective_from_and_the_new_after(store, gis):
    # Given DT-1 under FDR-1, moved to FDR-2 effective 3 November 02:00 IST
    store.apply(gis.network(dts=2, consumers_per_dt=3))
    assert store.apply([gis.change("move", "dt", "DT-1", "FDR-2", at=NOV3)]).result == "OK"
    before, after = at(NOV3) - dt.timedelta(seconds=1), at(NOV3)
    # Then the meter's DT is the same, its feeder the old one before and the new one from then on
    assert store.dts_of(["M-1-1", "DM-1", "FH-1", "UNKNOWN"], before) == {"M-1-1": "DT-1", "DM-1": "DT-1"}
    assert store.feeders_of(["DT-1", "DT-2"], before) == {"DT-1": "FDR-1", "DT-2": "FDR-1"}
    assert store.feeders_of(["DT-1", "DT-2"], after) == {"DT-1": "FDR-2", "DT-2": "FDR-1"}
    assert [e["mrid"] for e in store.path("C-1-1", before)] == ["C-1-1", "DT-1", "FDR-1", "SS-1"]
    assert [e["mrid"] for e in store.path("C-1-1", after)] == ["C-1-1", "DT-1", "FDR-2", "SS-1"]
    assert len(store.consumers_under("FDR-2", before)) == 0 and len(store.consumers_under("FDR-2", after)) == 3
    # and a consumer moved between DTs: the old DT before, the new one after
    store.apply([gis.change("move", "consumer", "C-2-1", "DT-1", at="2026-11-05T10:00:00+05:30")])
    assert store.dts_of(["M-2-1"], at("2026-11-05T09:59:59+05:30")) == {"M-2-1": "DT-2"}
    assert store.dts_of(["M-2-1"], at("2026-11-05T10:00:00+05:30")) == {"M-2-1": "DT-1"}


def test_a_dt_move_writes_one_outbox_update_per_consumer_under_it_with_the_new_path(store, gis):
    # Given two DTs of three consumers each, their creation updates published
    store.apply(gis.network(dts=2, consumers_per_dt=3))
    created = store.pending_updates(100)
    assert len(created) == 6 and {u.version for u in created} == {1}
    store.mark_published([u.id for u in created])
    assert store.pending_updates() == []
    # When DT-1 moves to FDR-2
    result = store.apply([gis.change("move", "dt", "DT-1", "FDR-2", at=NOV3)])
    # Then exactly its three consumers get an update, version 2, with the new path
    pending = store.pending_updates(100)
    assert result.updates == 3
    assert sorted(u.consumer for u in pending) == ["C-1-1", "C-1-2", "C-1-3"]
    for u in pending:
        assert u.version == 2 and u.body["version"] == 2
        assert (u.body["dt"], u.body["feeder"], u.body["substation"]) == ("DT-1", "FDR-2", "SS-1")
        assert u.body["effectiveFrom"] == NOV3 and u.body["retired"] is False
        assert u.body["meter"] == u.consumer.replace("C", "M") and u.body["category"] == "domestic"
    # When the feeder FDR-2 moves to another substation  Then the same three get version 3
    store.apply([gis.change("create", "substation", "SS-2"),
                 gis.change("move", "feeder", "FDR-2", "SS-2", at="2026-11-04T00:00:00+05:30")])
    again = store.pending_updates(100)[3:]
    assert sorted((u.consumer, u.version, u.body["substation"]) for u in again) == [
        ("C-1-1", 3, "SS-2"), ("C-1-2", 3, "SS-2"), ("C-1-3", 3, "SS-2")]
    # and an attribute update of a DT changes no consumer's path
    assert store.apply([gis.change("update", "dt", "DT-2", at=NOV3, rating_kva=160)]).updates == 0


def test_a_change_older_than_the_elements_latest_is_refused_as_backdated(store, gis):
    store.apply(gis.network(dts=1, consumers_per_dt=1))
    store.apply([gis.change("update", "dt", "DT-1", at=NOV3, rating_kva=160)])
    result = store.apply([gis.change("update", "dt", "DT-1", at="2026-11-02T00:00:00+05:30", rating_kva=200)])
    assert result.refused[0].code is Reason.BACKDATED
    assert store.element("DT-1")["attributes"]["rating_kva"] == 160


def test_stats_and_export_show_the_network_now(store, gis):
    store.apply(gis.network(dts=2, consumers_per_dt=2))
    assert store.counts() == {"substation": 1, "feeder": 2, "dt": 2, "consumer": 4}
    stats = store.stats()
    assert stats["changesApplied"] == 9 and stats["outboxPending"] == 4
    rows = list(store.export_rows())
    assert [r["consumer"] for r in rows] == ["C-1-1", "C-1-2", "C-2-1", "C-2-2"]
    assert rows[0] == {"consumer": "C-1-1", "consumer_no": "10001", "meter": "M-1-1", "category": "domestic",
                       "circle": "LKO", "division": "LKO-2", "subdivision": "LKO-2-3", "dt": "DT-1",
                       "dt_rating_kva": "100", "dt_meter": "DM-1", "feeder": "FDR-1", "feeder_kv": "11",
                       "feeder_head_meter": "FH-1", "substation": "SS-1"}
    assert list(store.export_rows(at("2026-10-01T00:00:00+05:30"))) == []
