"""Shared fixtures: settings isolated from the developer's environment, the real model once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kb.settings import Settings


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No KEFU_* variable or .env of the developer leaks into a test."""
    for key in list(os.environ):
        if key.startswith("KEFU_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def model_cache() -> Path:
    """The real model cache (shared with `make serve`, so it is converted once per machine)."""
    return Settings().model_cache


@pytest.fixture(scope="session")
def builtin_model(model_cache: Path):
    from indexer.model.builtin import prepare_builtin

    return prepare_builtin("builtin:multilingual-e5-small", model_cache)


# --- a tiny knowledge base and index on the deterministic fake encoder ---------------------------
TINY_FAQ = """
category: 退货退款
entries:
  - id: refund-seven-day
    category: 退货退款
    question: 七天无理由退货需要满足什么条件？
    alt_questions: [买了不想要了能退吗, 不喜欢可以退货吗, 七天内可以无理由退吗]
    answer: 签收次日起七天内，商品完好、不影响二次销售即可申请七天无理由退货。在「我的订单」找到订单，点击「退款/售后」提交申请，卖家超时未处理系统会自动同意。
    related: [refund-shipping-fee]
    replaces: [refund-no-reason-return]
  - id: refund-shipping-fee
    category: 退货退款
    question: 退货的运费应该由谁来承担？
    alt_questions: [退货运费谁出, 寄回去的邮费谁付, 退货要自己出运费吗]
    answer: 七天无理由退货的运费一般由买家承担，购买了运费险的可以按保单获得赔付；因商品质量问题退货的运费由卖家承担，可在退款详情中上传凭证。
"""
TINY_FAQ_LOGISTICS = """
category: 物流配送
entries:
  - id: logistics-track
    category: 物流配送
    question: 怎么查看订单的物流信息？
    alt_questions: [我的快递到哪了, 包裹现在在哪里, 怎么查物流]
    answer: 打开「我的淘宝」→「我的订单」，找到对应订单点击「查看物流」，即可看到快递公司、运单号和最新的物流轨迹；长时间不更新可以联系卖家催促。
"""
TINY_RULES = """---
id: rules-return
title: 退货规范
category: 退货退款
effective: 2026-01-01
---

# 退货规范

## 第一章 总则

第一条 为保障消费者权益，制定本规范。本规范适用于平台上的全部交易。

第二条 买家应在签收次日起七日内提出无理由退货申请。逾期提出的，平台不予支持。

## 第二章 运费

第三条 无理由退货的运费由买家承担；商品存在质量问题的，运费由卖家承担。
"""


@pytest.fixture
def tiny_kb_dir(tmp_path: Path) -> Path:
    root = tmp_path / "kb"
    (root / "faq").mkdir(parents=True)
    (root / "rules").mkdir()
    (root / "faq" / "tiny.yaml").write_text(TINY_FAQ, "utf-8")
    (root / "faq" / "logistics.yaml").write_text(TINY_FAQ_LOGISTICS, "utf-8")
    (root / "rules" / "rules-return.md").write_text(TINY_RULES, "utf-8")
    (root / "resources").mkdir()
    (root / "resources" / "synonyms.yaml").write_text("运费险: [退货保险, 退运险]\n", "utf-8")
    return root


@pytest.fixture
def fake_encoder():
    from indexer.encoder import FakeEncoder

    return FakeEncoder(dim=128)


@pytest.fixture
def tiny_settings(tmp_path: Path, tiny_kb_dir: Path) -> Settings:
    return Settings(kb_dir=tiny_kb_dir, data_dir=tmp_path / "data", model="fake:hash-128", chunk_chars=60)


@pytest.fixture
def tiny_index(tiny_settings: Settings, fake_encoder):
    """A built, verified and current index of the tiny KB (fake encoder)."""
    from indexer.build import build_and_swap
    from indexer.store import IndexStore
    from kb.loader import load_kb

    store = IndexStore(tiny_settings.index_home, tiny_settings.keep_builds)
    build_and_swap(load_kb(tiny_settings.kb_dir, strict=False), fake_encoder, store, tiny_settings.chunk_chars)
    return store.load_current(fake_encoder.model_id)


@pytest.fixture
def tiny_answerer(tiny_settings: Settings, tiny_index, fake_encoder):
    from service.runtime import Runtime

    rt = Runtime.create(tiny_settings, encoder=fake_encoder)
    return rt.answerer(index=tiny_index)
