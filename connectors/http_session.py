"""One pooled ``requests.Session`` per thread for the HTTP connectors.

A Session is not thread-safe, and workers run threads (request routes) or
pools; a session whose connection broke is dropped so the next call starts clean.

``requests`` reads the environment on every call when ``trust_env`` is on
(proxy variables, ~/.netrc, CA bundle variables): a third of the CPU of a
request-response hop went there.  When none of them is set there is nothing
to read, so the session skips it; set any of them and it is honoured as before.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import requests

_ENVIRONMENT = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "NETRC", "REQUESTS_CA_BUNDLE",
                "CURL_CA_BUNDLE")


def environment_matters() -> bool:
    """True when requests would find something in the environment to use."""
    names = {*_ENVIRONMENT, *(n.upper() for n in _ENVIRONMENT)}
    if any(os.environ.get(n) for n in names):
        return True
    home = Path(os.path.expanduser("~"))
    return (home / ".netrc").exists() or (home / "_netrc").exists()


class ThreadSessions:
    def __init__(self):
        self._local = threading.local()
        self.trust_env = environment_matters()

    def get(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.trust_env = self.trust_env
        return session

    def drop(self) -> None:
        self._local.session = None
