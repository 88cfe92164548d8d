"""Read route files, validate everything at load time, report every error as file:line."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import yaml
from marshmallow import ValidationError as SchemaError

from bus import registry
from bus.errors import ConfigError, RouteValidationError
from bus.options import UNKNOWN_KEY, check_chain_options
from bus.routes.model import CorrelateOptions, Endpoint, OrderedOptions, QueueOptions, RetryPolicy, Route, RouteTable
from bus.routes.schema import (CORRELATE, ORDERED, ORDERED_SOURCE, CorrelateRouteSchema, OrderedRouteSchema,
                               RouteFileSchema, RouteSchema)
from bus.routes.yaml_lines import interpolate, line_of, load_with_lines
from bus.settings import environment

# Route files hold plain values: no tag beyond the core schema's, a depth far below the
# recursion limit of the composer and of every walk after it, and aliases that add at most
# this many nodes (a 353-byte "billion laughs" of aliases would otherwise expand to gigabytes)
_CORE_TAGS = {None, "!"} | {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq")}
MAX_DEPTH = 32
MAX_ALIAS_NODES = 10_000


def route_files(paths: Iterable[str | Path]) -> list[Path]:
    """The route files of ``paths``: each file given, and the ``*.yaml``/``*.yml`` of each folder
    except route tests (``*_test.yaml``, run by ``gridbus routes test``), which sit beside them."""
    tests = ("_test.yaml", "_test.yml")
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(f for f in sorted(list(p.glob("*.yaml")) + list(p.glob("*.yml")))
                         if not f.name.endswith(tests))
        elif p.name.endswith(tests) and p.exists():
            raise RouteValidationError([ConfigError(
                "a route test file, not a route file (run it with: gridbus routes test)", str(p))])
        elif p.exists():
            files.append(p)
        else:
            raise RouteValidationError([ConfigError(
                "no such file or directory (give route files or folders, or set GRIDBUS_ROUTES)", str(p))])
    return files


def load_routes(paths: Iterable[str | Path], env: dict[str, str] | None = None) -> RouteTable:
    """Every route in ``paths`` (files or directories), or RouteValidationError
    carrying every problem found, each with its file and line."""
    env = environment() if env is None else env
    errors: list[ConfigError] = []
    routes: list[Route] = []
    for file in route_files(paths):
        routes.extend(_load_file(file, env, errors))
    _check_table(routes, errors)
    errors = _without_echoes(errors)
    if errors:
        raise RouteValidationError(sorted(errors, key=lambda e: (e.file or "", e.line or 0)))
    return RouteTable(tuple(routes))


def _without_echoes(errors: list[ConfigError]) -> list[ConfigError]:
    """A missing variable also makes its value invalid; report only the cause."""
    unset = {(e.file, e.line) for e in errors if "environment variable" in e.reason}
    return [e for e in errors if "environment variable" in e.reason or (e.file, e.line) not in unset]


def _schema_errors(messages: Any, path: tuple, lines: dict, file: str, out: list[ConfigError]) -> None:
    """Flatten marshmallow's nested error dict into file:line errors."""
    if isinstance(messages, dict):
        for key, value in messages.items():
            _schema_errors(value, path + (key,), lines, file, out)
        return
    if isinstance(messages, list) and messages and all(isinstance(m, str) for m in messages):
        field = ".".join(str(p) for p in path[-2:] if not isinstance(p, int)) or "route"
        for message in messages:
            if message == "Unknown field.":
                message = f"unknown key {path[-1]!r}"
            elif message.startswith(UNKNOWN_KEY):  # an options schema's, with its suggestion
                pass
            elif message == "Missing data for required field.":
                message = f"missing required key {path[-1]!r}"
            else:
                message = f"{field}: {message}"
            out.append(ConfigError(message, file, line_of(lines, path)))
        return
    for item in messages if isinstance(messages, list) else [messages]:
        _schema_errors(item, path, lines, file, out)


