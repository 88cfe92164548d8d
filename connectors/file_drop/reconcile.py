"""Per-file reconciliation: chunk outcomes from the workers → one report per file.

Workers publish one record per chunk on ``gridbus.reconciliation``; this
consumer stores them in the ledger and, when every chunk of a file has an
outcome, writes ``<archived file>.report.json`` and publishes the report as a
``FileReconciliation`` event.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from bus import naming
from bus.amqp_client import broker_errors, connect, until_stopped
from bus.publisher import ConfirmingPublisher
from connectors.file_drop.ledger import Ledger

log = logging.getLogger("gridbus.file-drop")


def build_report(file: dict, outcomes: list[dict]) -> dict:
    rejected = [r for o in outcomes for r in o.get("rejected", [])]
    rows_in = sum(o.get("rows_in") or 0 for o in outcomes)
    dead = [o for o in outcomes if o["result"] == "dead-lettered"]
    return {
        "route": file["route"], "file": file["name"], "checksum": file["checksum"],
        "archived_as": file["archive_path"], "received_at": file["received_at"], "reported_at": time.time(),
        "rows_read": file["rows"], "rows_accepted": rows_in - len(rejected), "rows_rejected": len(rejected),
        "rejections": sorted(rejected, key=lambda r: (r["line"] is None, r["line"] or 0)),
        "chunks": file["chunks"], "chunks_delivered": file["chunks"] - len(dead),
        "chunks_dead_lettered": [{"chunk": o["chunk"], "message_id": o["message_id"], "reason": o["reason"]}
                                 for o in dead],
        "readings_delivered": sum(o.get("readings") or 0 for o in outcomes if o["result"] == "delivered"),
        "events_delivered": sum(o.get("events") or 0 for o in outcomes if o["result"] == "delivered"),
    }


class Reconciler:
    def __init__(self, broker_url: str, ledger_path: Path, sources: dict[str, str]):
        self.broker_url = broker_url
        self.ledger_path = ledger_path
        self.sources = sources   # route id -> source system, for the event's routing key

    def write_reports(self, ledger: Ledger, publisher: ConfirmingPublisher) -> int:
        written = 0
        for file in ledger.complete_files():
            report = build_report(file, ledger.outcomes(file["route"], file["checksum"]))
            target = Path(file["archive_path"] + ".report.json")
            partial = target.with_name(f".{target.name}.part")
            partial.write_text(json.dumps(report, indent=2))
            partial.replace(target)  # whole or absent: readers never see half a report
            source = self.sources.get(file["route"], "unknown")
            publisher.publish(naming.EVENTS_EXCHANGE,
                              naming.events_routing_key("FileReconciliation", "created", source),
                              json.dumps(report).encode(),
                              {"content_type": "application/json", "delivery_mode": 2,
                               "message_id": f"report-{file['checksum'][:24]}", "app_id": "gridbus",
                               "type": "created.FileReconciliation"}, {"gridbus-route": file["route"]})
            publisher.flush()
            ledger.reported(file["route"], file["checksum"])
            log.info("route %s: %s reconciled: %d rows, %d accepted, %d rejected", file["route"],
                     file["name"], report["rows_read"], report["rows_accepted"], report["rows_rejected"])
            written += 1
        return written

    def serve(self, stop) -> None:
        """Consume outcomes until ``stop`` is set; reconnects after a broker outage."""
        ledger = Ledger(self.ledger_path)
        publisher = ConfirmingPublisher(self.broker_url, "gridbus-reconciler")
        until_stopped("reconciliation consumer", lambda: self._consume(ledger, publisher, stop), stop,
                      after_failure=publisher.close)

    def _consume(self, ledger: Ledger, publisher: ConfirmingPublisher, stop) -> None:
        conn = connect(self.broker_url, "gridbus-reconciler")
        try:
            with broker_errors("consuming reconciliation records"):
                ch = conn.channel()
                ch.basic_qos(0, 200, False)
                pending = []

                def on_message(message):
                    ledger.record_outcome(json.loads(message.body))
                    pending.append(message.delivery_tag)

                ch.basic_consume(naming.RECONCILIATION_QUEUE, callback=on_message)
                while not stop.is_set():
                    try:
                        conn.drain_events(timeout=0.5)
                    except TimeoutError:
                        pass
                    # ack after the ledger has the record (SQLite autocommit)
                    if pending:
                        ch.basic_ack(pending[-1], multiple=True)
                        pending.clear()
                    self.write_reports(ledger, publisher)
        finally:
            try:
                conn.close()
            except Exception:
                pass
