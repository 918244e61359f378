"""The labelled eval set: parsing errors, the stratified split, and the bundled data's coverage."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from eval.dataset import (
    EvalItem,
    independence,
    load_split,
    parse_items,
    phrasing_overlap,
    resolve_labels,
    stratified_split,
    write_split,
)
from kb.errors import ConfigError, KBError
from kb.loader import load_kb
from kb.schema import entry_slug
from kb.settings import BUNDLED_KB


def _line(**kw) -> str:
    base = {
        "id": "q1",
        "query": "退款多久到账",
        "relevant": ["refund-time"],
        "expect": "answer",
        "category": "退货退款",
    }
    base.update(kw)
    return json.dumps(base, ensure_ascii=False)


@pytest.fixture(scope="module")
def all_items() -> list[EvalItem]:
    return load_split("dev") + load_split("test")


@pytest.fixture(scope="module")
def bundled_kb():
    return load_kb(BUNDLED_KB)


# --- parsing -------------------------------------------------------------------------------------------------
def test_parse_items_reads_every_field():
    [it] = parse_items([_line(tags=["typo", "short"], context="七天无理由退货", reason=None), "", "   "], "dev.jsonl")
    assert it == EvalItem(
        id="q1",
        query="退款多久到账",
        relevant=("refund-time",),
        expect="answer",
        reason=None,
        tags=("typo", "short"),
        category="退货退款",
        context="七天无理由退货",
    )
    assert it.in_scope


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ("{not json", "invalid eval record"),
        (json.dumps({"query": "x", "expect": "answer"}), "eval record without 'id'; each line needs id, query, expect"),
        (json.dumps({"id": "q", "query": "x", "expect": "answer"}), "expect answer needs the relevant entry ids"),
        ("[1, 2]", "invalid eval record (a line must be a JSON object)"),
        (_line(expect="maybe"), "expect 'maybe'"),
        (_line(tags=["typo", "slang"]), "unknown tags ['slang']"),
    ],
)
def test_parse_errors_carry_file_and_line(bad: str, fragment: str):
    lines = [_line(id="ok1"), "", bad]  # the bad record is on line 3 (blank lines count)
    with pytest.raises(KBError) as info:
        parse_items(lines, "eval/data/dev.jsonl")
    msg = str(info.value)
    assert msg.startswith("eval/data/dev.jsonl:3:"), msg
    assert fragment in msg


@pytest.mark.parametrize(
    ("relevant", "expected"),
    [
        ((), ()),
        (("a",), ("a",)),
        (("old",), ("new",)),
        (("old", "new"), ("new",)),  # both names of the survivor: counted once
        (("x", "old", "y", "older"), ("x", "new", "y")),
    ],
)
def test_resolve_labels_renames_merged_entries(relevant: tuple[str, ...], expected: tuple[str, ...]):
    item = EvalItem("q1", "问题", relevant, "answer", None, (), "退货退款")
    [out] = resolve_labels([item], {"old": "new", "older": "new"})
    assert out.relevant == expected
    assert (out is item) == (relevant == expected)  # untouched items are passed through


def test_a_users_labelled_set_may_leave_out_what_follows_from_the_rest():
    lines = [
        json.dumps({"query": "发票怎么开", "relevant": ["invoice-how"], "tags": ["vip"]}, ensure_ascii=False),
        json.dumps({"query": "今天股市怎么样"}, ensure_ascii=False),
        json.dumps({"query": "转人工", "expect": "handoff", "reason": "user_requested"}, ensure_ascii=False),
    ]
    a, b, c = parse_items(lines, "mine/test.jsonl", strict=False)
    assert (a.id, a.expect, a.reason, a.tags) == ("test-1", "answer", None, ("vip",))
    assert (b.id, b.expect, b.reason, b.in_scope) == ("test-2", "handoff", "low_confidence", False)
    assert (c.expect, c.reason) == ("handoff", "user_requested")
    with pytest.raises(KBError, match=r"mine/test.jsonl:1: eval record without 'query'; each line needs query"):
        parse_items([json.dumps({"relevant": ["x"]})], "mine/test.jsonl", strict=False)


def test_resolve_labels_reads_an_exports_original_ids():
    """A user's labels name their export's ids: an original id the build keeps (``Index.aliases``),
    and one of a row merged into another, known to the build by its slug (``replaces``)."""
    merged = entry_slug("FAQ_7")
    aliases = {"FAQ_12": entry_slug("FAQ_12"), merged: "faq-12-x"}
    item = EvalItem("q1", "问题", ("FAQ_12", "FAQ_7", "rules-return.5"), "answer", None, (), "退货退款")
    [out] = resolve_labels([item], aliases)
    assert out.relevant == (entry_slug("FAQ_12"), "faq-12-x", "rules-return.5")  # a clause id is left alone


def test_load_split_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"unknown.*rules_test") as bad:  # a bad argument: exit code 2
        load_split("train")
    assert bad.value.exit_code == 2
    with pytest.raises(KBError, match="no eval split"):
        load_split("dev", data_dir=tmp_path)
    with pytest.raises(KBError, match=r"rules_dev\.jsonl"):
        load_split("rules_dev", data_dir=tmp_path)


def test_rules_splits_load_by_name_and_stay_out_of_all(tmp_path: Path):
    (tmp_path / "rules_dev.jsonl").write_text(_line(id="R1", relevant=["rules-return.5"]) + "\n", "utf-8")
    [it] = load_split("rules_dev", data_dir=tmp_path)
    assert it.id == "R1" and it.relevant == ("rules-return.5",)
    (tmp_path / "dev.jsonl").write_text(_line(id="q1") + "\n", "utf-8")
    (tmp_path / "test.jsonl").write_text(_line(id="q2") + "\n", "utf-8")
    assert [i.id for i in load_split("all", data_dir=tmp_path)] == ["q1", "q2"]  # the FAQ splits only


def test_bundled_rules_slice_names_clauses_of_the_bundled_kb(bundled_kb):
    """Counts and ids only: the test split's queries are never shown."""
    from indexer.chunking import units_of

    clauses = {u for u, unit in units_of(bundled_kb).items() if unit.clause is not None}
    dev, test = load_split("rules_dev"), load_split("rules_test")
    assert len(dev) + len(test) >= 120 and len(dev) > 0 and len(test) > 0
    ids = [i.id for i in dev + test]
    assert len(ids) == len(set(ids))
    unknown = sum(1 for it in dev + test for r in it.relevant if r not in clauses)
    assert unknown == 0, f"{unknown} labels name no clause of the bundled KB"
    assert all(it.expect == "answer" and it.relevant for it in dev + test)


