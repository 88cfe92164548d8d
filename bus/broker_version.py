"""The one RabbitMQ range gridbus supports, and what it says when a broker is outside it.

gridbus leans on behaviour that changed between minor versions (quorum queue arguments,
which operations need which permission, the stream protocol, Khepri from 3.13 on), so it
claims only what its tests run on: the Debian node of CI (3.10.8) and compose's image tag
(``rabbitmq:3.10-management``), both checked by tests/integration/test_broker_version.py.
Outside the range gridbus still runs, but says so where an operator looks (``routes plan``
and ``routes apply``): refusing would stop a bus in the middle of a broker upgrade.
"""
from __future__ import annotations

SUPPORTED = (3, 10)          # major, minor: every 3.10.x
TESTED = "3.10.8"            # the Debian node CI runs
SUPPORTED_TEXT = "RabbitMQ 3.10.x"


def release(version: str) -> tuple[int, int] | None:
    """(major, minor) of a version string such as ``3.10.8`` or ``3.13.1+1.g0f0a5b4``."""
    parts = version.split("+")[0].split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


def is_supported(version: str) -> bool:
    return release(version) == SUPPORTED


def outside_range(version: str) -> str | None:
    """A warning for a broker outside the supported range, else None."""
    if is_supported(version):
        return None
    return (f"the broker runs RabbitMQ {version or 'of an unknown version'}; gridbus supports "
            f"{SUPPORTED_TEXT} (tested on {TESTED}): docs/security.md, 'Supported broker'")
