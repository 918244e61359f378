"""Homophone typo correction against the KB's own words (service/speller.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from kb.errors import ConfigError
from service.answerer import Answerer
from service.speller import Correction, Spelled, Speller, Words, read_userdict, readings

# 快递 12 times, 发票 10 (a correction needs 10 × the typed pair's count + 1), 父亲 never and
# 付清 eight times: the fixtures the cases below lean on
KB_TEXTS = ["快递到哪了", "快递一直没更新", "快递丢了", "催一下快递", "快递员没打电话", "换个快递"] * 2
KB_TEXTS += ["发票怎么开", "电子发票在哪下载", "发票抬头", "补开发票", "发票丢了"] * 2
KB_TEXTS += ["分期付清"] * 8


@pytest.fixture(scope="module")
def speller() -> Speller:
    return Speller(KB_TEXTS)


def test_readings_main_first_and_toneless():
    assert readings("第") == ("di",)
    assert readings("还")[0] == "hai"  # the main reading leads
    assert readings("a") == () and readings("") == ()


@pytest.mark.parametrize(
    ("typed", "expected", "word"),
    [("快第信息没变", "快递信息没变", "快递"), ("发漂怎么开", "发票怎么开", "发票"), ("我的快第", "我的快递", "快递")],
)
def test_a_homophone_typo_becomes_the_kb_word(speller: Speller, typed: str, expected: str, word: str):
    out = speller.correct(typed)
    assert out.text == expected
    assert [c.word for c in out.corrections] == [word]
    (c,) = out.corrections
    assert typed[c.position] == c.typed and expected[c.position] == c.corrected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "abc 123",
        "快递到了吗",  # already right
        "我父亲不会用",  # 父亲 is a dictionary word, though the KB only has 付清
        "第",  # a character with no neighbour
        "今天天气怎么样",  # nothing the KB uses often is a homophone away
    ],
)
def test_text_without_a_typo_is_unchanged(speller: Speller, text: str):
    assert speller.correct(text) == Spelled(text)


@pytest.mark.parametrize(("copies", "fixed"), [(4, False), (5, True)])
def test_the_corrected_word_must_be_common_in_the_kb(copies: int, fixed: bool):
    sp = Speller(["快递来了"] * copies, min_count=5, ratio=1)
    assert (sp.correct("快第来了").text == "快递来了") is fixed


@pytest.mark.parametrize(
    ("typed_pairs", "words", "fixed"), [(0, 9, False), (0, 10, True), (1, 19, False), (1, 20, True)]
)
def test_the_corrected_word_must_outnumber_the_typed_pair(typed_pairs: int, words: int, fixed: bool):
    # ratio 10: the KB word needs 10 × (occurrences of the typed pair + 1)
    sp = Speller(["最快第二天"] * typed_pairs + ["快递来了"] * words, min_count=1)
    assert (sp.correct("快第来了").text == "快递来了") is fixed


def test_a_typed_pair_the_kb_uses_is_taken_as_meant():
    sp = Speller(["最快第二天"] * 3 + ["快递来了"] * 100)
    assert sp.correct("快第来了").text == "快第来了"


def test_a_word_only_the_user_dictionary_knows():
    texts = ["卖家失联"] * 10
    assert Speller(texts).correct("卖家失连").text == "卖家失连"  # 失联 is not in jieba's dictionary
    assert Speller(texts, words=["失联"]).correct("卖家失连").text == "卖家失联"


def test_two_neighbours_are_never_both_changed():
    # 快→筷 would make 筷第 (11 in the KB), 第→递 makes 快递 (20): only the stronger one is made
    sp = Speller(["快递"] * 20 + ["筷第"] * 11, words=["筷第"])
    assert sp.correct("快第").corrections == (Correction(1, "第", "递", "快递"),)
    weaker = Speller(["快递"] * 11 + ["筷第"] * 20, words=["筷第"])
    assert weaker.correct("快第").corrections == (Correction(0, "快", "筷", "筷第"),)


def test_bad_arguments_name_the_values():
    with pytest.raises(ConfigError, match="min_count"):
        Speller([], min_count=0)


def test_read_userdict(tmp_path: Path):
    f = tmp_path / "userdict.txt"
    f.write_text("淘气值 1200 n\n# comment\n\n小蜜 1500 nz\n单\n", encoding="utf-8")
    assert read_userdict(f) == ["淘气值", "小蜜"]
    assert read_userdict(None) == []
    with pytest.raises(ConfigError, match="user dictionary"):
        read_userdict(tmp_path / "missing.txt")


def test_answerer_searches_the_corrected_text_and_keeps_the_typed_one(tiny_answerer: Answerer):
    tiny_answerer.speller = Speller(KB_TEXTS)
    a = tiny_answerer.answer("发漂怎么开")
    assert a.query == "发漂怎么开"
    assert a.trace["retrieval_text"] == "发票怎么开"
    assert a.trace["spelling"] == ["漂→票 (发票)"]
    tiny_answerer.options = dataclasses.replace(tiny_answerer.options, correct_typos=False)
    b = tiny_answerer.answer("发漂怎么开")
    assert b.trace["retrieval_text"] == "发漂怎么开" and "spelling" not in b.trace


def test_runtime_builds_a_speller_unless_switched_off(tiny_settings, tiny_index, fake_encoder):
    from service.runtime import Runtime

    on = Runtime.create(tiny_settings, encoder=fake_encoder).answerer(index=tiny_index)
    off = Runtime.create(tiny_settings.with_overrides(correct_typos=False), encoder=fake_encoder).answerer(
        index=tiny_index
    )
    assert isinstance(on.speller, Speller) and off.speller is None


def test_words_lookup_matches_a_set():
    words = ["快递", "发票", "淘气值", "人工客服", "一", "五个字的词"]
    w = Words(words)
    assert len(w) == 4  # one character and over MAX_WORD are not kept
    for probe in [*words, "快第", "", "快递员", 3]:
        assert (probe in w) is (probe in {"快递", "发票", "淘气值", "人工客服"})


def test_readings_come_without_importing_pypinyin():
    import subprocess
    import sys

    code = "import sys; from service.speller import readings; readings('第'); print('pypinyin' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # the package's phrase dictionary costs 49 MB of RSS


# --- words typed in pinyin ---------------------------------------------------------------------------
PINYIN_TEXTS = ["花呗分期怎么开通"] * 6 + ["拍立淘怎么用", "快递多久到"] * 6


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("huabei fenqi 咋弄", "花呗分期咋弄"),  # each run spells a word; the space between them goes
        ("huabeifenqi", "花呗分期"),  # one run, two words
        ("pailitao 打不开", "拍立淘打不开"),  # a word of the user dictionary
        ("kuaidi duojiu 到吗", "快递多久到吗"),
    ],
)
def test_a_word_typed_in_pinyin_becomes_the_kb_word(typed: str, expected: str):
    got = Speller(PINYIN_TEXTS, words=["拍立淘", "花呗"]).correct(typed)
    assert got.text == expected
    assert all(c.typed.isascii() and c.corrected == c.word for c in got.corrections)


@pytest.mark.parametrize(
    "text",
    [
        "price protection 在哪里点",  # English spells no pinyin word
        "check order status pls",
        "kd单号在哪",  # too short: an abbreviation
        "https://www.huabei.com/fenqi",  # part of a link
        "huabeihuabei",  # a word twice in a row is a name, not a request
        # next to a run that spells nothing, none is read as pinyin: English or a name
        "kuaidi duojiu dao",  # dao spells no word of two characters
        "huabei pay 怎么开通",
        "a woman like her",
    ],
)
def test_english_links_and_abbreviations_stay(text: str):
    assert Speller(PINYIN_TEXTS, words=["拍立淘", "花呗"]).correct(text).text == text


def test_only_words_the_kb_uses_are_spelt():
    # 拍立淘 is a user word, but this KB never writes it: pailitao stays
    assert Speller(["快递多久到"] * 6, words=["拍立淘"]).correct("pailitao").text == "pailitao"
