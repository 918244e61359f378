"""MicroBatcher: rows go back to the right caller, requests coalesce, failures reach every waiter."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

from kb.errors import ConfigError, ModelError
from service.batcher import MicroBatcher

N_THREADS = 16


def _row(text: str) -> list[float]:
    n = float(text.split("-")[1]) * 100 + float(text.split("-")[2])
    return [n, -n, float(len(text))]


class GatedEncoder:
    """Blocks its first call until released, so later requests pile up in the queue."""

    def __init__(self, fail: bool = False) -> None:
        self.gate = threading.Event()
        self.calls: list[list[str]] = []
        self.fail = fail
        self._lock = threading.Lock()

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            first = not self.calls
            self.calls.append(list(texts))
        if first:
            assert self.gate.wait(30), "test gate never opened"
        if self.fail:
            raise RuntimeError("encoder exploded")
        return np.array([_row(t) for t in texts], dtype=np.float32)


def _wait_for_queue(b: MicroBatcher, n: int) -> None:
    """Wait (bounded) until ``n`` requests are queued behind the blocked first batch."""
    deadline = time.monotonic() + 30
    while b._queue.qsize() < n:
        assert time.monotonic() < deadline, "requests never reached the queue"
        time.sleep(0.005)


def _run_threads(b: MicroBatcher, enc: GatedEncoder) -> tuple[dict[int, object], dict[int, list[str]]]:
    results: dict[int, object] = {}
    texts = {n: [f"t-{n}-{j}" for j in range(1 + n % 3)] for n in range(N_THREADS)}  # 1-3 texts each

    def call(n: int) -> None:
        try:
            results[n] = b.encode(texts[n])
        except Exception as exc:
            results[n] = exc

    threads = [threading.Thread(target=call, args=(n,)) for n in range(N_THREADS)]
    threads[0].start()
    deadline = time.monotonic() + 30
    while not enc.calls:  # the first request is inside the encoder
        assert time.monotonic() < deadline
        time.sleep(0.005)
    for t in threads[1:]:
        t.start()
    _wait_for_queue(b, N_THREADS - 1)
    enc.gate.set()
    for t in threads:
        t.join(30)
    return results, texts


def test_rows_map_back_to_their_callers_and_requests_coalesce():
    enc = GatedEncoder()
    b = MicroBatcher(enc, wait_ms=0, max_batch=64)
    try:
        results, texts = _run_threads(b, enc)
    finally:
        b.close()
    assert len(results) == N_THREADS
    for n, got in results.items():
        assert isinstance(got, np.ndarray), got
        np.testing.assert_array_equal(got, np.array([_row(t) for t in texts[n]], dtype=np.float32))
    # the first request went alone; the 15 queued behind it were coalesced into one call
    assert b.batches == len(enc.calls) == 2
    assert b.batches < N_THREADS
    assert b.texts == sum(len(t) for t in texts.values())
    assert sorted(t for call in enc.calls for t in call) == sorted(t for ts in texts.values() for t in ts)


def test_max_batch_splits_the_queue():
    enc = GatedEncoder()
    b = MicroBatcher(enc, wait_ms=0, max_batch=4)
    try:
        results, texts = _run_threads(b, enc)
    finally:
        b.close()
    for n, got in results.items():
        np.testing.assert_array_equal(got, np.array([_row(t) for t in texts[n]], dtype=np.float32))
    # a batch stops taking jobs once it holds max_batch texts (the last job may overshoot by ≤ 2)
    assert all(len(c) < 4 + 3 for c in enc.calls)
    assert 2 < b.batches < N_THREADS


def test_encoder_failure_reaches_every_waiter():
    enc = GatedEncoder(fail=True)
    b = MicroBatcher(enc, wait_ms=0, max_batch=64)
    try:
        results, _ = _run_threads(b, enc)
    finally:
        b.close()
    assert len(results) == N_THREADS
    assert all(isinstance(r, RuntimeError) and "exploded" in str(r) for r in results.values())
    assert b.batches == 0  # failed calls are not counted


def test_batcher_keeps_working_after_a_failure():
    calls = {"n": 0}

    def flaky(texts: Sequence[str]) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ValueError("first call fails")
        return np.ones((len(texts), 2), dtype=np.float32)

    b = MicroBatcher(flaky, wait_ms=0)
    try:
        with pytest.raises(ValueError, match="first call fails"):
            b.encode(["a"])
        assert b.encode(["a", "b"]).shape == (2, 2)
    finally:
        b.close()


def test_callable_and_single_caller():
    b = MicroBatcher(lambda ts: np.array([_row(t) for t in ts], dtype=np.float32), wait_ms=0)
    try:
        out = b(["t-1-2", "t-3-4"])
        np.testing.assert_array_equal(out, np.array([_row("t-1-2"), _row("t-3-4")], dtype=np.float32))
    finally:
        b.close()


def test_closed_batcher_refuses_work():
    b = MicroBatcher(lambda ts: np.zeros((len(ts), 2)), wait_ms=0)
    b.close()
    with pytest.raises(ModelError, match="shutting down"):
        b.encode(["a"])


@pytest.mark.parametrize(("wait_ms", "max_batch", "workers"), [(-1, 32, 1), (3, 0, 1), (3, -5, 1), (0, 32, 0)])
def test_bad_arguments_are_config_errors(wait_ms: float, max_batch: int, workers: int):
    with pytest.raises(ConfigError, match="got"):
        MicroBatcher(lambda ts: np.zeros((len(ts), 2)), wait_ms=wait_ms, max_batch=max_batch, workers=workers)


def test_a_second_worker_encodes_while_the_first_is_busy():
    enc = GatedEncoder()
    b = MicroBatcher(enc, wait_ms=0, workers=2)
    first: dict[str, object] = {}
    try:
        t = threading.Thread(target=lambda: first.setdefault("out", b.encode(["t-0-0"])))
        t.start()
        deadline = time.monotonic() + 30
        while not enc.calls:  # the first call now holds worker 1 inside the encoder
            assert time.monotonic() < deadline
            time.sleep(0.005)
        # with one worker this would wait for the gate; the second worker answers at once
        np.testing.assert_array_equal(b.encode(["t-1-1"]), np.array([_row("t-1-1")], dtype=np.float32))
        assert "out" not in first
        enc.gate.set()
        t.join(30)
        np.testing.assert_array_equal(first["out"], np.array([_row("t-0-0")], dtype=np.float32))
    finally:
        enc.gate.set()
        b.close()
    assert b.batches == 2
    assert not any(w.is_alive() for w in b._workers)  # close() stops every worker


def test_every_encoder_call_is_reported():
    seen: list[tuple[int, float]] = []
    b = MicroBatcher(
        lambda ts: np.array([_row(t) for t in ts], dtype=np.float32),
        wait_ms=0,
        on_batch=lambda n, secs: seen.append((n, secs)),
    )
    try:
        b.encode(["t-0-0", "t-0-1"])
        b.encode(["t-1-0"])
    finally:
        b.close()
    assert [n for n, _ in seen] == [2, 1]
    assert all(secs >= 0 for _, secs in seen)


def test_for_encoder_takes_batch_size_and_workers_from_the_query_policy():
    from indexer.encoder import FakeEncoder, QueryPolicy

    class Parallel(FakeEncoder):
        @property
        def query_policy(self) -> QueryPolicy:
            return QueryPolicy("fake-onnx", batch_invariant=True, parallelism=3, max_batch=4)

    enc = Parallel(dim=16)
    b = MicroBatcher.for_encoder(enc, wait_ms=0)
    try:
        assert len(b._workers) == 3 and b._max == 4
        np.testing.assert_array_equal(b.encode(["退款"]), enc.encode_queries(["退款"]))
    finally:
        b.close()
    b = MicroBatcher.for_encoder(FakeEncoder(dim=16), wait_ms=0, max_batch=7)  # a setting wins over the policy
    try:
        assert len(b._workers) == 1 and b._max == 7
    finally:
        b.close()


@pytest.mark.parametrize(("max_batch", "workers", "expected"), [(4, 2, 4), (1, 3, 6), (32, 1, 32), (4, 4, 8)])
def test_answers_at_once_fills_one_call_and_keeps_every_worker_busy(max_batch: int, workers: int, expected: int):
    b = MicroBatcher(lambda texts: np.zeros((len(texts), 2), dtype=np.float32), max_batch=max_batch, workers=workers)
    try:
        assert b.answers_at_once == expected
    finally:
        b.close()