def _load_file(file: Path, env: dict[str, str], errors: list[ConfigError]) -> list[Route]:
    name = str(file)
    try:
        text = file.read_text(encoding="utf-8")
        refuse_hostile_yaml(text, name)
        data, lines = load_with_lines(text, name)
    except ConfigError as exc:
        errors.append(exc)
        return []
    except (OSError, UnicodeDecodeError) as exc:
        errors.append(ConfigError(f"cannot read: {exc}", name))
        return []
    if not isinstance(data, dict):
        errors.append(ConfigError("a route file is a mapping with a 'routes' list", name, 1))
        return []
    data = interpolate(data, env, lines, name, errors)
    try:
        header = RouteFileSchema().load(data)
    except SchemaError as exc:
        _schema_errors(exc.messages, (), lines, name, errors)
        return []
    routes = []
    for index, raw in enumerate(header["routes"]):
        path = ("routes", index)
        if isinstance(raw, dict) and "use_case" not in raw:
            raw = {**raw, "use_case": header["use_case"]}
        method = raw.get("method") if isinstance(raw, dict) else None
        schema = {ORDERED: OrderedRouteSchema, CORRELATE: CorrelateRouteSchema}.get(method, RouteSchema)
        try:
            loaded = schema().load(raw)
        except SchemaError as exc:
            _schema_errors(exc.messages, path, lines, name, errors)
            # still check the parts that did load, so one run shows every problem
            if isinstance(exc.valid_data, dict):
                _check_parts(exc.valid_data, name, lines, path, errors)
            continue
        route = _build(loaded, name, lines, path, errors)
        if route:
            routes.append(route)
    return routes


def refuse_hostile_yaml(text: str, file: str) -> None:
    """``ConfigError`` (file:line) for what no route file needs and a hostile one uses: a tag
    outside the core schema (``!foo``, ``!!python/name:…``), a value its tag cannot read, a key
    that is not a plain value, nesting deeper than ``MAX_DEPTH``, or aliases adding more than
    ``MAX_ALIAS_NODES`` nodes.

    It reads the parser's events, neither composing nor recursing: the composer recurses
    once per level, and the loader walks an alias's node once per use."""
    loader = yaml.SafeLoader(text)
    anchors: dict[str, int] = {}  # anchor → nodes of its value, aliases within expanded
    open_: list[list] = []  # per open collection: [anchor, nodes so far, is a mapping, next is a key]
    added = 0
    try:
        while loader.check_event():
            event = loader.get_event()
            line = event.start_mark.line + 1
            if isinstance(event, yaml.CollectionEndEvent):
                anchor, nodes, _, _ = open_.pop()
                if anchor:
                    anchors[anchor] = nodes
                if open_:
                    open_[-1][1] += nodes
                continue
            if not isinstance(event, yaml.NodeEvent):  # stream and document start or end
                continue
            if open_ and open_[-1][2]:
                if open_[-1][3] and not isinstance(event, yaml.ScalarEvent):
                    raise ConfigError("a key must be a plain value (not a list, a mapping or an alias)",
                                      file, line)
                open_[-1][3] = not open_[-1][3]
            if isinstance(event, yaml.AliasEvent):
                nodes = anchors.get(event.anchor, 1)  # an unknown one the composer reports
                added += nodes
                if added > MAX_ALIAS_NODES:
                    raise ConfigError(f"aliases expand to more than {MAX_ALIAS_NODES:,} values "
                                      f"(at *{event.anchor}); write the values out", file, line)
                if open_:
                    open_[-1][1] += nodes
                continue
            if event.tag not in _CORE_TAGS:
                shown = event.tag.replace("tag:yaml.org,2002:", "!!")
                raise ConfigError(f"YAML tag {shown} is not allowed: route files hold plain values", file, line)
            if isinstance(event, yaml.ScalarEvent):
                _scalar(loader, event, file, line)
                if event.anchor:
                    anchors[event.anchor] = 1
                if open_:
                    open_[-1][1] += 1
            else:
                if len(open_) >= MAX_DEPTH:
                    raise ConfigError(f"nested more than {MAX_DEPTH} levels deep", file, line)
                open_.append([event.anchor, 1, isinstance(event, yaml.MappingStartEvent), True])
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"not valid YAML: {getattr(exc, 'problem', exc)}", file,
                          mark.line + 1 if mark else None) from exc


def _scalar(loader: yaml.SafeLoader, event: yaml.ScalarEvent, file: str, line: int) -> None:
    """``ConfigError`` unless the scalar's tag, given or resolved (2024-13-45 is a date), reads it."""
    tag = event.tag
    if tag is None or tag == "!":
        tag = loader.resolve(yaml.ScalarNode, event.value, event.implicit)
    try:
        loader.construct_object(yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark))
    except Exception as exc:  # noqa: BLE001 - PyYAML's constructors raise anything from ValueError to AttributeError
        kind = tag.replace("tag:yaml.org,2002:", "")
        hint = " (quote it to keep it as text)" if event.tag is None else ""
        raise ConfigError(f"{event.value[:80]!r} is not a valid {kind}: {exc}{hint}", file, line) from exc
    finally:
        loader.constructed_objects.clear()


