"""The learning curve: a KB without alternative questions learns from its dev traffic, in rounds.

``python -m eval.learning [--tune] [bundled] [SUITE_DIR ...]`` (default: the bundled KB stripped
of its alternatives, and ../shared/foreign/unionpay_a). For each KB, in a temporary folder and index
home (the user's KB and index are never touched; the user's embedding cache is shared):

- round 0 is the KB as ``kefu build`` builds it, with no alternatives and no labels;
- each round replays the next share of the **dev** queries (in a fixed order by hash) as traffic
  through the served build. The operator is shown what kefu did not serve: low-confidence
  handoffs, clarifications, and wrong answers (as a 👎 would show them); rule handoffs
  (转人工 requests, sensitive, merchant, needs_order) are not gaps. The operator judges a shown message by
  its dev label only: answerable → attach to its labelled entry; out of scope → out of scope; a
  follow-up (it needs its context) or a question answered by a rules document → dismiss. One
  decision per entry per round, as a gap cluster would be resolved. Messages answered rightly
  (no 👎; every wrong answer is assumed voted down) are confirmed: labelled examples, never
  alternatives, so the recalibration and the before/after check see served traffic too;
- ``kefu learn`` (eval/learn.py) then applies the decisions, rebuilds, recalibrates on the learned
  dev examples and ships unless its checks lose more than 0.02 (the learned test examples; the
  learned dev examples asked without their own rows, with and without the round's new rows);
- the **test** split is evaluated on the served build after every round: hit@1, coverage at the
  calibrated precision, answered precision, out-of-scope handoff recall.

With ``--tune``, after the 50% and the last round the encoder is tuned on what was learned
(``kefu learn tune``, forced so its figures are kept either way), and the test split is asked of
the tuned model's build next to the served one.

Nothing is fitted to test here: the rounds, the operator's rules and the learn defaults were fixed before
the first run, and the test split is only ever evaluated. For the bundled KB the reference is the
bundled KB as shipped (its alternatives and its labelled calibration), built the same way.
Results: eval/reports/learning.json and learning_curve.png, a section of the eval report.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.dataset import EvalItem, load_split, resolve_labels, stable_hash
from eval.learn import learn
from eval.learn_guard import DEFAULT_TOLERANCE, Checks, Figures
from eval.progress import Ticker
from eval.runner import ItemResult, run
from indexer.build import build_and_swap
from indexer.encoder import Encoder
from indexer.store import IndexStore
from kb.errors import ConfigError
from kb.learn_journal import Action
from kb.learned import decide
from kb.loader import load_kb
from kb.schema import KnowledgeBase
from kb.settings import BUNDLED_KB, Settings
from service.schemas import RULE_HANDOFF_REASONS

ROUNDS = (0.25, 0.5, 0.75, 1.0)  # shares of dev replayed after round 0
TUNE_AT = (0.5, 1.0)  # rounds after which `--tune` also tunes the encoder (`kefu learn tune`)
FOREIGN = Path(__file__).resolve().parents[2] / "shared" / "foreign"
DEFAULT_SUITES = ("bundled", str(FOREIGN / "unionpay_a"))
RULE_REASONS = frozenset(RULE_HANDOFF_REASONS)
OPERATOR = "benchmark-operator"
Say = Callable[[str], None]


@dataclass(frozen=True)
class Round:
    share: float  # of dev replayed so far
    replayed: int
    shown: int  # messages the operator saw this round
    attached: int
    out_of_scope: int
    dismissed: int
    confirmed: int  # served messages kept as labelled examples
    alternatives: int  # alternative questions in the KB after the round
    shipped: bool
    refused: tuple[str, ...]
    calibration: str
    test: Figures
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "refused": list(self.refused), "test": self.test.to_json()}


@dataclass(frozen=True)
class TunedRound:
    """``kefu learn tune`` after a round: the served build and the tuned model's build on test."""

    share: float
    examples: int  # learned dev examples tuned on
    kept: bool  # whether its own guard (the learned test examples) kept it
    served: Figures
    tuned: Figures
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "served": self.served.to_json(), "tuned": self.tuned.to_json()}


