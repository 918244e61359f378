"""Regression floors on the held-out test split, with the real default model.

Floors sit just under the first honest measurement (see eval/reports/latest.md), so a change
that makes retrieval or decisions worse cannot land. The test split is never tuned on.
"""

from __future__ import annotations

import pytest

from eval.dataset import load_split
from eval.runner import evaluate
from kb.settings import Settings

pytestmark = pytest.mark.model

# First honest measurement (2026-11-25, test split, RRF retrieval: hit@1 0.818, MRR@10 0.889,
# answered precision 0.942 at coverage 0.549, out-of-scope handoff recall 0.956, user-requested
# and sensitive 1.0). Raised after the second (alternatives 2,113 → 3,169, int8 queries,
# calibration without SE margin: hit@1 0.856, MRR@10 0.908, answered precision 0.959 at
# coverage 0.694), minus a small tolerance for run-to-run noise. Raised after the third (learned
# ranker, 2026-11-26: hit@1 0.884, MRR@10 0.932, answered precision 0.956 at coverage 0.720,
# out-of-scope handoff recall 0.941). Raised after the fourth (alternatives 3,169 → 5,274, dev
# weighed as much as the KB in the ranker, 2026-11-26: hit@1 0.913, MRR@10 0.948, answered
# precision 0.953 at coverage 0.858, out-of-scope handoff recall 0.956). Raised after the fifth
# (merged near-duplicates, questions encoded one per call, 7,305 alternatives, the int8 dense
# pass, 2026-11-26: hit@1 0.942, MRR@10 0.963, answered precision 0.975 at coverage 0.913,
# out-of-scope handoff recall 0.971). recall@5 and coverage raised after the sixth (typo
# correction, follow-up candidates blended, 2026-11-26: hit@1 0.942, recall@5 0.980, MRR@10
# 0.963, answered precision 0.972 at coverage 0.919, out-of-scope handoff recall 0.956).
FLOORS = {
    "hit@1": 0.92,
    "recall@5": 0.975,
    "mrr@10": 0.95,
    "answered_precision": 0.95,
    "coverage": 0.89,
    "oos_handoff_recall": 0.92,
    "handoff_recall_user_requested": 1.0,
    "handoff_recall_sensitive": 0.95,
}


@pytest.fixture(scope="module")
def real_runtime(tmp_path_factory, builtin_model):
    """The bundled KB indexed with the real model, calibrated as shipped."""
    from indexer.build import build_and_swap
    from indexer.encoder import load_encoder
    from indexer.store import IndexStore
    from kb.loader import load_kb
    from service.runtime import Runtime

    home = tmp_path_factory.mktemp("quality")
    settings = Settings(data_dir=home)
    encoder = load_encoder(settings)
    store = IndexStore(settings.index_home)
    build_and_swap(load_kb(settings.kb_dir), encoder, store, settings.chunk_chars)
    return Runtime.create(settings, encoder=encoder)


@pytest.fixture(scope="module")
def real_answerer(real_runtime):
    return real_runtime.answerer()


def test_shipped_calibration_is_used(real_answerer):
    assert real_answerer.calibration.source == "dev-logistic"


def test_test_split_meets_the_floors(real_answerer):
    h = evaluate(real_answerer, load_split("test")).metrics["headline"]
    below = {k: (h[k], floor) for k, floor in FLOORS.items() if h[k] < floor}
    assert not below, f"below the regression floor (value, floor): {below}"


def test_answers_do_not_depend_on_what_a_query_is_batched_with(real_runtime, real_answerer):
    """Under load the micro-batcher encodes queries together (HTTP at 32 clients); each labelled
    query must get the answer, scores and decision it gets alone."""
    import random
    from concurrent.futures import ThreadPoolExecutor

    from service.batcher import MicroBatcher

    queries = [it.query for it in load_split("dev") + load_split("test")]
    random.Random(7).shuffle(queries)

    def seen(answer) -> tuple:
        return answer.decision, answer.reason, [(a.id, a.score) for a in answer.answers]

    alone = [seen(real_answerer.answer(q)) for q in queries]
    batcher = MicroBatcher(real_runtime.encoder.encode_queries, wait_ms=5.0, max_batch=4, workers=2)
    try:
        loaded = real_runtime.answerer(encode=batcher.encode)
        with ThreadPoolExecutor(8) as pool:
            together = list(pool.map(lambda q: seen(loaded.answer(q)), queries))
    finally:
        batcher.close()
    assert batcher.batches < len(queries)  # queries really shared encoder calls
    changed = [q for q, a, b in zip(queries, alone, together, strict=True) if a != b]
    assert not changed, f"{len(changed)} of {len(queries)} answers changed when batched"
