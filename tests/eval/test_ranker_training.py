"""The ranker's training data: alternatives searched without themselves, document units'
pseudo-queries, dev weights, and cross-fitting that never ranks a query with a ranker that saw it."""

from __future__ import annotations

import pytest

from eval.calibrate import FOLDS, fold_of
from eval.dataset import EvalItem
from eval.ranker_training import (
    ASK_ENDINGS,
    ASK_OPENINGS,
    UNIT_WEIGHT,
    cross_fit_ranker,
    dev_groups,
    dev_weight,
    kb_groups,
    shopper_queries,
    unit_groups,
)
from indexer.pool import POOL_FEATURES
from indexer.pseudo import UnitQuery, unit_queries
from service.ranker import Group, Ranker


def _dev_items() -> list[EvalItem]:
    asks = [
        ("不想要了七天内能退吗", "refund-seven-day"),
        ("退回去的邮费谁来付", "refund-shipping-fee"),
        ("快递现在到哪里了", "logistics-track"),
        ("怎么查我的包裹", "logistics-track"),
        ("寄回去运费要我出吗", "refund-shipping-fee"),
        ("买错了可以无理由退吗", "refund-seven-day"),
    ]
    items = [
        EvalItem(f"dev-{i}", f"{q}（第{i}问）", (rel,), "answer", None, (), "退货退款")
        for i, (q, rel) in enumerate(asks * 3)
    ]
    items.append(
        EvalItem("dev-ctx", "那运费呢", ("refund-shipping-fee",), "answer", None, (), "退货退款", "七天能退吗")
    )
    items.append(EvalItem("dev-oos", "今天天气怎么样", (), "handoff", "low_confidence", (), "其他"))
    return items


def test_kb_groups_are_alternatives_searched_without_themselves(tiny_answerer):
    index = tiny_answerer.index
    groups = kb_groups(index, size=5)
    alts = [c for c in index.chunks if c.kind == "alt"]
    assert len(groups) == len(alts) > 0
    for g in groups:
        assert g.x.shape == (5, len(POOL_FEATURES)) and g.weight == 1.0
        assert g.relevant.sum() <= 1


def test_a_clauses_questions_hold_it_back_by_a_margin_instead_of_training_the_ranker(
    tiny_kb_dir, tiny_settings, fake_encoder
):
    from eval.ranker_training import faq_alt_rows, ranker_view
    from indexer.build import build_and_swap
    from indexer.store import IndexStore
    from kb.loader import load_kb
    from service.ranker import DOC_MARGIN, with_doc_margin

    store = IndexStore(tiny_settings.index_home, tiny_settings.keep_builds)
    build_and_swap(load_kb(tiny_kb_dir, strict=False), fake_encoder, store, tiny_settings.chunk_chars)
    plain = store.load_current(fake_encoder.model_id)
    assert ranker_view(plain) is plain  # nothing to leave out
    sidecar = "alternatives:\n  rules-return.2: [签收第八天还能退吗, 过了七天能退吗]\n"
    (tiny_kb_dir / "alternatives.yaml").write_text(sidecar, "utf-8")
    build_and_swap(load_kb(tiny_kb_dir, strict=False), fake_encoder, store, tiny_settings.chunk_chars)
    index = store.load_current(fake_encoder.model_id)
    asked = [r for r, c in enumerate(index.chunks) if c.unit_id == "rules-return.2" and c.kind == "alt"]
    assert len(asked) == 2 and not set(asked) & set(faq_alt_rows(index))
    groups = kb_groups(index, size=5)
    assert len(groups) == len(faq_alt_rows(index)) == len(faq_alt_rows(plain))
    view = ranker_view(index)
    assert len(view.chunks) == len(index.chunks) - 2
    assert [c.chunk_id for c in view.chunks] == [c.chunk_id for c in plain.chunks]
    r = Ranker(("dense",), (1.0,), (0.0,), (1.0,))
    assert with_doc_margin(r, plain).doc_margin == 0.0
    assert with_doc_margin(r, index).doc_margin == DOC_MARGIN > 0


def test_cross_fitting_never_ranks_an_item_with_a_ranker_that_saw_it(tiny_answerer, monkeypatch):
    import eval.ranker_training as cal_module
    from service.answerer import Answerer

    fits: list[list[Group]] = []

    def fake_fit(groups):
        fits.append(list(groups))
        return Ranker(("dense",), (float(len(fits)),), (0.0,), (1.0,))

    monkeypatch.setattr(cal_module, "fit_ranker", fake_fit)
    before = tiny_answerer.ranker
    seen: dict[str, float] = {}
    original = Answerer.explain

    def spy(self, query, session_id=None, history=None):
        # a variant ranks each fold; the live answerer's ranker is never swapped
        assert self is not tiny_answerer and tiny_answerer.ranker is before
        seen[query] = self.ranker.weights[0] if self.ranker else 0.0
        return original(self, query, session_id=session_id, history=history)

    monkeypatch.setattr(Answerer, "explain", spy)
    items = _dev_items()
    kb = kb_groups(tiny_answerer.index, size=5)
    final, results, summary = cross_fit_ranker(tiny_answerer, items, kb)
    assert tiny_answerer.ranker is before
    assert [r.item.id for r in results] == [it.id for it in items]
    dev = dev_groups(tiny_answerer, items)
    assert set(dev) == {it.id for it in items if it.in_scope and not it.context}
    assert summary["dev_queries"] == len(dev) and summary["kb_queries"] == len(kb)
    assert len(fits) == FOLDS + 1 and final.weights == (float(FOLDS + 1),)
    for k in range(FOLDS):
        # fold k's ranker was fitted on the KB and the dev items of the other folds only …
        n_dev = sum(1 for i in dev if fold_of(i) != k)
        assert len(fits[k]) == len(kb) + n_dev
        assert all(g.weight == dev_weight(len(kb), len(dev)) for g in fits[k][len(kb) :])
        # … and ranked exactly fold k's items
        for it in items:
            if fold_of(it.id) == k:
                assert seen[it.query] == float(k + 1)
    assert len(fits[-1]) == len(kb) + len(dev)


