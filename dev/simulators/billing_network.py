"""Billing stand-ins for network hierarchy updates (use case 9): one module, two formats.

    --format json  (billing-1)  POST /consumers/updates  {"updates": [consumer path, ...]}
    --format xml   (billing-2)  POST /consumers/updates  an IEC 61968-100 EventMessage whose
                                Payload is a UsagePointConfig of UsagePoints (below)

A consumer path is what a billing system keeps per consumer (docs/network-billing-formats.md):
``{"consumer", "consumerNo", "meter", "category", "circle", "division", "subdivision", "dt",
"feeder", "substation", "effectiveFrom", "version", "retired", "changeId"}``; ``consumer``,
``version`` (an integer >= 0), ``effectiveFrom`` (an instant with Z or an offset), ``retired``
(a boolean) and ``changeId`` are required, the others are text or absent (null).

Per consumer the stand-in holds the newest path and the versions it stored, in order:

- a version OLDER than the one held (or than an earlier one of the same batch) is a 409
  ``STALE_VERSION`` naming each such consumer with the version sent and held; the batch
  is refused whole and nothing of it is stored;
- the same version again is 200 and stores nothing (a redelivery); ``duplicates`` counts
  it, ``conflicting_duplicates`` when its content differs from what is held;
- a newer version replaces the held path.

Checked in this order, nothing stored unless all pass: 400 (not JSON/XML, not the
document above, body over ``--max-body-mb``: ``BODY_TOO_LARGE``, DTDs and entities
refused), 422 ``CONSUMER_REFUSED`` (a consumer set to fail by /_control, for every
batch that contains it: a permanent refusal the bus dead-letters), 409, then 200.

billing-2 XML (namespaces are read but not required)::

    <EventMessage xmlns="http://iec.ch/TC57/2011/schema/message">
      <Header><Verb>changed</Verb><Noun>UsagePointConfig</Noun><MessageID>m-1</MessageID>
              <Timestamp>2026-11-03T02:00:05Z</Timestamp></Header>
      <Payload><UsagePointConfig xmlns="http://iec.ch/TC57/2011/UsagePointConfig#">
        <UsagePoint>
          <mRID>CON-00000001</mRID>                      consumer
          <version>3</version>
          <isRetired>false</isRetired>                  retired
          <customerCategory>domestic</customerCategory> category
          <Names><name>000100000001</name><NameType><name>ConsumerNumber</name></NameType></Names>
          <ConfigurationEvent><mRID>gis-000123</mRID>   changeId
            <effectiveDateTime>2026-11-03T02:00:00+05:30</effectiveDateTime></ConfigurationEvent>
          <Meter><mRID>UPM00000001</mRID></Meter>
          <ServiceLocation><circle>C01</circle><division>C01D1</division>
                           <subdivision>C01D1S1</subdivision></ServiceLocation>
          <Equipments kind="DistributionTransformer"><mRID>DT-000001</mRID></Equipments>
          <Equipments kind="Feeder"><mRID>FDR-0001</mRID></Equipments>
          <Equipments kind="Substation"><mRID>SS-001</mRID></Equipments>
        </UsagePoint> ...
      </UsagePointConfig></Payload>
    </EventMessage>

billing-2 answers in XML (``ResponseMessage`` with ``Reply/Result`` OK or FAILED and
``Error{code, reason, details}``, details naming the consumer); billing-1 in JSON
(``{"Header", "Reply": {"Result", "Error": [{code, reason, consumer, sent, held}]}}``).

Other routes (JSON, both formats):
    GET  /consumers/<id>   {"consumer", "version", "path", "versions": [stored, in order]}; 404
    GET  /consumers        {"consumers": {id: {"version", "path"}}, "count"}: for ground truth
    GET  /stats            {"stored", "consumers", "stale_409", "stale_updates", "duplicates",
                            "conflicting_duplicates", "failed_422", "posts", "updates_received",
                            "rejected_posts", "refused_posts", "fail_consumers", "mode", "format", "name"}
    POST /_control (also /control)  the failure modes of the other stand-ins ({"mode": "healthy|slow|
                            error|down", "status", "delay_s", "times", "retry_after_s"}) and/or
                            {"fail_consumers": [ids]} (replaces the set; [] clears it) or
                            {"fail_consumer": id} (adds one); a body with only these keys keeps the mode
    POST /_reset; GET /health, /_requests?limit=N
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import defusedxml
import defusedxml.ElementTree as SafeET
import orjson

from simulators.control import (BackgroundServer, ControlError, FailureMode, Faults, JsonRequestHandler,
                                RequestLog, serve_until_signalled, utc_now)

FORMATS = ("json", "xml")
UPDATES_PATH = "/consumers/updates"
DEFAULT_MAX_BODY = 16 << 20
PATH_FIELDS = ("consumer", "consumerNo", "meter", "category", "circle", "division", "subdivision", "dt",
               "feeder", "substation", "effectiveFrom", "version", "retired", "changeId")
TEXT_FIELDS = ("consumerNo", "meter", "category", "circle", "division", "subdivision", "dt", "feeder",
               "substation")
MESSAGE_NS = "http://iec.ch/TC57/2011/schema/message"
UPC_NS = "http://iec.ch/TC57/2011/UsagePointConfig#"
EQUIPMENT_KINDS = {"DistributionTransformer": "dt", "Feeder": "feeder", "Substation": "substation"}
_INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)")
_CONSUMER_PATH = re.compile(r"/consumers/([^/]+)")


class Refused(Exception):
    """A batch the billing system does not take: status, code, reason and the consumers named."""

    def __init__(self, status: int, code: str, reason: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(reason)
        self.status, self.code, self.reason = status, code, reason
        self.errors = errors or [{"code": code, "reason": reason}]


def _bad(reason: str, code: str = "INVALID_UPDATE") -> Refused:
    return Refused(400, code, reason)


def check_path(raw: Any, where: str) -> dict[str, Any]:
    """One consumer path, checked; only the known fields are kept."""
    if not isinstance(raw, dict):
        raise _bad(f"{where} must be an object, not {type(raw).__name__}")
    path = {name: raw.get(name) for name in PATH_FIELDS}
    if not isinstance(path["consumer"], str) or not path["consumer"].strip():
        raise _bad(f"{where}.consumer must be a non-empty string, not {path['consumer']!r}")
    version = path["version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise _bad(f"{where}.version must be an integer >= 0, not {version!r}")
    if not isinstance(path["effectiveFrom"], str) or not _INSTANT.fullmatch(path["effectiveFrom"]):
        raise _bad(f"{where}.effectiveFrom must be an instant like 2026-11-03T02:00:00+05:30, "
                   f"not {path['effectiveFrom']!r}")
    if not isinstance(path["retired"], bool):
        raise _bad(f"{where}.retired must be true or false, not {path['retired']!r}")
    if not isinstance(path["changeId"], str) or not path["changeId"]:
        raise _bad(f"{where}.changeId must be a non-empty string, not {path['changeId']!r}")
    for name in TEXT_FIELDS:
        if path[name] is not None and not isinstance(path[name], str):
            raise _bad(f"{where}.{name} must be a string or null, not {path[name]!r}")
    return path


# --- the two formats --------------------------------------------------------------------

def parse_json(body: bytes) -> tuple[str | None, list[dict[str, Any]]]:
    """(message id, paths) of a billing-1 body."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _bad(f"body is not JSON: {exc}", "MALFORMED_JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("updates"), list) or not doc["updates"]:
        raise _bad('the body is {"updates": [consumer path, ...]} with at least one update', "INVALID_MESSAGE")
    header = doc.get("Header") if isinstance(doc.get("Header"), dict) else {}
    message_id = header.get("MessageID") if isinstance(header.get("MessageID"), str) else None
    return message_id, [check_path(raw, f"updates[{i}]") for i, raw in enumerate(doc["updates"])]


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _child(el: ET.Element, name: str) -> ET.Element | None:
    return next((c for c in el if _local(c.tag) == name), None)


