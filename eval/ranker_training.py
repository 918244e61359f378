"""The ranker's training data and its cross-fitting: the KB's alternatives searched without
themselves, pseudo-queries for document units, the labelled dev queries, and ``cross_fit_ranker``,
which ranks each dev query with a ranker fitted without its fold so that the calibration
(``eval.calibrate``) sees honest probabilities."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from eval.calibrate import FOLDS, fold_of
from eval.dataset import EvalItem, resolve_labels
from eval.metrics import Ranked
from eval.runner import ItemResult, run
from indexer.index import Index
from indexer.normalize import normalize
from indexer.pseudo import MIN_CHARS as PSEUDO_MIN_CHARS
from indexer.pseudo import SEED as PSEUDO_SEED
from indexer.pseudo import UnitQuery, unit_queries
from kb.loader import load_resources
from kb.settings import BUNDLED_KB
from service.answerer import Answerer
from service.ranker import POOL, Group, Ranker, fit_ranker, with_doc_margin

# The labelled dev queries together weigh this many times the KB's alternative questions
# together when the ranker is fitted: shoppers' phrasing is what it must learn, and the KB's
# own phrasings are many more. Each dev query's weight follows from the counts (dev_weight), so
# the balance holds when alternatives are added or a user brings a KB and a dev set of their
# own. History on dev: with 3,169 alternatives, a fixed 10× (about equal weight) gave
# cross-validated hit@1 0.904 against 0.882 / 0.892 at 1× / 3×; after alternatives went to 5,275,
# the same 10× had fallen to 0.65 of the KB's weight, and restoring equal weight (15.9×) lifted
# pool-level CV hit@1 0.922 → 0.928 (2026-11-26).
DEV_SHARE = 1.0
# Training queries for document units (``unit_groups``): the kind of pseudo-query, how many per
# unit and the weight of each (an alternative question weighs 1). Chosen on the rules dev split
# and the FAQ dev split (docs/experiments.md, 2026-12-06, issue 22): the right clause first for
# 0.011 → 0.204 of rules dev, FAQ dev hit@1 0.9366 → 0.9395; verbatim fragments reach about 0.10,
# and above a weight of 5–10 FAQ dev and the calibration's coverage fall.
UnitKind = Literal["first", "fragment", "shopper"]
UNIT_QUERIES: UnitKind = "shopper"
UNIT_PER_UNIT = 4
UNIT_WEIGHT = 5.0
# How a shopper_queries pseudo-query opens and ends (one of each, at random; "" is no opening).
ASK_OPENINGS = ("", "", "", "请问", "我想问下", "问一下", "如果", "卖家说", "我这个", "想知道")
ASK_ENDINGS: tuple[str, ...] = ("吗", "怎么办", "怎么算", "是什么规定", "平台怎么处理", "有规定吗")
ASK_ENDINGS += ("可以吗", "多久", "", "的话怎么弄", "能赔吗", "谁负责")


def faq_alt_rows(index: Index) -> list[int]:
    """The rows of FAQ entries' alternative questions (not the questions documents' units were given)."""
    return [r for r, c in enumerate(index.chunks) if c.kind == "alt" and c.unit_id in index.entries]


def ranker_view(index: Index) -> Index:
    """The index a ranker is fitted on: ``index`` without its document units' question rows (the
    served ranker holds those units back by ``service.ranker.DOC_MARGIN`` instead); ``index``
    itself when it has none."""
    drop = set(index.document_question_rows())
    return index.with_rows([r for r in range(len(index.chunks)) if r not in drop]) if drop else index


def kb_groups(index: Index, size: int = POOL, progress: Callable[[int, int], None] | None = None) -> list[Group]:
    """One training query per stored FAQ alternative question (``faq_alt_rows``): its own vector
    and text, searched with that row left out; its unit is the relevant candidate."""
    rows = faq_alt_rows(index)
    out = []
    for n, r in enumerate(rows, 1):
        pool = index.candidate_pool(index.vectors[r], index.norm_texts[r], size, exclude_row=r)
        unit = index.chunks[r].unit_id
        out.append(Group(pool.x, np.array([u.unit_id == unit for u in pool.units])))
        if progress:
            progress(n, len(rows))
    return out


def shopper_queries(
    queries: Sequence[UnitQuery], synonyms: Mapping[str, Sequence[str]], seed: int = PSEUDO_SEED
) -> list[UnitQuery]:
    """Fragments (``unit_queries(…, "fragment")``) made to read less like the rule's own text, as
    a shopper asks about it: a shorter window (55–85 % of the fragment), the help center's terms
    put in the shoppers' words (``synonyms.yaml`` read backwards: 退款 → 退钱, 70 % of the time),
    and a question's opening and ending around it (请问…怎么算). A verbatim fragment holds every
    one of its bigrams in its unit's row, which no shopper's question does; a ranker fitted on
    fragments alone learns that only."""
    rng = random.Random(seed)
    terms = [(normalize(t), [normalize(x) for x in says if x]) for t, says in synonyms.items()]
    out = []
    for q in queries:
        n = max(PSEUDO_MIN_CHARS, round(len(q.text) * rng.uniform(0.55, 0.85)))
        start = rng.randrange(0, len(q.text) - n + 1) if len(q.text) > n else 0
        text = q.text[start : start + n]
        for term, says in terms:
            if term and says and term in text and rng.random() < 0.7:
                text = text.replace(term, rng.choice(says))
        out.append(UnitQuery(normalize(rng.choice(ASK_OPENINGS) + text + rng.choice(ASK_ENDINGS)), q.unit))
    return out


def _synonyms(index: Index) -> dict[str, tuple[str, ...]]:
    """The synonyms the build serves with: its own resources, else its KB's, else the bundled ones."""
    for root in (index.folder, Path(index.manifest.kb_root) if index.manifest.kb_root else None):
        if root is not None and (root / "resources").is_dir():
            return load_resources(root).synonyms
    return load_resources(BUNDLED_KB).synonyms


