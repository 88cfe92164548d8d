"""GIS stand-in: the network model of simulators.network, served and pushed as a GIS would.

    GET  /network/snapshot.csv[?fraction=F]   the consumer-indexing export now (streamed,
                      chunked; ``fraction`` < 1 cuts it short like a truncated export);
                      /_control modes apply to it
    GET  /network/changes[?since=N]   {"changes": [...]}: every change the streams made with
                      a sequence > N (the generated network itself is stream "full")
    GET  /network/meters/<serial>[?at=T]      ground truth {"meter", "at", "where": {consumer,
                      dt, feeder, substation} | null}
    GET  /network/consumers/<id>[?at=T]       {"path": consumer path without version | null}
    GET  /network/dts/<id>            ground truth now {"dt", "feeder", "consumers": [ids]}; 404
    POST /push        {"stream": "full" | "new-connections" | "meter-replacements" | "dt-moves" |
                       "retirements" | "drift", the stream's options ("count", "at", "dt",
                       "from_feeder", "to_feeder", "dts", "share", "consumers"), "batch": changes
                       per document (default 5000), "send": false to only apply it, "url",
                       "key": override --bus-url / --bus-key}
                      makes the changes (applied to the model, so the next snapshot has them)
                      and POSTs them in order as change documents (docs/network-formats.md)
                      with X-API-Key; each document is retried on a connection error, 5xx or
                      429 (``retries``, default 5, doubling from 0.2 s) and the push stops at
                      the first document not taken.  Answer: {"stream", "changes",
                      "first_sequence", "last_sequence", "documents", "sent", "status":
                      {status: n}, "stopped": null | reason}
    POST /snapshot    {"fraction": F, "name": file name} writes the export into --drop-dir
                      (write then rename) -> {"path", "rows"}
    GET  /stats       {"substations", "feeders", "dts", "consumers", "sequence", "pushes",
                       "documents_sent", "changes_sent", "push_status" (answers by status,
                       retries included), "snapshots_written",
                       "snapshot_gets", "mode", "name"}
    POST /_sequence   {"after": N}: the next change takes a sequence above N (and its change id
                      with it); for a stand-in restarted against a network store that already
                      holds the changes of its earlier life (`gridbus demo` does this)
                      -> {"sequence": the last sequence used now}
    POST /_control (also /control), /_reset (a new model from the seed, counters cleared);
    GET  /health, /_requests?limit=N   as the other stand-ins

    python -m simulators.gis --consumers 10000 --seed 1 [--bus-url URL --bus-key KEY]
                             [--drop-dir DIR] [--port P] [--name gis]

The network's shape defaults to the dev stack's shared network (``GRIDBUS_DEV_NETWORK_*``,
simulators.network ``shared_recipe``), the one the HES stand-ins and the alarm generator use.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import orjson
import requests

from simulators.control import (BackgroundServer, ControlError, FailureMode, Faults, JsonRequestHandler,
                                RequestLog, serve_until_signalled)
from simulators.network import SNAPSHOT_HEADER, NetworkModel, change_document, shared_recipe

STREAM_OPTIONS = {"new-connections": ("count", "at", "dt"), "meter-replacements": ("count", "at", "consumers"),
                  "dt-moves": ("count", "at", "from_feeder", "to_feeder"), "retirements": ("dts", "at", "dt"),
                  "drift": ("share", "at"), "full": ()}


class GisApp:
    """The model, its journal of changes, the push client and the counters."""

    def __init__(self, name: str = "gis", consumers: int = 10_000, seed: int = 1, bus_url: str | None = None,
                 bus_key: str | None = None, drop_dir: str | None = None, **shape: Any) -> None:
        self.name, self.bus_url, self.bus_key = name, bus_url, bus_key
        self.drop_dir = Path(drop_dir) if drop_dir else None
        self._recipe = dict(consumers=consumers, seed=seed, **shape)
        self.faults = Faults()
        self.requests = RequestLog()
        self.lock = threading.RLock()           # one writer of the model; a snapshot reads it whole
        self._session = requests.Session()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.model = NetworkModel.generate(**self._recipe)
            self.journal: list[dict[str, Any]] = []
            self.counts = {"pushes": 0, "documents_sent": 0, "changes_sent": 0, "snapshots_written": 0,
                           "snapshot_gets": 0}
            self.push_status: collections.Counter[str] = collections.Counter()

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {**self.model.stats(), **self.counts, "push_status": dict(self.push_status),
                    "mode": self.faults.current.mode, "name": self.name}

    # -- pushing
    def push(self, spec: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        stream = spec.get("stream")
        if stream not in STREAM_OPTIONS:
            return 400, {"error": f"stream must be one of {sorted(STREAM_OPTIONS)}, not {stream!r}"}
        unknown = set(spec) - {"stream", "batch", "send", "url", "key", "retries", *STREAM_OPTIONS[stream]}
        batch, retries = spec.get("batch", 5000), spec.get("retries", 5)
        if unknown or not isinstance(batch, int) or batch < 1 or not isinstance(retries, int) or retries < 0:
            return 400, {"error": f"unknown keys {sorted(unknown)}, or batch not >= 1, or retries not >= 0; "
                                  f"{stream} takes {list(STREAM_OPTIONS[stream])}"}
        send = spec.get("send", True)
        url, key = spec.get("url") or self.bus_url, spec.get("key") or self.bus_key
        if send and not url:
            return 400, {"error": "no bus URL: start with --bus-url or give \"url\" (or \"send\": false)"}
        with self.lock:
            try:
                if stream == "full":
                    changes = list(self.model.creates())
                else:
                    changes = self.model.stream(stream, **{k: spec[k] for k in STREAM_OPTIONS[stream] if k in spec})
            except (ValueError, KeyError) as exc:
                return 400, {"error": str(exc)}
            if stream != "full":
                self.journal.extend(changes)
            self.counts["pushes"] += 1
        answer: dict[str, Any] = {"stream": stream, "changes": len(changes),
                                  "first_sequence": changes[0]["sequence"] if changes else None,
                                  "last_sequence": changes[-1]["sequence"] if changes else None,
                                  "documents": -(-len(changes) // batch), "sent": 0, "status": {}, "stopped": None}
        if send:
            self._send(changes, batch, url, key, retries, answer)
        return 200, answer

    def _send(self, changes: list[dict[str, Any]], batch: int, url: str, key: str | None, retries: int,
              answer: dict[str, Any]) -> None:
        status: collections.Counter[str] = collections.Counter()
        for i in range(0, len(changes), batch):
            chunk = changes[i:i + batch]
            body = orjson.dumps(change_document(chunk))
            for attempt in range(retries + 1):
                try:
                    reply = self._session.post(url, data=body, timeout=60, headers={
                        "Content-Type": "application/json", **({"X-API-Key": key} if key else {})})
                    code, detail = str(reply.status_code), reply.text[:300]
                except requests.RequestException as exc:
                    code, detail = "connection-error", f"{type(exc).__name__}: {exc}"
                status[code] += 1
                with self.lock:
                    self.push_status[code] += 1
                again = code == "connection-error" or code == "429" or code.startswith("5")
                if not again or attempt == retries:
                    break
                time.sleep(0.2 * 2 ** attempt)
            if not code.startswith("2"):
                answer["stopped"] = f"document {i // batch + 1} (sequences {chunk[0]['sequence']}.." \
                                    f"{chunk[-1]['sequence']}) answered {code}: {detail}"
                break
            answer["sent"] += len(chunk)
            with self.lock:
                self.counts["documents_sent"] += 1
                self.counts["changes_sent"] += len(chunk)
        answer["status"] = dict(status)

    # -- snapshots
    def write_snapshot(self, spec: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if self.drop_dir is None:
            return 400, {"error": "no drop folder: start with --drop-dir"}
        fraction = spec.get("fraction", 1.0)
        name = spec.get("name") or f"consumer-index-{int(time.time() * 1000)}.csv"
        if not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1 or "/" in name or name.startswith("."):
            return 400, {"error": "fraction is a number 0..1 and name a plain file name"}
        path = self.drop_dir / name
        self.drop_dir.mkdir(parents=True, exist_ok=True)     # made when first needed, not at start
        with self.lock:
            rows = self.model.write_snapshot(path, fraction)
            self.counts["snapshots_written"] += 1
        return 200, {"path": str(path), "rows": rows}

    def dt(self, mrid: str) -> dict[str, Any] | None:
        """A DT in service now: its feeder and its consumers (ground truth for a DT move)."""
        try:
            type_, d = self.model.index_of(mrid)
        except KeyError:
            return None
        if type_ != "dt" or d >= self.model.dts or d in self.model.retired_dt:
            return None
        return {"dt": mrid, "feeder": self.model.feeder_id(self.model.dt_feeder[d]),
                "consumers": [self.model.consumer_id(c) for c in self.model.consumers_of_dt(d)]}

    def sequence_after(self, after: Any) -> tuple[int, dict[str, Any]]:
        if not isinstance(after, int) or isinstance(after, bool) or after < 0:
            return 400, {"error": "after is an integer >= 0"}
        with self.lock:
            self.model.sequence = max(self.model.sequence, after)
            return 200, {"sequence": self.model.sequence}

    def control(self, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            mode = FailureMode.from_dict(orjson.loads(body or b"{}"))
        except (ValueError, ControlError) as exc:
            return 400, {"error": str(exc)}
        self.faults.set(mode)
        return 200, {"mode": mode.to_dict()}


def _at(query: dict[str, list[str]]) -> str | None:
    return query.get("at", [None])[0]


class _Handler(JsonRequestHandler):
    server_version = "gridbus-gis/1.0"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        app: GisApp = self.server.app
        parts = url.path.strip("/").split("/")
        try:
            if url.path == "/stats":
                self.send_json(200, app.stats())
            elif url.path == "/health":
                mode = app.faults.current.mode
                self.send_json(200 if mode in ("healthy", "slow") else 503, {"status": "ok", "mode": mode, "name": app.name})
            elif url.path == "/network/snapshot.csv":
                self._snapshot(app, float(query.get("fraction", ["1"])[0]))
            elif url.path == "/network/changes":
                since = int(query.get("since", ["0"])[0])
                with app.lock:
                    changes = [c for c in app.journal if c["sequence"] > since]
                self.send_json(200, {"changes": changes})
            elif len(parts) == 3 and parts[:2] == ["network", "meters"]:
                meter = unquote(parts[2])
                with app.lock:
                    where = app.model.where(meter, _at(query))
                self.send_json(200, {"meter": meter, "at": _at(query), "where": where})
            elif len(parts) == 3 and parts[:2] == ["network", "consumers"]:
                with app.lock:
                    path = app.model.consumer_path(unquote(parts[2]), _at(query))
                self.send_json(200 if path else 404, {"path": path})
            elif len(parts) == 3 and parts[:2] == ["network", "dts"]:
                with app.lock:
                    found = app.dt(unquote(parts[2]))
                self.send_json(200 if found else 404, found or {"error": f"no DT {parts[2]}"})
            elif url.path == "/_requests":
                self.send_json(200, {"requests": app.requests.last()})
            else:
                self.send_json(404, {"error": f"no GET {url.path}"})
        except (ValueError, KeyError) as exc:
            self.send_json(400, {"error": f"{type(exc).__name__}: {exc}"})

    def _snapshot(self, app: GisApp, fraction: float) -> None:
        mode = app.faults.take()
        app.requests.add(method="GET", path="/network/snapshot.csv", status=None if mode.mode == "down" else
                         mode.status if mode.mode == "error" else 200)
        if mode.mode == "down":
            self.drop_connection()
            return
        if mode.mode == "error":
            self.send_json(mode.status, {"error": f"injected {mode.status}"})
            return
        if mode.mode == "slow":
            time.sleep(mode.delay_s)
        self.send_response(200)
        self.send_header("Content-Type", "text/csv")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        with app.lock:
            app.counts["snapshot_gets"] += 1
            lines = [",".join(SNAPSHOT_HEADER)]
            for line in app.model.snapshot_lines(fraction):
                lines.append(line)
                if len(lines) >= 5000:
                    self._chunk(("\n".join(lines) + "\n").encode())
                    lines = []
            if lines:
                self._chunk(("\n".join(lines) + "\n").encode())
        self.wfile.write(b"0\r\n\r\n")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        body = self.read_body()
        app: GisApp = self.server.app
        if path in ("/_control", "/control"):
            self.send_json(*app.control(body))
            return
        if path == "/_reset":
            app.reset()
            app.requests.clear()
            self.send_json(200, {"reset": True})
            return
        try:
            spec = orjson.loads(body or b"{}")
            if not isinstance(spec, dict):
                raise ValueError("the body must be a JSON object")
        except ValueError as exc:
            self.send_json(400, {"error": str(exc)})
            return
        if path == "/push":
            status, answer = app.push(spec)
        elif path == "/_sequence":
            status, answer = app.sequence_after(spec.get("after"))
        elif path == "/snapshot":
            status, answer = app.write_snapshot(spec)
        else:
            status, answer = 404, {"error": f"no POST {path}"}
        app.requests.add(method="POST", path=path, status=status)
        self.send_json(status, answer)


class GisServer(BackgroundServer):
    """The GIS stand-in in a background thread; ``.app`` is its GisApp."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, name: str = "gis", verbose: bool = False,
                 **app: Any) -> None:
        # (host, port, name, verbose) first, as every stand-in server's
        super().__init__(_Handler, GisApp(name=name, **app), host, port, verbose)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m simulators.gis", description="A GIS: a generated network "
                                "served as snapshot CSV and pushed as change documents (use case 9).")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--name", default="gis")
    # defaults: the dev stack's shared network (GRIDBUS_DEV_NETWORK_*), which the HES stand-ins and
    # the alarm generator read too, else 10,000 consumers of seed 1
    shared = shared_recipe() or {}
    p.add_argument("--consumers", type=int, default=shared.get("consumers", 10_000),
                   help="consumers of the generated network (default $GRIDBUS_DEV_NETWORK_CONSUMERS, else 10000)")
    p.add_argument("--seed", type=int, default=shared.get("seed", 1), help="default $GRIDBUS_DEV_NETWORK_SEED, else 1")
    p.add_argument("--dts-per-feeder", type=int, default=shared.get("dts_per_feeder", 20))
    p.add_argument("--feeders-per-substation", type=int, default=shared.get("feeders_per_substation", 10))
    p.add_argument("--first-meter", type=int, default=shared.get("first_meter", 1),
                   help="number of the first consumer meter UPM%%08d")
    p.add_argument("--bus-url", help="where change documents are POSTed (the gateway's gis endpoint)")
    p.add_argument("--bus-key", default=os.environ.get("GIS_BUS_KEY") or None,
                   help="X-API-Key sent with them (default $GIS_BUS_KEY)")
    p.add_argument("--drop-dir", help="folder POST /snapshot writes the nightly export into")
    p.add_argument("--verbose", action="store_true")
    a = p.parse_args(argv)
    return serve_until_signalled(GisServer(a.host, a.port, a.name, a.verbose, consumers=a.consumers,
                                           seed=a.seed, bus_url=a.bus_url, bus_key=a.bus_key, drop_dir=a.drop_dir,
                                           dts_per_feeder=a.dts_per_feeder,
                                           feeders_per_substation=a.feeders_per_substation,
                                           first_meter=a.first_meter))


if __name__ == "__main__":
    sys.exit(main())