def _text(el: ET.Element | None, *names: str) -> str | None:
    for name in names:
        if el is None:
            return None
        el = _child(el, name)
    return el.text.strip() if el is not None and el.text and el.text.strip() else None


def _own_text(el: ET.Element | None) -> str | None:
    return el.text.strip() if el is not None and el.text and el.text.strip() else None


def parse_xml(body: bytes) -> tuple[str | None, list[dict[str, Any]]]:
    """(message id, paths) of a billing-2 body (module doc); DTDs and entities refused."""
    try:
        root = SafeET.fromstring(body, forbid_dtd=True)
    except (ET.ParseError, defusedxml.DefusedXmlException, ValueError) as exc:
        raise _bad(f"body is not acceptable XML: {type(exc).__name__}: {exc}", "MALFORMED_XML") from None
    if _local(root.tag) not in ("EventMessage", "RequestMessage"):
        raise _bad(f"the root must be EventMessage, not {_local(root.tag)}", "INVALID_MESSAGE")
    noun = _text(root, "Header", "Noun")
    if noun != "UsagePointConfig":
        raise _bad(f"Header/Noun must be UsagePointConfig, not {noun!r}", "UNKNOWN_NOUN")
    payload = _child(root, "Payload")
    config = _child(payload, "UsagePointConfig") if payload is not None else None
    points = [el for el in config if _local(el.tag) == "UsagePoint"] if config is not None else []
    if not points:
        raise _bad("Payload/UsagePointConfig must hold at least one UsagePoint", "INVALID_MESSAGE")
    paths = []
    for i, up in enumerate(points):
        where = f"UsagePoint[{i + 1}]"
        # one pass over the UsagePoint's children (the first of each name, as _child takes it):
        # looking each field up by a scan of the children cost 0.15 ms per consumer
        kids: dict[str, ET.Element] = {}
        names, equipments = [], []
        for el in up:
            local = _local(el.tag)
            kids.setdefault(local, el)
            if local == "Names":
                names.append(el)
            elif local == "Equipments":
                equipments.append(el)
        version, retired = _own_text(kids.get("version")), _own_text(kids.get("isRetired"))
        if version is None or not version.isdigit() or len(version) > 18:
            raise _bad(f"{where}/version must be an integer >= 0, not {version!r}")
        if retired not in ("true", "false"):
            raise _bad(f"{where}/isRetired must be true or false, not {retired!r}")
        named = {_text(n, "NameType", "name"): _text(n, "name") for n in names}
        equipment = {}
        for eq in equipments:
            kind = eq.get("kind")
            if kind not in EQUIPMENT_KINDS:
                raise _bad(f"{where}/Equipments kind must be one of {sorted(EQUIPMENT_KINDS)}, not {kind!r}")
            equipment[EQUIPMENT_KINDS[kind]] = _text(eq, "mRID")
        location, event = kids.get("ServiceLocation"), kids.get("ConfigurationEvent")
        paths.append(check_path({
            "consumer": _own_text(kids.get("mRID")), "consumerNo": named.get("ConsumerNumber"),
            "meter": _text(kids.get("Meter"), "mRID"), "category": _own_text(kids.get("customerCategory")),
            "circle": _text(location, "circle"), "division": _text(location, "division"),
            "subdivision": _text(location, "subdivision"), **equipment,
            "effectiveFrom": _text(event, "effectiveDateTime"),
            "version": int(version), "retired": retired == "true",
            "changeId": _text(event, "mRID")}, where))
    return _text(root, "Header", "MessageID"), paths


