"""``canonical``: a document that already is canonical (pushed by a system that speaks it),
checked against the schema of its noun before anything is delivered."""
from __future__ import annotations

from typing import Any

from bus.canonical import validate_document
from bus.transform import TransformContext
from transformers.instants import NoOptions


class CanonicalDocument:
    name = "canonical"
    options_schema = NoOptions

    def __call__(self, payload: Any, context: TransformContext) -> dict:
        doc = validate_document(payload)
        items = doc.get("MeterReading") or doc.get("EndDeviceEvent") or []
        context.rows_in = len(items)
        context.meters.update(item["meter"] for item in items if "meter" in item)
        return doc
