"""The consumer path as the outbox keeps it, and as billing gets it.

Billing gets an object (docs/network-billing-formats.md).  The outbox keeps the path's values as
a JSON array in a fixed order, without the three the row's own columns hold (consumer, version,
change id): the body was 42 % of a 1,000,000-consumer store, most of it key names repeated a
million times, and every byte of it is written twice (WAL, then the database).  A body written
as an object (a store from before) is read as it is.
"""
from __future__ import annotations

import orjson

# the array's order; "consumer", "version" and "changeId" come from the row
STORED = ("consumerNo", "meter", "category", "circle", "division", "subdivision", "dt", "feeder", "substation",
          "effectiveFrom", "retired")


def stored(consumer_no, meter, category, circle, division, subdivision, dt_, feeder, substation, effective_from,
           retired: bool) -> str:
    """The outbox's text of one path (the arguments in STORED order)."""
    return orjson.dumps([consumer_no, meter, category, circle, division, subdivision, dt_, feeder, substation,
                         effective_from, retired]).decode()


def path_of(text: str | bytes, consumer: str, version: int, change_id: str) -> dict:
    """The path billing gets, from an outbox row."""
    value = orjson.loads(text)
    if isinstance(value, dict):
        return value  # written whole, before the array
    body = {"consumer": consumer}
    body.update(zip(STORED[:-1], value[:-1]))
    body.update(version=version, retired=value[-1], changeId=change_id)
    return body