def to_xml(paths: list[dict[str, Any]], message_id: str = "m-1", timestamp: str | None = None) -> bytes:
    """A billing-2 document of ``paths``: what the bus's billing-2 route should send."""
    root = ET.Element("EventMessage", xmlns=MESSAGE_NS)
    header = ET.SubElement(root, "Header")
    for tag, text in (("Verb", "changed"), ("Noun", "UsagePointConfig"), ("MessageID", message_id),
                      ("Timestamp", timestamp or utc_now())):
        ET.SubElement(header, tag).text = text
    config = ET.SubElement(ET.SubElement(root, "Payload"), "UsagePointConfig", xmlns=UPC_NS)
    for p in paths:
        up = ET.SubElement(config, "UsagePoint")
        ET.SubElement(up, "mRID").text = p["consumer"]
        ET.SubElement(up, "version").text = str(p["version"])
        ET.SubElement(up, "isRetired").text = "true" if p["retired"] else "false"
        if p.get("category"):
            ET.SubElement(up, "customerCategory").text = p["category"]
        if p.get("consumerNo"):
            names = ET.SubElement(up, "Names")
            ET.SubElement(names, "name").text = p["consumerNo"]
            ET.SubElement(ET.SubElement(names, "NameType"), "name").text = "ConsumerNumber"
        event = ET.SubElement(up, "ConfigurationEvent")
        ET.SubElement(event, "mRID").text = p["changeId"]
        ET.SubElement(event, "effectiveDateTime").text = p["effectiveFrom"]
        if p.get("meter"):
            ET.SubElement(ET.SubElement(up, "Meter"), "mRID").text = p["meter"]
        location = ET.SubElement(up, "ServiceLocation")
        for name in ("circle", "division", "subdivision"):
            if p.get(name):
                ET.SubElement(location, name).text = p[name]
        for kind, field in EQUIPMENT_KINDS.items():
            if p.get(field):
                ET.SubElement(ET.SubElement(up, "Equipments", kind=kind), "mRID").text = p[field]
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _xml_reply(name: str, correlation: str | None, errors: list[dict[str, Any]] | None) -> bytes:
    root = ET.Element("ResponseMessage", xmlns=MESSAGE_NS)
    header = ET.SubElement(root, "Header")
    for tag, text in (("Verb", "reply"), ("Noun", "UsagePointConfig"), ("Timestamp", utc_now()),
                      ("Source", name), ("CorrelationID", correlation or "")):
        ET.SubElement(header, tag).text = text
    reply = ET.SubElement(root, "Reply")
    ET.SubElement(reply, "Result").text = "FAILED" if errors else "OK"
    for error in errors or ():
        el = ET.SubElement(reply, "Error")
        ET.SubElement(el, "code").text = error["code"]
        ET.SubElement(el, "reason").text = error["reason"]
        if error.get("consumer"):
            ET.SubElement(el, "details").text = error["consumer"]
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


