"""IEC 61968-9 MasterDataLinkageConfig into network changes: a close and a create of a usage
point's DT link at one instant is a move; a lone create a new consumer; a lone close a retire."""
from __future__ import annotations

import datetime as dt

import pytest

from bus.errors import DecodeError, ValidationError
from bus.network import open_store
from bus.network.cim import linkage_changes, read_linkages

NS = "http://iec.ch/TC57/2011/MasterDataLinkageConfig#"


def message(verb, *links, created="2026-11-03T01:00:00+05:30"):
    configs = "".join(f"""
      <m:MasterDataLinkageConfig>
        <m:ConfigurationEvent><m:createdDateTime>{created}</m:createdDateTime>
          <m:effectiveDateTime>{at}</m:effectiveDateTime></m:ConfigurationEvent>
        <m:Meter><m:Names><m:name>{meter}</m:name></m:Names></m:Meter>
        <m:UsagePoint><m:mRID>{consumer}</m:mRID><m:Equipments><m:mRID>{dt_}</m:mRID></m:Equipments></m:UsagePoint>
      </m:MasterDataLinkageConfig>""" for consumer, meter, dt_, at in links)
    return (f'<msg:RequestMessage xmlns:msg="http://iec.ch/TC57/2011/schema/message" xmlns:m="{NS}">'
            f"<msg:Header><msg:Verb>{verb}</msg:Verb><msg:Noun>MasterDataLinkageConfig</msg:Noun>"
            f"<msg:MessageID>mdlc-{verb}</msg:MessageID></msg:Header>"
            f"<msg:Payload>{configs}</msg:Payload></msg:RequestMessage>").encode()


def test_close_and_create_of_a_dt_link_is_a_move_and_a_lone_create_a_new_consumer(tmp_path):
    # Given a store with DT-1 and DT-2, and consumer C-1 on DT-1
    store = open_store(tmp_path / "n.sqlite")
    t0, t1 = "2026-11-01T00:00:00+05:30", "2026-11-03T02:00:00+05:30"
    base = [{"changeId": f"b{i}", "sequence": i, "effectiveFrom": t0, "kind": "create", "type": t, "mrid": m,
             "parent": p} for i, (t, m, p) in enumerate([("substation", "SS", None), ("feeder", "F", "SS"),
                                                         ("dt", "DT-1", "F"), ("dt", "DT-2", "F")])]
    store.apply(base)
    store.apply(linkage_changes(read_linkages(message("create", ("C-1", "M-1", "DT-1", t0)))))
    # When the GIS closes C-1's link to DT-1 and creates one to DT-2 at t1, in one batch
    links = read_linkages(message("close", ("C-1", "M-1", "DT-1", t1))) + \
        read_linkages(message("create", ("C-1", "M-1", "DT-2", t1)))
    changes = linkage_changes(links)
    # Then that is one move, and the store answers DT-1 before t1, DT-2 from t1
    assert [(c["kind"], c.get("parent")) for c in changes] == [("move", "DT-2")]
    assert store.apply(changes).result == "OK"
    assert store.dts_of(["M-1"], dt.datetime.fromisoformat("2026-11-03T01:59:59+05:30")) == {"M-1": "DT-1"}
    assert store.dts_of(["M-1"]) == {"M-1": "DT-2"}
    # and a meter swap at the same link is an update of the meter; a lone close a retire
    swap = linkage_changes(read_linkages(message("close", ("C-1", "M-1", "DT-2", "2026-11-04T00:00:00+05:30"))) +
                           read_linkages(message("create", ("C-1", "M-9", "DT-2", "2026-11-04T00:00:00+05:30"))))
    assert [(c["kind"], c.get("attributes")) for c in swap] == [("update", {"meter": "M-9"})]
    gone = linkage_changes(read_linkages(message("close", ("C-1", "M-9", "DT-2", "2026-11-05T00:00:00+05:30"))))
    assert [c["kind"] for c in gone] == ["retire"]


@pytest.mark.parametrize("xml, error", [
    (b"<not-closed", DecodeError),
    (b'<!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>', DecodeError),  # entities: defusedxml refuses
    (message("change", ("C", "M", "D", "2026-11-01T00:00:00+05:30")), ValidationError),
])
def test_a_linkage_message_that_cannot_be_read_is_a_message_error(xml, error):
    with pytest.raises(error):
        read_linkages(xml)
