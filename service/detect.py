"""Rule detectors read normalised text before retrieval (the route stage, ``service/pipeline/route.py``):
human requests, greetings and closings; and the gate for short follow-ups that need the session's
previous question (the prepare stage). Sensitive topics: ``service/sensitive.py``."""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable

from indexer.normalize import normalize

# A value the platform masked before the chat reached us ([数字x], [链接x], 【订单123】): the
# chat widget's placeholders, read by the order rules (service/orders.py) too.
MASKED = r"[\[【][^\[\]【】\s]{1,12}[\]】]"

# Words for "a person" (with the typos and homophones shoppers type: 仁工, 人共, 人宫).
_HUMAN_WORD = r"(?:人工|仁工|人共|人宫|人弓|人公|ren ?工|人 ?gong|真人|活人|人工坐席|坐席|人类)"
# What follows such a word when it names a thing or a process, not a person: 人工费, 人工智能,
# 人工草坪, 人工审核, 真人秀, 真人图, 真人发 (wigs of human hair). Every pattern uses it.
_NOT_A_PERSON = (
    r"(?!费|智能|成本|审核|审批|复核|草|湖|降雨|增雨|授粉|繁育|养殖|种植|培育|合成|晶体|关节|耳蜗|心脏|骨|牙|"
    r"呼吸|皮|钻|宝石|水晶|花|造|制|染|秀|版|图|照|实拍|拍摄|试穿|上身|模特|cs|尺寸|比例|大小|头?发|娃娃|手办|视频)"
)
_HUMAN = rf"{_HUMAN_WORD}{_NOT_A_PERSON}"
# What follows "人工" when a shopper asks *about* the queue or opening hours, not for a person.
_NOT_A_REQUEST_AFTER = r"(?!服务费|客服?(?:排|要等|等多久|几点|什么时候|上班|下班|时间))"
# Particles and punctuation up to the end of the message: 人工? / 人工？？ / 人工吗 / 真人呢~
_TO_END = r"[\s!！?？。，,.~～…呢吗嘛么啊呀吧哦啦]*$"
# After a leading 人工: a pause, the end, or the order number / order card pasted right after it
# (人工 [订单x], 人工订单号123456789: normalisation removes the space between Han characters).
_AFTER_OPENING = r"(?:[!！?？。，,.:：;；~～…\s\[【(（]|$|\d|订单(?:编?号)?[:：是]?\s*[\[【\d]|单号)"
_REQUEST_PATTERNS = [
    # not after 自动: 小蜜回答不了会自动转人工吗 asks how the service works, an article answers it
    rf"(?<!自动)(?:转|專|专|传|接|找|要|叫|换|给我|帮我|请|麻烦|让|安排|求|上|来个?)\s*(?:个|一下|到|一个|给)?\s*{_HUMAN}{_NOT_A_REQUEST_AFTER}",
    rf"^{_HUMAN}(?:客服|服务)?{_AFTER_OPENING}",
    rf"^(?:{_HUMAN})+{_TO_END}",
    rf"(?:有没有|有无|还有没有|喂喂?有没有|在不在)\s*(?:个)?\s*{_HUMAN}",
    # anchored: 早上七点有人工没 asks about opening hours
    rf"^(?:现在)?有\s*{_HUMAN}(?:客服|服务)?\s*(?:吗|么|没有?){_TO_END}",
    rf"{_HUMAN}(?:客服|服务)?\s*(?:呢|在哪|在吗|在么|在不在|快来|来|出来)",
    # the whole message: 人工客服帮我把快递查回来了 is praise, not a request
    rf"^{_HUMAN}(?:客服|服务)?\s*(?:介入|帮忙|帮帮我)(?:一下)?{_TO_END}",
    # 客服 alone (客服在吗, 客服你好) is how shoppers open any chat, with the bot too, so it is a
    # greeting; it asks for a person only with a verb that hands the chat over: 转客服, 我要找客服.
    r"转接?\s*(?:一下|个|到|给)?\s*(?:你们的?)?客服(?!电话|热线|号码|邮箱|时间|几点|上班|下班|排)",
    rf"^我?(?:(?:要|想要|需要)找?|想?找)(?:个|一下)?客服{_TO_END}",
    r"(?:别|不要|不想|不跟|不和|不用)\s*(?:让|用|拿)?\s*(?:你|这个)?\s*(?:再)?\s*(?:和|跟|同)?\s*(?:机器人?|智能客服|自动回复|小蜜|ai|程序)",
    # the bot told to stop (机器人别回了, 自动回复不要再发了)
    r"(?:机器人|智能客服|自动回复)\s*(?:你)?\s*(?:别|不要|不用)\s*(?:再)?\s*(?:回|说|答|发)",
    # a person to talk to, said as a want (我要跟人说话, 想找个真人聊): not 跟人聊天被骗了, a story
    r"(?:要|想|让我)\s*(?:跟|和|找)\s*(?:个)?\s*(?:真|活)?人\s*(?:说话|聊|谈|沟通|对话|讲)",
    # the same with the person named (我要跟真人说, 想和人工客服沟通)
    rf"(?:要|想|让我)\s*(?:跟|和|同)\s*{_HUMAN}(?:客服)?\s*(?:说话?|聊|谈|沟通|对话|讲)",
    # reaching a person as an act (联系人工, 接通人工, 召唤人工, 可以人工吗, 人工快点)
    rf"(?:联系|接通|召唤|呼叫)\s*(?:一下|个)?\s*{_HUMAN}",
    rf"^(?:可以|能|能不能|可不可以)(?:转)?{_HUMAN}(?:客服|服务)?(?:吗|么|不|没)?{_TO_END}",
    rf"^{_HUMAN}(?:客服)?\s*快点?{_TO_END}",
    # the whole message a call for the service (客服客服, 在线客服): one 客服 alone stays a greeting
    rf"^(?:(?:客服){{2,}}|在线(?:客服|人工))(?:客服|人工)?{_TO_END}",
    r"(?:换|找|叫)\s*(?:个|一个|你们的?)?\s*(?:人|客服)\s*(?:来|跟我|和我|出来)",
    r"(?:找|叫|让)\s*(?:你们|你们的)?\s*(?:客服)?\s*(?:主管|经理|领导|负责人|店长|值班的?(?:客服|经理))",
    r"转(?:给|到)\s*(?:你们的?)?(?:值班)?(?:经理|主管|领导|负责人)",
    # someone to call back or to take the case (打电话给我吧, 能安排人回电吗, 安排专人跟我对接)
    rf"(?<!帮)(?<!帮我)打电话给我(?:吧|好吗|行吗|可以吗|{_TO_END})|回(?:个|一个)?电话(?:给我)?吧|安排(?:个|一个|一位)?(?:人|专人|专员|客服)\s*"
    r"(?:给我)?(?:回电|回个?电话|跟我|和我|联系我|对接)|(?:让|叫)(?:你们的?)?客服(?:给我)?回(?:个|一个)?电话",
    # a person asked for bare (来个人!, 给我个人, 找个懂的人来, 我要找人说, 到底有没有人管)
    rf"来(?:个|一个)(?:活|真)?人(?:看看?|处理|回答)?(?:一?下)?{_TO_END}|给我(?:个|一个)(?:活|真)?人{_TO_END}"
    r"|找(?:个|一个)(?:懂的|懂行的|能做主的|管事的|明白的?|靠谱的)人来|我(?:要|想)找(?:个)?人(?:说|聊|谈)?"
    + _TO_END
    + r"|有没有人(?:管|理我?|处理|回我?)|真人(?:的)?那种",
    rf"(?:到底)?有没有人(?:在)?{_TO_END}|找(?:个|一个)(?:真|活)?人(?:来)?(?:处理|看看?|回答|解决)?(?:一?下)?{_TO_END}"
    r"|(?:叫|找|来)(?:个|一个)?(?:管事|能做主|负责)的|有没有(?:活的|值班的(?:人|客服))",
    rf"我要(?:真|活)?人{_TO_END}",
    rf"^(?:快点?)?(?:给我)?换(?:个)?人{_TO_END}|叫不(?:出|到)人|来(?:个|一个|一位)?(?:负责人|领导|主管|经理)|(?:你们的?)?(?:领导|主管|经理|负责人)呢",
    r"转(?:个|一个)?(?:工作人员|客服人员|专员)|转给[^,.!?;]{0,4}(?:同事|工作人员|客服人员|专员)|叫(?:个|一个)?小二",
    r"请(?:一位|个|一个)?(?:客服人员|工作人员)|(?:和|跟)(?:你们的?)?(?:员工|工作人员)(?:沟通|说|聊|谈)",
    rf"^(?:(?:客服|小二)\s*)+(?:你)?(?:快)?出来(?:一下)?{_TO_END}",
    r"让(?:个|一个)?(?:真|活)?人来|(?:让|叫)[^,.!?;]{0,6}的人(?:直接)?(?:联系我|给我打电话|打给我|回电)",
    r"^(?:请|麻烦)?(?:你们?)?给我打(?:个|一个)电话",
    r"(?:要|想)(?:和|跟)(?:你们的?)?(?:主管|经理|领导|负责人|店长)(?:通电话|通话|说|谈|沟通|讲)",
    rf"{_HUMAN}(?:客服)?\s*(?:处理|看|帮我看|帮我处理)(?:一下|下){_TO_END}",
    r"\b(?:human|real (?:person|human)|live agent|agent please)\b",
    r"\b(?:talk|speak) to (?:an? )?(?:person|agent|human|representative)\b",
    r"^(?:rg|zrg|转rg)$|\b(?:zhuan ?)?ren ?gong\b",
    # a numbered agent (帮我转[数字x]号客服, 转3号客服): the chat widget's masking keeps the 号
    rf"转接?\s*(?:到|给)?\s*(?:\d+|{MASKED})\s*号\s*(?:客服|人工)",
    # asking whether a person has taken over (是人工吗, 是到人工客服了么?): the whole message
    rf"^是(?:不是)?(?:转?到)?了?{_HUMAN}(?:客服|服务)?了?{_TO_END}",
    # the whole message asks where the people are (人呢, 客服呢?, 人都去哪了): to a bot, a call for a person
    r"^(?:(?:你们的?)?(?:客服的?人|人|客服|小二)都?(?:呢|去哪(?:了|儿了)?|哪去了|跑哪去了)[\s!！?？。，,.~～…]*){1,3}$",
]
_REQUEST = re.compile("|".join(f"(?:{p})" for p in _REQUEST_PATTERNS))
# The bot told it has failed (说人话, 答非所问, 机器人听不懂): what a shopper says before giving up on
# it, so a person. Unless the KB itself answers such talk (a voice assistant's 我说话你都听不懂 entry:
# ``runtime.kb_small_talk``).
_BOT_FAILED = re.compile(
    r"说人话|答非所问|牛头不对马嘴|听不懂人话|(?:你|机器人|智能客服)\s*(?:根本|都|是不是)?\s*(?:听不懂|看不懂)"
)

