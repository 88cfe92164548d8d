"""Secrets reach gridbus from files (Docker secrets), passwords fill URLs, and the default
account is refused beyond this machine (bus/settings.py)."""
from __future__ import annotations

import pytest

from bus.errors import ConfigError
from bus.settings import Settings, with_credentials


@pytest.fixture
def env(monkeypatch, tmp_path):
    """A clean environment: no env file, no GRIDBUS_ variable of the caller's shell."""
    import os

    for name in [n for n in os.environ if n.startswith("GRIDBUS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("GRIDBUS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GRIDBUS_ENV_FILE", str(tmp_path / "no-such.env"))
    return monkeypatch


def secret(tmp_path, name: str, value: str):
    path = tmp_path / name
    path.write_text(value + "\n")  # as `echo` and most secret stores write it
    path.chmod(0o600)
    return path


def test_a_password_file_fills_the_password_of_every_broker_address(env, tmp_path):
    # Given the broker URL names hosts and a user, and the password is a Docker secret
    env.setenv("GRIDBUS_BROKER_URL", "amqps://gridbus-worker@rabbitmq-1:5671/%2F;amqps://gridbus-worker@rabbitmq-2:5671/%2F")
    env.setenv("GRIDBUS_BROKER_PASSWORD_FILE", str(secret(tmp_path, "pw", "s3:cr/t@x")))
    # When the settings load
    url = Settings.load().broker_url
    # Then both addresses carry the password, percent-encoded, and the file's newline is not part of it
    assert url == ("amqps://gridbus-worker:s3%3Acr%2Ft%40x@rabbitmq-1:5671/%2F;"
                   "amqps://gridbus-worker:s3%3Acr%2Ft%40x@rabbitmq-2:5671/%2F")
    from bus.messaging.addresses import broker_addresses
    assert {a.password for a in broker_addresses(url)} == {"s3:cr/t@x"}


def test_a_url_that_names_its_user_and_password_keeps_them():
    # Given an address with its own credentials, When a user and password are given too, Then the URL's own win
    assert with_credentials("amqp://u:mine@h:5672//", "x", "other") == "amqp://u:mine@h:5672//"


def test_one_url_for_every_role_with_the_role_user_and_secret_beside_it(env, tmp_path):
    # Given the node addresses without credentials (as compose shares them), a role's user and its secret
    env.setenv("GRIDBUS_BROKER_URL", "amqps://rabbitmq-1:5671/%2F;amqps://rabbitmq-2:5671/%2F")
    env.setenv("GRIDBUS_BROKER_USER", "gridbus-gateway")
    env.setenv("GRIDBUS_BROKER_PASSWORD_FILE", str(secret(tmp_path, "pw", "p w")))
    # Then every address logs in as the role
    from bus.messaging.addresses import broker_addresses
    assert {(a.userid, a.password) for a in broker_addresses(Settings.load().broker_url)} == {("gridbus-gateway", "p w")}


def test_any_setting_can_come_from_a_file_and_the_variable_itself_wins(env, tmp_path):
    # Given the state store URL (with its database password) in a secret file
    env.setenv("GRIDBUS_STATE_STORE_FILE", str(secret(tmp_path, "dsn", "postgresql://gridbus:pw@db/gridbus")))
    from bus.settings import environment
    # Then the setting reads it
    assert environment()["GRIDBUS_STATE_STORE"] == "postgresql://gridbus:pw@db/gridbus"
    # and a value set directly is not overridden by the file
    env.setenv("GRIDBUS_STATE_STORE", "sqlite")
    assert environment()["GRIDBUS_STATE_STORE"] == "sqlite"


@pytest.mark.parametrize("content", [None, ""])
def test_a_missing_or_empty_secret_file_is_a_clear_error_not_an_empty_password(env, tmp_path, content):
    # Given a _FILE variable naming a file that is absent, or empty
    path = tmp_path / "pw"
    if content is not None:
        path.write_text(content)
    env.setenv("GRIDBUS_BROKER_PASSWORD_FILE", str(path))
    # When the settings load, Then the error names the variable and the file
    with pytest.raises(ConfigError, match="GRIDBUS_BROKER_PASSWORD_FILE") as err:
        Settings.load()
    assert str(path) in str(err.value)


@pytest.mark.parametrize("url", [
    "amqp://guest:guest@rabbitmq-1:5672//",
    "amqp://rabbitmq-1:5672//",                       # no user: clients default to guest
    "amqp://ops:pw@127.0.0.1:5672//;amqp://guest:guest@10.0.0.2:5672//",  # one address is enough
])
def test_the_default_account_is_refused_for_a_broker_beyond_this_machine(env, url):
    # Given a broker URL that logs in as guest on another host
    env.setenv("GRIDBUS_BROKER_URL", url)
    # When any gridbus command loads its settings, Then it refuses, naming the setting and the way out
    with pytest.raises(ConfigError, match="GRIDBUS_BROKER_URL uses the default account 'guest'.*broker users sync"):
        Settings.load()


def test_the_default_account_on_this_machine_is_the_dev_stack_and_allowed(env):
    # Given the dev node on loopback (as `gridbus dev up` and the tests run it)
    env.setenv("GRIDBUS_BROKER_URL", "amqp://guest:guest@127.0.0.1:5679//;amqp://guest:guest@[::1]:5680//")
    # Then the settings load
    assert Settings.load().vhost == "/"


def test_a_production_deployment_refuses_the_default_account_even_on_loopback(env):
    # Given GRIDBUS_DEPLOYMENT=production and guest on 127.0.0.1
    env.setenv("GRIDBUS_DEPLOYMENT", "production")
    env.setenv("GRIDBUS_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
    with pytest.raises(ConfigError, match="GRIDBUS_DEPLOYMENT=production"):
        Settings.load()
    # and the management URL is held to the same rule when it is set
    env.setenv("GRIDBUS_BROKER_URL", "amqp://gridbus-worker:pw@127.0.0.1:5672//")
    env.setenv("GRIDBUS_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672")
    with pytest.raises(ConfigError, match="GRIDBUS_MANAGEMENT_URL"):
        Settings.load()
    # and a misspelt deployment is an error, not dev
    env.setenv("GRIDBUS_DEPLOYMENT", "prod")
    with pytest.raises(ConfigError, match="expected dev or production"):
        Settings.load()
