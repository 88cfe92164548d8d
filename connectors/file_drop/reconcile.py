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
from bus.messaging import BatchConsumer, ConfirmingPublisher, Delivery
from connectors.file_drop.ledger import Ledger

log = logging.getLogger("gridbus.file-drop")
REPORT_RETRY_S = 60
RESULTS = ("delivered", "dead-lettered")  # what bus/worker/task.py reconcile() sends


def _count(value) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)


def outcome_record(body: bytes) -> dict | None:
    """A chunk outcome as the workers publish it, or None for anything else.  A record that is
    not JSON, or not of this shape, would fail every batch it is in, and the batch would come
    back for ever (and a wrong type would fail the file's report later): it is logged and
    dropped.  Dropping it loses no data of any route: the file's report then names the chunk as
    not accounted for, which is what is known."""
    try:
        record = json.loads(body)
    except (ValueError, RecursionError):  # not JSON (UnicodeDecodeError is a ValueError), or too deep
        return None
    if not isinstance(record, dict):
        return None
    strings = ("route", "checksum", "message_id", "reason")
    if not all(isinstance(record.get(k), str) for k in strings) or record.get("result") not in RESULTS:
        return None
    if not (_count(record.get("chunk")) and record.get("chunk") is not None
            and all(_count(record.get(k)) for k in ("rows_in", "readings", "events"))):
        return None
    rejected = record.get("rejected", [])
    if not isinstance(rejected, list) or not all(
            isinstance(r, dict) and _count(r.get("line")) and isinstance(r.get("reason"), str) for r in rejected):
        return None
    return record


def build_report(file: dict, outcomes: list[dict], chunks: list[dict] = (), survey: dict | None = None) -> dict:
    """The file's report.  It says ``delivered`` only if every line is accounted for: each chunk
    delivered with as many rows decoded as the ingress cut into it, and (CSV) rows read =
    accepted + rejected.  Otherwise ``incomplete``, naming the lines nobody accounted for."""
    survey = survey or {}
    cut = {c["chunk"]: c for c in chunks}
    ingress_rejected = survey.get("rejected", [])
    rejected = [r for o in outcomes for r in o.get("rejected", [])] + ingress_rejected
    accepted, unaccounted = 0, []
    for o in outcomes:
        c = cut.get(o["chunk"], {})
        decoded = o.get("rows_in")
        rows = c.get("rows", decoded)
        if o["result"] == "delivered" and decoded is not None and decoded == rows:
            accepted += decoded - len(o.get("rejected", []))
        else:
            unaccounted.append({"chunk": o["chunk"], "first_line": c.get("first_line"),
                                "last_line": c.get("last_line"), "rows": rows, "rows_decoded": decoded,
                                "result": o["result"]})
    by_line = bool(chunks) and all(c.get("first_line") is not None for c in chunks)  # CSV: rows are lines
    balanced = not unaccounted and (not by_line or accepted + len(rejected) == file["rows"])
    dead = [o for o in outcomes if o["result"] == "dead-lettered"]
    return {
        "route": file["route"], "file": file["name"], "checksum": file["checksum"],
        "archived_as": file["archive_path"], "received_at": file["received_at"], "reported_at": time.time(),
        "status": "delivered" if balanced else "incomplete",
        "rows_read": file["rows"], "rows_accepted": accepted, "rows_rejected": len(rejected),
        "rejections": sorted(rejected, key=lambda r: (r["line"] is None, r["line"] or 0)),
        "unaccounted": unaccounted,
        **({"lines": survey["lines"], "blank_lines": survey["blank_lines"]} if "lines" in survey else {}),
        "chunks": file["chunks"], "chunks_delivered": len(outcomes) - len(unaccounted),
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
        self.failed: dict[tuple[str, str], float] = {}  # (route, checksum) -> when to try its report again

    def write_reports(self, ledger: Ledger, publisher: ConfirmingPublisher) -> int:
        written = 0
        for file in ledger.complete_files():
            key = (file["route"], file["checksum"])
            if self.failed.get(key, 0) > time.monotonic():
                continue
            report = build_report(file, ledger.outcomes(*key), ledger.chunk_lines(*key), ledger.survey(*key))
            target = Path(file["archive_path"] + ".report.json")
            partial = target.with_name(f".{target.name}.part")
            try:
                partial.write_text(json.dumps(report, indent=2))
                partial.replace(target)  # whole or absent: readers never see half a report
            except OSError as exc:  # this file's report only: the others are still written
                log.error("route %s: the report of %s cannot be written (%s); trying again in %ds",
                          file["route"], file["name"], exc, REPORT_RETRY_S)
                self.failed[key] = time.monotonic() + REPORT_RETRY_S
                continue
            self.failed.pop(key, None)
            source = self.sources.get(file["route"], "unknown")
            publisher.publish(naming.EVENTS_EXCHANGE,
                              naming.events_routing_key("FileReconciliation", "created", source),
                              json.dumps(report).encode(),
                              {"content_type": "application/json", "delivery_mode": 2,
                               "message_id": f"report-{file['checksum'][:24]}", "app_id": "gridbus",
                               "type": "created.FileReconciliation"}, {"gridbus-route": file["route"]})
            publisher.flush()
            ledger.reported(file["route"], file["checksum"])
            log.log(logging.INFO if report["status"] == "delivered" else logging.ERROR,
                    "route %s: %s reconciled, %s: %d rows, %d accepted, %d rejected%s", file["route"], file["name"],
                    report["status"], report["rows_read"], report["rows_accepted"], report["rows_rejected"],
                    "".join(f"; lines {u['first_line']}-{u['last_line']} not accounted for ({u['result']}, "
                            f"{u['rows_decoded']} of {u['rows']} rows decoded)" for u in report["unaccounted"]))
            written += 1
        return written

    def serve(self, stop) -> None:
        """Consume outcomes until ``stop`` is set; reconnects after a broker outage.  Reports
        are written between reads, whether or not outcomes came."""
        ledger = Ledger(self.ledger_path)
        publisher = ConfirmingPublisher(self.broker_url, "gridbus-reconciler")

        def record(batch: list[Delivery]) -> None:
            # acked (by the consumer) once the ledger committed them, one transaction a batch
            records = []
            for delivery in batch:
                found = outcome_record(delivery.body)
                if found is None:
                    log.error("%s: a record that is not a chunk outcome, dropped (%d bytes: %r)",
                              naming.RECONCILIATION_QUEUE, len(delivery.body), delivery.body[:120])
                else:
                    records.append(found)
            ledger.record_outcomes(records)

        consumer = BatchConsumer(self.broker_url, [naming.RECONCILIATION_QUEUE], record, name="gridbus-reconciler",
                                 batch_max=200, window_s=0.5, prefetch=200,
                                 between=lambda: self.write_reports(ledger, publisher))
        try:
            consumer.serve(stop, after_failure=publisher.close)
        finally:
            publisher.close()