# --- the billing system -------------------------------------------------------------------

class BillingNetworkApp:
    """Per consumer the newest path and the versions stored; failure modes; counters."""

    def __init__(self, name: str = "billing-1", fmt: str = "json", max_body_bytes: int = DEFAULT_MAX_BODY) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, not {fmt!r}")
        self.name, self.format, self.max_body_bytes = name, fmt, max_body_bytes
        self.faults = Faults()
        self.requests = RequestLog()
        self.fail_consumers: set[str] = set()
        self._lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        with self._lock:
            self.held: dict[str, dict[str, Any]] = {}
            self.versions: dict[str, list[int]] = {}
            self.counts = dict.fromkeys(("stored", "stale_409", "stale_updates", "duplicates",
                                         "conflicting_duplicates", "failed_422", "posts", "updates_received",
                                         "rejected_posts", "refused_posts"), 0)

    def _count(self, counter: str, n: int = 1) -> None:
        with self._lock:
            self.counts[counter] += n

    # -- business
    def store(self, paths: list[dict[str, Any]]) -> dict[str, int]:
        """Apply a checked batch whole or not at all (module doc); raises ``Refused``."""
        with self._lock:
            failing = sorted({p["consumer"] for p in paths} & self.fail_consumers)
            if failing:
                self.counts["failed_422"] += 1
                raise Refused(422, "CONSUMER_REFUSED", f"billing refuses consumer {failing[0]}",
                              [{"code": "CONSUMER_REFUSED", "reason": f"billing refuses consumer {c}", "consumer": c}
                               for c in failing])
            staged: dict[str, dict[str, Any]] = {}
            order: list[dict[str, Any]] = []
            stale: list[dict[str, Any]] = []
            duplicates = conflicting = 0
            for p in paths:
                c = p["consumer"]
                held = staged.get(c) or self.held.get(c)
                if held is not None and p["version"] < held["version"]:
                    stale.append({"code": "STALE_VERSION", "consumer": c, "sent": p["version"], "held": held["version"],
                                  "reason": f"consumer {c}: version {p['version']} is older than version "
                                            f"{held['version']} held"})
                elif held is not None and p["version"] == held["version"]:
                    duplicates += 1
                    conflicting += p != held
                else:
                    staged[c] = p
                    order.append(p)
            if stale:
                self.counts["stale_409"] += 1
                self.counts["stale_updates"] += len(stale)
                raise Refused(409, "STALE_VERSION", stale[0]["reason"], stale)
            for p in order:
                self.held[p["consumer"]] = p
                self.versions.setdefault(p["consumer"], []).append(p["version"])
            self.counts["stored"] += len(order)
            self.counts["duplicates"] += duplicates
            self.counts["conflicting_duplicates"] += conflicting
            return {"stored": len(order), "duplicates": duplicates}

    def post_updates(self, body: bytes | None) -> tuple[int, bytes, dict[str, str]] | None:
        """(status, body, headers) of a POST of updates; None: drop the connection. ``body``
        None means it was over the size limit and not read."""
        mode = self.faults.take()
        self._count("posts")
        if mode.mode in ("down", "error"):
            self._count("refused_posts")
            self.requests.add(method="POST", path=UPDATES_PATH, status=None if mode.mode == "down" else mode.status)
            if mode.mode == "down":
                return None
            headers = {"Retry-After": f"{mode.retry_after_s:g}"} if mode.retry_after_s is not None else {}
            return self.reply(mode.status, None, [{"code": str(mode.status), "reason": f"injected {mode.status}"}],
                              headers)
        if mode.mode == "slow":
            time.sleep(mode.delay_s)
        message_id = None
        try:
            if body is None:
                raise _bad(f"body over {self.max_body_bytes} bytes", "BODY_TOO_LARGE")
            message_id, paths = (parse_json if self.format == "json" else parse_xml)(body)
            self._count("updates_received", len(paths))
            outcome = self.store(paths)
        except Refused as exc:
            if exc.status == 400:
                self._count("rejected_posts")
            self.requests.add(method="POST", path=UPDATES_PATH, message_id=message_id, status=exc.status,
                              error=exc.code, consumers=[e["consumer"] for e in exc.errors if "consumer" in e])
            return self.reply(exc.status, message_id, exc.errors)
        self.requests.add(method="POST", path=UPDATES_PATH, message_id=message_id, status=200,
                          updates=len(paths), **outcome)
        return self.reply(200, message_id, None, extra=outcome)

    def reply(self, status: int, message_id: str | None, errors: list[dict[str, Any]] | None,
              headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None
              ) -> tuple[int, bytes, dict[str, str]]:
        if self.format == "xml":
            return status, _xml_reply(self.name, message_id, errors), {"Content-Type": "application/xml", **(headers or {})}
        reply: dict[str, Any] = {"Result": "FAILED" if errors else "OK"}
        if errors:
            reply["Error"] = errors
        doc = {"Header": {"Verb": "reply", "Noun": "ConsumerPaths", "Timestamp": utc_now(), "Source": self.name,
                          "CorrelationID": message_id}, "Reply": reply, **(extra or {})}
        return status, orjson.dumps(doc), {"Content-Type": "application/json", **(headers or {})}

    # -- the test-facing side
    def control(self, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            spec = json.loads(body or b"{}")
            if not isinstance(spec, dict):
                raise ControlError("control body must be a JSON object")
            fails = {k: spec.pop(k) for k in ("fail_consumers", "fail_consumer") if k in spec}
            if "fail_consumers" in fails and not (isinstance(fails["fail_consumers"], list) and all(
                    isinstance(c, str) for c in fails["fail_consumers"])):
                raise ControlError("fail_consumers must be a list of consumer ids")
            if "fail_consumer" in fails and not isinstance(fails["fail_consumer"], str):
                raise ControlError("fail_consumer must be a consumer id")
            mode = FailureMode.from_dict(spec) if spec or not fails else None
        except (ValueError, ControlError) as exc:
            return 400, {"Reply": {"Result": "FAILED", "Error": [{"code": "BAD_CONTROL", "reason": str(exc)}]}}
        with self._lock:
            if "fail_consumers" in fails:
                self.fail_consumers = set(fails["fail_consumers"])
            if "fail_consumer" in fails:
                self.fail_consumers.add(fails["fail_consumer"])
        if mode is not None:
            self.faults.set(mode)
        return 200, {"mode": self.faults.current.to_dict(), "fail_consumers": sorted(self.fail_consumers)}

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {**self.counts, "consumers": len(self.held), "fail_consumers": sorted(self.fail_consumers),
                    "mode": self.faults.current.mode, "format": self.format, "name": self.name}

    def consumer(self, consumer: str) -> dict[str, Any] | None:
        with self._lock:
            held = self.held.get(consumer)
            if held is None:
                return None
            return {"consumer": consumer, "version": held["version"], "path": held,
                    "versions": list(self.versions[consumer])}

    def consumers(self) -> dict[str, Any]:
        with self._lock:
            return {"consumers": {c: {"version": p["version"], "path": p} for c, p in self.held.items()},
                    "count": len(self.held)}

    def health(self) -> tuple[int, dict[str, Any]]:
        mode = self.faults.current.mode
        up = mode in ("healthy", "slow")
        return (200 if up else 503), {"status": "ok" if up else "unavailable", "mode": mode, "name": self.name}


class _Handler(JsonRequestHandler):
    server_version = "gridbus-billing-network/1.0"

    def send_bytes(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):   # a client gone before its answer
            self.close_connection = True

    def read_limited(self, limit: int) -> bytes | None:
        """The body, or None when it is over ``limit`` (then the connection is closed unread)."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts, size = [], 0
            while chunk := int(self.rfile.readline(64).split(b";")[0] or b"0", 16):
                size += chunk
                if size > limit:
                    self.close_connection = True
                    return None
                parts.append(self.rfile.read(chunk))
                self.rfile.readline()
            while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(parts)
        length = self.headers.get("Content-Length") or "0"
        if not length.isdigit() or int(length) > limit:
            self.close_connection = True
            return None
        return self.rfile.read(int(length))

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        app: BillingNetworkApp = self.server.app
        match = _CONSUMER_PATH.fullmatch(url.path)
        if url.path == "/stats":
            self.send_json(200, app.stats())
        elif url.path == "/health":
            self.send_json(*app.health())
        elif url.path == "/consumers":
            self.send_json(200, app.consumers())
        elif match:
            held = app.consumer(unquote(match.group(1)))
            self.send_json(200, held) if held else self.send_json(404, {"error": f"no consumer {match.group(1)}"})
        elif url.path == "/_requests":
            limit = parse_qs(url.query).get("limit", ["0"])[0]
            self.send_json(200, {"requests": app.requests.last(int(limit) if limit.isdigit() else 0)})
        else:
            self.send_json(404, {"error": f"no GET {url.path}"})

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        app: BillingNetworkApp = self.server.app
        if path == UPDATES_PATH:
            try:
                body = self.read_limited(app.max_body_bytes)
            except ValueError:                       # a chunk size that is not hex
                body, self.close_connection = None, True
            answer = app.post_updates(body)
            if answer is None:
                self.drop_connection()
            else:
                self.send_bytes(*answer)
            return
        body = self.read_limited(1 << 20) or b""
        if path in ("/_control", "/control"):
            self.send_json(*app.control(body))
        elif path == "/_reset":
            app.clear()
            app.requests.clear()
            self.send_json(200, {"reset": True})
        else:
            self.send_json(404, {"error": f"no POST {path}"})


class BillingNetworkServer(BackgroundServer):
    """A billing stand-in in a background thread (tests); ``.app`` is its BillingNetworkApp."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, name: str = "billing-1", fmt: str = "json",
                 max_body_bytes: int = DEFAULT_MAX_BODY, verbose: bool = False) -> None:
        super().__init__(_Handler, BillingNetworkApp(name, fmt, max_body_bytes), host, port, verbose)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m simulators.billing_network",
                                description="A billing system taking per-consumer network paths "
                                            "(use case 9): billing-1 JSON or billing-2 XML.")
    p.add_argument("--format", choices=FORMATS, default="json", help="json (billing-1) or xml (billing-2)")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--name", help="default billing-1 for json, billing-2 for xml")
    p.add_argument("--max-body-mb", type=float, default=DEFAULT_MAX_BODY / (1 << 20),
                   help="a larger POST is answered 400 BODY_TOO_LARGE unread (default 16)")
    p.add_argument("--verbose", action="store_true", help="log every request to stderr")
    a = p.parse_args(argv)
    name = a.name or ("billing-1" if a.format == "json" else "billing-2")
    return serve_until_signalled(BillingNetworkServer(a.host, a.port, name, a.format,
                                                      int(a.max_body_mb * (1 << 20)), a.verbose))


if __name__ == "__main__":
    sys.exit(main())
