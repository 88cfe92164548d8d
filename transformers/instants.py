"""Source times to canonical instants (UTC, whole seconds, ``Z``)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

from marshmallow import ValidationError, fields, validates

from bus.errors import ConfigError
from bus.options import OptionsSchema, describe

IST = timezone(timedelta(hours=5, minutes=30), "IST")


def local_zone(options: dict[str, Any]) -> tzinfo:
    """The zone of source times that carry no offset: ``options['utc_offset']`` or IST.

    Indian HES exports write local time; a route can override it, e.g. ``"+00:00"``.
    """
    offset = options.get("utc_offset")
    if offset is None:
        return IST
    try:
        return datetime.fromisoformat(f"2000-01-01T00:00:00{offset}").tzinfo  # type: ignore[return-value]
    except ValueError as exc:
        raise ConfigError(f"utc_offset {offset!r} is not like +05:30") from exc


def _format(moment: datetime, zone: tzinfo) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    try:
        utc = moment.astimezone(timezone.utc)
    except OverflowError as exc:  # year 1 minus an offset
        raise ValueError(str(exc)) from exc
    # isoformat pads the year to four digits, strftime("%Y") does not everywhere
    return utc.replace(tzinfo=None, microsecond=0).isoformat() + "Z"


def utc_instant(text: str, zone: tzinfo) -> str:
    """ISO 8601 date-time (offset optional) → ``YYYY-MM-DDTHH:MM:SSZ``; ValueError if not."""
    return _format(datetime.fromisoformat(text.strip()), zone)


def utc_day_start(text: str, zone: tzinfo) -> str:
    """A date (``2026-11-01``, optionally ``+05:30``) → the instant of its local midnight.

    A full date-time is taken as it is.
    """
    s = text.strip()
    if len(s) > 10 and s[10] in "+-Z":
        s = f"{s[:10]}T00:00:00{s[10:]}"
    return _format(datetime.fromisoformat(s), zone)


class LocalTimeOptions(OptionsSchema):
    """Options of a decoder whose source times may carry no offset."""

    utc_offset = fields.String(load_default=None, allow_none=True, metadata=describe(
        "Offset of source times written without one, like +05:30 (default: IST, +05:30).", example="+00:00"))

    @validates("utc_offset")
    def _offset(self, value, **_):
        try:
            local_zone({"utc_offset": value})
        except ConfigError as exc:
            raise ValidationError(str(exc)) from None


class NoOptions(OptionsSchema):
    """A step that reads no route option."""


def canonical_instant(moment: datetime, zone: tzinfo, shift_s: int = 0) -> str:
    """A parsed source time (naive: in ``zone``) ``shift_s`` seconds later, as a canonical instant."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    if shift_s:
        try:
            moment = moment + timedelta(seconds=shift_s)
        except OverflowError as exc:  # the last instant of year 9999
            raise ValueError(str(exc)) from exc
    return _format(moment, zone)