def test_the_unseen_split_names_entries_of_the_bundled_kb_and_stays_out_of_all(bundled_kb):
    """Counts and ids only: a test set, its queries never shown."""
    unseen = load_split("unseen")
    ids = {e.id for e in bundled_kb.entries}
    assert len(unseen) == 160 and len({i.id for i in unseen}) == 160
    assert all(it.expect == "answer" and len(it.relevant) == 1 and it.relevant[0] in ids for it in unseen)
    assert len({it.relevant[0] for it in unseen}) == 80  # two questions for each of 80 entries
    assert not {i.id for i in unseen} & {i.id for i in load_split("all")}


def test_write_split_round_trips(tmp_path: Path):
    items = parse_items([_line(id="b", tags=["typo"]), _line(id="a", expect="handoff", reason="sensitive")], "x")
    path = tmp_path / "dev.jsonl"
    write_split(items, path)
    back = load_split("dev", data_dir=tmp_path)
    assert [i.id for i in back] == ["a", "b"]  # written sorted by id
    assert {i.id: i for i in back} == {i.id: i for i in items}


# --- stratified split --------------------------------------------------------------------------------------------
def _synthetic(n: int = 120) -> list[EvalItem]:
    cats = ["退货退款", "物流配送", "支付"]
    tags = [(), ("typo",), ("short", "colloquial")]
    out = []
    for i in range(n):
        expect = "handoff" if i % 7 == 0 else "answer"
        out.append(
            EvalItem(
                id=f"item-{i:03d}",
                query=f"问题{i}",
                relevant=() if expect == "handoff" else (f"e{i % 5}",),
                expect=expect,
                reason="low_confidence" if expect == "handoff" else None,
                tags=tags[i % 3],
                category=cats[(i // 3) % 3],
            )
        )
    return out


def _stratum(it: EvalItem) -> tuple[str, str, str]:
    return (it.category, it.reason or it.expect, it.tags[0] if it.tags else "")


def test_stratified_split_is_deterministic_disjoint_and_complete():
    items = _synthetic()
    a = stratified_split(items)
    b = stratified_split(list(reversed(items)))  # input order does not matter
    assert [i.id for i in a["dev"]] == [i.id for i in stratified_split(items)["dev"]]
    assert {i.id for i in a["dev"]} == {i.id for i in b["dev"]}
    dev, test = {i.id for i in a["dev"]}, {i.id for i in a["test"]}
    assert not dev & test
    assert dev | test == {i.id for i in items}
    assert abs(len(dev) - len(test)) <= 1


def test_stratified_split_is_balanced_within_one_per_stratum():
    items = _synthetic(131)
    split = stratified_split(items)
    counts: dict[tuple, Counter] = defaultdict(Counter)
    for side, its in split.items():
        for it in its:
            counts[_stratum(it)][side] += 1
    assert len(counts) > 5
    for key, c in counts.items():
        assert abs(c["dev"] - c["test"]) <= 1, (key, c)


def test_seed_changes_the_split():
    items = _synthetic()
    assert {i.id for i in stratified_split(items, "kefu")["dev"]} != {i.id for i in stratified_split(items, "x")["dev"]}


# --- the bundled data ------------------------------------------------------------------------------------------------
def test_dev_split_size_and_unique_ids(all_items: list[EvalItem]):
    dev = load_split("dev")
    assert len(dev) >= 300
    ids = [i.id for i in all_items]
    assert len(ids) == len(set(ids))
    assert len(load_split("all")) == len(all_items)


def test_bundled_split_is_the_stratified_split(all_items: list[EvalItem]):
    split = stratified_split(all_items)
    assert {i.id for i in split["dev"]} == {i.id for i in load_split("dev")}
    assert {i.id for i in split["test"]} == {i.id for i in load_split("test")}


def test_bundled_data_meets_the_required_counts(all_items: list[EvalItem]):
    reasons = Counter(i.reason for i in all_items)
    assert len(all_items) >= 700
    assert sum(i.in_scope for i in all_items) >= 500
    assert reasons["low_confidence"] >= 120
    assert reasons["user_requested"] >= 40
    assert reasons["sensitive"] >= 25


def test_every_sizeable_category_has_enough_in_scope_queries(all_items: list[EvalItem], bundled_kb):
    per_cat = Counter(e.category for e in bundled_kb.entries)
    queries = Counter(i.category for i in all_items if i.in_scope)
    big = [c for c, n in per_cat.items() if n >= 10]
    assert big
    short = {c: queries[c] for c in big if queries[c] < 20}
    assert not short, short


def test_in_scope_items_point_at_real_entries_or_documents(all_items: list[EvalItem], bundled_kb):
    ids = {e.id for e in bundled_kb.entries} | {d.id for d in bundled_kb.documents} | set(bundled_kb.aliases)
    missing = {r for i in all_items if i.in_scope for r in i.relevant if r.split("#")[0] not in ids}
    assert not missing
    assert all(i.relevant for i in all_items if i.in_scope)
    assert all(i.reason for i in all_items if i.expect == "handoff")


def test_queries_are_independent_of_the_kb_wording(all_items: list[EvalItem], bundled_kb):
    ind = independence(all_items, bundled_kb)
    assert ind["in_scope"] == sum(i.in_scope for i in all_items)
    assert ind["share_above_0.5"] <= 0.10


def test_independence_flags_copied_questions(bundled_kb):
    e = bundled_kb.entries[0]
    copied = EvalItem("c1", e.question, (e.id,), "answer", None, (), e.category)
    own = EvalItem("c2", "完全不相干的一句话而已", (e.id,), "answer", None, (), e.category)
    oos = EvalItem("c3", e.question, (), "handoff", "low_confidence", (), e.category)
    ind = independence([copied, own, oos], bundled_kb)
    assert ind["in_scope"] == 2 and ind["above_0.5"] == 1 and ind["share_above_0.5"] == 0.5


def test_phrasing_overlap_counted_by_hand():
    # 退货运费 {退货 货运 运费} vs 退货运费谁出 {退货 货运 运费 费谁 谁出}: 3 / (3 + 5 − 3) = 0.6;
    # 发票怎么开 shares no bigram with either query.
    got = phrasing_overlap(["退货运费", "发票怎么开"], {"dev": ["退货运费谁出"], "test": ["完全无关"], "none": []})
    assert got == {
        "dev": {"kb_texts": 2, "above_0.5": 1, "mean_max_jaccard": 0.3},
        "test": {"kb_texts": 2, "above_0.5": 0, "mean_max_jaccard": 0.0},
        "none": {"kb_texts": 2, "above_0.5": 0, "mean_max_jaccard": 0.0},
    }


def test_phrasing_overlap_matches_the_set_formula(all_items: list[EvalItem], bundled_kb):
    """The postings shortcut against every query pair scored with sets (brute force)."""
    from eval.dataset import _bigrams, _jaccard_best
    from indexer.lexical import jaccard

    texts = [q for e in bundled_kb.entries[:15] for q in (e.question, *e.alt_questions[:3])]
    queries = [i.query for i in all_items[:120]]
    want = [max(jaccard(_bigrams(t), _bigrams(q)) for q in queries) for t in texts]
    assert _jaccard_best(texts, queries) == pytest.approx(want, abs=1e-12)
