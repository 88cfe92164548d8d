"""Check a pushed document before it is accepted: the route's first transformer decodes it.

A sender learns at once, with a 400 and the reason, that its document is not
JSON of the right shape, is XML with a DTD or an entity bomb, or has no usable
item; nothing of it is published.  Items refused one by one (an alarm with an
unknown code) are named in a PARTIAL reply and left out of what is published.
The worker decodes again: the route message stays the sender's document, so a
dead letter holds what the sender sent.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from bus import registry
from bus.canonical import END_DEVICE_EVENTS, METER_READINGS, count_values
from bus.errors import GridbusError, MessageError
from bus.routes.model import Route
from bus.transform import TransformContext

log = logging.getLogger("gridbus.gateway")
MAX_REASONS = 50  # a reply naming 50,000 bad alarms helps nobody


@dataclass
class Checked:
    error: tuple[str, str] | None = None           # (code, reason): refuse the whole document
    rejections: list[tuple[Any, str]] = field(default_factory=list)  # (index, reason) of items left out


class DocumentCheck:
    def check(self, route: Route, system: str, document: Any) -> Checked:
        if not route.transform:
            return Checked()
        name = route.transform[0]
        context = TransformContext(route_id=route.id, source_system=system, message_id="-",
                                   correlation_id="-", options=dict(route.options))
        try:
            decoded = registry.transformer(name)(document, context)
        except MessageError as exc:
            return Checked(error=("INVALID_DOCUMENT", str(exc)))
        except GridbusError as exc:  # e.g. a route option the transformer refuses: ours, not the sender's
            log.error("route %s: checking a push with %s failed: %s", route.id, name, exc)
            return Checked(error=("INVALID_DOCUMENT", f"{name}: {exc}"))
        except Exception as exc:  # a transformer bug must not become a 500 without a reason
            log.exception("route %s: %s failed on a pushed document", route.id, name)
            return Checked(error=("INVALID_DOCUMENT", f"{name} cannot read it: {exc.__class__.__name__}: {exc}"))
        rejections = [(r.line, r.reason) for r in context.rejections]
        if rejections and not _has_items(decoded):
            reasons = "; ".join(r for _, r in rejections[:MAX_REASONS])
            return Checked(error=("INVALID_DOCUMENT", f"no usable item: {reasons}"))
        return Checked(rejections=rejections)


def _has_items(decoded: Any) -> bool:
    """Whether a decoded canonical document still holds something to deliver."""
    if isinstance(decoded, dict) and decoded.get("noun") in (END_DEVICE_EVENTS, METER_READINGS):
        return count_values(decoded) != (0, 0)
    return True
