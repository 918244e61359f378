"""A KB folder as users bring it: articles with front matter, files kefu skips, and `kefu kb check`'s lines."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kb.errors import KBError
from kb.loader import load_kb

ARTICLE = "## 绿茶怎么泡\n\n绿茶适合用八十度左右的水冲泡，不要用刚烧开的沸水，第一泡浸泡一分钟即可出汤。\n"
RULES_BODY = "# 退货规范\n\n第一条 买家应在签收次日起七日内提出无理由退货申请，逾期提出的不予支持。\n"


def _md(path: Path, front: str, body: str) -> Path:
    path.write_text(f"---\n{front}\n---\n\n{body}", "utf-8")
    return path


def _problems(path: Path, strict: bool | None = None) -> list[str]:
    with pytest.raises(KBError) as info:
        load_kb(path, strict=strict)
    return info.value.problems


# --- 4. front matter alone does not make a rules document ----------------------------------------------------
def test_an_article_with_front_matter_is_an_article_titled_by_it(tmp_path: Path):
    _md(
        tmp_path / "green-tea.md",
        "id: tea-green\ntitle: 绿茶冲泡指南\ncategory: 冲泡\ndate: 2024-05-01\ndraft: false",
        ARTICLE,
    )
    _md(tmp_path / "black.md", 'title: "红茶"\ntags: [tea]', ARTICLE)
    kb = load_kb(tmp_path)
    docs = {d.id: d for d in kb.documents}
    assert set(docs) == {"tea-green", "black"}
    green = docs["tea-green"]
    assert (green.kind, green.title, green.category) == ("doc", "绿茶冲泡指南", "冲泡")
    assert green.body.startswith("## 绿茶怎么泡") and "draft" not in green.body  # front matter is not text
    assert (docs["black"].kind, docs["black"].title, docs["black"].category) == ("doc", "红茶", "文档")
    assert str(kb.sources["tea-green"]) == "green-tea.md:1"


def test_an_article_id_that_is_not_a_slug_is_mapped_outside_strict(tmp_path: Path):
    _md(tmp_path / "a.md", "id: 绿茶 Guide\ntitle: 绿茶", ARTICLE)
    [doc] = load_kb(tmp_path).documents
    assert doc.id.startswith("guide-")
    [problem] = _problems(tmp_path, strict=True)
    assert problem.startswith("a.md:1: front matter: id '绿茶 Guide' is not a readable slug")


@pytest.mark.parametrize(
    ("front", "body", "says"),
    [
        ("id: rules-x\ntitle: 退货规范\ncategory: 退货退款", RULES_BODY, "effective: Field required"),  # has clauses
        ("id: rules-x\ntitle: 退货规范\neffective: 2026-01-01", ARTICLE, "category: Field required"),  # says effective
        ("id: rules-x\ntitle: 退货规范\ncategory: 退货\neffective: someday", RULES_BODY, "effective"),
        ("id: [oops\ntitle: x", RULES_BODY, "invalid front matter"),
    ],
)
def test_a_broken_rules_document_is_still_an_error(tmp_path: Path, front: str, body: str, says: str):
    _md(tmp_path / "r.md", front, body)
    [problem] = _problems(tmp_path)
    assert problem.startswith("r.md:") and says in problem, problem
    if "Field required" in says:
        assert "rules document" in problem  # says why it was read as one


def test_front_matter_that_is_not_a_mapping_is_an_error(tmp_path: Path):
    _md(tmp_path / "a.md", "- one\n- two", ARTICLE)
    [problem] = _problems(tmp_path)
    assert problem.startswith("a.md:1: front matter") and "key: value" in problem


# --- 6. files kefu does not read are named -------------------------------------------------------------------
def _folder_with_strays(tmp_path: Path) -> Path:
    kb = tmp_path / "kb"
    (kb / "sub").mkdir(parents=True)
    (kb / "guide.md").write_text("# 指南\n\n" + ARTICLE, "utf-8")
    (kb / "manual.pdf").write_bytes(b"%PDF-1.4")
    (kb / "sub" / "terms.doc").write_bytes(b"\xd0\xcf\x11\xe0")  # Word 97-2003: not a zip
    # Silent: hidden files and folders, Office's lock files, kefu's own files.
    (kb / ".DS_Store").write_bytes(b"\x00")
    (kb / ".git").mkdir()
    (kb / ".git" / "HEAD").write_text("ref: refs/heads/main\n", "utf-8")
    (kb / "~$faq.xlsx").write_bytes(b"\x00owner")
    (kb / "calibration.json").write_text("{}", "utf-8")
    (kb / "learn-journal.jsonl").write_text("", "utf-8")
    (kb / "drafts").mkdir()
    (kb / "drafts" / "draft-1.yaml").write_text("entries: []\n", "utf-8")
    (kb / "resources").mkdir()
    (kb / "resources" / "notes.pdf").write_bytes(b"%PDF")
    return kb


def test_unsupported_files_are_listed_and_logged_without_failing(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    kb_dir = _folder_with_strays(tmp_path)
    with caplog.at_level(logging.WARNING, logger="kefu.kb"):
        kb = load_kb(kb_dir)
    assert [d.title for d in kb.documents] == ["指南"]
    assert kb.skipped_files == ("manual.pdf", "sub/terms.doc")
    [line] = [r.getMessage() for r in caplog.records]
    assert "2 files skipped" in line and "manual.pdf, sub/terms.doc" in line
    with caplog.at_level(logging.WARNING, logger="kefu.kb"):
        caplog.clear()
        load_kb(kb_dir, log_changes=False)
    assert not caplog.records


def test_cli_check_says_which_files_it_skipped_and_why(tmp_path: Path):
    from kefu_cli import app

    kb_dir = _folder_with_strays(tmp_path)
    r = CliRunner().invoke(app, ["kb", "check", str(kb_dir)])
    assert r.exit_code == 0, r.output
    out = re.sub(r"\s+", " ", r.output)
    assert "2 files skipped" in out
    pdf = "warning: manual.pdf: skipped: kefu does not read .pdf files; save it as .docx, .md, .txt or .html"
    assert pdf in out and "warning: sub/terms.doc: skipped" in out
    assert [line for line in r.output.splitlines() if line.startswith("warning:")] == [
        pdf,
        "warning: sub/terms.doc: skipped: kefu does not read .doc files; save it from Word as .docx",
    ]
    for quiet in ("DS_Store", "HEAD", "~$faq", "calibration.json", "journal", "notes.pdf"):
        assert quiet not in out
    data = json.loads(CliRunner().invoke(app, ["kb", "check", str(kb_dir), "--json"]).output)
    assert data["skipped_files"] == ["manual.pdf", "sub/terms.doc"]


def test_the_bundled_kb_skips_nothing():
    from kb.settings import BUNDLED_KB

    assert load_kb(BUNDLED_KB).skipped_files == ()


# --- 7. the category count is the table's ---------------------------------------------------------------------
def test_cli_check_counts_the_categories_its_table_lists(tmp_path: Path):
    from kefu_cli import app

    (tmp_path / "faq.csv").write_text(
        "question,answer,category\n怎么退货,七天内在订单页申请,售后\n多久发货,四十八小时内,物流\n", "utf-8"
    )
    (tmp_path / "guide.md").write_text("# 指南\n\n" + ARTICLE, "utf-8")
    r = CliRunner().invoke(app, ["kb", "check", str(tmp_path)])
    assert r.exit_code == 0, r.output
    rows = [line for line in r.output.splitlines() if re.match(r"^\W*(售后|物流|文档)\W", line)]
    assert len(rows) == 3, r.output
    assert "3 categories" in r.output
    data = json.loads(CliRunner().invoke(app, ["kb", "check", str(tmp_path), "--json"]).output)
    assert data["categories"] == len(data["by_category"]) == 3


# --- 8. a path that does not exist: told how this command takes one ----------------------------------------------
def test_cli_check_of_a_missing_path_names_the_positional_argument(tmp_path: Path):
    from kefu_cli import app

    r = CliRunner().invoke(app, ["kb", "check", str(tmp_path / "nope")])
    assert r.exit_code == 3
    out = re.sub(r"\s+", " ", r.output)
    assert "does not exist" in out and "kefu kb check PATH" in out and "--kb" not in out


def test_cli_check_of_a_missing_kefu_kb_dir_names_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from kefu_cli import app

    monkeypatch.setenv("KEFU_KB_DIR", str(tmp_path / "nope"))
    r = CliRunner().invoke(app, ["kb", "check"])
    assert r.exit_code == 3
    out = re.sub(r"\s+", " ", r.output)
    assert "KEFU_KB_DIR" in out and "kefu kb check PATH" in out
