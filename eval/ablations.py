"""Ablations: the same dev queries through variants of the pipeline."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from eval.dataset import EvalItem
from eval.runner import run, summarize
from indexer.index import Index
from service.answerer import Answerer
from service.policy import Calibration


def subset_index(index: Index, keep: Callable[[str], bool]) -> Index:
    """A copy of ``index`` with only the chunks whose kind passes ``keep``."""
    return index.with_rows([i for i, c in enumerate(index.chunks) if keep(c.kind)])


def run_ablations(base: Answerer, items: list[EvalItem]) -> list[dict[str, Any]]:
    ranked = " + learned ranker" if base.ranker is not None else ""
    raw = "; AUC of the raw top-1 cosine (the calibration needs the ranker)" if ranked else ""
    variants: list[tuple[str, Answerer, str]] = [
        (
            "default",
            base,
            f"question + alternatives + answers + rules; {base.options.retrieval}{ranked}; normalised; context"
            + ("; dev is the ranker's training data (cross-fitted dev: calibration report)" if ranked else ""),
        ),
        ("dense only", _copy(base, retrieval="dense"), f"multilingual-e5-small{raw}"),
        ("no alternative questions", base.variant(index=subset_index(base.index, lambda k: k != "alt")), ""),
        (
            "questions and alternatives only",
            base.variant(index=subset_index(base.index, lambda k: k in ("question", "alt"))),
            "",
        ),
        (
            "answers and rules only",
            base.variant(index=subset_index(base.index, lambda k: k in ("answer", "rules", "doc"))),
            "",
        ),
        ("lexical only (BM25, chars+bigrams)", _copy(base, retrieval="lexical"), raw.lstrip("; ")),
        (
            "fusion: RRF(dense, lexical), no learned ranker",
            _copy(base, retrieval="rrf", rerank=False),
            f"k=60{raw}",
        ),
        ("fusion: dense + 0.1·lexical", _copy(base, retrieval="weighted"), raw.lstrip("; ")),
        ("no query normalisation", _copy(base, normalize_queries=False), "queries embedded as typed"),
        ("no session context", _copy(base, use_context=False), "every message answered alone"),
        (
            "no context blending",
            _copy(base, blend_context=False),
            "a follow-up lists only the candidates of the reading it is answered from",
        ),
        ("no greeting stripping", _copy(base, strip_greetings=False), ""),
        ("no typo correction", _copy(base, correct_typos=False), "pinyin homophone typos searched as typed"),
        ("see-also", _copy(base, see_also=True), "related entries of the first moved to ranks 3-5 (KEFU_SEE_ALSO)"),
        ("synonym expansion", _copy(base, expand_synonyms=True), "resources/synonyms.yaml (KEFU_EXPAND_SYNONYMS)"),
    ]
    out = []
    for name, answerer, note in variants:
        results = run(answerer, items)
        m = summarize(results, 0.0)
        h = m["headline"]
        elliptical = m["by_tag"].get("elliptical", {})
        row = {"name": name, "note": note, **{k: h.get(k) for k in ("hit@1", "recall@5", "mrr@10", "auc_in_vs_out")}}
        row["elliptical_hit@1"] = elliptical.get("hit@1")
        out.append(row)
    return out


def _copy(base: Answerer, **options: Any) -> Answerer:
    """``base`` with other options. A variant the calibration's ranker cannot serve (another
    retrieval, or the ranker off) gets the uncalibrated confidence: its AUC is the raw top-1's."""
    opts = replace(base.options, **options)
    ranked = "rank_prob" in base.calibration.names
    calibration = Calibration() if ranked and (opts.retrieval != "rrf" or not opts.rerank) else base.calibration
    return base.variant(calibration=calibration, **options)
