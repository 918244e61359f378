"""``kefu gaps``: the questions kefu could not serve, clustered by meaning, for an operator to resolve.

Which messages count (``select_unserved``), from the answer log:

- a handoff for ``low_confidence`` (the KB had nothing good enough);
- a clarify (``ambiguous``) the shopper abandoned: no ``answer`` in that session within
  ``ABANDON_S`` after it (a clarify younger than that is not judged yet);
- an answer or clarify whose current vote is 👎.

Handoffs a rule decided (``user_requested``, ``sensitive``, ``merchant``, ``needs_order``, ``empty_query``) and
greetings are not gaps: no KB entry would have changed them. Messages an operator already decided
(any decision of ``kb/learned.py`` that is not undone) are left out, so a resolved cluster leaves
the list.

Clustering (``leader_clusters``): the distinct messages (by ``question_key``), oldest first, each
encoded once (in batches, and cached across calls); a message joins the most similar earlier
leader whose cosine is at least the threshold *and* that shares a character bigram with it (so two
messages with nothing in common are never merged, however close the encoder puts them), else it
leads a cluster of its own. Deterministic: same messages, same clusters. The cluster's id is a hash
of its leader, which is its oldest message, so new traffic joins clusters without renaming them.

The threshold (``merge_threshold``) is read from the served index rather than fixed, since each
model has its own cosine scale (e5's cosines sit between 0.8 and 1): it is the cosine that only one
pair in a thousand of questions of *different* entries reaches (questions and alternatives,
``PAIR_QUANTILE``). Measured 2026-12-06 on the bundled KB alone (no labelled data): with
multilingual-e5-small that is 0.927-0.928 for samples of 500 to 4,000 rows; clustering the 1,781
alternatives of 60 random entries (same entry = same intent) with the bigram check merged pairs
with precision 0.42 at 0.90, 0.67 at 0.92, 0.79 at 0.93 and 0.91 at 0.95, where only 29% of the
messages still joined a cluster (67% at 0.93). Merging too eagerly is the costly error: attaching a
cluster makes all its messages alternatives of one entry, while a cluster split in two is only one
more row in the list.

The parts: ``service/gaps_unserved.py`` selects the messages, this module clusters them into a
report, and ``service/gaps_resolve.py`` records an operator's decision on a cluster or a ticket.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from indexer.encoder import Encoder
from indexer.index import Index
from indexer.lexical import char_bigrams
from indexer.normalize import normalize
from kb.errors import NotFoundError
from kb.loadstate import question_key
from service.gaps_unserved import KINDS, GapMessage
from service.pii import mask_pii

PAIR_QUANTILE = 0.999  # merge at the cosine 1 in 1000 pairs of different entries' questions reach
FALLBACK_THRESHOLD = 0.93  # too few questions in the KB to measure it: e5-small's value on the bundled KB
MIN_PAIRS = 100  # different-entry question pairs needed to read the threshold from an index
SAMPLE_ROWS = 2000  # question rows sampled for it (the quantile moved ≤ 0.001 from 500 to 4,000 rows)
NEIGHBOURS = 3  # nearest KB entries shown per cluster
EXAMPLES = 3  # example messages shown per cluster
MAX_TEXTS = 20_000  # distinct messages clustered per report
ENCODE_BATCH = 64
VECTOR_CACHE = 50_000  # texts whose vectors are kept between reports (384 floats each: about 75 MB)
Progress = Callable[[int, int], None]  # (done, total)


@dataclass(frozen=True)
class Neighbour:
    """A KB entry, clause or section near a cluster: what it could be attached to."""

    id: str
    question: str  # an FAQ entry's question, or a document unit's label (《…》第五条)
    score: float  # the index's unit score (cosine scale) for the cluster's centroid


@dataclass(frozen=True)
class Gap:
    """A cluster of unserved messages."""

    id: str
    size: int  # messages
    texts: int  # distinct messages
    sessions: int
    first_seen: float
    last_seen: float
    kinds: dict[str, int]
    examples: tuple[str, ...]  # EXAMPLES distinct messages, most frequent first (masked)
    messages: tuple[str, ...]  # every distinct message, most frequent first: what a resolution decides on
    nearest: tuple[Neighbour, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "size": self.size,
            "texts": self.texts,
            "sessions": self.sessions,
            "first_seen": iso(self.first_seen),
            "last_seen": iso(self.last_seen),
            "kinds": self.kinds,
            "examples": list(self.examples),
            "nearest": [dataclasses.asdict(n) for n in self.nearest],
        }


@dataclass(frozen=True)
class GapReport:
    since: float | None
    until: float
    messages: int  # unserved messages in the window, decided ones included
    decided: int  # of them, left out because an operator already decided them
    clusters: int  # clusters in all (``gaps`` holds the largest)
    threshold: float
    build_id: str
    gaps: tuple[Gap, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "since": iso(self.since) if self.since is not None else None,
            "until": iso(self.until),
            "messages": self.messages,
            "decided": self.decided,
            "clusters": self.clusters,
            "threshold": round(self.threshold, 4),
            "build": self.build_id,
            "gaps": [g.to_json() for g in self.gaps],
        }


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))


# --- clustering -------------------------------------------------------------------------------------------------
def leader_clusters(vectors: np.ndarray, grams: Sequence[frozenset[str]], threshold: float) -> list[int]:
    """For each row (in order), the row that leads its cluster: the most similar earlier leader
    (dot product ≥ ``threshold``, at least one shared bigram; ties to the earliest), else itself.
    ``vectors`` are unit rows, so the dot product is the cosine."""
    v = np.asarray(vectors, dtype=np.float32)
    n = v.shape[0]
    leaders: list[int] = []
    lead = np.empty((n, v.shape[1] if v.ndim == 2 else 0), dtype=np.float32)
    out: list[int] = []
    for i in range(n):
        best = -1
        if leaders:
            sims = lead[: len(leaders)] @ v[i]
            for k in np.flatnonzero(sims >= threshold)[np.argsort(-sims[sims >= threshold], kind="stable")]:
                if grams[i] & grams[leaders[int(k)]]:
                    best = leaders[int(k)]
                    break
        if best < 0:
            lead[len(leaders)] = v[i]
            leaders.append(i)
            best = i
        out.append(best)
    return out


def merge_threshold(index: Index) -> float:
    """The cosine that ``PAIR_QUANTILE`` of pairs of questions of different entries stay below, on a
    fixed sample of the index's question rows; ``FALLBACK_THRESHOLD`` when the KB has too few."""
    rows = [i for i, c in enumerate(index.chunks) if c.kind in ("question", "alt")]
    step = max(1, len(rows) // SAMPLE_ROWS)
    rows = rows[::step][:SAMPLE_ROWS]
    if len(rows) < 2:
        return FALLBACK_THRESHOLD
    v = index.vectors[rows]
    units = np.array([index.chunks[i].unit_id for i in rows])
    iu = np.triu_indices(len(rows), 1)
    different = (units[:, None] != units[None, :])[iu]
    if different.sum() < MIN_PAIRS:
        return FALLBACK_THRESHOLD
    return float(np.quantile((v @ v.T)[iu][different], PAIR_QUANTILE))


def _gap_id(leader_key: str) -> str:
    return "G" + hashlib.sha1(leader_key.encode("utf-8")).hexdigest()[:10]


class GapFinder:
    """Clusters unserved messages for one encoder; vectors (by text) and thresholds (by build) are
    cached, since an operator reloads the list often and the same messages come back."""

    def __init__(self, encoder: Encoder, cache_size: int = VECTOR_CACHE) -> None:
        self.encoder = encoder
        self.cache_size = cache_size
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._thresholds: dict[str, float] = {}
        self._lock = threading.Lock()

    def threshold(self, index: Index) -> float:
        bid = index.manifest.build_id
        if bid not in self._thresholds:
            self._thresholds[bid] = merge_threshold(index)
        return self._thresholds[bid]

    def vectors(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        """Unit vectors of ``texts`` (normalised as queries are), the uncached ones encoded in batches."""
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        for i in range(0, len(missing), ENCODE_BATCH):
            batch = missing[i : i + ENCODE_BATCH]
            got = np.asarray(self.encoder.encode_queries([normalize(t) for t in batch]), dtype=np.float32)
            got /= np.maximum(np.linalg.norm(got, axis=1, keepdims=True), 1e-12)
            with self._lock:
                for t, vec in zip(batch, got, strict=True):
                    self._vectors[t] = vec
            if progress is not None:
                progress(min(i + ENCODE_BATCH, len(missing)), len(missing))
        with self._lock:
            out = np.stack([self._vectors[t] for t in texts]) if texts else np.zeros((0, self.encoder.dim), np.float32)
            for t in texts:
                self._vectors.move_to_end(t)
            while len(self._vectors) > self.cache_size:
                self._vectors.popitem(last=False)
        return out

    def report(
        self,
        index: Index,
        messages: Sequence[GapMessage],
        *,
        decided: set[str] | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = 20,
        threshold: float | None = None,
        progress: Progress | None = None,
    ) -> GapReport:
        """Cluster ``messages`` (minus the ``decided`` question keys), largest clusters first."""
        decided = decided or set()
        keep = [m for m in messages if question_key(m.text) not in decided]
        by_key: dict[str, list[GapMessage]] = {}
        for m in sorted(keep, key=lambda m: (m.created, m.answer_id)):
            by_key.setdefault(question_key(m.text) or m.text, []).append(m)
        keys = list(by_key)[:MAX_TEXTS]  # oldest first
        texts = [Counter(m.text for m in by_key[k]).most_common(1)[0][0] for k in keys]
        t = self.threshold(index) if threshold is None else threshold
        vecs = self.vectors(texts, progress)
        grams = [frozenset(char_bigrams(normalize(x))) for x in texts]
        lead = leader_clusters(vecs, grams, t)
        members: dict[int, list[int]] = {}
        for i, leader in enumerate(lead):
            members.setdefault(leader, []).append(i)
        gaps = [self._gap(index, keys, texts, by_key, vecs, leader, rows) for leader, rows in members.items()]
        gaps.sort(key=lambda g: (-g.size, -g.last_seen, g.id))
        return GapReport(
            since,
            time.time() if until is None else until,
            len(messages),
            len(messages) - len(keep),
            len(gaps),
            t,
            index.manifest.build_id,
            tuple(gaps[:limit] if limit is not None else gaps),
        )

    def _gap(
        self,
        index: Index,
        keys: list[str],
        texts: list[str],
        by_key: dict[str, list[GapMessage]],
        vecs: np.ndarray,
        leader: int,
        rows: list[int],
    ) -> Gap:
        msgs = [m for r in rows for m in by_key[keys[r]]]
        # most frequent first; ties by first seen (rows are in first-seen order)
        ranked = sorted(rows, key=lambda r: -len(by_key[keys[r]]))
        weights = np.array([len(by_key[keys[r]]) for r in rows], dtype=np.float32)
        centroid = (vecs[rows] * weights[:, None]).sum(axis=0)
        centroid /= max(float(np.linalg.norm(centroid)), 1e-12)
        near: list[Neighbour] = []
        for u in index.search_units(centroid, k_units=NEIGHBOURS * 4):
            e = index.entries.get(u.unit_id)
            doc = index.doc_units.get(u.unit_id)  # a clause or section: messages attach to it too
            title = e.question if e is not None else doc.label if doc is not None else None
            if title is not None and len(near) < NEIGHBOURS:
                near.append(Neighbour(u.unit_id, title, round(u.score, 4)))
        kinds = Counter(m.kind for m in msgs)
        return Gap(
            id=_gap_id(keys[leader]),
            size=len(msgs),
            texts=len(rows),
            sessions=len({m.session_id for m in msgs if m.session_id}),
            first_seen=min(m.created for m in msgs),
            last_seen=max(m.created for m in msgs),
            kinds={k: kinds[k] for k in KINDS if kinds[k]},
            examples=tuple(mask_pii(texts[r]) for r in ranked[:EXAMPLES]),
            messages=tuple(mask_pii(texts[r]) for r in ranked),
            nearest=tuple(near),
        )


def find(report: GapReport, gap_id: str) -> Gap:
    for g in report.gaps:
        if g.id == gap_id:
            return g
    raise NotFoundError(
        f"no open gap {gap_id!r} in this window: it may have been resolved, or it is older than the window "
        "(--since, or the since parameter); list them again with `kefu gaps`"
    )
