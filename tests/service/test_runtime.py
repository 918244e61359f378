"""Runtime.answerer: what it checks of the index it serves."""

from __future__ import annotations

import logging

from indexer.encoder import FakeEncoder
from service.runtime import Runtime


def test_questions_encoded_another_way_are_flagged(tiny_settings, tiny_index, fake_encoder, caplog):
    with caplog.at_level(logging.WARNING, logger="kefu.runtime"):
        Runtime.create(tiny_settings, encoder=fake_encoder).answerer(index=tiny_index)
    assert not caplog.records  # built and served by the same path
    with caplog.at_level(logging.WARNING, logger="kefu.runtime"):
        answerer = Runtime.create(
            tiny_settings, encoder=FakeEncoder(dim=128, query_path="fake-int8", batch_invariant=False)
        ).answerer(index=tiny_index)
    [record] = caplog.records
    message = record.getMessage()
    assert "as fake" in message and "fake-int8, one per call" in message and "kefu build" in message
    assert answerer.answer("七天无理由退货需要满足什么条件？").decision  # it still serves


def test_a_build_serves_its_own_resources_after_the_kb_is_gone(tmp_path, fake_encoder):
    """Greetings and sensitive terms come from the build folder: the KB may move or change."""
    import shutil

    from indexer.build import build_and_swap
    from indexer.store import IndexStore
    from kb.loader import load_kb
    from kb.settings import Settings
    from tests.conftest import TINY_FAQ

    kb = tmp_path / "kb"
    (kb / "faq").mkdir(parents=True)
    (kb / "faq" / "tiny.yaml").write_text(TINY_FAQ, "utf-8")
    (kb / "resources").mkdir()
    (kb / "resources" / "sensitive.yaml").write_text("shop:\n  - 拉维权群\n", "utf-8")
    greetings = "greetings: [掌柜在吗]\nthanks: []\nexamples: [运费谁出]\n"
    greetings += "replies:\n  greeting: 掌柜在的，您问{examples}\n  handoff: 掌柜马上来\n"
    (kb / "resources" / "greetings.yaml").write_text(greetings, "utf-8")
    settings = Settings(kb_dir=kb, data_dir=tmp_path / "data", model="fake:hash-128", chunk_chars=60)
    store = IndexStore(settings.index_home)
    build_and_swap(load_kb(kb, strict=False), fake_encoder, store, settings.chunk_chars)
    shutil.rmtree(kb)

    answerer = Runtime.create(settings, encoder=fake_encoder).answerer()
    assert answerer.answer("我要拉维权群了").reason == "sensitive"
    assert answerer.answer("掌柜在吗").reason == "greeting"
    assert answerer.welcome().examples == ["运费谁出"]  # the examples the KB chose, from the build's copy
    assert answerer.answer("掌柜在吗").message == answerer.welcome().message == "掌柜在的，您问“运费谁出”"
    handoff = answerer.answer("转人工").handoff
    assert handoff is not None and handoff.message == "掌柜马上来"  # the KB's words before KEFU_HANDOFF_MESSAGE's


def test_handoff_candidates_is_a_setting(tiny_settings, tiny_index, fake_encoder):
    quiet = Runtime.create(tiny_settings, encoder=fake_encoder).answerer(index=tiny_index)
    assert quiet.answer("七天无理由退货怎么弄？转人工").answers == []  # decided by the rule alone
    searched = Runtime.create(tiny_settings.with_overrides(handoff_candidates=True), encoder=fake_encoder)
    a = searched.answerer(index=tiny_index).answer("七天无理由退货怎么弄？转人工")
    assert a.reason == "user_requested" and a.answers  # context for the agent


def test_modes_are_enums_with_a_readable_error():
    import pytest
    from pydantic import ValidationError

    from indexer.vectors import VectorIndex
    from kb.errors import ConfigError
    from kb.modes import IndexKind, RetrievalMode
    from kb.settings import Settings

    s = Settings(retrieval="dense", index_kind="hnsw")
    assert s.retrieval is RetrievalMode.DENSE and s.index_kind is IndexKind.HNSW
    assert Settings().retrieval == "rrf"  # a StrEnum: compares and prints as its value
    with pytest.raises(ValidationError, match="'dense', 'lexical', 'rrf' or 'weighted'"):
        Settings(retrieval="nope")
    with pytest.raises(ValidationError, match="'flat', 'hnsw' or 'ivf'"):
        Settings(index_kind="annoy")
    with pytest.raises(ConfigError, match="index kind 'annoy' is unknown; allowed: flat, hnsw, ivf"):
        VectorIndex.build(__import__("numpy").eye(4, dtype="float32"), "annoy")


