"""`gridbus routes new` (being written; registers nothing yet)."""
from __future__ import annotations


def register(group) -> None:
    """Add this module's command to `gridbus routes`."""
