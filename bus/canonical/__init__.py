"""Canonical documents every decoder produces and every encoder reads."""
from bus.canonical.fields import is_instant
from bus.canonical.schemas import (
    END_DEVICE_EVENTS,
    METER_READINGS,
    EndDeviceEventsSchema,
    MeterReadingsSchema,
    count_values,
    validate_document,
)

__all__ = [
    "END_DEVICE_EVENTS",
    "METER_READINGS",
    "EndDeviceEventsSchema",
    "MeterReadingsSchema",
    "count_values",
    "is_instant",
    "validate_document",
]