def _endpoint(raw: dict, role: str, file: str, lines: dict, path: tuple,
              errors: list[ConfigError]) -> Endpoint | None:
    options = {k: v for k, v in raw.items() if k not in ("system", "connector", "transform")}
    try:
        connector = registry.connector(raw["connector"])
    except ConfigError as exc:
        errors.append(ConfigError(exc.reason, file, line_of(lines, path + ("connector",))))
        return None
    if role not in getattr(connector, "roles", ("source", "destination")):
        errors.append(ConfigError(f"connector {raw['connector']!r} cannot be a {role}", file,
                                  line_of(lines, path + ("connector",))))
        return None
    schema = connector.options_schema(role)()
    if "system" in schema.fields:  # a schema that reads the whole endpoint (billing-rest's)
        options = {**options, "system": raw["system"], "connector": raw["connector"]}
    try:
        options = schema.load(options)
    except SchemaError as exc:
        _schema_errors(exc.messages, path, lines, file, errors)
        return None
    return Endpoint(raw["system"], raw["connector"], options, tuple(raw.get("transform", ())))


def _check_parts(data: dict, file: str, lines: dict, path: tuple, errors: list[ConfigError]):
    """Transformer names and endpoints: (source, destinations) of what is present."""
    known = registry.names(registry.TRANSFORMERS)
    destinations = data.get("destinations") or []
    chains = [(path + ("transform",), data.get("transform") or [])]
    chains += [(path + ("destinations", i, "transform"), d.get("transform") or [])
               for i, d in enumerate(destinations) if isinstance(d, dict)]
    for chain_path, chain in chains:
        for i, step in enumerate(chain):
            if step not in known:
                errors.append(ConfigError(f"unknown transformer {step!r}{registry.did_you_mean(step, known)}",
                                          file, line_of(lines, chain_path + (i,))))
    # the options of the route's transformers, checked now against the schemas they declare
    # (bus/options.py), not on the first message; a correlate route's are its rules, checked below
    options = data.get("options") if isinstance(data.get("options"), dict) else {}
    steps = [step for _, chain in chains for step in chain]
    if steps and all(step in known for step in steps) and data.get("method") != CORRELATE:
        schemas = {step: getattr(registry.transformer(step), "options_schema", None) for step in steps}
        _schema_errors(check_chain_options(schemas, options), path + ("options",), lines, file, errors)
        for step in steps:  # a transformer's own cross-checks beyond its schema
            check = getattr(registry.transformer(step), "check_options", None)
            if check:
                try:
                    check(options, data.get("id"))
                except ConfigError as exc:
                    errors.append(ConfigError(str(exc), file, line_of(lines, path + ("options",))
                                              or line_of(lines, chains[0][0])))
    elif options and not steps and data.get("method") not in (CORRELATE,):
        errors.append(ConfigError("options are read by a route's transformers, and this route has none",
                                  file, line_of(lines, path + ("options",))))
    source = None
    ordered = data.get("method") == ORDERED
    if isinstance(data.get("source"), dict) and "connector" in data["source"]:
        if ordered:
            source = _ordered_source(data["source"], file, lines, path + ("source",), errors)
        else:
            source = _endpoint(data["source"], "source", file, lines, path + ("source",), errors)
    ends = [_endpoint(d, "destination", file, lines, path + ("destinations", i), errors)
            for i, d in enumerate(destinations) if isinstance(d, dict) and "connector" in d]
    correlated = data.get("method") == CORRELATE
    if correlated:
        _check_correlate(data, source, ends, file, lines, path, errors)
    elif not ordered:  # what the worker calls (bus/worker/pipeline.py): deliver, deliver_document or request
        for i, end in enumerate(ends):
            if end and not any(hasattr(registry.connector(end.connector), m)
                               for m in ("deliver", "deliver_document", "request")):
                errors.append(ConfigError(f"connector {end.connector!r} takes only an ordered route's batches "
                                          f"(method: {ORDERED})", file,
                                          line_of(lines, path + ("destinations", i, "connector"))))
    if ordered:
        for i, (raw, end) in enumerate(zip(destinations, ends)):
            if end and not hasattr(registry.connector(end.connector), "send"):
                errors.append(ConfigError(
                    f"connector {end.connector!r} cannot take an ordered route's batches (one that can: "
                    f"billing-rest)", file, line_of(lines, path + ("destinations", i, "connector"))))
            if isinstance(raw, dict) and raw.get("transform"):
                errors.append(ConfigError("an ordered route's destination has no transform of its own "
                                          "(the route's one transformer encodes the batch)", file,
                                          line_of(lines, path + ("destinations", i, "transform"))))
    return source, ends


