"""No credential in a file of the repository: deployments take theirs from Docker secrets or an
env file that is never committed, route files from the environment (docs/security.md)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support import ROOT

# scheme://user:password@host, the password not a ${VAR}, an f-string field or a <placeholder>
URL_WITH_PASSWORD = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s/:@'\"`<>{}]+:([^\s/@'\"`]+)@([^\s/:;'\"`\]]+|\[[^\]]+\])")
PLACEHOLDERS = {"p", "pass", "password", "PASSWORD", "secret"}  # what the docs write for "yours here"
LOOPBACK = {"127.0.0.1", "localhost", "[::1]"}
PRIVATE_KEY = re.compile(r"-----BEGIN ([A-Z]+ )?PRIVATE KEY-----")
SECRET_DEFAULT = re.compile(r"\$\{[A-Z0-9_]*(PASSWORD|SECRET|COOKIE|KEY|TOKEN)[A-Z0-9_]*:-[^}]")


def tracked() -> list[str]:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    return listed.stdout.split()


def text_of(name: str) -> str | None:
    try:
        return (ROOT / name).read_text()
    except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
        return None


def is_placeholder(password: str, host: str) -> bool:
    return (password in PLACEHOLDERS or password.startswith(("$", "{", "<", "%(")) or "{" in password
            or password == "%s" or (password == "guest" and host in LOOPBACK))  # the loopback dev node (`gridbus dev up`, tests)


def findings(name: str, text: str) -> list[str]:
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        if PRIVATE_KEY.search(line):
            found.append(f"{name}:{number}: a private key")
        if SECRET_DEFAULT.search(line):
            found.append(f"{name}:{number}: a secret with a default value ({line.strip()[:80]})")
        if name.startswith("tests/"):  # tests log in to their own throw-away nodes
            continue
        for match in URL_WITH_PASSWORD.finditer(line):
            if not is_placeholder(*match.groups()):
                found.append(f"{name}:{number}: a password in a URL ({match.group(0)[:60]})")
    return found


def test_no_tracked_file_holds_a_password_a_private_key_or_a_default_secret():
    # Given every file git tracks
    this = str(Path(__file__).resolve().relative_to(ROOT))  # its own examples of what it flags
    found = [f for name in tracked() if name != this and (text := text_of(name)) is not None
             for f in findings(name, text)]
    # Then none holds a password in a URL (tests excepted), a private key, or a secret defaulted in compose
    assert not found, "\n".join(found)


@pytest.mark.parametrize("line,hit", [
    ("GRIDBUS_BROKER_URL: amqp://guest:guest@rabbitmq-1:5672//", True),
    ("url = 'postgresql://gridbus:hunter2@db:5432/gridbus'", True),
    ("POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:-gridbus}", True),
    ("-----BEGIN RSA PRIVATE KEY-----", True),
    ("-----BEGIN PRIVATE KEY-----", True),
    ("GRIDBUS_BROKER_URL: amqp://guest:guest@127.0.0.1:5679//", False),
    ("ADMS_AMQP_URL=amqp://adms:<that password>@rabbitmq-1:5672/%2F", False),
    ("f'amqp://adms:{password}@127.0.0.1:{port}/'", False),
    ("GRIDBUS_STATE_STORE_FILE: /run/secrets/state-store-url", False),
    ("RABBITMQ_ERLANG_COOKIE: ${RABBITMQ_ERLANG_COOKIE:?put one in docker/.env}", False),
])
def test_the_check_sees_what_it_must(line, hit):
    # Given one line of a deployment file, Then the check flags it exactly when it holds a secret
    assert bool(findings("docker/compose.yaml", line)) == hit


def test_the_committed_ignore_rules_keep_generated_secrets_out():
    # Given what `docker/make-secrets` writes, Then git ignores it
    for path in ("docker/secrets/rabbitmq-admin", "docker/secrets/ca.key", "docker/.env"):
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0, path


def test_route_files_never_hold_secrets():
    # Given the shipped route files, Then every URL in them comes from the environment
    for path in sorted((ROOT / "routes").glob("*.yaml")):
        assert not URL_WITH_PASSWORD.search(path.read_text()), path
        for doc in yaml.safe_load_all(path.read_text()):
            assert "password" not in str(doc).lower(), path
