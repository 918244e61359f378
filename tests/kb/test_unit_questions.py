"""Questions for documents' answer units (``alternatives.yaml`` keyed by a clause's or a section's
id): loaded onto the document, hashed into the KB, indexed as the unit's question rows, and
answered with the unit itself."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from indexer.chunking import document_chunks
from kb.loader import load_kb


def _sidecar(kb_dir: Path, body: str) -> None:
    (kb_dir / "alternatives.yaml").write_text("alternatives:\n" + body, "utf-8")


def test_sidecar_gives_a_clause_its_questions_in_order_each_once(tiny_kb_dir: Path) -> None:
    _sidecar(
        tiny_kb_dir,
        "  rules-return.2: [过了七天还能无理由退吗, '  ', 过了七天还能无理由退吗, 签收第八天能退吗]\n"
        "  rules-return.3:\n    - 质量问题退货运费谁出\n",
    )
    [doc] = load_kb(tiny_kb_dir, strict=False).documents
    assert doc.questions_of("rules-return.2") == ("过了七天还能无理由退吗", "签收第八天能退吗")
    assert doc.questions_of("rules-return.3") == ("质量问题退货运费谁出",)
    assert doc.questions_of("rules-return.1") == ()


def test_a_unit_id_not_in_the_kb_is_skipped_with_a_warning(tiny_kb_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    _sidecar(tiny_kb_dir, "  rules-return.9: [没有这一条]\n")
    with caplog.at_level(logging.WARNING, logger="kefu.kb"):
        [doc] = load_kb(tiny_kb_dir, strict=False).documents
    assert doc.questions == ()
    assert "rules-return.9" in caplog.text


def test_questions_change_the_kb_hash_and_their_absence_keeps_it(tiny_kb_dir: Path) -> None:
    before = load_kb(tiny_kb_dir, strict=False).content_hash
    _sidecar(tiny_kb_dir, "  {}\n")
    assert load_kb(tiny_kb_dir, strict=False).content_hash == before
    _sidecar(tiny_kb_dir, "  rules-return.2: [签收第八天能退吗]\n")
    assert load_kb(tiny_kb_dir, strict=False).content_hash != before


def test_questions_are_question_rows_of_their_unit_after_the_text_rows(tiny_kb_dir: Path) -> None:
    [plain] = load_kb(tiny_kb_dir, strict=False).documents
    _sidecar(tiny_kb_dir, "  rules-return.3: [质量问题退货运费谁出, 坏了退回去邮费谁付]\n")
    [doc] = load_kb(tiny_kb_dir, strict=False).documents
    rows, text_rows = document_chunks(doc, 60), document_chunks(plain, 60)
    assert rows[: len(text_rows)] == text_rows  # the text rows keep their ids
    asked = rows[len(text_rows) :]
    assert [(c.kind, c.unit_id, c.text) for c in asked] == [
        ("alt", "rules-return.3", "质量问题退货运费谁出"),
        ("alt", "rules-return.3", "坏了退回去邮费谁付"),
    ]
    assert len({c.chunk_id for c in rows}) == len(rows)
    assert {c.section for c in asked} == {c.section for c in text_rows if c.unit_id == "rules-return.3"}


def test_a_clause_found_by_its_question_answers_with_the_clause(tiny_kb_dir: Path, tiny_settings, fake_encoder) -> None:
    from indexer.build import build_and_swap
    from indexer.store import IndexStore
    from service.runtime import Runtime

    question = "签收第八天了还可以无理由退货吗"
    _sidecar(tiny_kb_dir, f"  rules-return.2: [{question}]\n")
    store = IndexStore(tiny_settings.index_home, tiny_settings.keep_builds)
    build_and_swap(load_kb(tiny_kb_dir, strict=False), fake_encoder, store, tiny_settings.chunk_chars)
    index = store.load_current(fake_encoder.model_id)
    answerer = Runtime.create(tiny_settings, encoder=fake_encoder).answerer(index=index)
    a = answerer.answer(question)
    shown = a.answers or a.suggestions
    assert shown and shown[0].id == "rules-return.2"
    first = shown[0]
    assert first.source.kind == "rules" and first.source.clause == 2
    assert first.text.startswith("第二条") and first.title == "《退货规范》第二条"


def test_kb_check_counts_the_units_questions(tiny_kb_dir: Path) -> None:
    import json

    from typer.testing import CliRunner

    from kefu_cli import app

    _sidecar(
        tiny_kb_dir, "  rules-return.2: [签收第八天能退吗, 过了七天还能退吗]\n  rules-return.3: [质量问题运费谁出]\n"
    )
    res = CliRunner().invoke(app, ["kb", "check", str(tiny_kb_dir), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert (summary["units_with_questions"], summary["unit_questions"]) == (2, 3)
    res = CliRunner().invoke(app, ["kb", "check", str(tiny_kb_dir)])
    assert "2 document units (clauses, sections) have 3 questions (alternatives.yaml)" in res.output
