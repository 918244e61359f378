"""Query expansion from resources/synonyms.yaml."""

from __future__ import annotations

import dataclasses

import pytest

from kb.errors import ConfigError
from service.answerer import Answerer
from service.synonyms import SynonymExpander

SYN = {"退款": ["退钱", "把钱退回来", "返"], "运费险": ["退货险", "運費保險"]}


@pytest.mark.parametrize(
    ("text", "expanded", "added"),
    [
        ("钱怎么还没退钱", "钱怎么还没退钱 退款", ("退款",)),  # a saying brings in the standard term
        ("退款了还要退钱吗", "退款了还要退钱吗", ()),  # the term is already there
        ("退钱的话有退货险吗", "退钱的话有退货险吗 退款 运费险", ("退款", "运费险")),
        ("返现什么时候到", "返现什么时候到", ()),  # one-character sayings are ignored
        ("运费保险怎么买", "运费保险怎么买 运费险", ("运费险",)),  # sayings are normalised (Traditional)
        ("", "", ()),
    ],
)
def test_expand(text: str, expanded: str, added: tuple[str, ...]):
    assert SynonymExpander(SYN).expand(text) == (expanded, added)


def test_min_chars_can_admit_single_characters():
    assert SynonymExpander(SYN, min_chars=1).expand("返现什么时候到")[1] == ("退款",)


def test_keys_that_normalise_alike_are_one_term():
    e = SynonymExpander({"運費險": ["退货险"], "运费险": ["退运险"]})
    assert len(e) == 1 and e.expand("退货险和退运险")[1] == ("运费险",)


def test_empty_table_expands_nothing():
    e = SynonymExpander({})
    assert len(e) == 0 and e.expand("退钱") == ("退钱", ())


@pytest.mark.parametrize(
    ("syn", "kwargs", "match"), [({" ": ["x"]}, {}, "empty standard term"), (SYN, {"min_chars": 0}, "min_chars=0")]
)
def test_bad_tables_are_refused(syn, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SynonymExpander(syn, **kwargs)


def test_answerer_searches_with_the_standard_term_and_says_so(tiny_answerer: Answerer):
    t = tiny_answerer  # the tiny KB's own resources/synonyms.yaml: 运费险: [退货保险, 退运险]
    seen: list[str] = []

    def spy(texts):
        seen.extend(texts)
        return t.encode(texts)

    on = Answerer(t.index, spy, t.sensitive, dataclasses.replace(t.options, expand_synonyms=True), synonyms=t.synonyms)
    a = on.answer("退货保险怎么理赔")
    assert seen == ["退货保险怎么理赔 运费险"]  # embedded (and matched lexically) with the term
    assert a.trace["synonyms"] == ["运费险"]
    assert a.trace["retrieval_text"] == "退货保险怎么理赔"  # evidence is measured on the text itself
    seen.clear()
    off = Answerer(
        t.index, spy, t.sensitive, dataclasses.replace(t.options, expand_synonyms=False), synonyms=t.synonyms
    )
    b = off.answer("退货保险怎么理赔")
    assert seen == ["退货保险怎么理赔"] and "synonyms" not in b.trace


def test_runtime_loads_the_kbs_own_synonyms(tiny_answerer: Answerer):
    assert len(tiny_answerer.synonyms) == 1  # the tiny KB's file, not the bundled one


def test_first_character_lookup_agrees_with_testing_every_saying():
    """Oracle: the bundled table over the dev queries, against the plain definition."""
    from eval.dataset import load_split
    from indexer.normalize import normalize
    from kb.loader import load_resources
    from kb.settings import BUNDLED_KB

    table = load_resources(BUNDLED_KB).synonyms
    fast = SynonymExpander(table)
    pairs = [(normalize(t), [normalize(s) for s in ss if len(normalize(s)) >= 2]) for t, ss in table.items()]
    expanded = 0
    for item in load_split("dev"):
        text = normalize(item.query)
        want = tuple(dict.fromkeys(t for t, ss in pairs if t not in text and any(s in text for s in ss)))
        assert fast.expand(text)[1] == want, text
        expanded += bool(want)
    assert expanded > 50  # the table does fire on real queries
