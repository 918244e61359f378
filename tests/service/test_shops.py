"""Shops as tenants on both vector stores: registry, builds, answers with the platform, routes, isolation,
and loading a shop (the pack, shared anchors, the memory-bounded LRU)."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import service.selfcal
from indexer.store import IndexStore, write_calibration
from indexer.vectorstore import VectorStoreKind
from kb.errors import ConfigError, IndexStateError, KBError, NotFoundError
from kb.settings import Settings
from service.runtime import Runtime
from service.shops import Shops
from service.shops_answer import ShopDesk
from service.shops_merge import PLATFORM_TERMS, Route
from service.shops_tickets import ShopTickets
from tests.fakes import FAKE_CAL
from tests.service.conftest import ENTRIES, GOODS, TOPICS, write_shop_kb


@pytest.fixture(params=[VectorStoreKind.FAISS, VectorStoreKind.MILVUS], ids=lambda k: k.value)
def shop_settings(request: pytest.FixtureRequest, tiny_settings: Settings, tiny_index) -> Settings:
    if request.param is VectorStoreKind.MILVUS:
        pytest.importorskip("milvus_lite")
    write_calibration(IndexStore(tiny_settings.index_home).current_path(), FAKE_CAL.to_json())
    return tiny_settings.with_overrides(vector_store=request.param.value)


@pytest.fixture
def shops(shop_settings: Settings, fake_encoder, monkeypatch: pytest.MonkeyPatch) -> Iterator[Shops]:
    # The fake encoder's cosines are not the real model's: shops get the fake-encoder thresholds
    # instead of a self-calibration (which is tested with the real model in test_selfcal).
    monkeypatch.setattr(
        service.selfcal, "build_calibrator", lambda *a, **k: lambda index: (FAKE_CAL.to_json(), "fake calibration")
    )
    s = Shops(shop_settings, fake_encoder)
    yield s
    s.close()


@pytest.fixture
def desk(shops: Shops, shop_settings: Settings, fake_encoder, tmp_path: Path):
    rt = Runtime.create(shop_settings, encoder=fake_encoder)
    d = ShopDesk(
        shops,
        fake_encoder.encode_queries,
        ShopTickets(rt.tickets),
        capacity=4,
        model_id=fake_encoder.model_id,
        dim=fake_encoder.dim,
    )
    d.warm_up()
    return d, rt.answerer()


def add_shops(shops: Shops, root: Path, n: int) -> list[str]:
    ids = []
    for i in range(n):
        shop = f"shop-{i}"
        shops.add(shop, write_shop_kb(root / shop, shop, GOODS[i % len(GOODS)]))
        ids.append(shop)
    return ids


# --- the registry and builds ------------------------------------------------------------------------
def test_add_list_rebuild_rollback_remove(shops: Shops, tmp_path: Path) -> None:
    kb = write_shop_kb(tmp_path / "acme", "acme", "跑鞋")
    built = shops.add("acme", kb)
    assert built.entries == ENTRIES and built.vectors == ENTRIES * 4  # question, 2 alternatives, answer
    assert "calibration" in built.calibration
    rec = shops.registry.require("acme")
    assert rec.build_id == built.build_id and rec.store == shops.kind.value
    store = shops.store(rec.dim)
    assert store.count("acme", built.build_id) == built.vectors

    again = shops.rebuild("acme", force=True)
    assert again.build_id != built.build_id
    assert shops.registry.require("acme").build_id == again.build_id
    assert store.count("acme", built.build_id) == built.vectors  # kept for rollback
    assert shops.rollback("acme") == built.build_id
    assert shops.registry.require("acme").build_id == built.build_id

    shops.remove("acme")
    assert shops.registry.get("acme") is None
    assert store.count("acme") == 0
    assert not (shops.home / "acme").exists()


def test_bad_input_changes_nothing(shops: Shops, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="safe slug"):
        shops.add("Acme Shop", write_shop_kb(tmp_path / "x", "x", "茶叶"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(KBError, match="fails `kefu kb check`"):
        shops.add("empty", empty)
    assert shops.registry.get("empty") is None
    with pytest.raises(NotFoundError, match="kefu shops add nope"):
        shops.rebuild("nope")
    shops.add("acme", write_shop_kb(tmp_path / "acme", "acme", "跑鞋"))
    with pytest.raises(ConfigError, match="exists"):
        shops.add("acme", write_shop_kb(tmp_path / "acme2", "acme", "跑鞋"))


def test_failed_rebuild_keeps_the_last_good_build_serving(
    shops: Shops, desk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d, platform = desk
    kb = write_shop_kb(tmp_path / "acme", "acme", "跑鞋")
    good = shops.add("acme", kb).build_id
    write_shop_kb(kb, "acme", "跑鞋", entries=ENTRIES + 3)  # the KB changed

    def down(*args: object, **kwargs: object) -> None:
        raise IndexStateError("Milvus at x failed to store vectors: connection refused")

    monkeypatch.setattr(shops.store(shops.registry.require("acme").dim), "upsert", down)
    with pytest.raises(IndexStateError, match="failed to store"):
        shops.rebuild("acme")
    assert shops.registry.require("acme").build_id == good
    a = d.answer(platform, "跑鞋3号能不能开发票？", "acme")
    assert a.trace["shop_build"] == good and a.decision == "answer"


# --- answering for a shop ----------------------------------------------------------------------------
def test_shop_answers_carry_their_owner_and_the_platform_still_answers(shops: Shops, desk, tmp_path: Path) -> None:
    d, platform = desk
    shops.add("acme", write_shop_kb(tmp_path / "acme", "acme", "跑鞋"))
    own = d.answer(platform, "跑鞋5号有没有赠品？", "acme")
    assert own.decision == "answer"
    assert own.answers[0].id == "acme-5" and own.answers[0].source.owner == "shop"
    assert own.trace["lead"] == "shop" and set(own.trace["sides"]) == {"shop", "platform"}
    help_center = d.answer(platform, "七天无理由退货需要满足什么条件？", "acme")
    assert help_center.decision == "answer"
    assert help_center.answers[0].id == "refund-seven-day" and help_center.answers[0].source.owner == "platform"
    with pytest.raises(NotFoundError, match="no shop 'ghost'"):
        d.answer(platform, "你好", "ghost")


def test_handoff_routes_and_tickets(shops: Shops, desk, tmp_path: Path) -> None:
    d, platform = desk
    shops.add("acme", write_shop_kb(tmp_path / "acme", "acme", "跑鞋"))
    person = d.answer(platform, "转人工", "acme")
    assert (person.decision, person.reason, person.handoff.route) == ("handoff", "user_requested", "shop")
    dispute = d.answer(platform, "卖家不同意退款，我要平台介入", "acme")
    assert dispute.decision == "handoff" and dispute.handoff.route == "platform"
    tickets = d.tickets.list(10, shop="acme")
    assert {t.ticket.id for t in tickets} >= {person.handoff.ticket_id, dispute.handoff.ticket_id}
    assert {t.route for t in tickets if t.ticket.id == dispute.handoff.ticket_id} == {"platform"}
    # a seller writing into a shop's chat is the platform's to serve, as a dispute is
    seller = d.answer(platform, "我们店铺想入驻，找谁", "acme")
    assert (seller.decision, seller.reason, seller.handoff.route) == ("handoff", "merchant", "platform")
    assert all(t.shop == "acme" for t in tickets)
    assert d.tickets.list(10, shop="other") == []


@pytest.mark.parametrize("text", ["我要投诉商家", "这是假货", "申请官方介入", "平台客服在吗"])
def test_platform_terms(text: str) -> None:
    assert PLATFORM_TERMS.search(text)
    assert Route.PLATFORM.value == "platform"


def test_lru_reloads_evicted_and_rebuilt_shops(shops: Shops, desk, tmp_path: Path) -> None:
    d, platform = desk
    ids = add_shops(shops, tmp_path, 6)
    for shop in ids:
        d.answer(platform, "多久发货", shop)
    assert d.loaded() == 4  # the desk's capacity
    new = shops.rebuild("shop-0", force=True).build_id
    assert d.answer(platform, "跑鞋1号多久发货？", "shop-0").trace["shop_build"] == new


def test_isolation_over_10000_random_pairs(shops: Shops, desk, tmp_path: Path) -> None:
    """Every answer, clarify choice, suggestion and candidate of a shop is its own entry or the
    platform's, never another shop's, over 10,000 random (shop, query) pairs whose queries come
    from every shop's questions (so the nearest entry overall is usually another shop's). On
    Milvus Lite, where a round trip costs milliseconds, 1,000 pairs go through the whole answer
    and all 10,000 through the store search the answers are made of."""
    d, platform = desk
    d.capacity = 16
    ids = add_shops(shops, tmp_path, 8)
    entries = {shop: {f"{shop}-{i}" for i in range(ENTRIES)} for shop in ids}
    questions = [
        f"{GOODS[i % len(GOODS)]}{j}号{TOPICS[j % len(TOPICS)]}{tail}"
        for i in range(len(ids))
        for j in range(ENTRIES)
        for tail in ("", "？", "呢")
    ]
    rng = random.Random(25)
    pairs = [(rng.choice(ids), rng.choice(questions)) for _ in range(10_000)]
    whole = pairs if shops.kind is VectorStoreKind.FAISS else pairs[:1_000]
    crossed = []
    for shop, q in whole:
        a = d.answer(platform, q, shop)
        for item in [*a.answers, *a.suggestions]:
            if item.source.owner == "shop" and item.id not in entries[shop]:
                crossed.append((shop, q, item.id))
        for c in a.trace.get("candidates", []):
            if c["id"].startswith("shop-") and c["id"] not in entries[shop]:
                crossed.append((shop, q, c["id"]))
    # the store level, all pairs: every row a shop's search returns is a row of its own build
    vecs = fake_vectors(d, [q for _, q in pairs])
    for shop in ids:
        rec = shops.registry.require(shop)
        mine = [i for i, (s, _) in enumerate(pairs) if s == shop]
        hits = shops.store(rec.dim).search(shop, rec.build_id, vecs[mine], rec.vectors + 50)
        assert all(len(h) == rec.vectors for h in hits)
        assert all(0 <= x.row < rec.vectors for h in hits for x in h)
    assert crossed == []


def fake_vectors(d: ShopDesk, texts: list[str]) -> np.ndarray:
    unique = sorted(set(texts))
    table = dict(zip(unique, d.encode.encode(unique), strict=True))
    return np.stack([table[t] for t in texts])


# --- loading a shop: the pack, shared anchors, the memory-bounded LRU -------------------------------------
def test_pack_loads_the_same_index_as_the_json_files(shops: Shops, desk, tmp_path: Path) -> None:
    from indexer.vectorstore_index import PACK_FILE, StoreIndex, read_pack
    from service.shops_load import PackedSpeller
    from service.speller import Speller

    d, platform = desk
    shops.add("acme", write_shop_kb(tmp_path / "acme", "acme", "跑鞋"))
    rec = shops.registry.require("acme")
    folder = shops.folder(rec)
    assert (folder / PACK_FILE).is_file()  # written with the build, before the registry named it
    store = shops.store(rec.dim)
    slow = StoreIndex.open(folder, store, "acme")
    pack = read_pack(folder)
    assert pack is not None
    fast = StoreIndex.from_pack(pack, folder, store, "acme")
    assert fast.chunks == slow.chunks and fast.entries == slow.entries and fast.doc_units == slow.doc_units
    assert fast.manifest == slow.manifest and fast.anchor_labels == slow.anchor_labels
    assert np.array_equal(fast.anchors, slow.anchors)
    rng = np.random.default_rng(3)
    queries = ["跑鞋5号有没有赠品", "请问跑鞋12号怎么保养呢", "多久发货", "发票", "xyz", "", "跑"]
    for q in queries:
        assert np.allclose(fast.lexical.scores(q), slow.lexical.scores(q), rtol=0, atol=1e-12)
        a, b = fast.lexical_evidence(q), slow.lexical_evidence(q)
        for field in ("bm25", "unit", "rank", "cover_rows", "cover_unit", "jaccard"):
            assert np.allclose(getattr(a, field), getattr(b, field), rtol=0, atol=1e-12), (q, field)
        qvec = rng.normal(size=rec.dim).astype(np.float32)
        pa, pb = fast.candidate_pool(qvec, q, 10), slow.candidate_pool(qvec, q, 10)
        assert [u.unit_id for u in pa.units] == [u.unit_id for u in pb.units]
        assert np.allclose(pa.x, pb.x, rtol=0, atol=1e-6)
    texts = slow.norm_texts
    packed = PackedSpeller(pack.extras["speller_pairs"], pack.extras["speller_counts"], frozenset({"保养"}))
    plain = Speller(texts, ["保养"])
    assert packed._after == plain._after and packed._before == plain._before
    assert packed._spelt == plain._spelt and plain._spelt  # words typed in pinyin, read the same way
    for text in ["跑鞋5号怎么保养", "跑鞋5号怎么保痒", "多久发活", "能不能开发漂", *texts[:20]]:
        assert packed.correct(text) == plain.correct(text), text
    # the desk answers the same from the pack as from the JSON files
    first = d.answer(platform, "跑鞋5号有没有赠品？", "acme")
    whole = (folder / PACK_FILE).read_bytes()
    (folder / PACK_FILE).write_bytes(whole[: len(whole) // 2])  # truncated: loaded the slow way, rewritten
    assert read_pack(folder) is None
    d._loaded.clear()
    d.answer(platform, "跑鞋5号有没有赠品？", "acme")
    assert (folder / PACK_FILE).read_bytes() == whole
    (folder / PACK_FILE).write_bytes(b"not a pack")  # a foreign file: the same
    d._loaded.clear()
    again = d.answer(platform, "跑鞋5号有没有赠品？", "acme")
    assert read_pack(folder) is not None
    assert [(i.id, round(i.score, 6)) for i in again.answers] == [(i.id, round(i.score, 6)) for i in first.answers]
    assert again.decision == first.decision and again.trace["confidence"] == first.trace["confidence"]


def test_anchors_are_shared_and_the_lru_holds_what_its_budget_allows(shops: Shops, desk, tmp_path: Path) -> None:
    d, platform = desk
    ids = add_shops(shops, tmp_path, 5)
    d.capacity = None
    for shop in ids:
        d.answer(platform, "多久发货", shop)
    loaded = [d._loaded[s].answerer.index for s in ids]
    assert all(ix.anchors is loaded[0].anchors for ix in loaded)  # one copy for every shop
    each = max(v.nbytes for v in d._loaded.values())
    assert d.loaded_bytes() == sum(v.nbytes for v in d._loaded.values())
    d.budget = 2 * each + each // 2
    d._loaded.clear()
    d._bytes = 0
    for shop in ids:
        d.answer(platform, "多久发货", shop)
    assert d.loaded() == 2 and d.loaded_bytes() <= d.budget
    assert list(d._loaded) == ids[-2:]  # the least recently asked went first
    d.budget = 1  # below one shop: the shop being asked still answers
    assert d.answer(platform, "跑鞋1号多久发货？", "shop-0").decision in ("answer", "clarify", "handoff")
    assert d.loaded() == 1


def test_shop_capacity_is_kefu_shop_cache_only_when_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from service.shops_answer import SHOP_MEMORY_CAP, memory_budget, shop_capacity

    monkeypatch.delenv("KEFU_SHOP_CACHE", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env here
    assert shop_capacity(Settings().with_overrides(data_dir=tmp_path)) is None
    assert shop_capacity(Settings(shop_cache=40)) == 40
    monkeypatch.setenv("KEFU_SHOP_CACHE", "256")
    assert shop_capacity(Settings().with_overrides(data_dir=tmp_path)) == 256
    assert 0 < memory_budget() <= SHOP_MEMORY_CAP


def test_preload_fills_the_lru_up_to_its_bounds(shops: Shops, desk, tmp_path: Path) -> None:
    d, platform = desk
    ids = add_shops(shops, tmp_path, 5)
    d.capacity = 3
    assert d.preload(platform, pace=0) == 3 and d.loaded() == 3
    d.capacity = None
    assert d.preload(platform, pace=0) == 2 and set(d._loaded) == set(ids)
    assert d.preload(platform, pace=0) == 0  # nothing left to load
    shops.rebuild("shop-1", force=True)
    assert d.preload(platform, pace=0) == 1  # the rebuilt shop's new build
    stop = threading.Event()
    stop.set()
    d._loaded.clear()
    assert d.preload(platform, stop=stop) == 0


def test_a_rebuild_drops_only_the_build_no_longer_kept(shops: Shops, tmp_path: Path) -> None:
    kb = write_shop_kb(tmp_path / "acme", "acme", "跑鞋")
    first = shops.add("acme", kb).build_id
    second = shops.rebuild("acme", force=True).build_id
    shops.add("bobo", write_shop_kb(tmp_path / "bobo", "bobo", "茶叶"))
    third = shops.rebuild("acme", force=True).build_id
    store = shops.store(shops.registry.require("acme").dim)
    assert store.count("acme", first) == 0  # two builds are kept: the serving one and the one before
    assert store.holds("acme", second, ENTRIES * 4) and store.holds("acme", third, ENTRIES * 4)
    assert store.count("bobo") == ENTRIES * 4


def test_a_shop_loaded_for_a_question_answers_as_a_loaded_one(shops: Shops, desk, tmp_path: Path) -> None:
    # Unloaded, the shop is read beside the platform's decision (ShopDesk.answer); the answer must
    # not depend on it: the same decision, answers and scores as once the shop is loaded.
    d, platform = desk
    shops.add("acme", write_shop_kb(tmp_path / "acme", "acme", "跑鞋"))

    def seen(a):  # what an answer says, without its ids and timings
        return a.decision, a.reason, [(x.id, x.score, x.source.owner) for x in a.answers], a.trace.get("lead")

    for query in ("跑鞋5号有没有赠品？", "七天无理由退货需要满足什么条件？", "今天股市怎么样"):
        d._loaded.clear()
        assert not d.is_loaded("acme")
        cold = d.answer(platform, query, "acme")
        assert d.is_loaded("acme")
        assert seen(cold) == seen(d.answer(platform, query, "acme")), query
    d._loaded.clear()
    d.answer(platform, "七天无理由退货需要满足什么条件？", "acme", session_id="s-cold")
    assert d.platform_variant(platform).sessions.last("s-cold") is not None  # the platform's answer, made


def test_the_shop_and_the_platform_side_encode_a_message_and_its_readings_once():
    """Both answerers search the message and up to two readings with context, one after the other."""
    from service.shops_answer import SHARED_ENCODE_MEMORY, _SharedEncode

    seen: list[str] = []

    def encode(texts):
        seen.extend(texts)
        return np.array([[float(len(t))] for t in texts])

    shared = _SharedEncode(encode)
    texts = ["邮费要我自己付吗", "七天无理由 邮费要我自己付吗", "可以的 邮费要我自己付吗"]
    for _side in ("shop", "platform"):
        vecs = [shared([t]) for t in texts]
    assert seen == texts and [v[0, 0] for v in vecs] == [float(len(t)) for t in texts]
    for i in range(SHARED_ENCODE_MEMORY):  # the oldest are forgotten
        shared([f"其他问题{i}"])
    shared([texts[0]])
    assert seen[-1] == texts[0] and len(seen) == len(texts) + SHARED_ENCODE_MEMORY + 1