_PUNCT = re.compile(r"[\s\W_]+", re.UNICODE)
# Particles and filler that carry no request: stripped before matching greetings.
_PARTICLES = re.compile(r"[呀啊哈呢吧嘛哦喔噢哇啦滴的亲了嗯~～]+")
_HELLO = (
    r"你好|您好|hi|hello|hey|there|哈喽|哈啰|哈罗|嗨|午安|晚安|在吗|在么|在不在?|有人吗|有人在吗|有人么|有人在么|有人没有?"
    r"|有没有人在?|早|早上好|上午好|中午好|下午好|晚上好|goodmorning|goodafternoon|goodevening|在"
)
_THANKS = (
    r"(?:谢谢|多谢|感谢|感恩|辛苦)(?:你们?|您)?(?:的?(?:耐心)?(?:解答|帮助|帮忙|回复|服务))?|麻烦(?:你们?|您)"
    r"|谢了|谢啦|谢喽|谢咯|3q|3ks|thx|thanks|thankyou|thank|ty|好的|好嘞|好滴|好哒|好叻|好"
    r"|(?:我|那我)?(?:明白了|明白|知道了|知道啦|了解了|晓得了|懂了)|晓得|ok+|okay"
    r"|收到|辛苦了|拜拜|再见|bye|不客气|客气|没关系|么么哒"
)
# How a chat ends or a shopper only acknowledges (没有了 to 还有什么可以帮您, 好吧, 你忙吧, 我看下, 嗯嗯):
# nothing to answer and nothing for a person to pick up. Bare 没有 ("no") answers a question and is
# left to the other rules; 没有 before thanks (没有，谢谢) ends the chat.
_CLOSING = (
    r"没有了|没了|没有啦|没啦|木有了|没有别的了|没别的了|没有别的问题了|没其他事了|没别的事了|没事了|没问题了|暂时没有了"
    r"|暂时没了|不用了|不需要了|先这样|就这样|那就这样|打扰了|打扰啦|麻烦了|麻烦你了|麻烦您了|你忙吧|您忙吧|好吧|那好吧|行吧|行"
    r"|可以了|我看下|我看看|我试试|我先试一?下|试一?下|试试看?|再看看|再说|稍等|等下|嗯+|恩+|哦+|噢+|没有(?=谢|多谢|感谢)"
    r"|那行|那好|行的|解决了|搞定了|(?:那)?(?:我)?再等等|等等吧"
    r"|祝(?:你|您)?[^,.!?;]{0,6}?(?:愉快|快乐|顺利)"  # 祝您工作愉快, 祝你生活愉快, 祝您节日快乐
)
# Each word may trail particles (没有了呢, 好的呀, 谢谢啊).
_TRAIL = r"[呀啊哈呢吧嘛哦喔噢哇啦滴的亲了嗯~～]*"
_GREETING_CORE = re.compile(rf"^(?:(?:{_HELLO}|{_THANKS}|{_CLOSING}){_TRAIL})+$")
_CLOSING_CORE = re.compile(rf"^(?:(?:{_THANKS}|{_CLOSING}){_TRAIL})+$")
# How a shopper addresses the chat (客服你好, 掌柜的在吗, 谢谢老板): part of a greeting or a thanks, left
# out before its words are matched. Alone, a call is a greeting too (亲, 客服, 小二, 掌柜的, 老板, 店家:
# 客服 alone was answered from the KB's English-support entry); 卖家 or 商家 alone may name a topic,
# and 客服客服 asks for a person.
_FORMS_OF_ADDRESS = r"客服|小二|小蜜|掌柜的?|老板|店家"
_ADDRESS = re.compile(rf"{_FORMS_OF_ADDRESS}|卖家|商家")
# (no 呢 after it: 客服呢, 小二呢 ask where the people are)
_CALL = re.compile(rf"^(?:亲+|{_FORMS_OF_ADDRESS}){_TRAIL.replace('呢', '')}$")
_GREETING_WORDS = r"你好|您好|hi|hello|哈喽|嗨|在吗|在么|在不在|请问一下|请问|问一下|问下|打扰一下|麻烦问下"
_GREETING_TAIL = r"[呀啊哈呢~～,，。!！?？\s]"
# Greetings go with whatever follows them; a form of address (亲, 客服, 小蜜, 小二, 老板 …) only when a
# pause or another greeting follows it. Otherwise it is the subject of the question: 客服电话多少,
# 小蜜是啥, 客服说价格挂错了 must keep it.
_GREETING_PREFIX = re.compile(
    rf"^(?:(?:{_GREETING_WORDS}){_GREETING_TAIL}*|(?:亲|{_FORMS_OF_ADDRESS})(?:{_GREETING_TAIL}+|(?={_GREETING_WORDS})))"
)
_FOLLOWUP = re.compile(r"^(?:那|那么|那要是|要是|如果|还有|另外|然后|其他的?|可是|但是|那如果)")
# Pronouns and demonstratives that point back at the previous message ('这样改的话要另外掏钱吗').
_ANAPHORA = re.compile(r"这样|这个|那个|这种|那种|这笔|那笔|这单|那单|他|她|它")
# Longer messages carry their own context. 12 missed dev follow-ups of 13–16 characters; at 20,
# with the anaphora above, the gate fires for 12 of dev's 15 follow-ups (4 before).
FOLLOWUP_MAX_CHARS = 20


