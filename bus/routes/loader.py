"""Read route files, validate everything at load time, report every error as file:line."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from marshmallow import ValidationError as SchemaError

from bus import registry
from bus.errors import ConfigError, RouteValidationError
from bus.routes.model import Endpoint, QueueOptions, RetryPolicy, Route, RouteTable
from bus.routes.schema import RouteFileSchema, RouteSchema
from bus.routes.yaml_lines import interpolate, line_of, load_with_lines
from bus.settings import environment


def route_files(paths: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(list(p.glob("*.yaml")) + list(p.glob("*.yml"))))
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
        data, lines = load_with_lines(file.read_text(encoding="utf-8"), name)
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
        try:
            loaded = RouteSchema().load(raw)
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
    try:
        options = connector.options_schema(role)().load(options)
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
    # transformers that read route options check them now, not on the first message
    options = data.get("options") if isinstance(data.get("options"), dict) else {}
    for chain_path, chain in chains:
        for step in chain:
            check = getattr(registry.transformer(step), "check_options", None) if step in known else None
            if check:
                try:
                    check(options, data.get("id"))
                except ConfigError as exc:
                    errors.append(ConfigError(str(exc), file, line_of(lines, path + ("options",))
                                              or line_of(lines, chain_path)))
    source = None
    if isinstance(data.get("source"), dict) and "connector" in data["source"]:
        source = _endpoint(data["source"], "source", file, lines, path + ("source",), errors)
    ends = [_endpoint(d, "destination", file, lines, path + ("destinations", i), errors)
            for i, d in enumerate(destinations) if isinstance(d, dict) and "connector" in d]
    return source, ends


def _build(data: dict, file: str, lines: dict, path: tuple, errors: list[ConfigError]) -> Route | None:
    before = len(errors)
    source, destinations = _check_parts(data, file, lines, path, errors)
    if len(errors) > before:
        return None
    return Route(
        id=data["id"], use_case=data["use_case"], description=data["description"], source=source,
        method=data["method"], transform=tuple(data["transform"]), destinations=tuple(destinations),
        retry=RetryPolicy(**data["retry"]), queue=QueueOptions(**data["queue"]),
        message=data["message"], file=file, line=line_of(lines, path) or 1, options=data["options"],
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
        connector = registry.connector(route.source.connector)
        claim = connector.claim(route.source)
        if claim in claims:
            other = claims[claim]
            errors.append(ConfigError(f"route {route.id!r} claims the same source as route {other.id!r} "
                                      f"({other.file}:{other.line})", route.file, route.line))
        else:
            claims[claim] = route
