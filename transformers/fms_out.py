"""Fraud alarms → fraud-management cases (``to_fms_cases``).

One case per ``(meter, window)``: windows are fixed, ``fraud_case_window_s``
seconds long (route option, default one day) and aligned to the UTC epoch, so
which case an event belongs to depends on the event alone.  Repeated tamper
events of one meter in one window become one case, and since the FMS upserts
by ``caseKey``, events of one window that arrive in separate messages land in
one case too.  The bus keeps no state and a redelivery sends the same cases
in the same bytes (only the header ``Timestamp`` differs).  Format, rules and
the fixed-versus-sliding trade-off: docs/wfm-fms-formats.md.
"""
from __future__ import annotations

import calendar
import time
from typing import Any, Mapping

from marshmallow import fields, validate

from bus.errors import ConfigError
from bus.options import OptionsSchema, describe
from bus.transform import Outbound, TransformContext
from transformers.cim import message_header
from transformers.wfm_out import encode_json, event_order, events_of, most_severe

FRAUD_CASES = "FraudCases"
WINDOW_OPTION = "fraud_case_window_s"
DEFAULT_WINDOW_S = 86400
MIN_WINDOW_S = 60
MAX_WINDOW_S = 30 * 86400


class FmsCasesOptions(OptionsSchema):
    fraud_case_window_s = fields.Integer(strict=True, load_default=DEFAULT_WINDOW_S, validate=validate.Range(
        MIN_WINDOW_S, MAX_WINDOW_S), metadata=describe(
        "Length of a fraud case's window in seconds (60 s to 30 days): one meter's tamper events in one "
        "window become one case."))


def check_options(options: Mapping[str, Any], route_id: str | None = None) -> int:
    """The case window in seconds from route ``options``; ``ConfigError`` unless it is an
    int from 60 s to 30 days.  Usable at route-load time as well as per message."""
    value = options.get(WINDOW_OPTION, DEFAULT_WINDOW_S)
    if type(value) is not int or not MIN_WINDOW_S <= value <= MAX_WINDOW_S:
        where = f"route {route_id}: " if route_id else ""
        raise ConfigError(f"{where}option {WINDOW_OPTION} must be a whole number of seconds from "
                          f"{MIN_WINDOW_S} to {MAX_WINDOW_S} (30 days), got {value!r}")
    return value


def _epoch(instant: str) -> int:
    return calendar.timegm(time.strptime(instant, "%Y-%m-%dT%H:%M:%SZ"))


def _instant(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def fraud_cases(events: list[dict], window_s: int) -> list[dict]:
    """Cases of ``events`` grouped by ``(meter, fixed UTC window)``, ordered by caseKey."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for ev in events:
        start = _epoch(ev["createdDateTime"]) // window_s * window_s
        groups.setdefault((ev["meter"], start), []).append(ev)
    cases = []
    for (meter, start), group in groups.items():
        window_start = _instant(start)
        cases.append({
            "caseKey": f"{meter}:{window_start}", "meter": meter,
            "windowStart": window_start, "windowEnd": _instant(start + window_s),
            "severity": most_severe(group),
            "evidence": sorted(group, key=event_order),
        })
    return sorted(cases, key=lambda case: (case["caseKey"], case["meter"]))


class FmsCasesEncoder:
    """``to_fms_cases``: EndDeviceEvents → ``{"Header", "Cases": [...]}`` JSON Outbound.

    Reads the route option ``fraud_case_window_s`` (``ConfigError`` when it is
    not an int from 60 s to 30 days).  Every event given is used (the
    subscription normally selects the fraud class).
    """

    name = "to_fms_cases"
    options_schema = FmsCasesOptions

    def __call__(self, doc: dict, context: TransformContext) -> Outbound:
        window_s = check_options(context.options, context.route_id)
        events = events_of(doc)
        message = {"Header": message_header(FRAUD_CASES, context), "Cases": fraud_cases(events, window_s)}
        return Outbound(body=encode_json(message, FRAUD_CASES), content_type="application/json",
                        noun=FRAUD_CASES, events=len(events), empty=not events)
