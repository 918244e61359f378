"""SessionStore: last turn, all turns, TTL expiry, LRU eviction, bounds."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import service.sessions as sessions_mod
from kb.errors import ConfigError
from service.sessions import SessionStore, Turn


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def monotonic(self) -> float:
        return self.t


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(sessions_mod, "time", SimpleNamespace(monotonic=c.monotonic))
    return c


def test_last_turn_is_the_most_recent():
    s = SessionStore()
    assert s.last("S1") is None
    s.add("S1", Turn("退货运费谁出"))
    s.add("S1", Turn("那运费呢"))
    assert s.last("S1") == Turn("那运费呢")
    assert s.last("S2") is None
    assert len(s) == 1


def test_sessions_are_independent():
    s = SessionStore()
    s.add("A", Turn("a"))
    s.add("B", Turn("b"))
    last_a, last_b = s.last("A"), s.last("B")
    assert last_a is not None and last_a.query == "a"
    assert last_b is not None and last_b.query == "b"


def test_ttl_expiry(clock: Clock):
    s = SessionStore(ttl_s=60)
    s.add("S1", Turn("q"))
    clock.t += 60  # exactly at the TTL: still alive
    assert s.last("S1") == Turn("q")
    clock.t += 0.001
    assert s.last("S1") is None
    assert len(s) == 0  # the expired session is dropped


def test_turns_and_messages_oldest_first_until_expiry(clock: Clock):
    s = SessionStore(ttl_s=60)
    assert s.turns("S1") == () and s.messages("S1") == ()
    s.add("S1", Turn("退货运费谁出", message="退货运费谁出？"))
    s.add("S1", Turn("那运费呢"))  # the typed text not known: the normalised question stands in
    assert s.turns("S1") == (Turn("退货运费谁出", message="退货运费谁出？"), Turn("那运费呢"))
    assert s.messages("S1") == ("退货运费谁出？", "那运费呢")
    clock.t += 60.001
    assert s.messages("S1") == () and len(s) == 0


def test_adding_a_turn_refreshes_the_ttl(clock: Clock):
    s = SessionStore(ttl_s=60)
    s.add("S1", Turn("q1"))
    clock.t += 50
    s.add("S1", Turn("q2"))
    clock.t += 50  # 100 s after the first turn, 50 after the second
    assert s.last("S1") == Turn("q2")


def test_lru_eviction_at_max_size():
    s = SessionStore(max_sessions=2)
    s.add("A", Turn("a"))
    s.add("B", Turn("b"))
    s.add("A", Turn("a2"))  # A is now the most recently used
    s.add("C", Turn("c"))
    assert len(s) == 2
    assert s.last("B") is None
    assert s.last("A") == Turn("a2")
    assert s.last("C") == Turn("c")


def test_many_sessions_stay_bounded():
    s = SessionStore(max_sessions=5)
    for i in range(50):
        s.add(f"S{i}", Turn(str(i)))
    assert len(s) == 5
    assert [s.last(f"S{i}") is not None for i in range(45, 50)] == [True] * 5
    assert s.last("S44") is None


def test_new_ids_are_unique_and_valid_session_ids():
    ids = {SessionStore.new_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(i.startswith("S") and len(i) == 17 and i[1:].isalnum() for i in ids)


@pytest.mark.parametrize(("ttl", "size"), [(0, 10), (-1, 10), (60, 0)])
def test_bad_bounds_are_config_errors(ttl: float, size: int):
    with pytest.raises(ConfigError):
        SessionStore(ttl_s=ttl, max_sessions=size)
