from hypothesis import given
from hypothesis import strategies as st

from service.calls.status import ORDER, RANK, advance, is_live

statuses = st.sampled_from([*ORDER, "not-found", "deletion-failed", "weird"])


def test_moves_forward_through_the_lifecycle() -> None:
    status = "queued"
    for incoming in ("ringing", "in-progress", "forwarding", "ended"):
        status = advance(status, incoming)
        assert status == incoming


def test_late_webhooks_never_move_a_call_back() -> None:
    assert advance("in-progress", "ringing") == "in-progress"
    assert advance("ringing", "queued") == "ringing"


def test_ended_is_final() -> None:
    for incoming in ORDER:
        assert advance("ended", incoming) == "ended"


def test_transfer_can_return_to_in_progress() -> None:
    assert advance("forwarding", "in-progress") == "in-progress"


def test_unknown_statuses_are_ignored() -> None:
    assert advance("ringing", "not-found") == "ringing"


@given(st.lists(statuses, max_size=20))
def test_status_never_decreases_except_transfer_return(sequence: list[str]) -> None:
    status = "queued"
    for incoming in sequence:
        new = advance(status, incoming)
        if status == "ended":
            assert new == "ended"
        elif not (status == "forwarding" and new == "in-progress"):
            assert RANK[new] >= RANK[status]
        status = new


def test_live_statuses() -> None:
    assert [status for status in ORDER if is_live(status)] == ["queued", "ringing", "in-progress", "forwarding"]