def test_defaults_the_components_share_with_the_settings_are_declared_once():
    import inspect

    from indexer.encoder import QueryPolicy
    from kb.settings import Settings
    from service.answerer import AnswererOptions
    from service.batcher import MicroBatcher
    from service.pipeline.respond import DEFAULT_HANDOFF_MESSAGE

    s = Settings()
    assert AnswererOptions().handoff_message == DEFAULT_HANDOFF_MESSAGE == s.handoff_message
    init = inspect.signature(MicroBatcher.__init__).parameters
    assert init["wait_ms"].default == s.microbatch_wait_ms
    assert init["max_batch"].default == QueryPolicy.max_batch  # the encoder's policy decides otherwise
    assert inspect.signature(MicroBatcher.for_encoder).parameters["wait_ms"].default == s.microbatch_wait_ms


def test_micro_batcher_maps_the_settings_and_the_api_serves_through_it(tiny_settings, tiny_index, fake_encoder):
    from fastapi.testclient import TestClient

    from service.api import create_app
    from service.runtime import micro_batcher

    seen: list[int] = []
    s = tiny_settings.with_overrides(microbatch_wait_ms=5.0, microbatch_max=3)
    b = micro_batcher(s, fake_encoder, lambda texts, seconds: seen.append(texts))
    try:
        assert b._wait == 0.005 and b._max == 3 and len(b._workers) == 1
        b.encode(["退款"])
        assert seen == [1]
    finally:
        b.close()
    app = create_app(s, encoder=fake_encoder)
    with TestClient(app) as c:
        batcher = app.state.kefu.batcher
        assert batcher is not None and batcher._max == 3 and batcher._wait == 0.005
        assert c.post("/v1/answer", json={"query": "退款多久到账"}).status_code == 200
        assert batcher.texts >= 1  # answers are encoded through it


def test_sensitive_terms_a_kb_asks_about_are_its_topics(tmp_path, fake_encoder, caplog):
    """A medical FAQ's own questions use 住院: for that KB it is a topic, not an alarm; self-harm
    and threats stay alarms whatever the KB asks about."""
    from indexer.build import build_and_swap
    from indexer.store import IndexStore
    from kb.loader import load_kb
    from kb.settings import Settings

    kb = tmp_path / "kb"
    kb.mkdir()
    rows = [
        "id,question,answer,category",
        "h1,住院押金怎么退,出院结算时退回押金。,住院",
        "h2,住院要带什么证件,身份证和医保卡。,住院",
        "h3,想死是抑郁的表现吗,请及时就医。,心理",  # a self-harm term stays an alarm
        "h4,门诊几点开门,早上八点。,门诊",
    ]
    (kb / "faq.csv").write_text("\n".join(rows) + "\n", "utf-8")
    settings = Settings(kb_dir=kb, data_dir=tmp_path / "data", model="fake:hash-128")
    store = IndexStore(settings.index_home)
    build_and_swap(load_kb(kb, strict=False), fake_encoder, store, settings.chunk_chars)
    with caplog.at_level(logging.INFO, logger="kefu.runtime"):
        answerer = Runtime.create(settings, encoder=fake_encoder).answerer()
    assert [(t.term, t.entries) for t in answerer.sensitive.kb_topics] == [("住院", 2)]
    assert any("住院 (2)" in r.getMessage() for r in caplog.records)
    assert answerer.explain("住院押金怎么退").rule is None  # answered from the KB
    assert answerer.explain("我不想活了").reason == "sensitive"
    assert answerer.explain("我想死").reason == "sensitive"
    assert answerer.explain("我要报警").reason == "sensitive"  # the KB never asks about it


def _answerer_of_csv(tmp_path, fake_encoder, caplog, *rows: str):
    """The served answerer of a KB of one CSV (header id,question,answer,category), start-up log caught."""
    from indexer.build import build_and_swap
    from indexer.store import IndexStore
    from kb.loader import load_kb
    from kb.settings import Settings

    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "faq.csv").write_text("\n".join(["id,question,answer,category", *rows]) + "\n", "utf-8")
    settings = Settings(kb_dir=kb, data_dir=tmp_path / "data", model="fake:hash-128")
    build_and_swap(load_kb(kb, strict=False), fake_encoder, IndexStore(settings.index_home), settings.chunk_chars)
    with caplog.at_level(logging.INFO, logger="kefu.runtime"):
        return Runtime.create(settings, encoder=fake_encoder).answerer()


def test_order_wording_a_kb_asks_about_is_its_topic(tmp_path, fake_encoder, caplog):
    """A wallet's FAQ asks 我的积分还剩多少 itself: for that KB the question is answered, not handed
    off as needs_order; an order number still is."""
    answerer = _answerer_of_csv(
        tmp_path,
        fake_encoder,
        caplog,
        "w1,我的积分还剩多少,打开钱包首页，积分一栏显示余额。,积分",
        "w2,积分可以换什么,可以兑换优惠券和话费。,积分",
    )
    assert answerer.orders.kb_topics == (("own_account", 1),)
    assert any("own_account (1)" in r.getMessage() for r in caplog.records)
    assert answerer.explain("我的京豆还剩多少").rule is None
    assert answerer.explain("订单号：123456789012").reason == "needs_order"
    assert answerer.variant().orders is answerer.orders  # variants (eval, cross-fitting) keep them