_LEADING_MASKED = re.compile(rf"^(?:{MASKED}\s*)+")  # masked or pasted ahead: [链接x] 人工, [数字x] 转人工


def is_bot_failure(norm: str) -> bool:
    """The shopper tells the bot it has failed them (说人话, 你听不懂吗): a request for a person."""
    return bool(_BOT_FAILED.search(norm))


def is_user_request(norm: str, typed: str | None = None) -> bool:
    """Does the shopper ask for a human agent? ``norm`` must already be normalised; ``typed`` is
    the message as typed, when the caller has it.

    A greeting in front is looked past (你好人工), and so are masked values ([链接x] 人工). Chat
    windows join what was typed in several goes with spaces (看中商品 人工, 人工 你好), which
    normalising erases: with ``typed``, its last go is asked alone, and its first when a greeting or
    another call follows. A request amid keywords is a topic (排队 人工 等待时长, 人工 解决不了 升级)."""
    if _asks_person(norm):
        return True
    if typed is None or not _HUMAN_TYPED.search(typed):
        return False
    parts = [p for p in _TYPED_BREAK.split(typed) if p.strip()]
    if len(parts) < 2:
        return False
    first, second, last = (normalize(p) for p in (parts[0], parts[1], parts[-1]))
    return _asks_person(last) or (_asks_person(first) and (is_greeting(second) or _asks_person(second)))


