"""The outbox keeps a consumer path as an array; billing gets the object it always got."""
from __future__ import annotations

import json

from bus.network.path_body import path_of, stored

PATH = {"consumer": "CON-1", "consumerNo": "0001", "meter": "UPM1", "category": "domestic", "circle": "C01",
        "division": "C01D1", "subdivision": None, "dt": "DT-1", "feeder": "FDR-1", "substation": "SS-1",
        "effectiveFrom": "2026-11-03T02:00:00+05:30", "version": 7, "retired": False, "changeId": "g-9"}


def test_a_stored_path_reads_back_as_the_object_billing_gets_key_for_key_and_in_order():
    # Given a path stored as the outbox keeps it (the row holds consumer, version and change id)
    text = stored(*(PATH[k] for k in ("consumerNo", "meter", "category", "circle", "division", "subdivision", "dt",
                                      "feeder", "substation", "effectiveFrom", "retired")))
    # When it is read with its row's columns
    body = path_of(text, "CON-1", 7, "g-9")
    # Then it is the path, keys in the order billing always got them, and no key name is stored
    assert list(body.items()) == list(PATH.items())
    assert "consumerNo" not in text and len(text) < len(json.dumps(PATH)) * 0.6


def test_a_path_stored_whole_by_an_older_bus_is_read_as_it_is():
    # Given an outbox row written before the array (the whole object)
    text = json.dumps(PATH)
    # When it is read, then it is the object, whatever the columns say
    assert path_of(text, "CON-1", 7, "g-9") == PATH
