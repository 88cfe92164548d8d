"""The reconnect loop every long-running consumer (recorder, keeper, AMQP ingress, reconciler) runs in."""
from __future__ import annotations

import threading

from bus.messaging import Backoff, until_stopped

FAST = Backoff(first_s=0.01, cap_s=0.01)


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
                  backoff=FAST)
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
    until_stopped("test consumer", lambda: attempts.append(1), stop, backoff=FAST)
    assert attempts == []


def test_the_delay_doubles_with_jitter_up_to_its_cap_and_starts_again_after_a_connection_that_lasted():
    # Given the consumers' backoff: 0.5 s doubling to 15 s
    backoff = Backoff(first_s=0.5, cap_s=15.0, reset_after_s=30.0)
    # When a broker stays away for eight attempts
    delays = [backoff.next_delay() for _ in range(8)]
    # Then each delay lies between half and all of its step, and the steps stop at the cap
    steps = [0.5, 1, 2, 4, 8, 15, 15, 15]
    assert all(step / 2 <= delay <= step for delay, step in zip(delays, steps)), delays
    # When a connection then lasted a minute before it failed  Then the next delay is short again
    backoff.lasted(60.0)
    assert backoff.next_delay() <= 0.5
    # When one lasted only a second  Then the delays go on growing from there
    backoff.lasted(1.0)
    assert backoff.next_delay() >= 0.5
