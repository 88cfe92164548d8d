"""File destination: write each message atomically into a system's inbox folder.

The file is named after the message id, so a redelivery overwrites the same
file instead of adding a duplicate; it is written under a dot-name, fsynced,
then renamed, so the receiving system never sees half a file.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from marshmallow import RAISE, Schema, fields

from bus.connector import DeliveryReceipt
from bus.envelope import Envelope
from bus.errors import TransientDeliveryError
from bus.options import describe
from bus.routes.model import Endpoint
from bus.transform import Outbound

EXTENSIONS = {"application/xml": ".xml", "application/json": ".json", "text/csv": ".csv"}


class FileOptions(Schema):
    class Meta:
        unknown = RAISE

    path = fields.String(required=True, metadata=describe(
        "The receiving system's inbox folder (created if missing); each message is written there atomically "
        "as <message id>.xml, .json, .csv or .dat."))


class FileDestination:
    name = "file"
    roles = ("destination",)

    def options_schema(self, role: str) -> type[Schema]:
        return FileOptions

    def claim(self, endpoint: Endpoint):
        return (self.name, os.path.abspath(endpoint.options["path"]))

    def deliver(self, outbound: Outbound, envelope: Envelope, endpoint: Endpoint) -> DeliveryReceipt:
        started = time.perf_counter()
        folder = Path(endpoint.options["path"])
        target = folder / f"{envelope.message_id}{EXTENSIONS.get(outbound.content_type, '.dat')}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".", suffix=".part", dir=folder)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(outbound.body)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:  # disk full, permissions, NFS hiccup: may clear up
            raise TransientDeliveryError(f"{endpoint.system}: cannot write {target}: {exc}",
                                         endpoint.system) from exc
        return DeliveryReceipt(endpoint.system, "written", time.perf_counter() - started, str(target))
