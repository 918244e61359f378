"""`kefu learn` (eval/learn.py): apply, rebuild, recalibrate, compare; refuse without touching
anything; survive SIGKILL at any point with the KB files and the last good build intact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from eval.dataset import EvalItem
from eval.learn import learn
from eval.learn_guard import Checks, Comparison, Figures
from eval.learn_rows import CHECK
from eval.learn_stage import learned_items
from indexer.build import build_and_swap
from indexer.encoder import FakeEncoder
from indexer.index import Index
from indexer.store import IndexStore
from kb import learn_files as F
from kb import learn_journal as J
from kb import learned as L
from kb.loader import load_kb
from kb.settings import Settings

REPO = Path(__file__).resolve().parents[2]
ENTRY = "refund-seven-day"


def _dev_messages(n: int) -> list[str]:
    out: list[str] = []
    i = 0
    while len(out) < n:
        m = f"买的第{i}件衣服七天内还能退吗"
        if F.split_of(m) == "dev":
            out.append(m)
        i += 1
    return out


@pytest.fixture
def setup(tiny_settings: Settings, tiny_index, fake_encoder: FakeEncoder) -> tuple[Settings, FakeEncoder, IndexStore]:
    return tiny_settings, fake_encoder, IndexStore(tiny_settings.index_home, tiny_settings.keep_builds)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file() and p.name != ".learn.lock"
    }


def test_learn_applies_rebuilds_and_ships(setup):
    s, enc, store = setup
    served = store.current_id()
    kb = load_kb(s.kb_dir)
    msgs = _dev_messages(3)
    d = L.decide(kb, "attach", msgs, entry=ENTRY, who="alice")
    L.decide(kb, "out_of_scope", ["你们老板是谁啊", "今天天气怎么样"], who="alice")
    result = learn(s, enc, who="alice")
    assert result.shipped and not result.refused and result.build_id == store.current_id() != served
    index = store.load_current(enc.model_id)
    texts = {c.text for c in index.chunks if c.unit_id == ENTRY and c.kind == "alt"}
    assert set(msgs) <= texts
    # the shipped build carries its resources, as a `kefu build` does (the service reads them there)
    built = {p.name for p in (store.current_path() / "resources").iterdir()}
    assert built and built == {p.name for p in (store.builds / served / "resources").iterdir()}
    assert J.states(s.kb_dir)[d.id].status == "applied"
    events = [r["event"] for r in J.read_journal(s.kb_dir)]
    assert events[-1] == "learned" and "applying" in events
    again = learn(s, enc)
    assert again.nothing_to_do and store.current_id() == result.build_id


def test_a_refused_build_leaves_the_kb_and_the_served_index_untouched(setup, monkeypatch: pytest.MonkeyPatch):
    s, enc, store = setup
    kb = load_kb(s.kb_dir)
    d = L.decide(kb, "attach", _dev_messages(3), entry=ENTRY)
    labelled = [EvalItem("t1", "七天无理由退货要什么条件", (ENTRY,), "answer", None, (), "退货退款")]
    served, before = store.current_id(), _snapshot(s.kb_dir)
    builds = {b.build_id for b in store.list()}
    monkeypatch.setattr(Comparison, "losses", lambda self, tol: [f"{self.name}: hit@1 1.000 → 0.500"])
    result = learn(s, enc, Checks(labelled_test=labelled))
    assert not result.shipped and result.refused
    assert store.current_id() == served and {b.build_id for b in store.list()} == builds
    after = _snapshot(s.kb_dir)
    assert {k: v for k, v in after.items() if k != "learn-journal.jsonl"} == {
        k: v for k, v in before.items() if k != "learn-journal.jsonl"
    }
    assert J.read_journal(s.kb_dir)[-1]["event"] == "refused"
    assert J.states(s.kb_dir)[d.id].status == "pending"
    forced = learn(s, enc, Checks(force=True, labelled_test=labelled))  # --force ships past the loss and says so
    assert forced.shipped and forced.refused and store.current_id() == forced.build_id


# Near copies of one question, all dev: the first in another fold of the held-out check than the others
SHIPPING_FEE = ("退货运费到底谁出呀", "退货运费到底谁出呢", "那退货运费到底谁出呢")


def _cli(s: Settings, enc: FakeEncoder, monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
    import indexer.encoder
    from kefu_cli import app

    monkeypatch.setattr(indexer.encoder, "load_encoder", lambda settings: enc)
    for key, value in (
        ("KEFU_DATA_DIR", str(s.data_dir)),
        ("KEFU_KB_DIR", str(s.kb_dir)),
        ("KEFU_MODEL", "fake:hash-128"),
        ("KEFU_CHUNK_CHARS", str(s.chunk_chars)),
    ):
        monkeypatch.setenv(key, value)
    return CliRunner().invoke(app, list(args))


def test_a_round_whose_rows_pull_other_entries_is_refused_and_says_which(setup, monkeypatch: pytest.MonkeyPatch):
    """The held-out check asks each learned dev message without its own row, with and without the
    round's new rows. Two near copies attached to the wrong entry take the third's message there
    (1/3 → 0/3): the round is refused and the decision that took it is named."""
    s, enc, store = setup
    assert {F.split_of(m) for m in SHIPPING_FEE} == {"dev"}
    kb = load_kb(s.kb_dir)
    right = L.decide(kb, "attach", [SHIPPING_FEE[0]], entry="refund-shipping-fee")
    wrong = L.decide(kb, "attach", list(SHIPPING_FEE[1:]), entry="logistics-track")
    served = store.current_id()
    result = learn(s, enc)
    check = next(c for c in result.comparisons if c.name == CHECK)
    assert check.before is not None and check.before.n_in == 3
    assert (check.before.hit1, check.after.hit1) == (0.3333, 0.0)
    assert not result.shipped and store.current_id() == served
    assert any(r.startswith(f"{CHECK}: hit@1") for r in result.refused)
    assert result.pulling == ((wrong.id, 1),)
    assert json.loads(json.dumps(result.to_json()))["pulling"] == [{"decision": wrong.id, "took": 1}]
    states = J.states(s.kb_dir)
    assert (states[right.id].status, states[wrong.id].status) == ("pending", "pending")
    assert J.read_journal(s.kb_dir)[-1]["pulling"] == [wrong.id]
    status = _cli(s, enc, monkeypatch, "learn", "status")
    assert status.exit_code == 0 and "was refused: learned dev, held out from the new rows: hit@1" in status.output
    assert "--examples-only" in status.output
    assert sum("(its rows took others')" in line for line in status.output.splitlines()) == 1
    refused = _cli(s, enc, monkeypatch, "learn")
    assert refused.exit_code == 1 and f"{wrong.id} (1 taken)" in refused.output and "--examples-only" in refused.output
    L.undo(load_kb(s.kb_dir), wrong.id)  # the operator withdraws the named decision: the rest ships
    again = learn(s, enc)
    assert again.shipped and not again.refused and not again.pulling


def test_examples_only_applies_attached_messages_without_alternatives(setup, monkeypatch: pytest.MonkeyPatch):
    """The way on for a round its rows check refuses: the same decisions as labelled examples alone."""
    s, enc, store = setup
    kb = load_kb(s.kb_dir)
    L.decide(kb, "attach", [SHIPPING_FEE[0]], entry="refund-shipping-fee")
    wrong = L.decide(kb, "attach", list(SHIPPING_FEE[1:]), entry="logistics-track")
    assert not learn(s, enc).shipped
    before = {(c.unit_id, c.text) for c in store.load_current(enc.model_id).chunks}
    out = _cli(s, enc, monkeypatch, "learn", "--examples-only", "--json")
    assert out.exit_code == 0, out.output
    got = json.loads(out.stdout)
    assert got["shipped"] and got["alternatives_added"] == 0 and got["examples_added"] == 3
    assert not [c for c in got["comparisons"] if c["set"] == CHECK]  # no new rows, nothing to check
    assert {(c.unit_id, c.text) for c in store.load_current(enc.model_id).chunks} == before
    assert {e.query for e in F.read_examples(s.kb_dir)} == set(SHIPPING_FEE)
    states = J.states(s.kb_dir)
    change = states[wrong.id].change
    assert states[wrong.id].status == "applied" and change is not None
    assert {why for _, why in change.skipped} == {L.EXAMPLES_ONLY}


def test_attached_messages_that_help_ship_whole(setup):
    s, enc, _store = setup
    kb = load_kb(s.kb_dir)
    L.decide(kb, "attach", [SHIPPING_FEE[0]], entry="refund-shipping-fee")
    L.decide(kb, "attach", list(SHIPPING_FEE[1:]), entry="refund-shipping-fee")
    result = learn(s, enc)
    check = next(c for c in result.comparisons if c.name == CHECK)
    assert check.before is not None and check.before.n_in == 3 and check.after.hit1 >= check.before.hit1
    assert result.shipped and not result.refused and not result.pulling


def test_only_decisions_that_take_more_than_they_win_are_named():
    from eval.learn_rows import RowsCheck, pulled_by
    from kb.learn_journal import Change

    same = Figures(3, 0, 0.5, None, None, None)
    check = RowsCheck(Comparison(CHECK, same, same), pulled={"a": 2, "b": 1, "c": 1}, won={"b": 1, "c": 0})
    plan = L.Plan(
        {},
        (
            Change("d1", alternatives=(("a", "x", "f"),)),
            Change("d2", alternatives=(("b", "y", "f"),)),  # took one, won one: kept
            Change("d3", alternatives=(("c", "z", "f"), ("a", "w", "f"))),
            Change("d4"),  # no rows
        ),
    )

    class _Aliases:
        def resolve(self, entry: str) -> str:
            return entry

    assert pulled_by(check, plan, _Aliases()) == {"d1": 2, "d3": 3}  # type: ignore[arg-type]


def test_guard_compares_hit1_precision_and_oos_recall():
    before = Figures(10, 5, 0.9, 0.95, 0.8, 0.8)
    same = Comparison("learned test", before, Figures(10, 5, 0.89, 0.94, 0.5, 0.79))
    assert same.losses(0.02) == []  # coverage is reported, not guarded
    worse = Comparison("learned test", before, Figures(10, 5, 0.8, 0.9, 0.8, 0.6))
    assert len(worse.losses(0.02)) == 3
    assert Comparison("x", None, before).losses(0.0) == []


def test_kefu_learn_cli(setup, monkeypatch: pytest.MonkeyPatch):
    import indexer.encoder
    from kefu_cli import app

    s, enc, store = setup
    monkeypatch.setattr(indexer.encoder, "load_encoder", lambda settings: enc)
    monkeypatch.setenv("KEFU_DATA_DIR", str(s.data_dir))
    monkeypatch.setenv("KEFU_KB_DIR", str(s.kb_dir))
    monkeypatch.setenv("KEFU_MODEL", "fake:hash-128")
    monkeypatch.setenv("KEFU_CHUNK_CHARS", str(s.chunk_chars))
    runner = CliRunner()
    msgs = _dev_messages(2)
    out = runner.invoke(app, ["learn", "attach", ENTRY, "-m", msgs[0], "-m", msgs[1], "--who", "bob"])
    assert out.exit_code == 0, out.output
    again = runner.invoke(app, ["learn", "dismiss", "-m", msgs[1], "-m", msgs[0]])
    assert again.exit_code == 2 and "already resolved" in again.output
    out = runner.invoke(app, ["learn", "--json"])
    assert out.exit_code == 0, out.output
    got = json.loads(out.stdout)
    assert got["shipped"] and got["alternatives_added"] == 2
    status = json.loads(runner.invoke(app, ["learn", "status", "--json"]).stdout)
    assert status[0]["status"] == "applied" and status[0]["who"] == "bob"
    out = runner.invoke(app, ["learn", "undo", status[0]["id"]])
    assert out.exit_code == 0 and "removed 2 alternative" in out.output
    assert runner.invoke(app, ["learn", "--json"]).exit_code == 0  # rebuilds without them
    index = store.load_current(enc.model_id)
    assert not {c.text for c in index.chunks} & set(msgs)


# --- crash: SIGKILL mid-learn ------------------------------------------------------------------------
CHILD = """
import os, signal, sys
from pathlib import Path
from typing import Any
import eval.learn as learn_mod
from eval.dataset import EvalItem
import kb.learn_journal as journal
from indexer.encoder import FakeEncoder
from indexer.store import IndexStore
from kb.settings import Settings

