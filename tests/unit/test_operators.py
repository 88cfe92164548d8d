"""Operator accounts and the names the two-person rule compares."""
from __future__ import annotations

import pytest

from bus.errors import ConfigError
from bus.operators import AuthenticationError, OperatorStore, asserted_user, normalised
from tests.keeper_state import clean, keeper_state_database, state_url  # noqa: F401
from tests.postgres import postgres_url  # noqa: F401


@pytest.fixture
def store(tmp_path, state_url):
    """An empty operator store: a SQLite file, or the shared PostgreSQL store."""
    clean(state_url, "operators")
    opened = OperatorStore(tmp_path / "operators.sqlite", url=state_url)
    yield opened
    opened.close()


def test_one_person_has_one_name_whatever_the_spelling():
    # Given the spellings a second "user" could hide behind  Then they are one name
    assert {normalised(n) for n in ("alice", "Alice", " ALICE ", "ａｌｉｃｅ", "alice\u00a0")} == {"alice"}
    assert normalised("Ali  ce") == "ali ce"


def test_an_operator_authenticates_with_their_own_password_and_role(tmp_path, store):
    # Given bob, an approver, and carol, an operator
    store.add("Bob", "approver", "correct horse battery")
    store.add("carol", "operator", "staple staple staple")
    # Then bob authenticates as approver under any spelling of his name
    assert store.authenticate("BOB", "correct horse battery", ("approver",)).name == "bob"
    # and a wrong password, an unknown name, or the wrong role are refused
    for name, password, roles in (("bob", "wrong password!!", ("approver",)),
                                  ("mallory", "correct horse battery", ("approver",)),
                                  ("carol", "staple staple staple", ("approver",))):
        with pytest.raises(AuthenticationError):
            store.authenticate(name, password, roles)
    # and the store keeps no password
    assert all(b"correct horse" not in bytes(h) for (h,) in store.db.rows("SELECT hash FROM operators"))
    if not store.db.shared:
        assert b"correct horse" not in b"".join(p.read_bytes() for p in tmp_path.glob("operators.sqlite*"))


def test_bad_accounts_are_refused(store):
    store.add("bob", "approver", "correct horse battery")
    for name, role, password in (("Bob", "approver", "another long one"), ("x" * 65, "approver", "long enough pw"),
                                 ("eve", "root", "long enough pw"), ("eve", "approver", "short"),
                                 ("a,b", "approver", "long enough pw")):
        with pytest.raises(ConfigError):
            store.add(name, role, password)


@pytest.mark.parametrize("header", ["alice,mallory", "x" * 8192, "ren\xe9", "a b", "<script>", "\x00"])
def test_a_malformed_asserted_user_is_refused(header):
    with pytest.raises(ConfigError):
        asserted_user(header)


def test_a_plain_asserted_user_is_kept():
    assert asserted_user("billing.ops-7@utility") == "billing.ops-7@utility" and asserted_user(None) is None
