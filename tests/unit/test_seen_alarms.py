"""The seen-alarm store: a resent alarm is known, by any gateway sharing the store, for a day."""
from __future__ import annotations

from connectors.http_push.seen import SeenAlarms
from tests.state_stores import postgres_url, state_url  # noqa: F401 - run on both databases


def test_an_alarm_accepted_by_one_gateway_is_known_to_another_with_its_first_message_id(tmp_path, state_url):
    # Given two gateways' seen-alarm stores on one state store
    a = SeenAlarms(tmp_path / "seen.sqlite", url=state_url)
    b = SeenAlarms(tmp_path / "seen.sqlite", url=state_url)
    # When gateway A accepts alarms 1 and 2 (2 named twice in the document) in message m1
    a.remember("hes-a", ["1", "2", "2"], "m1")
    # Then gateway B knows both as accepted in m1, only for that HES, and not alarm 3
    assert b.known("hes-a", ["1", "2", "3"]) == {"1": "m1", "2": "m1"}
    assert b.known("hes-b", ["1"]) == {}
    a.close()
    b.close()


def test_an_alarm_id_seen_again_after_the_keeping_time_is_a_new_alarm(tmp_path, state_url):
    # Given a store keeping ids for a minute, which accepted alarm 1 in m1 two minutes ago
    seen = SeenAlarms(tmp_path / "seen.sqlite", keep_s=60, url=state_url)
    seen.remember("hes-a", ["1"], "m1")
    seen._db.execute("UPDATE seen SET at = at - 120")
    # When the id comes again  Then it is not known; accepted again, it points at the new message
    assert seen.known("hes-a", ["1"]) == {}
    seen.remember("hes-a", ["1"], "m2")
    assert seen.known("hes-a", ["1"]) == {"1": "m2"}
    seen.close()


def test_a_thousand_ids_are_looked_up_in_chunks(tmp_path, state_url):
    # Given 1,200 accepted alarms (more than one statement's bound variables on old SQLite)
    seen = SeenAlarms(tmp_path / "seen.sqlite", url=state_url)
    ids = [f"a{n}" for n in range(1200)]
    seen.remember("hes-a", ids, "m1")
    # When they are all resent  Then every one is known
    assert len(seen.known("hes-a", ids)) == 1200
    seen.close()