def _asks_person(norm: str) -> bool:
    if _REQUEST.search(norm) or _REQUEST.search(strip_greeting(norm)):
        return True
    bare = _LEADING_MASKED.sub("", norm)
    return bare != norm and bool(_REQUEST.search(bare))


# Where a typed message breaks into its goes, and a cheap check that one could name a person at all.
_TYPED_BREAK = re.compile(r"[\s,，.。!！?？;；~～…]+")
_HUMAN_TYPED = re.compile(
    r"人工|仁工|人共|人宫|真人|活人|坐席|客服|人都?(?:呢|去哪|哪去|跑哪)|换个?人|(?:来|找)(?:个|一个)人"
)


@functools.lru_cache(maxsize=8)
def _greeting_keys(extra: tuple[str, ...]) -> frozenset[str]:
    """The configured greetings, reduced like a message is (computed once per list)."""
    return frozenset(_PARTICLES.sub("", _PUNCT.sub("", normalize(x))) for x in extra)


def _reduced(norm: str) -> tuple[str, str]:
    """(bare, core) of a message as the greeting words are matched: a pasted link or number ahead
    and punctuation gone (bare), then particles too (core)."""
    bare = _PUNCT.sub("", _LEADING_MASKED.sub("", norm))
    return bare, _PARTICLES.sub("", bare)


