"""One pooled ``requests.Session`` per thread for the HTTP connectors.

A Session is not thread-safe, and workers run threads (request routes) or
pools; a session whose connection broke is dropped so the next call starts clean.

``requests`` and ``aiohttp`` read the environment on every call when
``trust_env`` is on (proxy variables, ~/.netrc, and for requests the CA bundle
variables): a third of the CPU of a request-response hop went there.  When no
proxy and no .netrc is set there is nothing per-URL to read, so the session
skips it; a CA bundle variable is read once; set a proxy and it is honoured as before.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import requests

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


class ThreadSessions:
    def __init__(self):
        self._local = threading.local()
        self.trust_env = environment_matters()
        self.verify = ca_bundle()

    def get(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.trust_env = self.trust_env
            if self.verify and not self.trust_env:  # with trust_env, requests reads it itself
                session.verify = self.verify
        return session

    def drop(self) -> None:
        self._local.session = None


class LoopSessions:
    """The ``aiohttp.ClientSession`` of the event-loop worker (`gridbus worker --pool asyncio`);
    a session belongs to the loop it was made on, so a new loop gets a new one."""

    def __init__(self):
        self._loop = self._session = None
        self.trust_env = environment_matters()

    def get(self):
        import asyncio

        import aiohttp  # only the event-loop worker needs it

        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            self._loop, self._session = loop, aiohttp.ClientSession(
                trust_env=self.trust_env, connector=aiohttp.TCPConnector(limit=256))
        return self._session

    async def close(self) -> None:
        session, self._loop, self._session = self._session, None, None
        if session is not None:
            await session.close()