kb_dir, data_dir, point = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
settings = Settings(kb_dir=kb_dir, data_dir=data_dir, model="fake:hash-128", chunk_chars=60)

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if point == "build":  # while the candidate is being built
    real_build = learn_mod.build_index
    learn_mod.build_index = lambda *a, **k: (real_build(*a, **k), die())[0]
elif point in ("kb-write", "kb-rename"):  # before the first KB file is renamed into place / after it
    real_replace = os.replace
    def replace(src, dst):
        if Path(dst).parent.resolve() != kb_dir.resolve() or Path(dst).name != "learn-journal.jsonl":
            if point == "kb-write":
                die()
            real_replace(src, dst)
            die()
        return real_replace(src, dst)
    journal.os.replace = replace
elif point == "commit":  # KB written, build saved, not yet made current
    IndexStore.commit = lambda self, tmp, build_id: die()
learn_mod.learn(settings, FakeEncoder(dim=128))
print("finished")
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")
@pytest.mark.parametrize("point", ["build", "kb-write", "kb-rename", "commit"])
def test_sigkill_mid_learn_leaves_the_kb_and_the_last_good_build_intact(tmp_path: Path, tiny_kb_dir: Path, point: str):
    enc = FakeEncoder(dim=128)
    s = Settings(kb_dir=tiny_kb_dir, data_dir=tmp_path / "data", model="fake:hash-128", chunk_chars=60)
    store = IndexStore(s.index_home, s.keep_builds)
    build_and_swap(load_kb(tiny_kb_dir), enc, store, s.chunk_chars)
    good = store.current_id()
    kb = load_kb(tiny_kb_dir)
    msgs = _dev_messages(3)
    L.decide(kb, "attach", msgs, entry=ENTRY)
    L.decide(kb, "out_of_scope", ["你们老板是谁啊"])
    before = _snapshot(tiny_kb_dir)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(tiny_kb_dir), str(s.data_dir), point],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    # the last good build still serves and loads whole
    assert store.current_id() == good
    Index.load(store.current_path(), enc.model_id)
    # every KB file is the old one or the new one, and the KB loads
    after_kill = load_kb(tiny_kb_dir)
    alts = after_kill.entry(ENTRY).alt_questions  # type: ignore[union-attr]
    assert set(msgs) <= set(alts) or not set(msgs) & set(alts)
    if point == "build":
        assert {k: v for k, v in _snapshot(tiny_kb_dir).items() if "journal" not in k} == {
            k: v for k, v in before.items() if "journal" not in k
        }
    # the next run completes the job exactly once (and clears a temp file a killed write left)
    result = learn(s, enc)
    assert result.shipped and store.current_id() == result.build_id != good
    final = load_kb(tiny_kb_dir).entry(ENTRY).alt_questions  # type: ignore[union-attr]
    assert sorted(a for a in final if a in msgs) == sorted(msgs)
    assert all(st.status == "applied" for st in J.states(tiny_kb_dir).values())
    (change,) = [st.change for st in J.states(tiny_kb_dir).values() if st.decision.action == "attach"]
    assert change is not None and {a[1] for a in change.alternatives} == set(msgs)  # undo would remove them all
    assert not list(tiny_kb_dir.rglob("*.tmp"))


