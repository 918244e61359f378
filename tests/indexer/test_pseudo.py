"""Pseudo-queries for document units: the training signal that lets a ranker learn documents."""

from __future__ import annotations

from indexer.normalize import normalize
from indexer.pseudo import MIN_CHARS, UnitQuery, unit_queries


def test_first_sentences_lose_their_clause_label_and_punctuation(tiny_index):
    got = unit_queries(tiny_index, how="first")
    assert got == [
        UnitQuery(normalize("为保障消费者权益制定本规范"), "rules-return.1"),
        UnitQuery(normalize("买家应在签收次日起七日内提出无理由退货申请"), "rules-return.2"),
        UnitQuery(normalize("无理由退货的运费由买家承担"), "rules-return.3"),
    ]


def test_fragments_are_windows_of_the_units_own_sentences(tiny_index):
    got = unit_queries(tiny_index, how="fragment", per_unit=2)
    assert {q.unit for q in got} == set(tiny_index.doc_units)
    assert all(q.unit not in tiny_index.entries for q in got)  # documents only
    for q in got:
        text = normalize(tiny_index.doc_units[q.unit].text.replace("，", "").replace("；", "").replace("。", ""))
        assert len(q.text) >= MIN_CHARS and q.text in text
        assert "第" not in q.text[:1]  # the clause label is not part of the question
    assert [q.unit for q in got].count("rules-return.2") == 2  # two sentences: one query each
    assert got == unit_queries(tiny_index, how="fragment", per_unit=2)  # deterministic


def test_an_index_without_document_units_gives_none(tiny_index):
    from indexer.index import Index

    i = tiny_index
    bare = Index(i.manifest, i.vectors, i.vindex, i.chunks, i.anchors, i.anchor_labels, i.entries)
    assert unit_queries(bare) == []
