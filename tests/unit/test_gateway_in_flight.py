"""fairness.InFlight: each system's share of the gateway's threads."""
from connectors.http_push.fairness import InFlight


def test_a_system_at_its_share_is_refused_and_others_are_not():
    # Given a share of two pushes per system
    shares = InFlight(2)
    # When HES-A takes two
    assert shares.enter("hes-a") and shares.enter("hes-a")
    # Then its third is refused, HES-B's first is not
    assert not shares.enter("hes-a")
    assert shares.enter("hes-b")
    # and once one of HES-A's is answered, it may push again
    shares.leave("hes-a")
    assert shares.enter("hes-a")


def test_zero_means_no_limit_and_nothing_is_left_behind():
    # Given no limit
    shares = InFlight(0)
    # When a system takes and gives back many
    for _ in range(1000):
        assert shares.enter("hes-a")
    for _ in range(1000):
        shares.leave("hes-a")
    # Then no count is left for it
    assert shares.now == {}