def test_seller_wording_a_kb_asks_about_is_its_topic(tmp_path, fake_encoder, caplog):
    """A KB for shops (花呗 collections) asks about "our shop" itself: for it that is a question, not a
    seller to hand off; joining the platform still is, and other KBs keep every rule."""
    answerer = _answerer_of_csv(
        tmp_path,
        fake_encoder,
        caplog,
        "m1,我们店铺怎样开通花呗收款,在商家服务里申请开通。,收款",
        "m2,花呗收款多久到账,实时到账。,收款",
    )
    assert answerer.merchant.kb_topics == (("own_shop", 1),)
    assert any("merchant rules" in r.getMessage() and "own_shop (1)" in r.getMessage() for r in caplog.records)
    assert answerer.explain("我们店铺能用花呗吗").rule is None
    assert answerer.explain("怎么申请入驻").reason == "merchant"
    assert answerer.variant().merchant is answerer.merchant


def test_a_kb_whose_own_questions_are_greetings_answers_them_itself(tmp_path, fake_encoder, caplog):
    """A phone assistant's FAQ holds 你好你好 and 谢谢你了: greetings are its topic, not the rule's."""
    answerer = _answerer_of_csv(
        tmp_path,
        fake_encoder,
        caplog,
        "g1,你好你好,你好呀，今天想做点什么？,闲聊",
        "g2,谢谢你了,不客气，随时叫我。,闲聊",
        "a1,明天早上七点叫我起床,好的，已设好明早七点的闹钟。,闹钟",
    )
    assert answerer.small_talk and any("are small talk" in r.getMessage() for r in caplog.records)
    d = answerer.explain("谢谢你了")
    assert d.rule is None and d.searched is not None and d.searched.candidates[0].id == "g2"
    assert answerer.explain("👌").reason == "empty_query"  # no closing rule either
    assert answerer.variant().small_talk  # variants keep it


def test_the_bundled_help_center_leaves_greetings_to_the_rule():
    from indexer.normalize import normalize
    from kb.loader import load_kb
    from kb.settings import BUNDLED_KB
    from service.detect import is_greeting

    assert not any(is_greeting(normalize(e.question)) for e in load_kb(BUNDLED_KB).entries)


def test_the_bundled_help_center_asks_no_order_wording():
    from indexer.normalize import normalize
    from kb.loader import load_kb
    from kb.settings import BUNDLED_KB
    from service.orders import OrderRules

    assert OrderRules.for_kb(normalize(e.question) for e in load_kb(BUNDLED_KB).entries) == OrderRules()


def test_the_bundled_help_center_asks_about_no_sensitive_term():
    """Its questions never use one (its alternatives do, as the cases it hands off): every term
    stays an alarm for it."""
    from pathlib import Path

    from indexer.normalize import normalize
    from kb.loader import load_kb
    from kb.settings import BUNDLED_KB
    from service.sensitive import SensitiveDetector

    detector = SensitiveDetector.from_file(Path(BUNDLED_KB) / "resources" / "sensitive.yaml")
    assert detector.for_kb(normalize(e.question) for e in load_kb(BUNDLED_KB).entries) is detector


def test_an_index_built_in_memory_reads_its_kb_without_a_warning(tiny_settings, fake_encoder, caplog):
    """Evaluation and training build indexes in memory: no build folder, so nothing is stale."""
    from indexer.build import build_index
    from kb.loader import load_kb

    index = build_index(load_kb(tiny_settings.kb_dir, strict=False), fake_encoder, tiny_settings.chunk_chars)
    with caplog.at_level(logging.WARNING, logger="kefu.runtime"):
        answerer = Runtime.create(tiny_settings, encoder=fake_encoder).answerer(index=index)
    assert not [r for r in caplog.records if "resources" in r.getMessage()]
    assert answerer.answer("七天无理由退货需要满足什么条件？").decision


def test_a_kb_that_answers_complaints_to_the_bot_keeps_them(tmp_path, fake_encoder, caplog):
    """我说话你都听不懂 is a voice assistant's own entry: 你都听不懂吗 goes to it, not to a person."""
    answerer = _answerer_of_csv(
        tmp_path,
        fake_encoder,
        caplog,
        "c1,我说话你都听不懂,抱歉，我还在学习，可以换个说法再试试。,闲聊",
        "a1,明天早上七点叫我起床,好的，已设好明早七点的闹钟。,闹钟",
    )
    assert answerer.small_talk
    assert answerer.explain("你都听不懂吗").reason != "user_requested"
    assert answerer.explain("转人工").reason == "user_requested"  # a plain request still goes to a person
