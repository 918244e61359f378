"""`kefu ask`, `kefu handoffs list` and error edges (fake encoder patched in for the real model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import indexer.encoder
import service.runtime
from indexer.store import IndexStore
from kefu_cli import app

DOCUMENTED_KEYS = {"query", "normalized_query", "decision", "reason", "answers", "handoff", "session_id", "elapsed_ms"}


def test_ask_json_prints_one_object(runner: CliRunner, env):
    r = runner.invoke(app, ["ask", "--json", "七天无理由退货需要满足什么条件？"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert set(data) >= DOCUMENTED_KEYS
    assert data["decision"] == "answer"
    assert data["answers"][0]["id"] == "refund-seven-day"
    assert set(data["answers"][0]["source"]) == {"doc_id", "section", "kind", "owner", "clause"}


def test_ask_json_top_k(runner: CliRunner, env):
    r = runner.invoke(app, ["ask", "--json", "--top-k", "1", "七天无理由退货需要满足什么条件？"])
    assert r.exit_code == 0
    assert len(json.loads(r.stdout)["answers"]) == 1


def test_ask_json_stdin_prints_one_object_per_line(runner: CliRunner, env):
    stdin = "七天无理由退货需要满足什么条件？\n\n转人工\n" + "退" * 501 + "\n我的快递到哪了\n"
    r = runner.invoke(app, ["ask", "--json", "-"], input=stdin)
    assert r.exit_code == 2, r.output  # the bad line fails the run, after the others were answered
    rows = [json.loads(line) for line in r.stdout.strip().splitlines()]
    assert len(rows) == 4  # the blank line is skipped
    assert rows[0]["answers"][0]["id"] == "refund-seven-day"
    assert (rows[1]["decision"], rows[1]["reason"]) == ("handoff", "user_requested")
    assert set(rows[2]) == {"line", "query", "error"} and "500" in rows[2]["error"]  # it does not stop the stream
    assert rows[2]["line"] == 4  # numbered as in the input, the blank line counted
    # "my parcel": the order is needed, and the tracking article rides along
    assert (rows[3]["decision"], rows[3]["reason"]) == ("handoff", "needs_order")
    assert rows[3]["suggestions"][0]["id"] == "logistics-track"
    assert all(set(row) >= DOCUMENTED_KEYS for row in (rows[0], rows[1], rows[3]))


def test_ask_card_shows_the_decision(runner: CliRunner, env):
    r = runner.invoke(app, ["ask", "七天无理由退货需要满足什么条件？"])
    assert r.exit_code == 0, r.output
    assert "answer" in r.stdout and "回答" in r.stdout
    assert "七天无理由退货需要满足什么条件" in r.stdout
    h = runner.invoke(app, ["ask", "--record", "转人工"])
    assert h.exit_code == 0
    assert "handoff" in h.stdout and "user_requested" in h.stdout and "ticket T" in h.stdout
    tried = runner.invoke(app, ["ask", "转人工"])  # without --record: no ticket for an agent
    assert tried.exit_code == 0 and "no ticket opened" in tried.stdout
    blank = runner.invoke(app, ["ask", "？？？"])  # asked for its question: no person, no ticket line
    assert blank.exit_code == 0 and "ticket" not in blank.stdout and "请直接输入" in blank.stdout
    bye = runner.invoke(app, ["ask", "没有了，谢谢"])  # a closing: its reply, headed as one
    assert bye.exit_code == 0 and "clarify 问候" in bye.stdout and "随时问我" in bye.stdout


def test_handoffs_list_shows_a_ticket_after_a_handoff(runner: CliRunner, env):
    empty = runner.invoke(app, ["handoffs", "list", "--json"])
    assert empty.exit_code == 0 and empty.stdout.strip() == ""
    assert json.loads(runner.invoke(app, ["ask", "--json", "转人工"]).stdout)["handoff"]["ticket_id"] == "-"
    a = json.loads(runner.invoke(app, ["ask", "--json", "--record", "转人工"]).stdout)
    ticket_id = a["handoff"]["ticket_id"]
    listed = runner.invoke(app, ["handoffs", "list", "--json"])
    assert listed.exit_code == 0
    [t] = [json.loads(line) for line in listed.stdout.strip().splitlines()]
    assert t["id"] == ticket_id and t["reason"] == "user_requested" and t["query"] == "转人工"
    table = runner.invoke(app, ["handoffs", "list"])
    assert table.exit_code == 0
    assert "user_requested" in table.stdout and "handoffs (1)" in table.stdout
    filtered = runner.invoke(app, ["handoffs", "list", "--json", "--reason", "sensitive"])
    assert filtered.exit_code == 0 and filtered.stdout.strip() == ""


def test_no_index_exits_5_with_a_one_line_message(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake_model
):
    monkeypatch.setenv("KEFU_DATA_DIR", str(tmp_path / "nothing-here"))
    monkeypatch.setenv("KEFU_MODEL", "fake:hash-128")
    r = runner.invoke(app, ["ask", "--json", "退款多久到账"])
    assert r.exit_code == 5
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error:") and "kefu build" in lines[0]
    assert "Traceback" not in r.output


def test_query_over_the_limit_exits_2(runner: CliRunner, env):
    r = runner.invoke(app, ["ask", "--json", "退" * 501])
    assert r.exit_code == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "500" in r.stderr
    assert r.stdout == ""


def test_bad_top_k_is_a_usage_error(runner: CliRunner, env):
    r = runner.invoke(app, ["ask", "--top-k", "0", "退款"])
    assert r.exit_code == 2


def test_model_mismatch_is_reported(runner: CliRunner, env, monkeypatch: pytest.MonkeyPatch):
    other = indexer.encoder.FakeEncoder(dim=128, model_id="fake:other")
    monkeypatch.setattr(service.runtime, "load_encoder", lambda settings: other)
    r = runner.invoke(app, ["ask", "--json", "退款"])
    assert r.exit_code == 5
    assert "kefu build" in r.stderr and "fake:other" in r.stderr


def test_build_then_ask(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_kb_dir: Path, fake_model
):
    monkeypatch.setenv("KEFU_DATA_DIR", str(tmp_path / "fresh"))
    monkeypatch.setenv("KEFU_KB_DIR", str(tiny_kb_dir))
    monkeypatch.setenv("KEFU_MODEL", "fake:hash-128")
    b = runner.invoke(app, ["build"])
    assert b.exit_code == 0, b.output
    assert IndexStore(tmp_path / "fresh" / "index").current_id() is not None
    r = runner.invoke(app, ["ask", "--json", "转人工"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["reason"] == "user_requested"


def test_eval_calibrate_takes_the_shipped_ranker_when_it_cannot_fit_one(runner: CliRunner, env):
    """The tiny KB has 9 alternatives and none of the dev split's entries: too little to fit a
    ranker on, so the build is calibrated with the shipped KB-agnostic one, as it says."""
    from service.selfcal import general_ranker

    r = runner.invoke(app, ["eval", "calibrate", "--json"])
    assert r.exit_code == 0, r.output
    assert "ranker not fitted" in r.stderr and "need at least 20" in r.stderr
    assert "the shipped KB-agnostic one kept" in r.stderr and "none could be fitted" in r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["ranker"]["kept"] == "shipped" and out["ranker"]["fitted_dev_hit@1"] is None
    manifest = json.loads((IndexStore(env.index_home).current_path() / "manifest.json").read_text("utf-8"))
    shipped = general_ranker()  # as served: the tiny KB has alternatives, so no plain-table rules
    assert shipped is not None and manifest["calibration"]["ranker"] == shipped.to_json()
    assert manifest["calibration"]["source"] == "dev-logistic"


def _own_split(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {"id": "m1", "query": "退货运费谁出", "relevant": ["refund-shipping-fee"], "expect": "answer"},
        {"id": "m2", "query": "我的快递到哪了", "relevant": ["logistics-track"], "expect": "answer"},
        {"id": "m3", "query": "今天天气怎么样", "expect": "handoff", "reason": "low_confidence"},
    ]
    (folder / "dev.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), "utf-8")
    return folder


def test_eval_runs_on_your_own_labelled_set(runner: CliRunner, env, tmp_path, monkeypatch):
    own = _own_split(tmp_path / "labels")
    r = runner.invoke(app, ["eval", "run", "--split", "dev", "--data", str(own), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["n"] == 3 and out["hit@1"] == 1.0  # three items; both in-scope queries found first
    monkeypatch.setenv("KEFU_EVAL_DIR", str(own))  # the setting does the same
    r = runner.invoke(app, ["eval", "run", "--split", "dev", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.strip().splitlines()[-1])["n"] == 3


def test_eval_on_a_folder_without_the_split_says_where_it_looked(runner: CliRunner, env, tmp_path):
    r = runner.invoke(app, ["eval", "run", "--split", "test", "--data", str(_own_split(tmp_path / "labels"))])
    assert r.exit_code != 0
    assert "no eval split at" in r.stderr and "test.jsonl" in r.stderr


def test_eval_calibrate_dry_run_writes_nothing(runner: CliRunner, env):
    manifest_path = IndexStore(env.index_home).current_path() / "manifest.json"
    before = manifest_path.read_bytes()
    r = runner.invoke(app, ["eval", "calibrate", "--dry-run", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["written"] is False and 0.0 <= out["answer_at"] <= 1.0
    assert manifest_path.read_bytes() == before  # the index keeps the calibration it had
    r = runner.invoke(app, ["eval", "calibrate", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.strip().splitlines()[-1])["written"] is True
    assert manifest_path.read_bytes() != before


def test_eval_calibrate_refuses_dry_run_with_ship(runner: CliRunner, env):
    r = runner.invoke(app, ["eval", "calibrate", "--dry-run", "--ship"])
    assert r.exit_code != 0
    assert "--dry-run writes nothing" in r.stderr


def test_card_says_what_was_searched_after_a_typo_fix(tiny_answerer, monkeypatch: pytest.MonkeyPatch):
    from rich.console import Console

    import service.cli
    from service.speller import Speller

    tiny_answerer.speller = Speller(["发票怎么开", "电子发票在哪下载", "发票抬头", "补开发票", "发票丢了"] * 2)
    out = Console(record=True, width=120)
    monkeypatch.setattr(service.cli, "console", out)
    service.cli.render(tiny_answerer.answer("发漂怎么开"))
    assert "按「发票怎么开」搜索（漂→票 (发票)）" in out.export_text()
    out = Console(record=True, width=120)
    monkeypatch.setattr(service.cli, "console", out)
    service.cli.render(tiny_answerer.answer("发票怎么开"))
    assert "搜索（" not in out.export_text()


def test_index_info_is_a_short_summary_and_json_gives_the_manifest(runner: CliRunner, env):
    short = runner.invoke(app, ["index", "info"])
    assert short.exit_code == 0, short.output
    lines = short.stdout.strip().splitlines()
    assert len(lines) <= 10
    assert lines[0].startswith("build ") and any(line.startswith("calibration ") for line in lines)
    full = runner.invoke(app, ["index", "info", "--json"])
    manifest = json.loads(full.stdout)
    assert manifest["build_id"] in lines[0] and manifest["counts"]["entries"] > 0
    # what the documents were embedded in (the fake encoder: float32)
    assert manifest["doc_precision"] == "fp32" and any(line.endswith("documents in fp32") for line in lines)


def test_serve_on_a_busy_port_exits_2_before_announcing(runner: CliRunner, env):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = runner.invoke(app, ["serve", "--port", str(port)])
    assert r.exit_code == 2
    assert "serving on" not in r.stdout
    assert f"127.0.0.1:{port}" in r.output and "--port" in r.output


def _card(answer, monkeypatch: pytest.MonkeyPatch) -> str:
    from rich.console import Console

    import service.cli

    out = Console(record=True, width=120)
    monkeypatch.setattr(service.cli, "console", out)
    service.cli.render(answer)
    return out.export_text()


def test_card_names_a_clause_and_the_clauses_an_faq_answer_cites(monkeypatch: pytest.MonkeyPatch):
    from service.schemas import Answer, AnswerItem, Cite, SourceRef

    clause = AnswerItem(
        id="rules-seven-day-return.5",
        title="《七天无理由退货规范》第五条",
        text="第五条 买家应在签收次日起七日内提出申请。",
        score=0.91,
        source=SourceRef(
            doc_id="rules-seven-day-return", section="七天无理由退货规范 > 第五条", kind="rules", clause=5
        ),
    )
    cite = Cite(
        id="rules-seven-day-return.5",
        doc_id="rules-seven-day-return",
        title="七天无理由退货规范",
        clause=5,
        label="《七天无理由退货规范》第五条",
    )
    faq = AnswerItem(
        id="refund-seven-day",
        title="七天无理由退货怎么算？",
        text="自签收次日起算七天 [以页面为准]。" * 8,  # long: shown cut as a runner-up, the cites still shown
        score=0.88,
        source=SourceRef(doc_id="refund-seven-day", section="退货退款", kind="faq"),
        cites=[
            cite,
            cite.model_copy(
                update={"id": "rules-seven-day-return.8", "clause": 8, "label": "《七天无理由退货规范》第八条"}
            ),
        ],
    )
    base = {"query": "q", "normalized_query": "q", "decision": "answer", "session_id": "S1", "elapsed_ms": 1.0}
    text = _card(Answer(**base, answers=[clause, faq]), monkeypatch)
    assert "1. 《七天无理由退货规范》第五条" in text  # the clause named as it is cited
    assert "rules:rules-seven-day-return.5" in text  # its id, for GET /v1/entries/{id}
    assert "依据：《七天无理由退货规范》第五条、《七天无理由退货规范》第八条" in text
    assert "[以页面为准]" in text  # the KB's brackets are text, not console markup
    text = _card(Answer(**base, answers=[faq]), monkeypatch)  # the FAQ answer first, shown whole
    assert text.count("依据：") == 1 and "2." not in text
    # a clause whose title is the document's alone (a build without units.json) still gets its label
    bare = clause.model_copy(update={"title": "七天无理由退货规范"})
    assert "1. 《七天无理由退货规范》第五条" in _card(Answer(**base, answers=[bare]), monkeypatch)


@pytest.mark.parametrize("group", [[], ["eval"], ["shops"]])
def test_command_lists_show_each_summary_unbroken(runner: CliRunner, group: list[str]):
    """A docstring wrapped in the source is one flowing summary in the command list, not a line
    broken mid-sentence wherever the source wrapped it."""
    r = runner.invoke(app, [*group, "--help"], env={"COLUMNS": "400"}, terminal_width=400)
    assert r.exit_code == 0, r.output
    rows = [line for line in r.stdout.splitlines() if line.startswith("│ ")]
    continued = [row for row in rows if row[2] == " " and row.strip("│ ")]  # a summary's second line
    assert rows and not continued, continued
