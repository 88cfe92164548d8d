"""Test-only transformers, found by the worker through the entry points of the
dist-info folder beside this package (tests put tests/testkit on PYTHONPATH)."""
from __future__ import annotations

import os


class PoisonPill:
    """Kills its worker process, as a segfaulting parser would, when the batch says POISON."""

    name = "poison_pill"

    def __call__(self, payload, context):
        text = payload.text if hasattr(payload, "text") else str(payload)
        if "POISON" in text:
            os._exit(70)
        return payload
