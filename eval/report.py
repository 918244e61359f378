"""Write eval/reports/latest.{md,json} with tables and PNG plots."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

from eval.learning_report import LEARNING_FILE, learning_markdown
from eval.learning_report import PLOT as LEARNING_PLOT
from eval.suite import SUITES_FILE, suites_markdown
from eval.traffic import TRAFFIC_FILE, traffic_markdown

REPORTS = Path(__file__).resolve().parent / "reports"
HEADLINE = (
    ("hit@1", "hit@1"),
    ("hit@5", "hit@5 (a right answer in the top 5)"),
    ("recall@5", "recall@5 (share of all relevant entries in the top 5)"),
    ("mrr@10", "MRR@10"),
    ("ndcg@10", "nDCG@10"),
    ("answered_precision", "answered precision"),
    ("coverage", "coverage"),
    ("accuracy", "decision accuracy"),
    ("oos_handoff_recall", "out-of-scope handoff recall"),
    ("handoff_recall_user_requested", "user-requested handoff recall"),
    ("handoff_recall_sensitive", "sensitive handoff recall"),
    ("clarify_rate", "clarify rate"),
    ("latency_p50_ms", "latency p50 (ms)"),
    ("latency_p95_ms", "latency p95 (ms)"),
)
TARGETS = {
    "hit@1": ">= 0.92",
    "recall@5": ">= 0.98",
    "mrr@10": ">= 0.94",
    "answered_precision": ">= 0.95",
    "coverage": ">= 0.85",
    "oos_handoff_recall": ">= 0.95",
    "handoff_recall_user_requested": "= 1.0",
    "handoff_recall_sensitive": ">= 0.95",
}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return "–" if v is None else str(v)


def _table(rows: list[list[str]], header: list[str]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


# Metrics of the per-category and per-tag tables: (key in the metrics, column label).
BREAKDOWN = [("hit@1", "hit@1"), ("recall@5", "recall@5"), ("coverage", "coverage"), ("accuracy", "accuracy")]


def _breakdown(first: str, groups: dict[str, dict[str, Any]], keys: list[tuple[str, str]]) -> str:
    """One row per group (category, tag): its size, then the given metrics."""
    rows = [[name, _fmt(v.get("n_all")), *[_fmt(v.get(k)) for k, _ in keys]] for name, v in groups.items()]
    return _table(rows, [first, "n", *[label for _, label in keys]])


def plots(calibration_report: dict[str, Any], folder: Path) -> list[str]:
    """Coverage–precision curve and score distributions, as PNG files; returns their names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    curve = calibration_report.get("curve") or []
    if curve:
        fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
        ax.plot([c["coverage"] for c in curve], [c["answered_precision"] for c in curve], marker=".", lw=1)
        op = calibration_report.get("operating_point_cv", {})
        if op:
            ax.scatter([op["coverage"]], [op["answered_precision"]], color="red", zorder=3, label="operating point")
        ax.axhline(calibration_report.get("targets", {}).get("answered_precision", 0.95), color="grey", ls="--", lw=1)
        ax.set_xlabel("coverage (share of in-scope queries answered)")
        ax.set_ylabel("answered precision")
        ax.set_title("coverage vs precision (dev, cross-validated)")
        ax.set_ylim(0.5, 1.01)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left")
        fig.tight_layout()
        fig.savefig(folder / "coverage_precision.png")
        plt.close(fig)
        names.append("coverage_precision.png")
    scores = calibration_report.get("scores") or {}
    if scores:
        fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
        bins = [i / 40 for i in range(41)]
        for key, label, color in (
            ("in_correct", "in scope, top-1 right", "tab:green"),
            ("in_wrong", "in scope, top-1 wrong", "tab:orange"),
            ("out_of_scope", "out of scope", "tab:red"),
        ):
            if scores.get(key):
                ax.hist(scores[key], bins=bins, alpha=0.55, label=f"{label} (n={len(scores[key])})", color=color)
        op = calibration_report.get("operating_point_cv", {})
        # with a scope model, clarify vs handoff is decided on another score: no clarify line here
        lines = (("answer_at", "-"),) if op.get("scope_at") is not None else (("answer_at", "-"), ("clarify_at", ":"))
        for k, style in lines:
            if k in op:
                ax.axvline(op[k], color="black", ls=style, lw=1, label=k)
        ax.set_xlabel("confidence")
        ax.set_ylabel("queries")
        ax.set_title("confidence distributions (dev, cross-validated)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / "score_distributions.png")
        plt.close(fig)
        names.append("score_distributions.png")
    return names


SWITCH_KEYS = ("questions", "context_used", "top_changed", "right_to_wrong", "new_wrong_answers")
# The rules slice's columns: (key in the retrieval or decision metrics, label), and the issue's
# targets on its test split (#22).
RULES_COLUMNS = (
    ("hit@1", "clause at 1 (hit@1)"),
    ("hit@3", "clause in top 3"),
    ("mrr@10", "MRR@10"),
    ("coverage", "answered"),
    ("answered_precision", "answered precision"),
)
RULES_TARGETS = {"hit@1": ">= 0.80", "hit@3": ">= 0.95"}


def rules_markdown(rules: dict[str, dict[str, Any]]) -> list[str]:
    """The rules slice's table: one row per split measured (``summarize`` metrics), then the
    targets. A hit is the labelled clause itself (its unit id), not another clause of its document."""
    rows = []
    for split, m in rules.items():
        got = {**m.get("retrieval", {}), **m.get("decisions", {})}
        rows.append([split, _fmt(got.get("n")), *[_fmt(got.get(k)) for k, _ in RULES_COLUMNS]])
    rows.append(["target (test)", "", *[RULES_TARGETS.get(k, "") for k, _ in RULES_COLUMNS]])
    return [_table(rows, ["split", "n", *[label for _, label in RULES_COLUMNS]])]


def calibration_line(served: dict[str, Any], report: dict[str, Any]) -> str:
    """The thresholds the build serves, and the dev operating point the curve and plots show: the
    fit's own, or (a build that took a shipped calibration) thresholds refit on this build's dev
    evidence for the curve, which vectors encoded on another CPU can move a little."""
    line = f"Calibration: `{served.get('source', 'default')}`"
    if served.get("answer_at") is not None:
        line += f", served at answer ≥ {served['answer_at']:.4f}"
        if served.get("scope_at") is not None:
            line += f" (clarify below it when scope ≥ {served['scope_at']:.4f})"
    what = (
        "thresholds refit on dev for the curve below (cross-validated; not what is served)"
        if report.get("refit")
        else "its operating point on dev (cross-validated)"
    )
    return f"{line}; {what}: {json.dumps(report.get('operating_point_cv', {}))}."


UNSEEN_COLUMNS = (
    ("hit@1", "hit@1"),
    ("recall@5", "recall@5"),
    ("mrr@10", "MRR@10"),
    ("answered_precision", "answered precision"),
    ("coverage", "coverage"),
    ("clarify_rate", "clarify rate"),
    ("in_scope_handoff_rate", "handed off"),
)


def write_report(
    test: dict[str, Any],
    dev: dict[str, Any],
    calibration: dict[str, Any],
    ablations: list[dict[str, Any]],
    independence: dict[str, Any],
    manifest: dict[str, Any],
    folder: Path = REPORTS,
    switches: dict[str, dict[str, float]] | None = None,
    rules: dict[str, dict[str, Any]] | None = None,
    unseen: dict[str, Any] | None = None,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pngs = plots(calibration, folder)
    stamp = time.strftime("%Y-%m-%d %H:%M")
    data = {
        "date": stamp,
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "model_id": manifest.get("model_id"),
        "build_id": manifest.get("build_id"),
        "test": test,
        "dev": dev,
        "calibration": {k: v for k, v in calibration.items() if k not in ("curve", "scores")},
        "ablations": ablations,
        "independence": independence,
        "topic_switches": switches or {},
        "rules": rules or {},
        "unseen": unseen or {},
    }
    (folder / "latest.json").write_text(json.dumps(data, ensure_ascii=False, indent=1), "utf-8")
    th, dh = test["headline"], dev["headline"]
    lines = [
        "# kefu evaluation report",
        "",
        f"{stamp} · model `{manifest.get('model_id')}` · build `{manifest.get('build_id')}` · "
        f"test split {th.get('n')} queries (never tuned on), dev split {dh.get('n')} queries (calibration).",
        "",
        "## Headline (test split)",
        "",
        _table(
            [[label, _fmt(th.get(key)), _fmt(dh.get(key)), TARGETS.get(key, "")] for key, label in HEADLINE],
            ["metric", "test", "dev", "target"],
        ),
        "",
        calibration_line(manifest.get("calibration") or {}, calibration),
        "",
    ]
    ranker = calibration.get("ranker")
    if ranker:
        cv = ranker.get("dev_cross_fitted", {})
        lines += [
            f"Learned ranker: fitted on {ranker.get('dev_queries')} dev queries (weight {ranker.get('dev_weight')}) "
            f"and {ranker.get('kb_queries')} KB alternative questions. The dev column above is its training data; "
            f"dev ranked by rankers fitted without each query's fold: hit@1 {_fmt(cv.get('hit@1'))}, "
            f"MRR@10 {_fmt(cv.get('mrr@10'))}, recall@5 {_fmt(cv.get('recall@5'))}."
            + (
                f" A clause that an FAQ entry among the candidates cites comes first only when it leads the FAQ "
                f"entries by {ranker['doc_margin']} in ranker score (other clauses on their score); after the first, "
                f"clauses and sections stay that far behind the FAQ entries."
                if ranker.get("doc_margin")
                else ""
            ),
            "",
        ]
    for p in pngs:
        lines += [f"![{p}]({p})", ""]
    lines += ["## Rules slice: clauses as answers", ""]
    if rules:
        lines += [
            "Shoppers' questions whose best answer is one rules clause (`eval/data/rules_*.jsonl`, labelled with "
            "clause ids such as `rules-seven-day-return.5`); a hit is that clause, not another clause of its "
            "document nor an FAQ entry on the topic. Answered: decided `answer` (with whatever came first); "
            "answered precision: of those, the share answered with the clause. Not training data: the ranker "
            "learns clauses from pseudo-queries made of their own text (`kefu eval calibrate`), whose kind and "
            "weight the dev split chose (docs/experiments.md).",
            "",
            *rules_markdown(rules),
            "",
        ]
    else:
        lines += ["Not measured: no `rules_dev.jsonl` / `rules_test.jsonl` in the eval data folder.", ""]
    if unseen:
        lines += [
            "## Wording nobody here wrote (unseen split)",
            "",
            f"{unseen.get('n')} shoppers' questions written by someone who saw only 80 entries' own questions "
            "and answers, never the alternatives or the other splits (`eval/data/unseen.jsonl`): a test set, "
            "never tuned on.",
            "",
            _table([[_fmt(unseen.get(k)) for k, _ in UNSEEN_COLUMNS]], [label for _, label in UNSEEN_COLUMNS]),
            "",
        ]
    lines += ["## Handoff by reason (test)", ""]
    pr = test["decisions"]["per_reason"]
    lines += [
        _table(
            [
                [r, str(v["n"]), _fmt(v["precision"]), _fmt(v["recall"]), _fmt(v["handoff_recall_any_reason"])]
                for r, v in pr.items()
            ],
            ["reason", "n", "precision", "recall", "handed off (any reason)"],
        ),
        "",
    ]
    lines += ["## Ablations (dev split; retrieval on in-scope queries)", ""]
    if ablations:
        keys = ["hit@1", "recall@5", "mrr@10", "auc_in_vs_out"]
        lines += [
            _table(
                [[a["name"], *[_fmt(a.get(k)) for k in keys], a.get("note", "")] for a in ablations],
                ["variant", *keys, "note"],
            ),
            "",
        ]
    if switches:
        lines += [
            "## Session context: follow-ups and topic switches",
            "",
            'The ablation row "no session context" shows what reading a message with the previous one buys (a '
            "follow-up always; any other message once alone it is not confident enough, and then only as options). "
            "This shows what it costs when the shopper changes topic: every in-scope question without a context of "
            "its own, asked right after a question of another category (fixed pairing), against the same question "
            "asked alone.",
            "",
            _table(
                [
                    [split, *[str(v.get(k)) for k in SWITCH_KEYS], _fmt(v.get("right_to_wrong_rate"))]
                    for split, v in switches.items()
                ],
                [
                    "split",
                    "questions",
                    "read with the previous one",
                    "top answer changed",
                    "right → wrong",
                    "new wrong answers",
                    "right → wrong rate",
                ],
            ),
            "",
        ]
    lines += ["## By category (test)", ""]
    by_category = [*BREAKDOWN[:3], ("answered_precision", "answered precision"), BREAKDOWN[3]]
    lines += [_breakdown("category", test["by_category"], by_category), ""]
    lines += ["## By tag (test)", ""]
    lines += [_breakdown("tag", test["by_tag"], BREAKDOWN), ""]
    lines += [
        "## Labelled-set independence",
        "",
        f"In-scope queries whose best character-bigram Jaccard against their entries' questions exceeds 0.5: "
        f"{independence.get('above_0.5')} of {independence.get('in_scope')} "
        f"({independence.get('share_above_0.5', 0):.1%}; must be ≤ 10%). Mean: {independence.get('mean_max_jaccard')}.",
        "",
    ]
    for key, intro, texts in (
        (
            "kb_phrasings",
            "The other direction: the KB's questions and alternatives against each split's queries. A KB "
            "written toward one split would come closer to it than to the other.",
            "KB questions and alternatives",
        ),
        (
            "unit_phrasings",
            "The questions given to clauses and sections (`alternatives.yaml`) against the rules slice's splits:",
            "clause and section questions",
        ),
    ):
        if phrasings := independence.get(key):
            rows = [
                [split, str(v["kb_texts"]), str(v["above_0.5"]), _fmt(v["mean_max_jaccard"])]
                for split, v in phrasings.items()
            ]
            lines += [intro, "", _table(rows, ["split", texts, "best Jaccard > 0.5", "mean best Jaccard"]), ""]
    suites_path = folder / SUITES_FILE
    if suites_path.is_file():
        rows = json.loads(suites_path.read_text("utf-8"))
        lines += [
            "## Any knowledge base (foreign suites, test splits, zero labels)",
            "",
            "Each suite's KB built as `kefu build` builds it, with its self-calibration and no labelled set; "
            "the bare model is the same encoder's dense question match, measured in the same run. Oracle "
            "coverage: the best a single top-1-cosine threshold reaches at that precision when tuned on the "
            f"test split itself. From `{SUITES_FILE}`, written by `kefu eval suite ../shared/foreign/*`.",
            "",
            *suites_markdown(rows),
            "",
        ]
    learning_path = folder / LEARNING_FILE
    if learning_path.is_file():
        lines += [
            "## Learning from traffic (a KB without alternatives, dev traffic in rounds, test split)",
            "",
            "Each round replays the next share of the dev queries through the served build; the operator "
            "resolves what it did not serve by the dev labels alone (attach to the labelled entry, out of scope, "
            "dismiss) and confirms what it served; `kefu learn` applies, rebuilds, recalibrates and ships unless its "
            "checks lose more than 0.02 (the learned test examples; the learned dev examples, each asked without "
            "its own row, with and without the round's new rows). Gap recovered: the share of the test hit@1 gap "
            "between round 0 and the KB as shipped. The tuned rows (`python -m eval.learning --tune`): after a round, "
            "`kefu learn tune` tunes the model on what was learned, and the test split is asked of its build next "
            f"to the served one. From `{LEARNING_FILE}`, written by `python -m eval.learning`.",
            "",
            *learning_markdown(json.loads(learning_path.read_text("utf-8"))),
        ]
        if (folder / LEARNING_PLOT).is_file():
            lines += [f"![{LEARNING_PLOT}]({LEARNING_PLOT})", ""]
    traffic_path = folder / TRAFFIC_FILE
    lines += ["## Real traffic (labelled JDDC customer messages, test split)", ""]
    if traffic_path.is_file():
        lines += [
            "Every customer turn of the labelled sessions, asked alone and asked after the session's "
            f"earlier turns (history). From `{TRAFFIC_FILE}`, written by `kefu eval traffic --split test`.",
            "",
            *traffic_markdown(json.loads(traffic_path.read_text("utf-8"))),
            "",
        ]
    else:
        lines += [
            f"Not measured: no `{TRAFFIC_FILE}` (it needs ../shared/traffic; `kefu eval traffic --split test`).",
            "",
        ]
    lines += [
        "Reproduce: `make eval` (or `kefu eval report`).",
        "",
    ]
    path = folder / "latest.md"
    path.write_text("\n".join(lines), "utf-8")
    return path
