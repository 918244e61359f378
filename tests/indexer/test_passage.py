"""The passage an article answers with: a window of whole sentences around the best one."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from indexer.chunking import split_sentences
from indexer.passage import bigram_cover, passage, sentence_spans, window, window_range


@pytest.mark.parametrize(
    ("scores", "max_chars", "expected"),
    [
        pytest.param([0, 0, 1, 0, 0], 3, range(2, 3), id="only-the-best-fits"),
        pytest.param([0, 0, 1, 0, 0], 6, range(2, 4), id="tie-goes-to-the-following-sentence"),
        pytest.param([0, 0.5, 1, 0.2, 0], 6, range(1, 3), id="the-better-neighbour-first"),
        pytest.param([0, 0.5, 1, 0.2, 0], 9, range(1, 4), id="then-the-other"),
        pytest.param([0, 0, 0, 0, 1], 9, range(2, 5), id="at-the-end-it-grows-backwards"),
        pytest.param([1, 1, 0, 0, 0], 3, range(0, 1), id="first-of-equal-best"),
        pytest.param([0, 0, 1, 0, 0], 100, range(0, 5), id="everything-fits"),
        pytest.param([0, 0, 1, 0, 0], 1, range(2, 3), id="best-shown-whole-even-if-longer"),
    ],
)
def test_window_range(scores, max_chars, expected):
    assert window_range([3] * len(scores), scores, max_chars) == expected


def test_window_skips_a_neighbour_too_long_for_the_rest_and_takes_the_other():
    # the following sentence (8) does not fit beside the best (3) in 8; the previous one (2) does
    assert window_range([2, 3, 8], [0.1, 1.0, 0.5], 8) == range(0, 2)


def test_window_joins_whole_sentences():
    sentences = ["大莱龙铁路位于山东省北部。", "全长175公里。", "2005年建成试运营。"]
    assert window(sentences, [0.0, 1.0, 0.2], 20) == "全长175公里。2005年建成试运营。"
    assert window([], [], 10) == ""
    with pytest.raises(ValueError, match="scores"):
        window(sentences, [1.0], 10)


def test_sentence_spans_keep_closing_quotes_and_drop_blank_space():
    text = "第一句。第二句！\n（一）列表项；\n  没有标点的一行\n他说“好。”然后走了"
    assert [text[s:e] for s, e in sentence_spans(text)] == [
        "第一句。",
        "第二句！",
        "（一）列表项；",
        "没有标点的一行",
        "他说“好。”",
        "然后走了",
    ]
    assert sentence_spans("") == [] and sentence_spans(" \n ") == []


def test_passage_is_cut_from_the_text_so_line_breaks_between_items_stay():
    text = "退款规则如下：\n（一）仅退款一般三个工作日到账；\n（二）退货退款在卖家收货后处理。\n其他说明。"
    got = passage(text, [0.0, 1.0, 0.5, 0.0], 35)
    assert got == "（一）仅退款一般三个工作日到账；\n（二）退货退款在卖家收货后处理。"
    assert passage("  ", None, 10) == ""


def test_bigram_cover():
    assert bigram_cover("运费谁出", ["退货运费由买家出。", "无关。"]) == [pytest.approx(1 / 3), 0.0]
    assert bigram_cover("？", ["任何句子。"]) == [0.0]


_SENT = st.text(alphabet="甲乙丙丁戊己庚辛", min_size=1, max_size=12).map(lambda s: s + "。")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(_SENT, min_size=1, max_size=20),
    st.data(),
    st.integers(1, 80),
)
def test_property_window_is_contiguous_whole_and_bounded(sentences, data, max_chars):
    scores = data.draw(st.lists(st.floats(0, 1), min_size=len(sentences), max_size=len(sentences)))
    r = window_range([len(s) for s in sentences], scores, max_chars)
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    assert best in r
    size = sum(len(sentences[i]) for i in r)
    assert size <= max_chars or len(r) == 1
    # nothing else would have fitted on either side
    for i in (r.start - 1, r.stop):
        if 0 <= i < len(sentences):
            assert size + len(sentences[i]) > max_chars
    text = "".join(sentences)
    assert split_sentences(passage(text, scores, max_chars)) == [sentences[i] for i in r]