def test_learned_items_are_eval_items(tmp_path: Path, tiny_kb_dir: Path):
    kb = load_kb(tiny_kb_dir)
    L.decide(kb, "out_of_scope", ["你们老板是谁啊"])
    L.decide(kb, "attach", _dev_messages(2), entry=ENTRY)
    L.write_plan(tiny_kb_dir, L.plan_apply(kb))
    dev = learned_items(tiny_kb_dir, "dev")
    everything = dev + learned_items(tiny_kb_dir, "test")
    assert len(everything) == 3
    oos = [it for it in everything if not it.in_scope]
    assert [(it.expect, it.reason) for it in oos] == [("handoff", "low_confidence")]
    assert all(it.relevant == (ENTRY,) for it in everything if it.in_scope)


def test_the_learning_refit_ranks_clauses_too(tiny_answerer, monkeypatch: pytest.MonkeyPatch):
    """The ranker `kefu learn` fits on the KB's alternatives also sees its rules clauses'
    pseudo-queries, as `kefu eval calibrate` fits one; without them it only sees FAQ entries win."""
    import eval.learn_calibration as LC
    from eval.ranker_training import UNIT_WEIGHT
    from service.ranker import Group, Ranker, fit_ranker

    fits: list[tuple[int, int]] = []  # (groups, of them clause pseudo-queries) per fit

    def spy(groups: list[Group], *args: Any, **kwargs: Any) -> Ranker:
        fits.append((len(groups), sum(g.weight == UNIT_WEIGHT for g in groups)))
        return fit_ranker(groups, *args, **kwargs)

    monkeypatch.setattr(LC, "MIN_RANKER_ALTS", 1)
    monkeypatch.setattr(LC, "fit_ranker", spy)
    n_units = len(LC.unit_groups(tiny_answerer))
    assert n_units, "the tiny KB has rules clauses"
    entries = list(tiny_answerer.index.entries.values())
    items = [
        EvalItem(f"in{i}", e.question, (e.id,), "answer", None, (), e.category) for i, e in enumerate(entries * 10)
    ]
    items = items[:20] + [
        EvalItem(f"out{i}", f"今天天气怎么样{i}", (), "handoff", "low_confidence", (), "") for i in range(10)
    ]
    LC.recalibrate(tiny_answerer, items)
    # the full fit comes first (on a KB this small it then gives up: too few queries to rank)
    n_alts = len(LC.kb_groups(tiny_answerer.index))
    assert fits and fits[0] == (n_alts + n_units, n_units)


