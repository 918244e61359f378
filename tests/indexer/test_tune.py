"""indexer/tune.py: examples with their hardest wrong entry, and a model tuned into a new folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indexer.encoder import load_encoder
from indexer.tune import TuneExample, TuneOptions, tune, with_hard_negatives
from kb.errors import ConfigError
from kb.settings import Settings
from tests.indexer.test_encoder import _tiny_st_model


class _Table:
    """An encoder whose vectors are given: which entry is nearest is known by construction."""

    def __init__(self, vectors: dict[str, list[float]]) -> None:
        self.vectors = vectors

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        v = np.array([self.vectors[t] for t in texts], dtype=np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


QUESTIONS = {"a": "问题甲", "b": "问题乙", "c": "问题丙"}
TABLE = _Table(
    {
        "问题甲": [1, 0, 0],
        "问题乙": [0, 1, 0],
        "问题丙": [0, 0, 1],
        "像乙的甲": [0.2, 1, 0.1],  # about a, nearest b
        "像丙的甲": [0.3, 0.1, 1],  # about a, nearest c
        "甲或乙": [0.9, 0.8, 0.1],  # a and b both answer it: c is its nearest wrong entry
    }
)


def test_each_message_gets_its_entry_question_and_its_nearest_wrong_entry():
    got = with_hard_negatives(
        TABLE,  # type: ignore[arg-type]
        [("像乙的甲", ["a"]), ("像丙的甲", ["a"]), ("甲或乙", ["a", "b"]), ("像乙的甲", ["rules-x#3"])],
        QUESTIONS,
    )
    assert got == [
        TuneExample("像乙的甲", "问题甲", "a", "问题乙"),
        TuneExample("像丙的甲", "问题甲", "a", "问题丙"),
        TuneExample("甲或乙", "问题甲", "a", "问题丙"),
    ]  # the last pair names a clause, which has no question to pull toward: left out


def test_the_positive_is_the_first_answering_entry_that_has_a_question():
    got = with_hard_negatives(TABLE, [("像丙的甲", ["rules-x#3", "b"])], QUESTIONS)  # type: ignore[arg-type]
    assert got == [TuneExample("像丙的甲", "问题乙", "b", "问题丙")]


def test_bad_options_and_a_kb_too_small_are_refused():
    with pytest.raises(ConfigError, match="epochs"):
        TuneOptions(epochs=0)
    with pytest.raises(ConfigError, match="learning_rate"):
        TuneOptions(learning_rate=0.0)
    with pytest.raises(ConfigError, match="two FAQ entries"):
        with_hard_negatives(TABLE, [("像乙的甲", ["a"])], {"a": "问题甲"})  # type: ignore[arg-type]


# the tiny model's vocabulary: 退款怎么申请物流查询天气今天明天的了吗我要人工客服
PAIRS = [
    ("退款怎么申请", "申请退款", "refund", "查询物流"),
    ("我要退款", "申请退款", "refund", "人工客服"),
    ("物流怎么查", "查询物流", "track", "申请退款"),
    ("查物流", "查询物流", "track", "今天天气"),
    ("我要人工", "人工客服", "human", "查询物流"),
    ("要客服", "人工客服", "human", "申请退款"),
    ("今天天气", "天气怎么了", "weather", "人工客服"),
    ("明天天气", "天气怎么了", "weather", "查询物流"),
]


def _weights(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))


def test_tuning_writes_a_new_folder_named_by_its_weights_and_learns(tmp_path: Path):
    base = _tiny_st_model(tmp_path / "base", layers=2)
    examples = [TuneExample(q, p, g, n) for q, p, g, n in PAIRS]
    opts = TuneOptions(epochs=12, learning_rate=3e-3, batch_size=4, scale=20.0)
    out = tmp_path / "tuned"
    tuned = tune(str(base), "", examples, out, opts)
    assert tuned.new and tuned.folder.parent == out and tuned.folder.name.startswith("tiny-tuned-")
    assert tuned.examples == 8 and tuned.epochs == 12 and len(tuned.epoch_loss) == 12
    assert tuned.epoch_loss[-1] < tuned.epoch_loss[0]
    assert not list(out.glob(".tuning-*"))  # the staging folder is gone
    before, after = _weights(base), _weights(tuned.folder)
    emb = next(k for k in before if k.endswith("word_embeddings.weight"))
    np.testing.assert_array_equal(before[emb], after[emb])  # frozen
    assert any(not np.array_equal(before[k], after[k]) for k in before if k != emb)
    # the same seed, the same weights: the folder is found again and left alone
    again = tune(str(base), "", examples, out, opts)
    assert again.folder == tuned.folder and not again.new
    # tuning a tuned model names it after the first model, not tiny-tuned-…-tuned-…
    more = tune(str(tuned.folder), "", examples, out, TuneOptions(epochs=1, batch_size=4, scale=20.0))
    assert more.folder.name.startswith("tiny-tuned-") and more.folder.name.count("-tuned-") == 1
    # and it serves by configuration alone, as any sentence-transformers folder does
    enc = load_encoder(Settings(model=str(tuned.folder), model_cache=tmp_path / "cache"))
    assert enc.encode_queries(["我要退款"]).shape == (1, 16)


def test_tuning_needs_two_examples(tmp_path: Path):
    with pytest.raises(ConfigError, match="at least two"):
        tune("unused", "", [TuneExample("退款", "申请退款", "refund")], tmp_path)
