"""Resolving gaps and tickets through kb/learned.py on a YAML KB and a CSV KB: the actions,
conflicts between operators, and what may not be resolved."""

from __future__ import annotations

import csv
import threading
from pathlib import Path

import pytest
import yaml

from indexer.build import build_and_swap
from indexer.encoder import FakeEncoder
from indexer.index import Index
from indexer.store import IndexStore
from kb.errors import ConfigError, NotFoundError
from kb.learn_journal import states
from kb.learned import plan_apply, write_plan
from kb.loader import load_kb
from kb.settings import Settings
from kb.sidecar import SIDECAR
from service import gaps_resolve
from service.gaps_resolve import AlreadyResolvedError, resolve, resolve_ticket, served_kb
from service.gaps_unserved import decided_keys
from service.tickets import TicketStore
from tests.service.conftest import PHONE


# --- resolving: a YAML KB -------------------------------------------------------------------------------------------
@pytest.fixture
def block_yaml_kb(tiny_kb_dir: Path) -> Path:
    """The tiny KB with its alternatives as block lists (kefu's own format; flow lists go to the sidecar)."""
    path = tiny_kb_dir / "faq" / "tiny.yaml"
    data = yaml.safe_load(path.read_text("utf-8"))
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False, default_flow_style=False), "utf-8")
    return tiny_kb_dir


def test_attach_on_a_yaml_kb_writes_alternatives_into_the_entrys_file(block_yaml_kb: Path):
    tiny_kb_dir = block_yaml_kb
    kb = load_kb(tiny_kb_dir, strict=False)
    texts = [f"七天无理由退货的条件是什么{i}号" for i in range(12)]
    d = resolve(kb, "attach", texts, entry="refund-seven-day", who="小王")
    assert (d.action, d.entry, d.who) == ("attach", "refund-seven-day", "小王")
    assert states(tiny_kb_dir)[d.id].status == "pending"
    assert decided_keys(tiny_kb_dir) >= {"七天无理由退货的条件是什么0号"}
    plan = plan_apply(kb)  # what `kefu learn` would write (kb/learned.py, not reimplemented here)
    write_plan(tiny_kb_dir, plan)
    faq = (tiny_kb_dir / "faq" / "tiny.yaml").read_text("utf-8")
    added = [a for _, a, path in plan.changes[0].alternatives]
    assert added and all(a in faq for a in added)
    assert {p for _, _, p in plan.changes[0].alternatives} == {"faq/tiny.yaml"}
    assert not (tiny_kb_dir / SIDECAR).exists()


@pytest.mark.parametrize("action", ["out_of_scope", "new_entry", "dismiss"])
def test_other_actions_are_recorded(tiny_kb_dir: Path, action: str):
    kb = load_kb(tiny_kb_dir, strict=False)
    d = resolve(kb, action, ["能用数字人民币付款吗", "数字人民币可以用吗"], who="ops")  # type: ignore[arg-type]
    assert d.action == action and states(tiny_kb_dir)[d.id].status == "pending"
    plan = plan_apply(kb)
    assert (plan.drafts == 1) is (action == "new_entry")
    assert (plan.examples == 2) is (action == "out_of_scope")


def test_a_second_decision_on_the_same_item_is_a_conflict(tiny_kb_dir: Path):
    kb = load_kb(tiny_kb_dir, strict=False)
    resolve(kb, "dismiss", ["a 的问题", "b 的问题"])
    with pytest.raises(AlreadyResolvedError, match="already resolved") as exc:
        resolve(kb, "out_of_scope", ["b 的问题", "a 的问题"])
    assert exc.value.http_status == 409