@pytest.mark.parametrize(
    ("n_kb", "n_dev", "share", "expected"),
    [
        (5275, 332, 1.0, 5275 / 332),  # the bundled set: dev together weighs as much as the KB
        (3169, 332, 1.0, 3169 / 332),
        (1000, 100, 2.0, 20.0),
        (10, 50, 1.0, 1.0),  # more dev queries than alternatives: never below 1
        (0, 5, 1.0, 1.0),
    ],
)
def test_dev_weight_balances_dev_against_the_kb(n_kb: int, n_dev: int, share: float, expected: float) -> None:
    assert dev_weight(n_kb, n_dev, share) == pytest.approx(expected)


def test_dev_weight_refuses_an_empty_dev_set() -> None:
    with pytest.raises(ValueError, match="n_dev"):
        dev_weight(100, 0)


# --- document units: pseudo-queries as training signal (#22) -----------------------------------------
@pytest.mark.parametrize("how", ["first", "fragment", "shopper"])
def test_unit_groups_search_each_clause_pseudo_query(tiny_answerer, how):
    index = tiny_answerer.index
    assert set(index.doc_units) == {"rules-return.1", "rules-return.2", "rules-return.3"}
    groups = unit_groups(tiny_answerer, how, per_unit=2, weight=7.0, size=5)
    n = len(unit_queries(index, "first" if how == "first" else "fragment", 2))
    assert len(groups) == n >= len(index.doc_units)
    for g in groups:
        assert g.x.shape[1] == len(POOL_FEATURES) and g.weight == 7.0
        assert g.relevant.sum() <= 1  # its own clause, if the pool holds it
    assert sum(bool(g.relevant.any()) for g in groups) >= n // 2
    assert unit_groups(tiny_answerer, how, per_unit=2, size=5)[0].weight == UNIT_WEIGHT


def test_unit_groups_of_a_kb_without_documents_are_none(tiny_answerer):
    tiny_answerer.index.doc_units = {}  # this test's own build (the fixture is per test)
    assert unit_groups(tiny_answerer) == []


def test_shopper_queries_reword_shorten_and_ask():
    base = [UnitQuery("运费险赔付上限按退货实际运费计算", f"d.{i}") for i in range(60)]
    got = shopper_queries(base, {"运费险": ["退运险"], "不存在": ["别的"]})
    assert got == shopper_queries(base, {"运费险": ["退运险"], "不存在": ["别的"]})  # deterministic
    assert [q.unit for q in got] == [q.unit for q in base]
    assert any("退运险" in q.text for q in got) and any("运费险" in q.text for q in got)  # 70 %, not always
    for q in got:
        assert any(q.text.startswith(o) for o in ASK_OPENINGS) and any(q.text.endswith(e) for e in ASK_ENDINGS)
    # never the whole fragment: a window of it, so some of its bigrams are missing
    assert all("运费险赔付上限按退货实际运费计算" not in q.text for q in got)
    assert shopper_queries(base, {}, seed=1) != shopper_queries(base, {}, seed=2)


def test_cross_fitting_adds_the_units_to_every_fit_and_leaves_the_dev_weight(tiny_answerer, monkeypatch):
    import eval.ranker_training as cal_module

    fits: list[list[Group]] = []

    def fake_fit(groups):
        fits.append(list(groups))
        return Ranker(("dense",), (1.0,), (0.0,), (1.0,))

    monkeypatch.setattr(cal_module, "fit_ranker", fake_fit)
    items = _dev_items()
    kb = kb_groups(tiny_answerer.index, size=5)
    units = unit_groups(tiny_answerer, "fragment", per_unit=2, weight=9.0, size=5)
    _, _, summary = cross_fit_ranker(tiny_answerer, items, kb, units=units)
    dev = dev_groups(tiny_answerer, items)
    assert summary["unit_queries"] == len(units) > 0 and summary["unit_weight"] == 9.0
    assert summary["dev_weight"] == round(dev_weight(len(kb), len(dev)), 2)  # alternatives alone set it
    assert len(fits) == FOLDS + 1
    for fit in fits:
        assert sum(g.weight == 9.0 and any(g is u for u in units) for g in fit) == len(units)
    assert len(fits[-1]) == len(kb) + len(units) + len(dev)
