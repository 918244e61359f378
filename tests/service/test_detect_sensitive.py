"""The sensitive-topic detector: terms and their groups, everyday senses that are not sensitive,
sensitive.yaml's format and errors, and the joined search against each term alone."""

from __future__ import annotations

import pytest

from indexer.normalize import normalize
from kb.errors import ConfigError
from kb.settings import BUNDLED_KB
from service.sensitive import (
    SensitiveDetector,
    SensitiveMatch,
    TermSpec,
)

SENSITIVE_YAML = BUNDLED_KB / "resources" / "sensitive.yaml"


@pytest.fixture(scope="module")
def bundled_detector() -> SensitiveDetector:
    return SensitiveDetector.from_file(SENSITIVE_YAML)


# --- sensitive terms ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("query", "group", "term"),
    [
        ("再不处理我就去法院起诉你们", "legal", "起诉"),
        ("你们这样我要报警了", "police", "报警"),
        ("我要打12315投诉", "regulator", "12315"),
        ("我要去网上曝光你们", "media", "曝光"),
        ("充电宝充着充着爆炸了", "safety", "爆炸"),
        ("新买的衣服颜色不错，可是熨斗插上电就炸了", "safety", "炸了"),  # 颜色 elsewhere: not the slang
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


# Messages in English: the same groups, matched on whole words of the lowercased text.
@pytest.mark.parametrize(
    ("query", "group"),
    [
        ("This is a scam, I will sue you", "legal"),
        ("I'm talking to my lawyer about this", "legal"),
        ("I'll call the police", "police"),
        ("I will report you to the police", "police"),
        ("I'm filing with consumer protection", "regulator"),
        ("My charger caught fire last night", "safety"),
        ("the power bank EXPLODED", "safety"),
        ("I got food poisoning from this", "safety"),
        ("my son was hospitalized after using it", "safety"),
        ("I got an electric shock from the kettle", "safety"),
        ("I want to kill myself", "self_harm"),
        ("I don’t want to live anymore", "self_harm"),  # a curly apostrophe, as phones type it
        ("feeling suicidal", "self_harm"),
        ("I’ll kill you", "threat"),
        ("I know where you live", "threat"),
        ("I'm going to hurt you", "threat"),
    ],
)
def test_english_messages_match_their_group(bundled_detector: SensitiveDetector, query: str, group: str):
    hit = bundled_detector.match(normalize(query))
    assert hit is not None and hit.group == group


@pytest.mark.parametrize(
    "query",
    [
        "how long does shipping take",
        "my phone battery is going to die",  # a battery, not a person
        "I'm going to shoot a video of the unboxing",
        "Police sunglasses for men",  # a brand
        "how to kill weeds in the garden",
        "Killer Queen poster",
        "this deal is on fire",
        "is the jacket fireproof",
        "the issue is resolved",  # sue inside a word
        "I will pursue a refund",
        "the court shoes are too small",
        "hospitality gift set",
        "can it be delivered to my mum in hospital",  # a place, not an incident (住院 is one)
        "does the electric shock collar come with a charger",  # a product's name
        "is Exploding Kittens in stock",  # a card game
    ],
)
def test_everyday_english_is_not_sensitive(bundled_detector: SensitiveDetector, query: str):
    assert bundled_detector.match(normalize(query)) is None


@pytest.mark.parametrize("query", ["孩子吃了玩具的小零件", "孩子吞了纽扣电池", "不小心吃下去了磁珠"])
def test_a_child_swallowing_a_part_is_a_safety_incident(bundled_detector: SensitiveDetector, query: str):
    hit = bundled_detector.match(normalize(query))
    assert hit is not None and hit.group == "safety"


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


# --- sensitive terms: everyday senses --------------------------------------------------------------
@pytest.mark.parametrize(
    "query",
    [
        "电脑中毒了",
        "手机中毒了怎么办",
        "我的电脑好像中毒了",
        "中了病毒",
        "网购中毒",
        "服务器炸了",
        "心态炸了",
        "评论区炸了",
        "评论区都炸了",
        "头都要炸了",
        "我气炸了",
        "手机被打炸了",
        "美炸了",
        "这价格太炸了",
        "双十一的优惠真的炸了",
        "这件衣服颜色太炸了",
        "这个配色也太炸了吧",
        "设计直接炸了",
        "杀价",
        "秒杀",
        "杀毒软件",
        "秒杀了两件",
        "杀价杀了半天",
        "杀毒软件杀了半天",
        "爆炸头",
        "爆炸盐怎么用",
        "想死你们了",
        "多媒体音箱",
        "流媒体后视镜",
        "曝光补偿怎么调",
        "被电商坑了",
        "轮胎漏气",
        "充气床一直漏气",
        "结算账户怎么改",
        "想买件大衣，身高165体重110不知道选哪个码",
        "110v电压能用吗",
        "发烧了能喝牛奶吗",
        "宝宝退烧了还要吃药吗",
        "不要告诉我世界杯都打完了还没货",
        "手机媒体音量调不大",
        "燃气灶打不着火",
        "热水器点不着火怎么办",
        "这药能把蟑螂弄死吗",
        "怎么把杂草都弄死",
        "这次活动搞砸了",
        "我真想把这个电脑砸了",
        "箱子砸了个坑",
        # shop talk: a price that is a steal, a rock-bottom sale
        "这价格太杀了",
        "跳楼价是真的吗",
        "跳楼大甩卖还有货吗",
        "自杀式降价能保价吗",
        "我要打他电话问问",  # a call, not a blow
        "打死都不买了",
        "误食胶水怎么办",  # a medical question-and-answer KB's topic; a product part or a battery is an incident
    ],
)
def test_everyday_senses_are_not_sensitive(bundled_detector: SensitiveDetector, query: str):
    assert bundled_detector.match(normalize(query)) is None


SWALLOWED = (
    r"(?:误食|误吞|吃|吞)(?:了|下|进)?去?(?:了)?(?:一颗|一个|一粒|一包|个|颗|粒|包)?(?:玩具(?:上)?的?)?"
    r"(?:小?零件|纽扣电池|电池|磁铁|磁力?珠|珠子|干燥剂)"
)
HIT_SOMEONE = r"(?:我要|我去|我会|我就|非得?)(?:打|揍)(?:他|她|你)(?:们)?(?!.{0,2}电话)"


@pytest.mark.parametrize(
    ("query", "group", "term"),
    [
        ("吃了你们的零食食物中毒了", "safety", "中毒"),
        ("一氧化碳中毒", "safety", "中毒"),
        ("孩子吃了中毒住院了", "safety", "中毒"),
        ("爆炸", "safety", "爆炸"),
        ("插座爆炸了", "safety", "爆炸"),
        ("要炸了你们公司", "safety", "炸了"),
        ("充电宝炸了", "safety", "炸了"),
        ("插头炸了", "safety", "炸了"),  # 头都要炸了 is slang; 插头 is not
        ("煤气炸了", "safety", "炸了"),  # 我气炸了 is slang; 煤气 is not
        ("手机炸了", "safety", "炸了"),
        ("充电器烧了", "safety", "烧了"),  # 发烧了 is a fever; a charger that burnt is not
        ("家里燃气漏气了", "safety", "漏气"),
        ("被电到了", "safety", "被电"),
        ("自杀", "self_harm", "自杀"),
        ("我好想死", "self_harm", "想死"),
        ("我要杀了你", "threat", "杀了"),
        ("我要把你们店砸了", "threat", "砸了"),
        ("信不信我砸了你们的店", "threat", "砸了"),
        ("我弄死你", "threat", "弄死"),
        ("我要告你们", "legal", "告你们"),
        ("再不处理我就要告了", "legal", "要告"),
        ("插座着火了", "safety", "着火"),
        ("我要跟你们算账", "threat", "算账"),
        ("我要曝光你们", "media", "曝光"),
        ("我要找媒体", "media", "媒体"),
        ("我要打110", "police", r"(?<!\d)110(?!\d)"),
        ("我要跳楼", "self_harm", "跳楼"),
        ("我想自杀", "self_harm", "自杀"),
        ("真想杀了他", "threat", "杀了"),
        ("快递员态度太差，我要打他", "threat", HIT_SOMEONE),
        ("打死你", "threat", "(?:打|揍)死(?:你|他|她)"),
        ("宝宝误食了干燥剂", "safety", SWALLOWED),
    ],
)
def test_genuine_sensitive_messages_still_match(bundled_detector: SensitiveDetector, query: str, group: str, term: str):
    hit = bundled_detector.match(normalize(query))
    assert hit == SensitiveMatch(group, term)


# Wordings nobody here had read (a helper's messages, docs/experiments.md session 28): the group only
@pytest.mark.parametrize(
    ("query", "group"),
    [
        ("我真的撑不下去了 想一了百了", "self_harm"),
        ("活够了 钱也没了 不如死了算了", "self_harm"),
        ("我今晚就从楼上跳下去", "self_harm"),
        ("再这样我去你们公司门口堵人", "threat"),
        ("我跟你们拼了", "threat"),
        ("我要去食药监举报你们", "regulator"),
        ("等着被工商查吧", "regulator"),
        ("我要让大家都别买这家", "media"),
        ("宝宝用了奶瓶嘴里起泡 送医院了", "safety"),
        ("吃了你们的保健品 我妈进ICU了", "safety"),
        ("电热毯半夜冒火星 差点烧起来", "safety"),
        ("锅在灶上炸裂了 碎片划伤了我老婆", "safety"),
        ("小孩把磁力珠吞下去了 怎么办", "safety"),
    ],
)
def test_unseen_wordings_of_sensitive_messages(bundled_detector: SensitiveDetector, query: str, group: str):
    hit = bundled_detector.match(normalize(query))
    assert hit is not None and hit.group == group, (query, hit)


@pytest.mark.parametrize(
    "query",
    [
        "烟雾报警器怎么安装",
        "起诉书模板打印纸有A4的吗",
        "律师事务所的文件袋能定制logo吗",
        "冒烟的那种干冰适合拍照吗",
        "防漏电插座怎么装",
        "315促销活动还有吗",
        "记者证卡套有透明的吗",
        "有没有讲打官司的推理小说推荐",
        "工商银行卡能付款吗",
        "个体工商户可以开发票吗",
        "手机屏幕炸裂了还能保修吗",
        "离医院近的自提点有吗",
        "硬盘数据抢救服务多少钱",
        "我要挂你们电话了",
    ],
)
def test_product_names_and_banks_are_not_sensitive(bundled_detector: SensitiveDetector, query: str):
    assert bundled_detector.match(normalize(query)) is None, query


@pytest.mark.parametrize(
    ("query", "term"),
    [
        ("电脑中毒了，孩子也食物中毒了", "中毒"),
        ("服务器炸了，我要炸了你们公司", "炸了"),
        ("我秒杀了，然后我要杀了你", "杀了"),
    ],
)
def test_an_exception_excuses_only_the_occurrence_it_covers(bundled_detector: SensitiveDetector, query: str, term: str):
    hit = bundled_detector.match(normalize(query))
    assert hit is not None and hit.term == term


def test_exception_must_cover_the_occurrence_not_just_occur():
    det = SensitiveDetector({"safety": [TermSpec("炸了", ("服务器炸了",))]})
    assert det.match("服务器炸了") is None
    assert det.match("服务器没事,锅炸了") is not None


def test_exceptions_are_normalised_like_terms():
    det = SensitiveDetector({"safety": [TermSpec("中毒", ("電腦中毒",))]})  # Traditional exception
    assert det.match(normalize("电脑中毒了")) is None
    assert det.match(normalize("食物中毒")) is not None


# --- sensitive.yaml: format and errors -------------------------------------------------------------
def _yaml(tmp_path, text: str):
    p = tmp_path / "sensitive.yaml"
    p.write_text(text, "utf-8")
    return p


def test_yaml_term_with_exceptions(tmp_path):
    p = _yaml(
        tmp_path,
        "safety:\n  - 爆炸\n  - term: 中毒\n    except:\n      - (?:电脑|手机)中毒\n  - term: 漏气\n    except:\n",
    )
    det = SensitiveDetector.from_file(p)
    assert det.match("手机中毒了") is None
    assert det.match("食物中毒") == SensitiveMatch("safety", "中毒")
    assert det.match("燃气漏气") == SensitiveMatch("safety", "漏气")  # an empty except: is no exception


def test_yaml_scalars_are_kept_as_written(tmp_path):
    # read from the node tree: 0110 stays 0110 (safe_load would make it the octal 72)
    det = SensitiveDetector.from_file(_yaml(tmp_path, "police:\n  - 0110\nregulator:\n  - 12315\n"))
    assert det.match("拨0110") is not None
    assert det.match("72") is None
    assert det.match("打12315") is not None


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("safety:\n  - 爆炸\n  - [中毒\n", 4, "invalid YAML"),
        ("- 爆炸\n", 1, "expected a mapping"),
        ("safety: 爆炸\n", 1, "must be a list"),
        ("safety:\n  - 爆炸\nsafety:\n  - 中毒\n", 3, "given twice"),
        ("safety:\n  - 爆炸\n  -\n", 3, "must be a string"),
        ('safety:\n  - ""\n', 2, "empty sensitive term"),
        ("safety:\n  - term: 中毒\n    exept: [电脑中毒]\n", 3, "unknown key 'exept'"),
        ("safety:\n  - except: [电脑中毒]\n", 2, "needs `term:`"),
        ("safety:\n  - term: 中毒\n    except: 电脑中毒\n", 3, "must be a list of strings"),
        ("safety:\n  - term: 中毒\n    except:\n      - [电脑中毒]\n", 4, "must be a list of strings"),
        ("legal:\n  - 起诉\n  - 告(你们\n", 3, "not a valid regex"),
        ("safety:\n  - term: 中毒\n    except:\n      - 电脑(中毒\n", 2, "exception '电脑(中毒'"),
        ("safety:\n  - term: 中毒\n    except:\n      - 电脑病毒\n", 2, "does not contain the term"),
        ("safety:\n  - term: 中毒\n    except:\n      - ''\n", 2, "empty exception"),
    ],
    ids=[
        "yaml",
        "top-level-list",
        "group-not-list",
        "duplicate-group",
        "null-term",
        "empty-term",
        "unknown-key",
        "no-term",
        "except-not-list",
        "except-item-not-string",
        "bad-term-regex",
        "bad-except-regex",
        "except-without-term",
        "empty-except",
    ],
)
def test_bad_yaml_is_a_config_error_with_file_and_line(tmp_path, text: str, line: int, message: str):
    p = _yaml(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        SensitiveDetector.from_file(p)
    assert str(info.value).startswith(f"{p}:{line}: ")
    assert message in str(info.value)


def test_yaml_that_is_not_utf8_is_a_config_error(tmp_path):
    p = tmp_path / "sensitive.yaml"
    p.write_bytes("safety:\n  - 爆炸\n".encode("gbk"))
    with pytest.raises(ConfigError, match="UTF-8"):
        SensitiveDetector.from_file(p)


def test_empty_yaml_error_names_the_file(tmp_path):
    p = _yaml(tmp_path, "safety:\n")
    with pytest.raises(ConfigError, match="empty") as info:
        SensitiveDetector.from_file(p)
    assert str(p) in str(info.value)


def _one_by_one(detector: SensitiveDetector, norm: str) -> str | None:
    """Oracle: every term on its own, in order, as the detector did before its union search."""
    for term in detector._terms:
        if term.hits(norm):
            return term.group
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
