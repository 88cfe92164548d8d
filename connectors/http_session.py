"""One pooled ``requests.Session`` per thread for the HTTP connectors.

A Session is not thread-safe, and workers run threads (request routes) or
pools; a session whose connection broke is dropped so the next call starts clean.

``requests`` and ``aiohttp`` read the environment on every call when
``trust_env`` is on (proxy variables, ~/.netrc, and for requests the CA bundle
variables): a third of the CPU of a request-response hop went there.  When no
proxy and no .netrc is set there is nothing per-URL to read, so the session
skips it; a CA bundle variable is read once; set a proxy and it is honoured as before.

Whom a destination must be (bus/tls.py): ``GRIDBUS_DESTINATION_CA`` names the CA bundle its
certificate must verify against (unset: ``REQUESTS_CA_BUNDLE`` for the thread worker as
before, else the system's store), ``GRIDBUS_DESTINATION_CERT``/``_KEY`` the client certificate
for destinations that ask for one (mutual TLS).  Both workers, thread and event loop, use them.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import requests

from bus.tls import DestinationTls, destination_tls

_ENVIRONMENT = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "NETRC")
_CA_BUNDLE = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


def environment_matters() -> bool:
    """True when a proxy or a .netrc in the environment would change a call (both are
    looked up per call, since no_proxy depends on the URL)."""
    names = {*_ENVIRONMENT, *(n.upper() for n in _ENVIRONMENT)}
    if any(os.environ.get(n) for n in names):
        return True
    home = Path(os.path.expanduser("~"))
    return (home / ".netrc").exists() or (home / "_netrc").exists()


def ca_bundle() -> str | None:
    """The CA bundle named in the environment, read once: it does not depend on the URL."""
    return next((os.environ[n] for n in _CA_BUNDLE if os.environ.get(n)), None)


class _Session(requests.Session):
    """A Session whose configured CA bundle stays the one used: with ``trust_env`` on (a proxy
    is set), requests would otherwise take ``REQUESTS_CA_BUNDLE`` over ``session.verify``."""

    pinned_verify: str | None = None

    def merge_environment_settings(self, url, proxies, stream, verify, cert):
        merged = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if self.pinned_verify:
            merged["verify"] = self.pinned_verify
        return merged


class ThreadSessions:
    def __init__(self, tls: DestinationTls | None = None):
        self._local = threading.local()
        self.trust_env = environment_matters()
        self.verify = ca_bundle()
        self._tls = tls  # read at the first call, not when the connector is loaded (routes validate)

    @property
    def tls(self) -> DestinationTls:
        if self._tls is None:
            self._tls = destination_tls()
        return self._tls

    def get(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = _Session()
            session.trust_env = self.trust_env
            tls = self.tls
            if tls.ca:
                session.verify = session.pinned_verify = tls.ca
            elif self.verify and not self.trust_env:  # with trust_env, requests reads it itself
                session.verify = self.verify
            session.cert = tls.requests_cert
        return session

    def drop(self) -> None:
        self._local.session = None


class LoopSessions:
    """The ``aiohttp.ClientSession`` of the event-loop worker (`gridbus worker --pool asyncio`);
    a session belongs to the loop it was made on, so a new loop gets a new one."""

    def __init__(self, tls: DestinationTls | None = None):
        self._loop = self._session = None
        self.trust_env = environment_matters()
        self._tls, self._context = tls, None

    def ssl_context(self):
        """One client context for every session of this process (building one reads the CA files)."""
        if self._context is None:
            self._context = (self._tls or destination_tls()).ssl_context()
        return self._context

    def get(self):
        import asyncio

        import aiohttp  # only the event-loop worker needs it

        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            self._loop, self._session = loop, aiohttp.ClientSession(
                trust_env=self.trust_env, connector=aiohttp.TCPConnector(limit=256, ssl=self.ssl_context()))
        return self._session

    async def close(self) -> None:
        session, self._loop, self._session = self._session, None, None
        if session is not None:
            await session.close()
