"""Progress of long-running commands: plain lines into a pipe, none with --quiet, and never on
stdout, where the command's own result goes."""
from __future__ import annotations

import time

import pytest
from click.testing import CliRunner

from bus.cli import dlq as dlq_cli
from bus.deadletters.store import DeadLetterStore, dumps


class RecordingPublisher:
    """Stands in for ConfirmingPublisher: keeps what it is handed, confirms at once."""

    sent: list = []

    def __init__(self, *_args):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def publish(self, exchange, routing_key, body, properties, headers, mandatory=True) -> None:
        self.sent.append(body)

    def flush(self, timeout_s: float = 30.0) -> None:
        pass


@pytest.fixture
def five_dead_letters(tmp_path, monkeypatch):
    home = tmp_path / "home"
    for name, value in {"GRIDBUS_HOME": str(home), "GRIDBUS_ENV_FILE": str(home / "none.env"),
                        "GRIDBUS_BROKER_URL": "amqp://guest:guest@127.0.0.1:1/t",
                        "GRIDBUS_MANAGEMENT_URL": "http://127.0.0.1:1", "GRIDBUS_USER": "operator-a"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(dlq_cli, "ConfirmingPublisher", RecordingPublisher)
    monkeypatch.setattr(RecordingPublisher, "sent", [])
    store = DeadLetterStore(home / "state" / "dead-letters.sqlite")
    now = time.time()
    store.add({"dl_id": f"dl-{i}", "message_id": f"msg-{i}", "correlation_id": f"c-{i}", "route": "r1",
               "destination": "mdms-1", "fingerprint": "fp", "error_class": "PermanentDeliveryError",
               "reason": "400", "traceback": "", "attempts": 1, "first_failure": now, "last_failure": now,
               "worker_host": "h", "collected_at": now, "body": b"{}",
               "properties": dumps({"message_id": f"msg-{i}"}), "headers": dumps({})} for i in range(5))
    store.db.close()


def test_replay_into_a_pipe_writes_plain_progress_lines_on_stderr_and_its_result_on_stdout(five_dead_letters):
    # Given five dead letters, and the output going to a pipe, not a terminal
    # When they are all replayed
    done = CliRunner().invoke(dlq_cli.dlq, ["replay", "--all"], catch_exceptions=False)
    # Then all five were sent, the result is on stdout and the progress a plain line on stderr
    assert done.exit_code == 0, done.output
    assert len(RecordingPublisher.sent) == 5
    assert "replayed 5 dead letter(s)" in done.stdout and "replaying" not in done.stdout
    assert "  replaying: 5 / 5\n" in done.stderr and "\r" not in done.stderr


def test_replay_quiet_writes_no_progress(five_dead_letters):
    # When the same replay runs with --quiet
    done = CliRunner().invoke(dlq_cli.dlq, ["replay", "--all", "--quiet"], catch_exceptions=False)
    # Then it sends them all and says so, with no progress line
    assert done.exit_code == 0, done.output
    assert len(RecordingPublisher.sent) == 5 and "replayed 5 dead letter(s)" in done.stdout
    assert "replaying:" not in done.stderr
