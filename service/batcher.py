"""Micro-batching: concurrent requests are coalesced into one encoder call.

A request thread submits its text and waits; a worker thread takes everything queued within
a short window (``wait_ms``) up to ``max_batch`` texts, encodes them in one forward pass and
hands each caller its row. Batching raises torch's throughput several-fold on this CPU
(420 short texts/s in batches vs ~80/s one at a time). With an encoder that runs calls in
parallel (ONNX, one thread per call) there is one worker per core, and small batches serve best.
``MicroBatcher.for_encoder`` reads both from the encoder's ``QueryPolicy``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future

import numpy as np

from indexer.encoder import Encoder, QueryPolicy, policy_of
from kb.errors import ConfigError, ModelError
from kb.settings import MICROBATCH_WAIT_MS

# Texts per encoder call when the encoder's policy is not asked (``for_encoder`` asks it): the
# policy's own default, so a bare MicroBatcher and an encoder that states nothing agree.
DEFAULT_MAX_BATCH: int = QueryPolicy.max_batch


class MicroBatcher:
    def __init__(
        self,
        encode: Callable[[Sequence[str]], np.ndarray],
        wait_ms: float = MICROBATCH_WAIT_MS,
        max_batch: int = DEFAULT_MAX_BATCH,
        on_batch: Callable[[int, float], None] | None = None,
        workers: int = 1,
    ) -> None:
        """``on_batch(texts, seconds)`` is told about every encoder call (for metrics); ``workers``
        encoder calls may run at once."""
        if wait_ms < 0 or max_batch < 1 or workers < 1:
            raise ConfigError(
                f"micro-batching needs wait_ms ≥ 0 (got {wait_ms}), max_batch ≥ 1 (got {max_batch}) "
                f"and workers ≥ 1 (got {workers})"
            )
        self._encode = encode
        self._on_batch = on_batch
        self._wait = wait_ms / 1000.0
        self._max = max_batch
        self._queue: queue.Queue[tuple[list[str], Future[np.ndarray]] | None] = queue.Queue()
        self._closed = False
        self._count_lock = threading.Lock()
        self.batches = 0  # number of encoder calls, for metrics and tests
        self.texts = 0
        self._workers = [
            threading.Thread(target=self._loop, name=f"kefu-microbatch-{i}", daemon=True) for i in range(workers)
        ]
        for w in self._workers:
            w.start()

    @property
    def answers_at_once(self) -> int:
        """How many answers are worth computing at once in front of this batcher: enough to fill
        one encoder call, and two for each call that can run at once (one encoding while the other
        does its Python work). More do not answer sooner: each encoder call keeps a core busy, so
        with more answers queued at the encoder the thread that holds the interpreter lock (which
        every answer's own work needs) gets a smaller share of the cores. ONNX on 2 cores (2 calls
        at once, 4 texts a call): 4 at once against 40 (the thread pool's default) served shop
        answers at 32 clients about 20% faster (docs/scaling.md)."""
        return max(self._max, 2 * len(self._workers))

    @classmethod
    def for_encoder(
        cls,
        encoder: Encoder,
        wait_ms: float = MICROBATCH_WAIT_MS,
        max_batch: int | None = None,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> MicroBatcher:
        """A batcher in front of ``encoder.encode_queries``, shaped by its query policy: batches of
        ``max_batch`` texts when set, else the size the encoder's runtime serves best, and as many
        workers as calls the encoder can run at once."""
        policy = policy_of(encoder)
        return cls(
            encoder.encode_queries,
            wait_ms,
            max_batch or policy.max_batch,
            on_batch,
            workers=policy.parallelism,
        )

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Blocking: returns this caller's rows once its batch has been encoded."""
        if self._closed:
            raise ModelError("the encoder is shutting down")
        fut: Future[np.ndarray] = Future()
        self._queue.put((list(texts), fut))
        return fut.result()

    __call__ = encode

    def close(self) -> None:
        self._closed = True
        self._queue.put(None)  # each worker puts it back for the next one
        for w in self._workers:
            w.join(timeout=5)

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                self._queue.put(None)
                return
            jobs = [first]
            size = len(first[0])
            deadline = time.perf_counter() + self._wait
            while size < self._max:
                remaining = deadline - time.perf_counter()
                try:
                    job = self._queue.get(timeout=max(0.0, remaining)) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    self._queue.put(None)
                    break
                jobs.append(job)
                size += len(job[0])
            texts = [t for j in jobs for t in j[0]]
            started = time.perf_counter()
            try:
                vecs = self._encode(texts)
            except Exception as exc:  # hand the failure to every waiting caller
                for _, fut in jobs:
                    fut.set_exception(exc)
                continue
            with self._count_lock:
                self.batches += 1
                self.texts += len(texts)
            if self._on_batch is not None:
                self._on_batch(len(texts), time.perf_counter() - started)
            row = 0
            for j_texts, fut in jobs:
                fut.set_result(vecs[row : row + len(j_texts)])
                row += len(j_texts)
