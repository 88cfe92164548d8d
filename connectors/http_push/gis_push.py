"""The gateway's GIS push endpoint: a change document applied to the network store, then answered.

    POST /v1/push/<path>   (a route whose source is gis-push) JSON change document or XML
                           MasterDataLinkageConfig → 200 + IEC 61968-100 Reply OK / PARTIAL /
                           FAILED, one Error per change not applied (as_error: code, reason,
                           changeId in details, xpath); 4xx for a body that is no change document

Why the gateway applies the document itself, before it answers, instead of publishing it onward
as other pushes: the GIS's question is "did the tree take my changes?", and only the store knows
(a bad parent, a cycle, a stale sequence).  An answer after the commit is the truth; a 202 would
send the GIS looking for a reply elsewhere.  The document's transaction is the store's (one per
document), so a crash before the answer leaves nothing of it, and the GIS sends it again; a crash
after the commit and before the answer makes the resend all DUPLICATE, answered OK.

One writer thread applies the documents in the order their bodies arrived (GIS order for a GIS
that waits for each answer); the event loop only reads bodies and waits on a future.  Documents
are parsed on that thread too, so the gateway holds at most one parsed document at a time; at most
``MAX_WAITING`` read bodies wait behind it, beyond that a push is answered 503 before its body is
read.  A body must arrive whole within the route's ``read_timeout_s`` (408): a slow sender costs
a socket, never the writer.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from bus import hooks
from bus.documents import check_json_depth
from bus.envelope import new_message_id
from bus.errors import DecodeError, ValidationError
from bus.network import NetworkStore
from bus.network.cim import linkage_changes, read_linkages
from bus.network.model import ApplyResult, read_document
from bus.network.store import NetworkStoreError
from bus.routes.model import Route
from connectors.http_push.app import Refusal, _lone_surrogate, _now, count_refusal, reply
from connectors.http_push.server import _json, environ_of

log = logging.getLogger("gridbus.gateway.network")
NOUN = "NetworkChanges"
PUSH = "/v1/push/"
MAX_WAITING = 4  # bodies read and waiting for the writer (one GIS sends one document at a time)
_BEYOND_64_BITS = re.compile(r"(?<![\d.])\d{20,}(?![\d.eE])")  # an integer of 20 digits or more


class NetworkPush:
    def __init__(self, routes: list[Route], gateway, store: NetworkStore):
        """``gateway``: the push application (``app.Gateway``), for its API keys and rate limit."""
        self.routes = {r.source.options["path"].strip("/"): r for r in routes}
        self.gateway, self.store = gateway, store
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="network-writer")
        self.waiting = 0

    def serves(self, path: str) -> bool:
        return path.startswith(PUSH) and path[len(PUSH):].strip("/") in self.routes

    def close(self) -> None:
        """Let the document being applied finish (its transaction commits or rolls back whole)."""
        self.writer.shutdown(wait=True, cancel_futures=True)

    async def handle(self, request: web.Request) -> web.Response:
        route = self.routes[request.path[len(PUSH):].strip("/")]
        environ = environ_of(request, b"")  # headers only: the body is read once the caller is known
        system = "?"
        try:
            if request.method != "POST":
                raise Refusal(405, "METHOD_NOT_ALLOWED", "use POST", [("Allow", "POST")])
            if getattr(self.gateway.keys, "shared", False):  # a round trip to PostgreSQL: off the loop
                system = await asyncio.get_running_loop().run_in_executor(None, self.gateway.caller, environ)
            else:
                system = self.gateway.caller(environ)
            if system != route.source.system:
                raise Refusal(403, "FORBIDDEN", f"{system} may not push network changes to route {route.id} "
                                                f"(its source is {route.source.system})")
            fmt = _format(environ.get("CONTENT_TYPE", ""))
            length, limit = request.content_length, route.source.options["max_body_kb"] * 1024
            if length is None:
                raise Refusal(411, "LENGTH_REQUIRED", "send a Content-Length")
            if length > limit:
                raise Refusal(413, "TOO_LARGE", f"{length} bytes; this route takes at most {limit}")
            if self.waiting >= MAX_WAITING:
                raise Refusal(503, "BUSY", f"{self.waiting} documents wait for the network store; send one at "
                                           "a time, each after the answer to the one before", [("Retry-After", "5")])
        except Refusal as refused:
            return _refused(route, system, refused)
        self.waiting += 1
        try:
            try:
                raw = await asyncio.wait_for(request.read(), route.source.options["read_timeout_s"])
            except asyncio.TimeoutError:
                return _refused(route, system, Refusal(
                    408, "REQUEST_TIMEOUT", f"the body did not arrive within {route.source.options['read_timeout_s']} s",
                    [("Connection", "close")]))
            status, body, headers = await asyncio.get_running_loop().run_in_executor(
                self.writer, self.apply, route, system, environ, raw, fmt)
        finally:
            self.waiting -= 1
        return _json(status, body, headers)

    # -- on the writer thread ------------------------------------------------------------------
    def apply(self, route: Route, system: str, environ: dict, raw: bytes, fmt: str) -> tuple[int, dict, list]:
        try:
            changes, header = _document(raw, fmt, route.source.options["max_changes"])
        except Refusal as refused:
            status, code, reason, *extra = refused.args
            count_refusal(route.id, system, status, code)
            return status, reply("FAILED", NOUN, errors=[(code, reason)]), extra[0] if extra else []
        correlation = _id(header.get("MessageID"))
        message_id = new_message_id()
        fields = {"message_id": message_id, "correlation_id": correlation or message_id, "route": route.id,
                  "attempt": 1, "noun": NOUN, "traceparent": environ.get("HTTP_TRACEPARENT")}
        hooks.emit("received", **fields, source=system, request_id=environ.get("HTTP_X_REQUEST_ID"), bytes=len(raw))
        started = time.perf_counter()
        try:
            result = self.store.apply(changes, document_id=correlation or message_id,
                                      progress=lambda done: log.info("document %s: %d of %d changes checked",
                                                                     correlation or message_id, done, len(changes)))
        except NetworkStoreError as exc:  # rolled back: nothing of the document is in the store
            log.error("document %s from %s not applied: %s", correlation or message_id, system, exc)
            count_refusal(route.id, system, 503, "STORE_UNAVAILABLE")
            return 503, reply("FAILED", NOUN, message_id, correlation, errors=[(
                "STORE_UNAVAILABLE", "the network store cannot take it now; nothing of the document was "
                                     "applied; send it again")]), [("Retry-After", "5")]
        elapsed = time.perf_counter() - started
        refused = len(result.refused)
        if refused:  # counted as rejected rows (gridbus_rows_rejected_total), as a decoder's are
            hooks.emit("transformed", **fields, duration_s=0.0, rows_in=len(changes), readings=0, events=0,
                       rejected=refused, meters=[])
        hooks.emit("delivered", **fields, destination="network", status=result.result, duration_s=elapsed)
        log.info("document %s from %s: %s in %.2f s", correlation or message_id, system, result.summary(), elapsed)
        return 200, network_reply(result, message_id, correlation), []


def network_reply(result: ApplyResult, message_id: str, correlation: str | None) -> dict:
    """The IEC 61968-100 Reply to a change document: one Error per change not applied (a
    duplicate at level INFO), and the counts."""
    body = {"Header": {"Verb": "reply", "Noun": NOUN, "Timestamp": _now(), "MessageID": message_id,
                       "CorrelationID": correlation},
            "Reply": {"Result": result.result}, "summary": result.summary()}
    errors = [o.as_error() for o in result.outcomes if o.status != "applied"]
    if errors:
        body["Reply"]["Error"] = errors
    return body


def _refused(route: Route, system: str, refused: Refusal) -> web.Response:
    status, code, reason, *extra = refused.args
    if status not in (401, 429):  # those two the gateway's caller() has counted
        count_refusal(route.id, system, status, code)
    return _json(status, reply("FAILED", NOUN, errors=[(code, reason)]), extra[0] if extra else None)


def _format(content_type: str) -> str:
    media = content_type.split(";")[0].strip().lower()
    if media.endswith("json"):
        return "json"
    if media.endswith("xml"):
        return "xml"
    raise Refusal(415, "UNSUPPORTED_MEDIA_TYPE", "send a change document (application/json) or a "
                                                 "MasterDataLinkageConfig (application/xml)")


def _id(value) -> str | None:
    return value[:128] if isinstance(value, str) and value.strip() else None


def _document(raw: bytes, fmt: str, max_changes: int) -> tuple[list, dict]:
    """The changes and Header of a body, or ``Refusal`` saying why it is no change document."""
    if fmt == "xml":
        try:
            linkages = read_linkages(raw)
            changes = linkage_changes(linkages)
        except (DecodeError, ValidationError) as exc:
            raise Refusal(400, "NOT_A_CHANGE_DOCUMENT", str(exc)) from exc
        header = {"MessageID": linkages[0]["message_id"]} if linkages else {}
    else:
        try:
            check_json_depth(raw)  # before parsing: the parser recurses once per level
        except DecodeError as exc:
            raise Refusal(400, "TOO_DEEP", str(exc)) from exc
        try:
            text = raw.decode(json.detect_encoding(raw))
        except UnicodeDecodeError as exc:
            raise Refusal(400, "MALFORMED_JSON", f"body is not JSON in UTF-8 (or UTF-16/32): {exc}") from exc
        lone = _lone_surrogate(text)
        if lone:
            raise Refusal(400, "MALFORMED_JSON", f"body is not JSON: {lone} is half of a UTF-16 pair, no character")
        outside = _outside_strings(text)
        # each change is an object with at most one object inside (attributes): counted before
        # parsing, so a body of a million empty objects is never built
        containers = outside.count("{") + outside.count("[")
        if containers > 2 * max_changes + 64:
            raise Refusal(413, "TOO_MANY_CHANGES", f"{containers:,} objects and lists; a document of at most "
                                                   f"{max_changes:,} changes has no more than {2 * max_changes + 64:,}")
        huge = _BEYOND_64_BITS.search(outside)
        if huge:  # the store keeps attributes as JSON written by orjson, which stops at 64 bits
            raise Refusal(400, "NUMBER_OUT_OF_RANGE", f"integer {huge.group()[:24]}... has more than 19 digits")
        try:
            changes, header = read_document(text)
        except DecodeError as exc:
            raise Refusal(400, "MALFORMED_JSON", str(exc)) from exc
        except ValidationError as exc:
            raise Refusal(400, "NOT_A_CHANGE_DOCUMENT", str(exc)) from exc
    if len(changes) > max_changes:
        raise Refusal(413, "TOO_MANY_CHANGES", f"{len(changes):,} changes; at most {max_changes:,} per document: "
                                               "split it, in GIS order")
    return changes, header


def _outside_strings(text: str) -> str:
    """JSON text without its strings (escapes paired as the parser reads them, as
    ``bus.documents.nesting_depth`` does): what is left is brackets, numbers and literals."""
    if "\\" in text:
        text = text.replace("\\\\", "").replace('\\"', "")
    return "".join(text.split('"')[::2])