def test_the_recalibration_does_not_depend_on_the_examples_ids(tiny_answerer):
    """Learned examples carry their decision's random id; the folds of the recalibration (and of
    its cross-validated confidence) come from the messages, so the same examples under other ids
    give the same calibration."""
    import eval.learn_calibration as LC

    entries = list(tiny_answerer.index.entries.values())
    tails = ("", "呢", "啊，急", "？", "请问", "谢谢", "在线等", "!!")
    asked = [(e, f"{e.question}{tail}") for tail in tails for e in entries][:24]

    def items(prefix: str) -> list[EvalItem]:
        ins = [EvalItem(f"{prefix}{n}", q, (e.id,), "answer", None, (), "") for n, (e, q) in enumerate(asked)]
        outs = [
            EvalItem(f"{prefix}x{n}", f"今天天气怎么样{n}", (), "handoff", "low_confidence", (), "") for n in range(12)
        ]
        return ins + outs

    first, second = LC.recalibrate(tiny_answerer, items("D1a2b-")), LC.recalibrate(tiny_answerer, items("Dff09-"))
    assert isinstance(first, LC.Recalibration) and isinstance(second, LC.Recalibration)
    assert first.calibration.to_json() == second.calibration.to_json()
    renamed = LC.stable_ids([*items("a"), EvalItem("b", asked[0][1], (), "answer", None, (), "")])
    # the same message (question_key folds the tails away) keeps its name, counted
    assert renamed[0].id.endswith(".1") and renamed[-1].id.split(".")[0] == renamed[0].id.split(".")[0]
    assert len({it.id for it in renamed}) == len(renamed)
