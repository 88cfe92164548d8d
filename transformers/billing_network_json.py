"""Consumer paths → billing-1's JSON batch (docs/network-billing-formats.md, "billing-1").

A transformer of ``gridbus network deliver``: it takes the list of consumer paths of one batch
(each as the outbox wrote it) and returns the request body.
"""
from __future__ import annotations

import json

from bus.transform import Outbound, TransformContext
from transformers.cim import utc_now
from transformers.instants import NoOptions

PATH_FIELDS = ("consumer", "consumerNo", "meter", "category", "circle", "division", "subdivision",
               "dt", "feeder", "substation", "effectiveFrom", "version", "retired", "changeId")


def path_of(update: dict) -> dict:
    """The path fields billing takes, in the documented order; others are left out."""
    return {k: update.get(k) for k in PATH_FIELDS}


class BillingNetworkJson:
    """``billing_network_json``: ``{"Header": ..., "updates": [path, ...]}``, ``application/json``."""

    name = "billing_network_json"
    options_schema = NoOptions

    def __call__(self, paths: list[dict], context: TransformContext) -> Outbound:
        message = {"Header": {"Verb": "changed", "Noun": "ConsumerPaths", "MessageID": context.message_id,
                              "Timestamp": utc_now(), "Source": context.source_system},
                   "updates": [path_of(p) for p in paths]}
        body = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        return Outbound(body=body, content_type="application/json", noun="ConsumerPaths", empty=not paths)