@dataclass(frozen=True)
class Curve:
    suite: str
    rounds: tuple[Round, ...]
    reference: Figures | None  # the KB as shipped (bundled only)
    tuned: tuple[TunedRound, ...] = ()

    def recovery(self, r: Round) -> float | None:
        """Share of the hit@1 gap between round 0 and the reference that round ``r`` closed."""
        if self.reference is None or not self.rounds:
            return None
        gap = self.reference.hit1 - self.rounds[0].test.hit1
        return round((r.test.hit1 - self.rounds[0].test.hit1) / gap, 4) if gap > 0 else None

    def to_json(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "reference": self.reference.to_json() if self.reference else None,
            "rounds": [{**r.to_json(), "recovery": self.recovery(r)} for r in self.rounds],
            "tuned": [t.to_json() for t in self.tuned],
        }


def strip_bundled(dest: Path) -> KnowledgeBase:
    """The bundled KB without alternative questions, as a shop would bring it: an FAQ table
    (kefu's YAML format requires alternatives) beside the rules documents and resources."""
    kb = load_kb(BUNDLED_KB)
    dest.mkdir(parents=True)
    with (dest / "faq.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "question", "answer", "category"])
        for e in kb.entries:
            w.writerow([e.id, e.question, e.answer, e.category])
    shutil.copytree(BUNDLED_KB / "rules", dest / "rules")
    shutil.copytree(BUNDLED_KB / "resources", dest / "resources")
    return kb


def shown(r: ItemResult) -> bool:
    """What reaches the operator: kefu did not serve the message (a low-confidence handoff, a
    clarification, a wrong answer a shopper would vote down). Rule handoffs are not gaps."""
    if r.decision == "answer":
        return not (r.item.in_scope and r.top1_correct)
    if r.decision == "handoff":
        return r.reason not in RULE_REASONS
    return True


def judge(item: EvalItem, kb: KnowledgeBase) -> tuple[Action, str | None]:
    """The operator's decision, from the message's dev label only."""
    if item.context:
        return "dismiss", None  # a follow-up is no question on its own
    if item.in_scope:
        entry = next((e.id for rid in item.relevant if (e := kb.entry(rid)) is not None), None)
        return ("attach", entry) if entry else ("dismiss", None)  # a rules document answers it
    if item.reason == "low_confidence":
        return "out_of_scope", None
    return "dismiss", None


def resolve_round(results: Sequence[ItemResult], kb: KnowledgeBase) -> tuple[int, int, int, int, int]:
    """Record the operator's decisions for one round (one per entry and action, one out-of-scope,
    one dismissal); returns (shown, attached, out of scope, dismissed, confirmed) message counts."""
    groups: dict[tuple[Action, str | None], list[str]] = {}
    n_shown = 0
    for r in results:
        if shown(r):
            n_shown += 1
            groups.setdefault(judge(r.item, kb), []).append(r.item.query)
        elif r.decision == "answer" and r.answered_id and not r.item.context:
            groups.setdefault(("confirm", r.answered_id), []).append(r.item.query)
    counts = {"attach": 0, "out_of_scope": 0, "dismiss": 0, "confirm": 0}
    for (action, entry), messages in sorted(groups.items(), key=lambda g: (g[0][0], g[0][1] or "")):
        try:
            decide(kb, action, messages, entry=entry, who=OPERATOR)
        except ConfigError:
            continue  # the very same messages were resolved in an earlier round
        counts[action] += len(messages)
    return n_shown, counts["attach"], counts["out_of_scope"], counts["dismiss"], counts["confirm"]


def _alternatives(kb_dir: Path) -> int:
    return sum(len(e.alt_questions) for e in load_kb(kb_dir, log_changes=False).entries)


def run_curve(
    name: str,
    kb_dir: Path,
    dev: list[EvalItem],
    test: list[EvalItem],
    settings: Settings,
    encoder: Encoder,
    say: Say,
    rounds: Sequence[float] = ROUNDS,
    tune_at: Sequence[float] = (),
) -> tuple[list[Round], list[TunedRound]]:
    """Round 0 and one round per share of ``rounds`` on the KB folder ``kb_dir`` (written to);
    after the rounds in ``tune_at``, the encoder tuned on what was learned so far as well."""
    from service.runtime import Runtime
    from service.selfcal import build_calibrator

    s = settings.with_overrides(kb_dir=kb_dir, data_dir=kb_dir.parent / "data", index_dir=kb_dir.parent / "index")
    cache = settings.index_home / "embcache.sqlite"  # the user's: texts encoded once per machine
    store = IndexStore(s.index_home, s.keep_builds, cache)
    t0 = time.perf_counter()
    say(f"{name}: round 0, building the KB as `kefu build` does")
    summary = build_and_swap(
        load_kb(kb_dir),
        encoder,
        store,
        s.chunk_chars,
        s.index_kind,
        Ticker(say, f"{name}: embedding"),
        calibrate=build_calibrator(s, encoder),
    )
    rt = Runtime.create(s, encoder=encoder)

    def served_test() -> Figures:
        return Figures.of(run(rt.answerer().variant(), test, Ticker(say, f"{name}: test")))

    tuned: list[TunedRound] = []
    out = [
        Round(
            0.0,
            0,
            0,
            0,
            0,
            0,
            0,
            _alternatives(kb_dir),
            True,
            (),
            summary.calibration,
            served_test(),
            time.perf_counter() - t0,
        )
    ]
    say(f"{name}: round 0 test hit@1 {out[0].test.hit1:.3f}")
    order = sorted(dev, key=lambda it: stable_hash(f"traffic:{it.id}"))
    done = 0
    for share in rounds:
        t1 = time.perf_counter()
        cut = round(share * len(order))
        traffic = order[done:cut]
        done = cut
        say(f"{name}: round {share:.0%}: replaying {len(traffic)} dev messages")
        results = run(rt.answerer().variant(), traffic, Ticker(say, f"{name}: traffic"))
        n_shown, attached, oos, dismissed, confirmed = resolve_round(results, load_kb(kb_dir, log_changes=False))
        say(
            f"{name}: operator saw {n_shown}: {attached} attached, {oos} out of scope, {dismissed} dismissed; "
            f"{confirmed} served messages confirmed"
        )
        got = learn(s, encoder, who=OPERATOR, say=say, cache=cache)
        r = Round(
            share,
            done,
            n_shown,
            attached,
            oos,
            dismissed,
            confirmed,
            _alternatives(kb_dir),
            got.shipped,
            got.refused,
            got.calibration,
            served_test(),
            time.perf_counter() - t1,
        )
        say(f"{name}: round {share:.0%} test hit@1 {r.test.hit1:.3f}, shipped {r.shipped}")
        out.append(r)
        if share in tune_at:
            tuned.append(tune_round(name, share, s, encoder, test, kb_dir.parent / "models", cache, say))
    return out, tuned


def tune_round(
    name: str, share: float, s: Settings, encoder: Encoder, test: list[EvalItem], models: Path, cache: Path, say: Say
) -> TunedRound:
    """``kefu learn tune`` on what the rounds so far taught, and the test split asked of the served
    build and of the tuned model's; test only measures, it decides nothing (the learned test
    examples alone say whether the tuning would be kept)."""
    from eval.learn_tune import tune_kb
    from indexer.encoders.library import SentenceTransformerEncoder
    from indexer.model.onnx_query import remove_graphs

    if not isinstance(encoder, SentenceTransformerEncoder):
        raise ConfigError(f"--tune needs a sentence-transformers model, not {encoder.model_id}")
    t0 = time.perf_counter()
    say(f"{name}: tuning the encoder after round {share:.0%}")
    checks = Checks(force=True, labelled_test=test)
    got = tune_kb(s, encoder, checks, out_root=models, who=OPERATOR, say=say, cache=cache)
    remove_graphs(Path(s.model_cache), str(got.tuned.folder.resolve()))  # the model goes with the temporary folder
    learned = [c for c in got.comparisons if c.name == "learned test"]
    kept = all(not c.losses(DEFAULT_TOLERANCE) for c in learned) and bool(learned)
    on_test = next(c for c in got.comparisons if c.name == "labelled test")
    assert on_test.before is not None
    say(f"{name}: tuned after {share:.0%}: test hit@1 {on_test.before.hit1:.3f} → {on_test.after.hit1:.3f}")
    return TunedRound(share, got.tuned.examples, kept, on_test.before, on_test.after, time.perf_counter() - t0)


def reference_figures(test: list[EvalItem], settings: Settings, encoder: Encoder, home: Path, say: Say) -> Figures:
    """The bundled KB as shipped, built in ``home`` the way `kefu build` builds it."""
    from service.runtime import Runtime
    from service.selfcal import build_calibrator

    s = settings.with_overrides(kb_dir=BUNDLED_KB, data_dir=home, index_dir=home / "index")
    store = IndexStore(s.index_home, s.keep_builds, settings.index_home / "embcache.sqlite")
    say("reference: the bundled KB as shipped")
    build_and_swap(
        load_kb(BUNDLED_KB), encoder, store, s.chunk_chars, s.index_kind, calibrate=build_calibrator(s, encoder)
    )
    return Figures.of(run(Runtime.create(s, encoder=encoder).answerer().variant(), test, Ticker(say, "reference")))


def measure(suite: str, settings: Settings, encoder: Encoder, say: Say, tune: bool = False) -> Curve:
    with tempfile.TemporaryDirectory(prefix="kefu-learning-") as tmp:
        work = Path(tmp)
        if suite == "bundled":
            original = strip_bundled(work / "kb")
            dev = resolve_labels(load_split("dev"), original.aliases)  # the table has no `replaces`
            test = resolve_labels(load_split("test"), original.aliases)
            reference: Figures | None = reference_figures(test, settings, encoder, work / "reference", say)
            name = "bundled KB, alternatives stripped"
        else:
            folder = Path(suite)
            shutil.copytree(folder / "kb", work / "kb")
            dev, test = load_split("dev", folder), load_split("test", folder)
            reference, name = None, folder.name
        rounds, tuned = run_curve(name, work / "kb", dev, test, settings, encoder, say, tune_at=TUNE_AT if tune else ())
    return Curve(name, tuple(rounds), reference, tuple(tuned))


def main(argv: Sequence[str] | None = None) -> int:
    from eval.learning_report import LEARNING_FILE, PLOT, learning_markdown, plot
    from eval.report import REPORTS
    from indexer.encoder import load_encoder

    args = list(argv if argv is not None else sys.argv[1:])
    tune = "--tune" in args
    suites = [a for a in args if a != "--tune"] or list(DEFAULT_SUITES)
    settings = Settings()
    encoder = load_encoder(settings)

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    REPORTS.mkdir(parents=True, exist_ok=True)
    path = REPORTS / LEARNING_FILE
    kept = json.loads(path.read_text("utf-8")) if path.is_file() else []
    for suite in suites:
        curve = measure(suite, settings, encoder, say, tune).to_json()
        # curves of suites not run this time are kept: the report shows every one measured last
        kept = [c for c in kept if c["suite"] != curve["suite"]] + [curve]
        path.write_text(json.dumps(kept, ensure_ascii=False, indent=1), "utf-8")
        print("\n".join(learning_markdown([curve])), flush=True)
    plot(kept, REPORTS / PLOT)
    say(f"written {path} and {REPORTS / PLOT}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
