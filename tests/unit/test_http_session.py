"""The connectors' HTTP sessions read the environment only when there is something in it."""
from __future__ import annotations

from connectors.http_session import ThreadSessions


def _no_proxy_environment(monkeypatch, tmp_path):
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "NETRC", "REQUESTS_CA_BUNDLE",
                 "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))


def test_with_nothing_in_the_environment_a_session_does_not_read_it_on_every_call(monkeypatch, tmp_path):
    # Given no proxy, netrc or CA bundle variable and no ~/.netrc
    _no_proxy_environment(monkeypatch, tmp_path)
    # When a connector takes its session  Then it does not trust the (empty) environment
    assert ThreadSessions().get().trust_env is False


def test_a_proxy_in_the_environment_is_honoured(monkeypatch, tmp_path):
    # Given an HTTPS proxy the utility's network needs
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    # Then sessions read the environment as requests always does
    assert ThreadSessions().get().trust_env is True


def test_a_netrc_file_is_honoured(monkeypatch, tmp_path):
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".netrc").write_text("machine mdms.example login gridbus password x\n")
    assert ThreadSessions().get().trust_env is True


def test_a_ca_bundle_variable_is_honoured_without_reading_the_environment_per_call(monkeypatch, tmp_path):
    # Given no proxy, but the utility's CA bundle named in REQUESTS_CA_BUNDLE
    _no_proxy_environment(monkeypatch, tmp_path)
    bundle = tmp_path / "utility-ca.pem"
    bundle.write_text("")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    # When a connector takes its session
    session = ThreadSessions().get()
    # Then it verifies against that bundle, read once, and skips the per-call environment lookup
    assert session.verify == str(bundle) and session.trust_env is False


def test_the_event_loop_session_follows_the_same_rule(monkeypatch, tmp_path):
    import asyncio

    from connectors.http_session import LoopSessions

    async def trust(env: dict) -> bool:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        sessions = LoopSessions()
        session = sessions.get()
        try:
            # and within one loop the same session is handed out every time
            assert sessions.get() is session
            return session.trust_env
        finally:
            await sessions.close()

    # Given nothing but a CA bundle variable, Then aiohttp does not read the environment per call
    _no_proxy_environment(monkeypatch, tmp_path)
    assert asyncio.run(trust({"REQUESTS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt"})) is False
    # Given a proxy, Then it does
    assert asyncio.run(trust({"HTTPS_PROXY": "http://proxy.example:3128"})) is True
