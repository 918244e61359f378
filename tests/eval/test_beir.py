"""BEIR-layout datasets: a corpus of questions becomes FAQ entries, passages stay documents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.beir import corpus_kind, load_beir, run_beir
from indexer.encoder import FakeEncoder
from kb.errors import ConfigError
from kb.schema import entry_slug
from kb.settings import Settings
from service.runtime import Runtime

QUESTIONS = ["花茶怎么保存", "绿茶多久发货", "礼盒能开发票吗", "红茶怎么冲泡", "普洱保质期多久"]


def _beir(folder: Path, texts: list[str]) -> Path:
    folder.mkdir(parents=True)
    (folder / "qrels").mkdir()
    corpus = [{"_id": f"问题_{i}", "text": t} for i, t in enumerate(texts)]
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(d, ensure_ascii=False) for d in corpus), "utf-8")
    queries = [{"_id": "q1", "text": "花茶如何保存"}, {"_id": "q2", "text": "今天股市怎么样"}]
    (folder / "queries.jsonl").write_text("\n".join(json.dumps(d, ensure_ascii=False) for d in queries), "utf-8")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\t问题_0\t1\n", "utf-8")
    return folder


def test_a_corpus_of_questions_becomes_faq_entries(tmp_path: Path):
    kb, items = load_beir(_beir(tmp_path / "qs", QUESTIONS))
    assert len(kb.entries) == 5 and not kb.documents
    first = kb.entries[0]
    assert first.id == entry_slug("问题_0") and first.source_id == "问题_0" and first.question == QUESTIONS[0]
    by_id = {it.id: it for it in items}
    assert by_id["q1"].relevant == (entry_slug("问题_0"),) and by_id["q1"].expect == "answer"
    assert by_id["q2"].expect == "handoff" and by_id["q2"].reason == "low_confidence"


def test_passages_stay_documents_and_the_kind_can_be_forced(tmp_path: Path):
    long = ["这是一段很长的帮助中心文章，" * 8 + str(i) for i in range(5)]
    kb, items = load_beir(_beir(tmp_path / "docs", long))
    assert not kb.entries and len(kb.documents) == 5
    assert next(it for it in items if it.id == "q1").relevant == ("问题_0",)  # a chunk's doc_id is the corpus id
    kb2, _ = load_beir(tmp_path / "docs", "faq")
    assert len(kb2.entries) == 5
    assert corpus_kind([{"text": "短问题"}], "auto") == "faq"
    with pytest.raises(ConfigError, match="allowed: auto, faq, doc"):
        corpus_kind([], "passages")


def test_run_beir_self_calibrates_and_evaluates(tmp_path: Path):
    settings = Settings(data_dir=tmp_path / "data", model="fake:hash-128")
    rt = Runtime.create(settings, encoder=FakeEncoder(dim=128))
    result = run_beir(_beir(tmp_path / "qs", QUESTIONS), rt, settings, None, None)
    assert len(result.results) == 2
    assert result.results[0].item.id == "q1" and result.results[0].ranking[0].id == entry_slug("问题_0")
