import pytest

from engines.inflight import InflightRequests


def test_tracks_ids_per_search_and_forgets_finished_ones() -> None:
    inflight = InflightRequests("policy")
    with inflight.track("search-a") as first, inflight.track("search-a") as second:
        with inflight.track("search-b") as other:
            assert first != second and first.startswith("search-a-policy-")
            assert len(inflight) == 3
        assert inflight.take("search-a") == sorted([first, second])
        assert inflight.take("search-a") == []  # taken: an abort happens once
    assert len(inflight) == 0 and other.startswith("search-b-")


def test_ids_are_released_when_the_request_fails() -> None:
    inflight = InflightRequests("prm")
    with pytest.raises(RuntimeError), inflight.track("s"):
        raise RuntimeError("engine died")
    assert len(inflight) == 0 and inflight.take("s") == []