def _all_words(pattern: re.Pattern[str], norm: str, configured: Iterable[str] = ()) -> bool:
    """The message is nothing but ``pattern``'s words, and perhaps a form of address (客服你好), or
    one of the ``configured`` phrases. Matched before and after dropping particles: 哈 is a particle
    in 好哈 but part of 哈喽."""
    bare, core = _reduced(norm)
    if not bare:
        return False
    if pattern.match(bare) or (core and pattern.match(core)):
        return True
    unaddressed = _ADDRESS.sub("", core)
    if unaddressed != core and unaddressed and pattern.match(unaddressed):
        return True
    return bool(core) and core in _greeting_keys(tuple(configured))


def is_greeting(norm: str, extra: Iterable[str] = ()) -> bool:
    """A message that is only a greeting or thanks (no question in it), or a call alone (亲, 客服);
    a link or a number the chat pasted ahead of it ([链接x] 你好 在吗) does not make it a question."""
    return _all_words(_GREETING_CORE, norm, extra) or bool(_CALL.match(_reduced(norm)[0]))


def is_closing(norm: str, thanks: Iterable[str] = ()) -> bool:
    """A greeting (``is_greeting``) that only thanks, acknowledges or ends the chat: it gets a
    closing reply, not the greeting's invitation to ask. ``thanks``: the KB's own (greetings.yaml)."""
    return _all_words(_CLOSING_CORE, norm, thanks)


# The pictographs that say OK (👌, 👍, 🆗, with any skin tone); a row of 😂 or 🙏 says something else.
_OK_EMOJI = frozenset("👌👍🆗")


def is_ok_emoji(text: str) -> bool:
    """A message of OK pictographs alone (👌, 👍🏻): an acknowledgement, not an empty message."""
    marks = [ch for ch in text if not ch.isspace() and unicodedata.category(ch) not in ("Sk", "Mn", "Cf")]
    return bool(marks) and all(ch in _OK_EMOJI for ch in marks)


def strip_greeting(norm: str) -> str:
    """Drop a leading greeting/politeness prefix so retrieval sees the question ('你好，怎么退款')."""
    out = norm
    for _ in range(3):
        new = _GREETING_PREFIX.sub("", out)
        if new == out:
            break
        out = new
    return out or norm


def is_followup(norm: str) -> bool:
    """A message that may continue the previous question: very short ('运费呢'), or short and
    opening like a follow-up ('那运费呢') or pointing back ('这样改的话要另外掏钱吗'). Only a gate:
    retrieval still checks that the context helps (``service.pipeline.retrieve.prefers_context``)."""
    if len(norm) <= 6:
        return True
    return len(norm) <= FOLLOWUP_MAX_CHARS and bool(_FOLLOWUP.match(norm) or _ANAPHORA.search(norm))