def _check_correlate(data: dict, source: Endpoint | None, ends: list, file: str, lines: dict, path: tuple,
                     errors: list[ConfigError]) -> None:
    """A correlate route takes canonical events from a subscription, runs the correlator's rules
    (its ``options``, each checked by name) and publishes through a destination a bus process can
    publish with (``message``: the amqp connector)."""
    from bus.outages.rules import Options, OptionsError

    if source is not None and source.connector != "subscription":
        errors.append(ConfigError(f"a correlate route takes canonical events: its source connector is "
                                  f"'subscription', not {source.connector!r}", file,
                                  line_of(lines, path + ("source", "connector"))))
    for i, end in enumerate(ends):
        if end and not hasattr(registry.connector(end.connector), "message"):
            errors.append(ConfigError(f"connector {end.connector!r} cannot take a correlator's documents "
                                      f"(one that can: amqp)", file,
                                      line_of(lines, path + ("destinations", i, "connector"))))
    try:
        Options.from_mapping(data.get("options"))
    except OptionsError as exc:
        errors.append(ConfigError(str(exc), file, line_of(lines, path + ("options",)) or line_of(lines, path)))


def _ordered_source(raw: dict, file: str, lines: dict, path: tuple, errors: list[ConfigError]) -> Endpoint | None:
    """An ordered route's source is the network store's outbox: ``gridbus network publish`` puts
    each update on gridbus.network.updates, which every ordered route's partitions are bound to.
    No connector serves it and there is nothing to set."""
    extra = sorted(k for k in raw if k not in ("system", "connector") and (k != "transform" or raw[k]))
    if raw["connector"] != ORDERED_SOURCE:
        errors.append(ConfigError(f"an ordered route's source is the network store's outbox: connector "
                                  f"{ORDERED_SOURCE!r}, not {raw['connector']!r}", file,
                                  line_of(lines, path + ("connector",))))
        return None
    for key in extra:
        errors.append(ConfigError(f"unknown key {key!r} (the {ORDERED_SOURCE} source has no options)", file,
                                  line_of(lines, path + (key,))))
    return None if extra else Endpoint(raw["system"], raw["connector"])


def _build(data: dict, file: str, lines: dict, path: tuple, errors: list[ConfigError]) -> Route | None:
    before = len(errors)
    source, destinations = _check_parts(data, file, lines, path, errors)
    if len(errors) > before:
        return None
    ordered = None
    correlate = None
    if data["method"] == ORDERED:  # its retry is in place; a worker's retry and queue do not apply
        ordered = OrderedOptions(**data["ordered"], **data["retry"])
        data = {**data, "retry": {}, "queue": {}, "message": {}}
    elif data["method"] == CORRELATE:  # its process keeps a batch until it is done: no broker retry
        correlate = CorrelateOptions(**data["correlate"])
        data = {**data, "retry": {}, "queue": {}}
    return Route(
        id=data["id"], use_case=data["use_case"], description=data["description"], source=source,
        method=data["method"], transform=tuple(data["transform"]), destinations=tuple(destinations),
        retry=RetryPolicy(**data["retry"]), queue=QueueOptions(**data["queue"]),
        message=data["message"], file=file, line=line_of(lines, path) or 1, options=data["options"],
        ordered=ordered, correlate=correlate,
    )


def _check_table(routes: list[Route], errors: list[ConfigError]) -> None:
    """Rules across files: unique ids, and no source claimed by two routes."""
    seen: dict[str, Route] = {}
    claims: dict[Any, Route] = {}
    for route in routes:
        if route.id in seen:
            first = seen[route.id]
            errors.append(ConfigError(f"duplicate route id {route.id!r} (first defined at "
                                      f"{first.file}:{first.line})", route.file, route.line))
            continue
        seen[route.id] = route
        if route.is_ordered:  # every ordered route gets its own copy of every outbox update
            continue
        connector = registry.connector(route.source.connector)
        claim = connector.claim(route.source)
        if claim in claims:
            other = claims[claim]
            errors.append(ConfigError(f"route {route.id!r} claims the same source as route {other.id!r} "
                                      f"({other.file}:{other.line})", route.file, route.line))
        else:
            claims[claim] = route
    for route in routes:  # a correlator's verifications take a request route of its own
        want = route.correlate.verify_route if route.correlate else None
        if want is None:
            continue
        target = seen.get(want)
        if target is None or target.method != "request-response" or target.source.connector != "bus-request":
            why = "no such route" if target is None else "not a request-response route with a bus-request source"
            errors.append(ConfigError(f"route {route.id!r}: correlate.verify_route {want!r}: {why}",
                                      route.file, route.line))
