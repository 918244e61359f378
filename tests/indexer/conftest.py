"""Shared by the index build and search tests: the tiny KB built into a store with a stepping clock,
extra FAQ entries to change the KB, and query encoding."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

import indexer.build as build_module
from indexer.build import build_and_swap
from indexer.normalize import normalize
from indexer.store import IndexStore
from kb.loader import load_kb

CHUNK = 60
EXTRA_FAQ = """
category: 售后服务
entries:
  - id: extra-{n}
    category: 售后服务
    question: 第{n}个额外的问题应该怎么处理？
    alt_questions: [额外说法甲{n}, 额外说法乙{n}, 额外说法丙{n}]
    answer: {answer}
"""
EXTRA_ANSWER = (
    "这是第{n}个额外问题的答案。请在「我的订单」找到对应订单，点击「申请售后」并按页面提示填写原因、"
    "上传凭证后提交，卖家会在四十八小时内处理。"
)


class _Clock:
    """Stands in for ``time`` in indexer.build: each build one second later, or — frozen — within
    the same second (a microsecond apart), as two quick builds would be."""

    BASE = 1_780_000_000.0

    def __init__(self, frozen: bool = False) -> None:
        self.n = 0
        self.frozen = frozen

    def time(self) -> float:
        self.n += 1
        return self.BASE + (self.n * 1e-6 if self.frozen else float(self.n))

    def __getattr__(self, name: str):
        return getattr(time, name)  # perf_counter and anything else: the real clock


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    c = _Clock()
    monkeypatch.setattr(build_module, "time", c)
    return c


@pytest.fixture
def store(tiny_settings) -> IndexStore:
    return IndexStore(tiny_settings.index_home, tiny_settings.keep_builds)


def _kb(kb_dir: Path):
    return load_kb(kb_dir, strict=False)


def _add_entry(kb_dir: Path, n: int) -> None:
    (kb_dir / "faq" / f"extra-{n}.yaml").write_text(EXTRA_FAQ.format(n=n, answer=EXTRA_ANSWER.format(n=n)), "utf-8")


def _build(kb_dir: Path, encoder, store: IndexStore, **kw):
    return build_and_swap(_kb(kb_dir), encoder, store, CHUNK, **kw)


def _q(encoder, text: str) -> np.ndarray:
    return encoder.encode_queries([normalize(text)])[0]
