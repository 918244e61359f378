"""Rule detectors: human requests, sensitive topics, greetings, follow-ups."""

from __future__ import annotations

import pytest

from indexer.normalize import normalize
from kb.errors import ConfigError
from kb.loader import load_resources
from kb.settings import BUNDLED_KB
from service.detect import (
    FOLLOWUP_MAX_CHARS,
    SensitiveDetector,
    is_followup,
    is_greeting,
    is_user_request,
    strip_greeting,
)

SENSITIVE_YAML = BUNDLED_KB / "resources" / "sensitive.yaml"


@pytest.fixture(scope="module")
def bundled_detector() -> SensitiveDetector:
    return SensitiveDetector.from_file(SENSITIVE_YAML)


@pytest.fixture(scope="module")
def greeting_extras() -> tuple[str, ...]:
    res = load_resources(BUNDLED_KB)
    return res.greetings + res.thanks


# --- human requests --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "query",
    [
        "转人工",
        "轉人工",  # Traditional: matched only after normalisation
        "转仁工",  # homophone typo
        "人工！！！",
        "人工人工人工",
        "我要找真人",
        "human agent please",
        "Can I talk to a real person",
        "别让机器人回答了",
        "找你们主管来",
        "我买的东西坏了，联系卖家三天都不回，物流也一直不动，问了好几次都没人管，实在没办法了，麻烦转人工处理一下吧",
    ],
)
def test_human_requests_are_detected(query: str):
    assert is_user_request(normalize(query))


@pytest.mark.parametrize(
    "query",
    [
        "人工客服几点下班",  # a question about agents, not a request for one (currently not matched)
        "退款多久到账",
        "我想问问快递",
        "人工审核要多久",
        "怎么修改收货地址",
    ],
)
def test_non_requests_are_not_detected(query: str):
    assert not is_user_request(normalize(query))


def test_question_about_manual_review_is_not_a_request():
    assert not is_user_request(normalize("退款需要人工审核吗"))


def test_in_scope_eval_item_about_the_queue_is_not_a_request():
    # the project's own labelled data (eval/data, expect=answer) says this is a question, not a request
    q = "618那几天找人工客服排了快一个小时的队，中途切出去回个微信再进来又要重新排，有没有什么办法能少等一会"
    assert not is_user_request(normalize(q))


# --- sensitive terms ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("query", "group", "term"),
    [
        ("再不处理我就去法院起诉你们", "legal", "起诉"),
        ("你们这样我要报警了", "police", "报警"),
        ("我要打12315投诉", "regulator", "12315"),
        ("我要去网上曝光你们", "media", "曝光"),
        ("充电宝充着充着爆炸了", "safety", "爆炸"),
        ("被骗光了我真的不想活了", "self_harm", "不想活"),
    ],
)
def test_sensitive_terms_match_with_group(bundled_detector: SensitiveDetector, query: str, group: str, term: str):
    hit = bundled_detector.match(normalize(query))
    assert hit is not None
    assert hit.group == group
    assert hit.term == term


@pytest.mark.parametrize("query", ["315晚会曝过你们", "我要投诉到315"])
def test_standalone_315_is_sensitive(bundled_detector: SensitiveDetector, query: str):
    hit = bundled_detector.match(normalize(query))
    assert hit is not None and hit.group in {"regulator", "media"}


@pytest.mark.parametrize(
    "query",
    ["可以送货上门吗", "订单号 3150001 怎么还没发货", "订单3150001", "退款多久到账", "运费险怎么理赔"],
)
def test_sensitive_non_matches(bundled_detector: SensitiveDetector, query: str):
    assert bundled_detector.match(normalize(query)) is None


def test_sensitive_terms_are_normalised_too():
    det = SensitiveDetector.from_terms(["消費者協會"])  # Traditional term matches simplified text
    assert det.match(normalize("我去消费者协会投诉")) is not None


def test_invalid_regex_is_a_config_error_naming_the_term():
    with pytest.raises(ConfigError) as info:
        SensitiveDetector({"legal": ["起诉", "告(你们"]})
    assert "告(你们" in str(info.value)
    assert "legal" in str(info.value)


@pytest.mark.parametrize("groups", [{}, {"legal": []}, {"a": [], "b": []}])
def test_empty_term_list_is_a_config_error(groups):
    with pytest.raises(ConfigError, match="empty"):
        SensitiveDetector(groups)