def unit_groups(
    answerer: Answerer,
    how: UnitKind = UNIT_QUERIES,
    per_unit: int = UNIT_PER_UNIT,
    weight: float = UNIT_WEIGHT,
    size: int = POOL,
) -> list[Group]:
    """Training queries for the index's document units (clauses, sections), which have no
    alternative questions: pseudo-queries (``indexer.pseudo.unit_queries``; ``shopper``:
    ``shopper_queries`` over its fragments) searched as a shopper's query is
    (``Answerer.candidate_pools``), the unit the relevant candidate, each of weight ``weight``
    (an alternative weighs 1). Without them the ranker only ever sees an FAQ entry win."""
    if how == "shopper":
        queries = shopper_queries(unit_queries(answerer.index, "fragment", per_unit), _synonyms(answerer.index))
    else:
        queries = unit_queries(answerer.index, how, per_unit)
    if not queries:
        return []
    pools = answerer.candidate_pools([q.text for q in queries], size)
    return [
        Group(pool.x, np.array([u.unit_id == q.unit for u in pool.units], dtype=bool), weight)
        for q, pool in zip(queries, pools, strict=True)
    ]


def dev_weight(n_kb: int, n_dev: int, share: float = DEV_SHARE) -> float:
    """Weight of one dev query so that the dev queries together weigh ``share`` × the KB's
    alternatives together; never below 1 (a dev query is worth at least an alternative)."""
    if n_dev < 1:
        raise ValueError(f"n_dev must be ≥ 1, got {n_dev}")
    return max(1.0, share * n_kb / n_dev)


def dev_groups(answerer: Answerer, items: Sequence[EvalItem], size: int = POOL) -> dict[str, Group]:
    """One training query per in-scope dev item without session context, of weight 1
    (``cross_fit_ranker`` gives them ``dev_weight``)."""
    use = [it for it in resolve_labels(items, answerer.index.aliases) if it.in_scope and not it.context]
    pools = answerer.candidate_pools([it.query for it in use], size)
    out = {}
    chunks = answerer.index.chunks
    for it, pool in zip(use, pools, strict=True):
        ranked = [Ranked(u.unit_id, chunks[u.best_chunk].doc_id) for u in pool.units]
        rel = np.array([c.matches(it.relevant) is not None for c in ranked])
        out[it.id] = Group(pool.x, rel)
    return out


def cross_fit_ranker(
    answerer: Answerer,
    items: Sequence[EvalItem],
    kb: list[Group],
    progress: Callable[[int, int], None] | None = None,
    units: Sequence[Group] = (),
    train: Answerer | None = None,
) -> tuple[Ranker, list[ItemResult], dict[str, Any]]:
    """Fit the ranker on KB alternatives + document units' pseudo-queries (``unit_groups``) + dev,
    and run dev so that each item is ranked by a ranker fitted without its fold (the calibration
    then sees honest probabilities). The dev weight balances dev against the alternatives alone.

    Returns the ranker fitted on all of dev, the cross-fitted dev results (in ``items`` order)
    and a summary. Each fold is run by a variant of ``answerer``; ``answerer`` itself is untouched.
    ``train`` (default ``answerer``) searches the dev queries for the fit: ``answerer`` over
    ``ranker_view`` where documents have questions; the rankers then get ``with_doc_margin``.
    """
    dev = dev_groups(train or answerer, items)
    weight = dev_weight(len(kb), len(dev)) if dev else 1.0
    dev = {i: dataclasses.replace(g, weight=weight) for i, g in dev.items()}
    by_id: dict[str, ItemResult] = {}
    done = 0
    for k in range(FOLDS):
        fold_ranker = fit_ranker([*kb, *units, *(g for i, g in dev.items() if fold_of(i) != k)])
        fold_answerer = answerer.variant(ranker=with_doc_margin(fold_ranker, answerer.index))
        fold = [it for it in items if fold_of(it.id) == k]

        def step(n: int, total: int, base: int = done) -> None:
            if progress:
                progress(base + n, len(items))

        for r in run(fold_answerer, fold, step):
            by_id[r.item.id] = r
        done += len(fold)
    ranker = with_doc_margin(fit_ranker([*kb, *units, *dev.values()]), answerer.index)
    summary = {
        "kb_queries": len(kb),
        "unit_queries": len(units),
        "unit_weight": round(float(units[0].weight), 2) if units else 0.0,
        "dev_queries": len(dev),
        "dev_weight": round(weight, 2),
        "doc_margin": ranker.doc_margin,
        **ranker.meta,
    }
    return ranker, [by_id[it.id] for it in items], summary
