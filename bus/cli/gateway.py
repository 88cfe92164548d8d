"""`gridbus gateway`: the REST gateway (API request handling, push ingress), and its API keys."""
from __future__ import annotations

import click

from bus import registry, tls
from bus.cli.common import (echo_list, fails_cleanly, json_option, parse_duration, routes_from, settings,
                            setup_logging, utc_clock)
from bus.errors import ConfigError
from bus.requests.store import Retention
from bus.settings import environment
from bus.topology import compile_topology
from bus.topology.apply import ensure as ensure_topology

PUSH = "http-push"
SERVED = (PUSH, "http-request", "gis-push")  # the sources whose routes the gateway serves


def _push_connector():
    return registry.connector(PUSH)


@click.group("gateway", invoke_without_command=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--threads", default=48, show_default=True, type=int,
              help="Threads for pushes (their checks and confirmed publishing); requests wait on the "
                   "event loop and hold none.")
@click.option("--rate-per-system", default=200.0, show_default=True,
              help="Requests/s each source system may make (bursts of twice that); 0: no limit.")
@click.option("--in-flight-per-system", default=8, show_default=True, type=click.IntRange(0, 10_000),
              help="Pushes one system may have being taken at once (of --threads); beyond, 429 at once, so "
                   "a flooding system never queues ahead of the others; 0: no limit.")
@click.option("--header-timeout-s", default=10.0, show_default=True, type=click.FloatRange(0.5, 3600),
              help="A connection that has not sent its request line and headers (over HTTPS: finished its "
                   "handshake, then sent them) within this long is closed (slow clients); also the idle "
                   "time of a kept-alive connection.")
@click.option("--body-timeout-s", default=30.0, show_default=True, type=click.FloatRange(0.5, 3600),
              help="A body not received within this long is answered 408 and its connection closed.")
@click.option("--keep-requests", default="7d", show_default=True,
              help="Reads and determinants requests are deleted from the request store this long after "
                   "they were made (0: never); commands are always kept, with their audit trail.")
@click.option("--prune-every", default="60s", show_default=True, help="How often to look for requests to delete.")
@click.option("--tls-cert", help=f"Serve HTTPS with this certificate (PEM, the chain after it); also "
                                f"{tls.GATEWAY_CERT}.  Without it: plain HTTP (behind a TLS proxy, docs/security.md).")
@click.option("--tls-key", help=f"The certificate's private key (PEM), if not in the --tls-cert file; "
                               f"also {tls.GATEWAY_KEY}.")
@click.option("--tls-client-ca", help="Ask every client for a certificate signed by this CA (PEM) and refuse the "
                                      "handshake without one; API keys are still required on top.  Also "
                                      f"{tls.GATEWAY_CLIENT_CA}.")
@click.option("--routes-dir", "paths", multiple=True, type=click.Path())
@click.option("--loglevel", default="INFO", show_default=True)
@click.pass_context
@fails_cleanly
def gateway(ctx, host, port, threads, rate_per_system, in_flight_per_system, header_timeout_s, body_timeout_s,
            keep_requests, prune_every, tls_cert, tls_key, tls_client_ca, paths, loglevel):
    """Serve the REST gateway for every route whose source is http-push, http-request or gis-push (aiohttp).

    Runs until stopped; its log goes to stderr.

    \b
    Examples:
      gridbus gateway --host 0.0.0.0 --port 8080
      gridbus gateway --host 0.0.0.0 --port 8443 --tls-cert gateway.pem --tls-key gateway.key
      gridbus gateway keys add billing-1
    """
    if ctx.invoked_subcommand:
        return
    setup_logging(loglevel)
    ssl_context = _server_tls(tls_cert, tls_key, tls_client_ca)  # before anything is declared or served
    retention = Retention(parse_duration(keep_requests), parse_duration(prune_every))
    table_ = routes_from(paths)
    routes = [r for r in table_ if r.source.connector in SERVED]
    if not routes:
        raise ConfigError(f"no route has an {', '.join(SERVED)} source: nothing for the gateway to serve")
    s = settings()
    ensure_topology(compile_topology(routes_from(paths)), s.broker_url)
    scheme = "https" if ssl_context else "http"
    click.echo(f"gateway: {scheme}://{host}:{port}/  ({', '.join(r.source.options['path'] for r in routes)}); "
               f"docs at /docs", err=True)
    limits = {"in_flight_per_system": in_flight_per_system, "header_timeout_s": header_timeout_s,
              "body_timeout_s": body_timeout_s}
    _push_connector().serve_http(routes, s, host, port, threads, rate_per_system, list(table_), retention, limits,
                                 ssl_context)


def _server_tls(cert: str | None, key: str | None, client_ca: str | None):
    """The gateway's SSLContext, or None for plain HTTP.  Each file from its option, else from its
    setting; a ConfigError names whichever of the two it came from."""
    env = environment()
    chosen = []
    for option, value, setting in (("--tls-cert", cert, tls.GATEWAY_CERT), ("--tls-key", key, tls.GATEWAY_KEY),
                                   ("--tls-client-ca", client_ca, tls.GATEWAY_CLIENT_CA)):
        chosen.append((option, value) if value else (setting, env.get(setting) or None))
    (cert_name, cert), (key_name, key), (ca_name, client_ca) = chosen
    if not cert:
        if key or client_ca:
            given = " and ".join(name for name, value in ((key_name, key), (ca_name, client_ca)) if value)
            raise ConfigError(f"{given} without --tls-cert ({tls.GATEWAY_CERT}): HTTPS needs the gateway's "
                              "certificate")
        return None
    return tls.server_context(cert, key, client_ca, names=(cert_name, key_name, ca_name))


@gateway.group("keys")
def keys():
    """API keys of the source systems, stored hashed in the state store (shared by every gateway
    when GRIDBUS_STATE_STORE names PostgreSQL, else $GRIDBUS_HOME/state/gateway-keys.sqlite)."""


@keys.command("add")
@click.argument("system")
@fails_cleanly
def add(system):
    """Make a key for SYSTEM; it is printed once and only its hash is kept.

    \b
    Example:
      gridbus gateway keys add billing-1 > billing-1.key
    """
    click.echo(_push_connector().key_store(settings()).add(system))


@keys.command("list")
@click.option("--revoked", is_flag=True, help="Revoked keys too, with when they were revoked.")
@json_option
@fails_cleanly
def list_keys(revoked, as_json):
    """Key ids and their systems (never the keys).

    \b
    Examples:
      gridbus gateway keys list
      gridbus gateway keys list --json | jq -r '.[] | select(.system == "billing-1") | .key_id'
    """
    columns = {"key id": "key_id", "system": "system", "created": lambda k: utc_clock(k.get("created"))}
    if revoked:
        columns["revoked"] = lambda k: utc_clock(k.get("revoked_at"))
    echo_list(_push_connector().key_store(settings()).listing(revoked), as_json, columns, "no keys")


@keys.command("revoke")
@click.argument("key_id")
@fails_cleanly
def revoke(key_id):
    """Revoke a key by its id; every gateway sharing the state store refuses it from its next request.

    \b
    Example:
      gridbus gateway keys revoke 3f9a1c2b
    """
    if not _push_connector().key_store(settings()).revoke(key_id):
        raise ConfigError(f"no key {key_id!r} (or it was revoked before: gridbus gateway keys list --revoked)")
    click.echo(f"revoked {key_id}")
