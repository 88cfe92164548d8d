"""billing_network_json and billing_network_xml, read back by the billing stand-ins' own parsers."""
from __future__ import annotations

from bus.transform import TransformContext
from simulators.billing_network import parse_json, parse_xml
from transformers.billing_network_json import BillingNetworkJson
from transformers.billing_network_xml import BillingNetworkXml

PATHS = [{"consumer": "CON-1", "consumerNo": "0001", "meter": "M-1", "category": "domestic", "circle": "C01",
          "division": "C01D1", "subdivision": "C01D1S1", "dt": "DT-1", "feeder": "FDR-2", "substation": "SS-1",
          "effectiveFrom": "2026-11-03T02:00:00+05:30", "version": 2, "retired": False, "changeId": "gis-1"},
         {"consumer": "CON-2", "consumerNo": None, "meter": None, "category": None, "circle": None,
          "division": None, "subdivision": None, "dt": "DT-1", "feeder": None, "substation": None,
          "effectiveFrom": "2026-11-03T02:00:00Z", "version": 7, "retired": True, "changeId": "gis-2"}]
CONTEXT = TransformContext(route_id="r", source_system="gridbus", message_id="m-1", correlation_id="m-1")


def test_billing_1_json_is_read_back_as_the_same_paths():
    # Given two consumer paths
    # When they are encoded for billing-1
    out = BillingNetworkJson()(PATHS, CONTEXT)
    # Then billing-1 reads the same paths, and the message id
    message_id, paths = parse_json(out.body)
    assert out.content_type == "application/json" and message_id == "m-1"
    assert paths == PATHS


def test_billing_2_xml_is_read_back_as_the_same_paths():
    # Given two consumer paths, one with null fields
    # When they are encoded for billing-2
    out = BillingNetworkXml()(PATHS, CONTEXT)
    # Then billing-2 reads the same paths (a null field left out reads as null)
    message_id, paths = parse_xml(out.body)
    assert out.content_type == "application/xml" and message_id == "m-1"
    assert paths == PATHS