def test_concurrent_operators_cannot_decide_one_item_twice(tiny_kb_dir: Path):
    kb = load_kb(tiny_kb_dir, strict=False)
    start = threading.Barrier(4)
    results: list[str] = []

    def operator(n: int) -> None:
        start.wait()
        try:
            resolve(kb, "dismiss", ["同一组问题", "同一组问题吗"], who=f"op{n}")
            results.append("ok")
        except AlreadyResolvedError:
            results.append("conflict")

    threads = [threading.Thread(target=operator, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["conflict"] * 3 + ["ok"]
    assert len([s for s in states(tiny_kb_dir).values() if s.status == "pending"]) == 1


def test_attach_needs_a_known_entry(tiny_kb_dir: Path):
    kb = load_kb(tiny_kb_dir, strict=False)
    with pytest.raises(NotFoundError, match="no FAQ entry"):
        resolve(kb, "attach", ["什么问题"], entry="no-such-entry")
    with pytest.raises(ConfigError, match="unknown"):
        resolve(kb, "confirm", ["什么问题"], entry="refund-seven-day")  # not an action for a gap


def test_a_kb_this_process_cannot_write_is_refused_before_anything_is_recorded(
    tiny_kb_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    kb = load_kb(tiny_kb_dir, strict=False)
    real = gaps_resolve.os.access
    # chmod would not stop root (the tests may run as root): the check itself is what is tested
    monkeypatch.setattr(gaps_resolve.os, "access", lambda p, mode: False if Path(p) == tiny_kb_dir else real(p, mode))
    with pytest.raises(ConfigError, match="not writable"):
        resolve(kb, "dismiss", ["什么问题"])
    assert states(tiny_kb_dir) == {}


def test_resolve_a_ticket(tiny_kb_dir: Path, tmp_path: Path):
    db = tmp_path / "tickets.db"
    t = TicketStore(db).create(f"手机{PHONE}能开专票吗", "low_confidence", "S1", [])
    kb = load_kb(tiny_kb_dir, strict=False)
    d = resolve_ticket(kb, db, t.id, "out_of_scope")
    assert d.item == f"ticket:{t.id}" and PHONE not in d.messages[0]
    with pytest.raises(AlreadyResolvedError):
        resolve_ticket(kb, db, t.id, "dismiss")
    with pytest.raises(NotFoundError):
        resolve_ticket(kb, db, "Tnope", "dismiss")


# --- resolving: a CSV KB --------------------------------------------------------------------------------------------
CSV_ROWS = [
    ("q1", "发票怎么开？", "在订单详情页点击「申请开票」，填写抬头后提交。", "开发票|怎么申请发票|发票在哪开"),
    ("q2", "退款多久到账？", "原路退回，一般一到七个工作日到账。", "退款什么时候到|钱多久退回来|退款到账时间"),
    ("q3", "运费险怎么理赔？", "退货签收后运费险自动理赔，赔付到支付账户。", "运费险赔多少|退货运费险|运费险怎么赔"),
]


def _csv_kb(root: Path) -> Path:
    root.mkdir()
    path = root / "faq.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "question", "answer", "alt_questions"])
        w.writerows(CSV_ROWS)
    return path


def test_attach_on_a_csv_kb_goes_to_the_sidecar_and_never_rewrites_the_table(tmp_path: Path):
    table = _csv_kb(tmp_path / "shop")
    before = table.read_bytes()
    kb = load_kb(table)
    entry = kb.entries[0].id
    texts = [f"我想开个发票第{i}次" for i in range(12)]
    d = resolve(kb, "attach", texts, entry=entry)
    write_plan(kb.root, plan_apply(kb))
    assert table.read_bytes() == before
    sidecar = (tmp_path / "shop" / SIDECAR).read_text("utf-8")
    assert entry in sidecar and any(t in sidecar for t in texts)
    assert states(kb.root)[d.id].decision.entry == entry


def test_served_kb_is_the_builds_kb(tmp_path: Path, fake_encoder: FakeEncoder):
    table = _csv_kb(tmp_path / "shop")
    s = Settings(kb_dir=table, data_dir=tmp_path / "data", model=fake_encoder.model_id)
    store = IndexStore(s.index_home, 3)
    build_and_swap(load_kb(table), fake_encoder, store, 60)
    manifest = Index.read_manifest(store.current_path())
    assert served_kb(s, manifest).root == table.parent
    other = Settings(data_dir=tmp_path / "data", model=fake_encoder.model_id)  # configured for the bundled KB
    assert served_kb(other, manifest).root == table.parent


def test_a_shops_ticket_is_not_the_platforms_to_resolve(tiny_kb_dir: Path, tmp_path: Path):
    from service.shops_tickets import ShopTickets

    db = tmp_path / "tickets.db"
    t = ShopTickets.at(db).create("这件衣服有XL吗", "low_confidence", "S1", [], shop="shop-a", route="shop")
    with pytest.raises(ConfigError, match="shop 'shop-a'"):
        resolve_ticket(load_kb(tiny_kb_dir, strict=False), db, t.id, "dismiss")
    assert states(tiny_kb_dir) == {}


def test_a_ticket_whose_message_was_resolved_with_its_gap_is_already_decided(tiny_kb_dir: Path, tmp_path: Path):
    db = tmp_path / "tickets.db"
    t = TicketStore(db).create("能开专票吗", "low_confidence", "S1", [])
    kb = load_kb(tiny_kb_dir, strict=False)
    gap = resolve(kb, "out_of_scope", ["能开专票吗？", "专票能开吗"])
    with pytest.raises(AlreadyResolvedError, match=gap.id):
        resolve_ticket(kb, db, t.id, "attach", entry="refund-seven-day")
    assert list(states(tiny_kb_dir)) == [gap.id]
