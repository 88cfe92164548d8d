"""One pooled ``requests.Session`` per thread for the HTTP connectors.

A Session is not thread-safe, and workers run threads (request routes) or
pools; a session whose connection broke is dropped so the next call starts clean.
"""
from __future__ import annotations

import threading

import requests


class ThreadSessions:
    def __init__(self):
        self._local = threading.local()

    def get(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def drop(self) -> None:
        self._local.session = None