def test_empty_file_is_a_config_error(tmp_path):
    p = tmp_path / "sensitive.yaml"
    p.write_text("# nothing here\n", "utf-8")
    with pytest.raises(ConfigError):
        SensitiveDetector.from_file(p)


def test_uppercase_regex_escapes_keep_their_meaning():
    det = SensitiveDetector.from_terms([r"315\D"])
    assert det.match(normalize("315晚会")) is not None
    assert det.match(normalize("3150001")) is None


# --- greetings ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["你好", "在吗", "谢谢", "thx", "好的谢谢", "您好！", "Thanks!", "你好呀~"])
def test_greetings(text: str, greeting_extras):
    assert is_greeting(normalize(text))
    assert is_greeting(normalize(text), greeting_extras)


@pytest.mark.parametrize("text", ["哈喽哈喽", "哈罗"])
def test_haha_greetings(text: str, greeting_extras):
    assert is_greeting(normalize(text), greeting_extras)


@pytest.mark.parametrize(
    "text", ["你好，怎么退款", "谢谢，那运费谁出", "在吗 我的快递到哪了", "退款多久到账", "", "！！！"]
)
def test_not_greetings(text: str, greeting_extras):
    assert not is_greeting(normalize(text), greeting_extras)


def test_configured_extra_greeting():
    assert not is_greeting("么么哒")
    assert is_greeting("么么哒", ["么么哒"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("你好,怎么退款", "怎么退款"),
        ("亲,请问一下,退款多久到账", "退款多久到账"),
        ("您好!请问运费谁出", "运费谁出"),
        ("怎么退款", "怎么退款"),
        ("你好", "你好"),  # nothing left after stripping: the input is kept
        ("小蜜你好,退款多久到账", "退款多久到账"),
        ("客服在吗 运费谁出", "运费谁出"),
        ("小二在吗我要人工", "我要人工"),
        # a form of address without a pause is the subject of the question, not a greeting
        ("客服电话多少", "客服电话多少"),
        ("小蜜是啥", "小蜜是啥"),
        ("客服说价格挂错了", "客服说价格挂错了"),
        ("亲测好用吗", "亲测好用吗"),
    ],
)
def test_strip_greeting(text: str, expected: str):
    assert strip_greeting(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("那运费呢", True),
        ("运费呢", True),  # short messages count as follow-ups
        ("那如果超过七天了还能退吗", True),
        ("另外发票怎么开", True),
        ("我想知道七天无理由退货需要满足什么条件", False),
        ("那我得准备些什么材料交上去", True),  # 13 characters: a follow-up all the same
        ("这样改的话要另外掏钱吗", True),  # points back at the previous message
        ("那如果超过七天了还能退吗，我买的是一件羽绒服外套", False),  # starts like one but is long
        ("卖家把我拉黑了怎么联系他", True),  # the gate fires; the answerer decides whether context helps
    ],
)
def test_is_followup(text: str, expected: bool):
    assert is_followup(normalize(text)) is expected


def test_followup_length_bound():
    assert is_followup("那" + "a" * (FOLLOWUP_MAX_CHARS - 1))
    assert not is_followup("那" + "a" * FOLLOWUP_MAX_CHARS)


def _one_by_one(detector: SensitiveDetector, norm: str) -> str | None:
    """Oracle: every term's own pattern, in order, as the detector did before its union search."""
    for group, _, pattern in detector._patterns:
        if pattern.search(norm):
            return group
    return None


def test_union_search_agrees_with_each_term_alone(bundled_detector: SensitiveDetector):
    from eval.dataset import load_split

    assert bundled_detector._any is not None  # the bundled terms do join into one pattern
    texts = [normalize(it.query) for split in ("dev", "test") for it in load_split(split)]
    hits = 0
    for text in texts:
        got = bundled_detector.match(text)
        assert (got.group if got else None) == _one_by_one(bundled_detector, text), text
        hits += got is not None
    assert hits >= 25  # the labelled sets' sensitive messages are found


@pytest.mark.parametrize(
    ("terms", "text"),
    [([r"(投诉)\1", "律师"], "投诉投诉"), (["律师", "(?i)abc"], "abc")],
    ids=["backref", "inline-flag"],
)
def test_terms_that_cannot_be_joined_are_searched_one_by_one(terms: list[str], text: str):
    d = SensitiveDetector.from_terms(terms)
    assert d._any is None
    assert d.match("我要找律师") is not None and d.match("你好") is None
    assert d.match(text) is not None
