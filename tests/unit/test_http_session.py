"""The connectors' HTTP sessions read the environment only when there is something in it."""
from __future__ import annotations

from connectors.http_session import ThreadSessions


def test_with_nothing_in_the_environment_a_session_does_not_read_it_on_every_call(monkeypatch, tmp_path):
    # Given no proxy, netrc or CA bundle variable and no ~/.netrc
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "NETRC", "REQUESTS_CA_BUNDLE",
                 "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
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
