"""Retrieve: a message's candidates and the evidence the decision reads (features, confidence).

A follow-up is searched alone and with what came before; the reading with context replaces the
message alone only under ``prefers_context``, and the other reading's candidates are blended in.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from indexer.folder import EntryInfo
from indexer.index import Index
from indexer.pool import CandidatePool, LexicalEvidence
from indexer.units import UnitHit
from kb.errors import ConfigError
from service.pipeline.prepare import Prepared
from service.policy import Calibration, Features
from service.ranker import Ranker
from service.synonyms import SynonymExpander

EncodeFn = Callable[[Sequence[str]], np.ndarray]
CANDIDATE_UNITS = 10  # units scored per query; clarify shows up to 3, answers up to top_k
# "See also" (KEFU_SEE_ALSO, off by default): after the two best candidates, the first one's
# related entries (its `related:` links) come next, up to rank SEE_ALSO_UNTIL. Shoppers who ask
# about one entry often need its sibling too (a labelled query names 2–3 entries in 16% of dev).
# Dev, cross-fitted rankings: recall@5 0.981 → 0.990, MRR@10 0.9607 → 0.9611, hit@1 unchanged;
# moving them right after the first instead cost MRR (0.9575). On test recall@5 fell 0.979 →
# 0.974 (MRR 0.963 → 0.962): the related links and the labels' second entries agree on dev more
# than they do in general, so it stays an option.
SEE_ALSO_AFTER = 2
SEE_ALSO_UNTIL = 5
# One thread computes the candidate pool's text-only evidence (BM25, bigram coverage) while the
# caller's thread encodes: a query encode is one single-threaded ONNX call that releases the GIL,
# so on 2 cores this hides 0.05–0.2 ms of the ~0.35 ms it costs (interleaved A/B, p50).
_LEXICAL_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kefu-lexical")


@dataclass(frozen=True)
class Retrieval:
    """One reading of a message searched: its units (best first), their evidence and confidence."""

    text: str
    units: list[UnitHit]
    features: Features | None
    confidence: float
    used_context: bool
    synonyms: tuple[str, ...] = ()  # standard terms the search added (resources/synonyms.yaml)


@dataclass(frozen=True)
class Candidate:
    """One ranked answer unit as the decision, the response and eval see it."""

    id: str  # the unit: an FAQ entry id, or a document chunk's unit id
    doc_id: str
    score: float  # the unit's score (cosine scale), unrounded
    row: int  # the best-matching vector row (which chunk of a document to show)


@dataclass(frozen=True)
class Searched:
    """What the retrieve stage hands on: the reading answered from, and its ranked candidates."""

    text: str  # the reading: the message, or the message with what came before
    used_context: bool
    synonyms: tuple[str, ...]
    candidates: tuple[Candidate, ...]
    features: Features | None
    confidence: float
    readings: tuple[str, ...] = ()  # the message's readings with context that were searched
    # answered from a reading with context although the message is no follow-up: kefu's guess at
    # what a whole sentence continues, offered as options (``Decider``), never a bare answer
    guessed_context: bool = False


def prefers_context(plain: Retrieval, contextual: Retrieval, answer_at: float) -> bool:
    """Whether the message read with the previous one should replace the message alone: only
    when the message alone is not confident enough to answer, the context raises confidence,
    and its best entry is among the message's own candidates. The last condition keeps a new
    topic from being answered with the old one. Dev (15 follow-ups; 332 in-scope questions
    each asked after an unrelated one, the report's topic-switch probe): the rule "higher
    confidence wins" got 9 follow-ups right and turned 11 right answers of the switches
    wrong; this rule gets 11 and turns none."""
    if plain.confidence >= answer_at or contextual.confidence <= plain.confidence:
        return False
    own = {u.unit_id for u in plain.units}
    return bool(contextual.units) and contextual.units[0].unit_id in own


class Retriever:
    """Encode, search, rerank and measure the evidence of one message's readings."""

    def __init__(
        self,
        *,
        index: Index,
        encode: EncodeFn,
        calibration: Calibration,
        ranker: Ranker | None = None,
        synonyms: SynonymExpander | None = None,
        retrieval: str = "rrf",
        expand_synonyms: bool = False,
        see_also: bool = False,
        blend_context: bool = True,
    ) -> None:
        self.index = index
        self.encode = encode
        self.calibration = calibration
        self.ranker = ranker
        self.synonyms = synonyms if expand_synonyms else None
        self.retrieval = retrieval
        self.see_also = see_also
        self.blend_context = blend_context

    def run(self, p: Prepared) -> Searched:
        """The message and its readings searched; the one answered from, with the other blended in."""
        results = self.retrieve([p.text, *p.readings])
        readings, late = p.readings, False
        if p.late_readings and results[0].confidence < self.calibration.answer_at:
            # the same rule as a follow-up's (``prefers_context``) then picks between them
            results += self.retrieve(list(p.late_readings))
            readings, late = p.late_readings, True
        best = results[0]
        # of the readings with context, the most confident one competes with the message alone
        other: Retrieval | None = max(results[1:], key=lambda r: r.confidence) if len(results) > 1 else None
        if other is not None and prefers_context(results[0], other, self.calibration.answer_at):
            best, other = dataclasses.replace(other, used_context=True), results[0]
        if other is not None and self.blend_context and best.units and other.units:
            best = dataclasses.replace(best, units=blend(best.units, other.units))
        chunks = self.index.chunks
        candidates = tuple(Candidate(u.unit_id, chunks[u.best_chunk].doc_id, u.score, u.best_chunk) for u in best.units)
        guessed = late and best.used_context
        return Searched(
            best.text, best.used_context, best.synonyms, candidates, best.features, best.confidence, readings, guessed
        )

    def retrieve(self, texts: list[str]) -> list[Retrieval]:
        """Encode ``texts`` one by one and score each; used for the plain and contextual readings.

        Each text is searched with its synonym expansion, but the evidence (bigram overlap,
        length) is measured on the text itself, so confidence means the same with or without a
        synonym table.
        """
        expanded = self.search_texts(texts)
        lexical = None
        if self.ranker is not None:  # the pool's text-only half runs on the core the encoder leaves idle
            lexical = [_LEXICAL_POOL.submit(self.index.lexical_evidence, search) for search, _ in expanded]
        # One call per text: int8 activations are quantised per call, so a batch of the message and
        # its contextual variant would shift the message's own vector, and its answer could differ
        # from the one it gets without a session.
        vecs = [self.encode([search])[0] for search, _ in expanded]
        out = []
        for i, (text, (search, added), vec) in enumerate(zip(texts, expanded, vecs, strict=True)):
            if self.retrieval == "dense":
                got = self._scored(text, vec, self.index.search_units(vec, CANDIDATE_UNITS))
            elif self.ranker is not None and lexical is not None:
                got = self.evidence(text, vec, search=search, lexical=lexical[i].result())
            else:
                units = self.index.search_units_fused(vec, search, CANDIDATE_UNITS, self.retrieval)
                got = self._scored(text, vec, units)
            units = got.units
            if self.see_also:  # after the evidence: the confidence reads the ranked order
                units = see_also(units, self.index.entries)
            out.append(dataclasses.replace(got, units=units, synonyms=added))
        return out

    def evidence(
        self,
        text: str,
        vec: np.ndarray,
        *,
        search: str | None = None,
        lexical: LexicalEvidence | None = None,
        ranker: Ranker | None = None,
        exclude_row: int | None = None,
        exclude_unit: str | None = None,
    ) -> Retrieval:
        """The learned ranker's candidates for ``text`` (searched as ``search``, encoded as
        ``vec``) with their evidence and confidence. ``ranker`` overrides the calibration's;
        ``exclude_row`` / ``exclude_unit`` search the index as if one vector row or one whole
        entry were not in it (self-calibration asks the KB's own questions this way)."""
        ranker = ranker or self.ranker
        if ranker is None:
            raise ConfigError("no learned ranker to rank with: the calibration carries none")
        search = text if search is None else search
        if lexical is None:
            lexical = self.index.lexical_evidence(search, exclude_row, exclude_unit)
        pool = self.index.candidate_pool(
            vec, search, ranker.pool, exclude_row=exclude_row, lexical=lexical, exclude_unit=exclude_unit
        )
        reranked = ranker.rerank(pool)
        rank_prob = reranked.probs[0] if reranked.probs else 0.0
        return self._scored(text, vec, reranked.units[:CANDIDATE_UNITS], rank_prob, lexical)

    def features(
        self,
        text: str,
        qvec: np.ndarray,
        units: list[UnitHit],
        rank_prob: float = 0.0,
        lexical: LexicalEvidence | None = None,
    ) -> Features | None:
        """The decision evidence for ``units`` (best first); ``lexical`` is reused when it was
        computed for ``text`` itself (not a synonym expansion)."""
        if not units:
            return None
        top = units[0]
        anchors = self.index.anchor_scores(qvec)
        if lexical is not None and lexical.query == text:
            row_jaccard = lexical.jaccard
        else:
            row_jaccard = self.index.bigram_jaccard(text)
        overlap = self.index.text_overlap(top.unit_id, text, row_jaccard)
        n_vectors = max(1, len(self.index.units.get(top.unit_id, [])))
        return Features(
            top1=top.score,
            question_top1=top.question_score,
            margin=top.score - (units[1].score if len(units) > 1 else 0.0),
            anchor_gap=top.score - (float(anchors.max()) if anchors.size else 0.0),
            votes=top.votes / n_vectors,
            bigram_overlap=overlap,
            length=math.log1p(len(text)),
            rank_prob=rank_prob,
        )

    def candidate_pools(self, texts: list[str], size: int) -> list[CandidatePool]:
        """The candidate pool each prepared text's own retrieval would rerank: what a ranker is
        trained on. Each text is encoded alone, as ``retrieve`` does."""
        searches = [search for search, _ in self.search_texts(texts)]
        return [self.index.candidate_pool(self.encode([s])[0], s, size) for s in searches]

    def search_texts(self, texts: list[str]) -> list[tuple[str, tuple[str, ...]]]:
        """(text to search, standard terms added) per text: the synonym expansion when it is on."""
        return [self.synonyms.expand(t) if self.synonyms is not None else (t, ()) for t in texts]

    def _scored(
        self,
        text: str,
        vec: np.ndarray,
        units: list[UnitHit],
        rank_prob: float = 0.0,
        lexical: LexicalEvidence | None = None,
    ) -> Retrieval:
        f = self.features(text, vec, units, rank_prob, lexical)
        return Retrieval(text, units, f, self.calibration.confidence(f) if f is not None else 0.0, False)


def blend(first: list[UnitHit], second: list[UnitHit]) -> list[UnitHit]:
    """``first`` with ``second`` interleaved after its two best: first[0], first[1], second[0],
    first[2], second[1], …, without repeats, as long as ``first``; ranks renumbered.

    A follow-up has two readings, alone and with the previous message. The answer comes from the
    one ``prefers_context`` picks; the other reading's best candidates still get a place in the
    list. Dev: follow-ups' recall@5 0.911 → 0.967 (15 questions), and the 332 questions asked
    right after an unrelated one (the report's topic-switch probe) lose 0.0015 of recall@5 (one
    of them) with top answers and MRR unchanged."""
    out = [first[0]]
    seen = {first[0].unit_id}
    takes = [iter(first[1:]), iter(second)]
    turn = 0
    while len(out) < len(first) and takes:
        src = takes[turn % len(takes)]
        for u in src:
            if u.unit_id not in seen:
                seen.add(u.unit_id)
                out.append(u)
                break
        else:
            takes.remove(src)  # exhausted: the other list fills the rest
            continue
        turn += 1
    return [dataclasses.replace(u, rank=i) for i, u in enumerate(out)]


def see_also(units: list[UnitHit], entries: Mapping[str, EntryInfo]) -> list[UnitHit]:
    """``units`` with the first one's related entries moved up to follow the SEE_ALSO_AFTER best,
    in their own order, up to rank SEE_ALSO_UNTIL; ranks renumbered. Nothing else moves."""
    first = entries.get(units[0].unit_id) if units else None
    if first is None or not first.related:
        return units
    related = set(first.related)
    head = units[:SEE_ALSO_AFTER]
    moved = [u for u in units[SEE_ALSO_AFTER:] if u.unit_id in related][: SEE_ALSO_UNTIL - SEE_ALSO_AFTER]
    if not moved:
        return units
    taken = {id(u) for u in moved}
    order = head + moved + [u for u in units[SEE_ALSO_AFTER:] if id(u) not in taken]
    return [u if u.rank == r else dataclasses.replace(u, rank=r) for r, u in enumerate(order)]
