"""The reconnect loop every long-running consumer (recorder, keeper, AMQP ingress, reconciler) runs in."""
from __future__ import annotations

import threading

from bus.amqp_client import until_stopped


def test_a_failed_attempt_is_retried_after_letting_go_of_what_it_left_open_until_stopped():
    # Given a consumer whose first two attempts meet a broker that went away, and whose third runs until stopped
    stop = threading.Event()
    attempts, released = [], []

    def attempt():
        attempts.append(len(attempts) + 1)
        if len(attempts) < 3:
            raise ConnectionResetError("broker restarting")
        stop.set()  # consumed until told to stop

    # When it is run
    until_stopped("test consumer", attempt, stop, after_failure=lambda: released.append(len(attempts)),
                  delay_s=0.01)
    # Then it tried three times, let go after each failure, and returned once stopped
    assert attempts == [1, 2, 3]
    assert released == [1, 2]


def test_nothing_is_attempted_once_stopped():
    # Given a stop already set
    stop = threading.Event()
    stop.set()
    attempts = []
    # When run  Then no attempt is made (counted, not raised: until_stopped catches what an
    # attempt raises, so an assertion inside it could never fail this test)
    until_stopped("test consumer", lambda: attempts.append(1), stop, delay_s=0.01)
    assert attempts == []
