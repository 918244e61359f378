"""Load a knowledge base from a folder, with `file:line: message` errors.

Accepted inside the folder (recursively):
- ``*.yaml``/``*.yml`` with ``entries:`` — FAQ entries in kefu's format (strict checks);
- ``*.md`` with YAML front matter (``id``, ``title``, ``category``, ``effective``) — rules documents,
  when the front matter has ``effective`` (or ``supersedes``) or the text has clauses (第一条);
  other ``*.md`` and ``*.txt`` — plain help documents (front matter may give ``title``,
  ``category`` and ``id``: kb/documents.py);
- ``*.html``/``*.htm`` — help-center pages, read as plain documents (kb/html.py): headings,
  lists, tables and paragraphs kept; scripts, navigation, headers/footers and hidden parts dropped;
- ``*.docx`` — Word documents, read as plain documents (kb/docx.py): headings, lists, tables;
- ``*.csv``, ``*.tsv``, ``*.jsonl``, ``*.xlsx`` — FAQ tables with columns ``question``, ``answer``
  and optional ``alt_questions`` (separated by ``|`` or new lines), ``category``, ``id``, ``rules``
  (cited clauses such as ``rules-coupons#5``, separated by ``|``); every visible, non-empty sheet
  of a workbook, each with its own header row, its name the category of its rows when there are
  several (kb/table_read.py);
  exports from other systems are taken as they are unless ``strict``: any id string (a
  non-slug id becomes a derived slug, the original kept as ``source_id``), short answers,
  duplicate ids made unique, rows that repeat a question merged into the first, rows without
  a question or answer skipped — each change counted in ``KnowledgeBase.report``;
- ``resources/`` — jieba ``userdict.txt``, ``synonyms.yaml``, ``out_of_scope.yaml``,
  ``greetings.yaml``; where a folder has none, the bundled ones are used;
- what ``kefu learn`` keeps (kb/learned.py): ``alternatives.yaml`` (learned alternative questions
  by entry id, added to the entries here, so an imported table is never rewritten); its
  ``learned.jsonl`` and ``learn-journal.jsonl``, and ``drafts/``, are not content and are skipped.

Other files are skipped and named in ``KnowledgeBase.skipped_files`` (a warning in `kefu kb check`
and the build's log), except hidden ones and kefu's own (``quiet_file``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import yaml

from kb.checks import cross_check
from kb.documents import HTML_SUFFIXES, add_plain_doc, load_docx, load_html, load_markdown, read_text
from kb.errors import KBError
from kb.faqyaml import load_yaml
from kb.loadstate import LoadState
from kb.schema import (
    MIN_ANSWER,
    REPLY_KINDS,
    Document,
    FAQEntry,
    ImportReport,
    KnowledgeBase,
    Replies,
    Resources,
    Source,
)
from kb.settings import BUNDLED_KB
from kb.settle import settle_imports
from kb.sidecar import SIDECAR, learning_file, load_sidecar
from kb.tables import TABLE_SUFFIXES, load_table

log = logging.getLogger("kefu.kb")


RESOURCE_FILES = ("greetings.yaml", "synonyms.yaml", "out_of_scope.yaml", "sensitive.yaml", "userdict.txt")


def resource_file(root: Path, name: str) -> Path | None:
    """``root/resources/name``, else the bundled file of that name, else None."""
    for folder in (root / "resources", BUNDLED_KB / "resources"):
        if (folder / name).is_file():
            return folder / name
    return None


def load_resources(root: Path) -> Resources:
    """Domain resources from ``root/resources`` (a KB or a build folder), file by file; the
    bundled file where that folder has none."""
    files = {name: path for name in RESOURCE_FILES if (path := resource_file(root, name)) is not None}

    def mapping(name: str) -> dict[str, Any]:
        p = files.get(name)
        if p is None:
            return {}
        try:
            data = yaml.safe_load(p.read_text("utf-8")) or {}
        except yaml.YAMLError as exc:
            raise KBError(f"{p}: invalid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise KBError(f"{p}: expected a mapping of names to lists")
        return {str(k): v for k, v in data.items()}

    def lists(name: str, data: dict[str, Any] | None = None) -> dict[str, tuple[str, ...]]:
        """The file's mapping of names to lists of phrases; a scalar where a list belongs is an
        error (``examples: 怎么泡茶`` would otherwise be read character by character)."""
        out = {}
        for k, v in (mapping(name) if data is None else data).items():
            if v is not None and not isinstance(v, list):
                raise KBError(f"{files[name]}: {k} must be a list (one '- item' a line), got {v!r}; write it as a list")
            out[k] = tuple(str(x) for x in (v or []))
        return out

    greetings_file = mapping("greetings.yaml")
    replies = _replies(files.get("greetings.yaml"), greetings_file.pop("replies", None))
    greet = lists("greetings.yaml", greetings_file)
    return Resources(
        userdict=files.get("userdict.txt"),
        synonyms=lists("synonyms.yaml"),
        out_of_scope=lists("out_of_scope.yaml"),
        greetings=greet.get("greetings", ()),
        thanks=greet.get("thanks", ()),
        examples=greet.get("examples", ()),
        replies=replies,
        files=tuple(files.items()),
    )


def _replies(path: Path | None, data: Any) -> Replies:
    """greetings.yaml's ``replies:`` (what kefu says, in the KB's words), checked."""
    if data is None:
        return Replies()
    if not isinstance(data, dict):
        raise KBError(f"{path}: replies must be a mapping of {', '.join(REPLY_KINDS)} to a text, got {data!r}")
    out = {}
    for k, v in data.items():
        if k not in REPLY_KINDS:
            raise KBError(f"{path}: replies has no {k!r}; it takes {', '.join(REPLY_KINDS)}")
        if not isinstance(v, str) or not v.strip():
            raise KBError(f"{path}: replies.{k} must be a non-empty text, got {v!r}")
        if "{examples}" in v and k not in ("greeting", "empty"):
            raise KBError(f"{path}: replies.{k} has {{examples}}, which only the greeting and empty replies fill")
        out[k] = v.strip()
    return Replies(**out)


def load_kb(path: Path, strict: bool | None = None, *, log_changes: bool = True) -> KnowledgeBase:
    """Load and validate the knowledge base at ``path``; raise KBError listing every problem.

    ``strict`` (default: only for the bundled KB) enforces the content bar of the bundled help
    center, such as the minimum length of rules documents, and refuses what imported tables
    otherwise get settled (non-slug or duplicate ids, repeated questions, incomplete rows).
    What was settled is in ``KnowledgeBase.report``; ``log_changes`` also logs one summary line
    (for `kefu build`; `kefu kb check` prints the report itself).
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise KBError(f"knowledge base {root} does not exist; pass --kb with a folder or file")
    if strict is None:
        strict = root.resolve() == BUNDLED_KB.resolve()
    loader = LoadState(root if root.is_dir() else root.parent, strict)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    skipped: list[str] = []
    for p in files:
        rel = p.relative_to(loader.root)
        if "resources" in rel.parts or p.name.startswith((".", "~$")) or learning_file(rel):
            continue  # ~$name.xlsx: Office's lock file while the workbook is open, not a workbook
        suffix = p.suffix.lower()
        if suffix in {".yaml", ".yml"}:
            load_yaml(loader, p)
        elif suffix == ".md":
            load_markdown(loader, p)
        elif suffix == ".txt":
            src = Source(loader.rel(p))
            text = read_text(loader, p, src)
            if text is not None:
                add_plain_doc(loader, p, text, src)
        elif suffix in HTML_SUFFIXES:
            load_html(loader, p)
        elif suffix == ".docx":
            load_docx(loader, p)
        elif suffix in TABLE_SUFFIXES:
            load_table(loader, p)
        elif not quiet_file(rel):
            skipped.append(loader.rel(p))
    if not loader.strict:  # even with problems elsewhere, so rows are not also reported as duplicates
        settle_imports(loader)
    if (loader.root / SIDECAR).is_file():
        load_sidecar(loader, loader.root / SIDECAR)
    cross_check(loader)
    if loader.problems:
        raise KBError(
            f"knowledge base {root} has {len(loader.problems)} problem(s); fix them and run `kefu kb check`",
            loader.problems,
        )
    report = loader.report()
    if not loader.entries and not loader.documents:
        # When every row was skipped, say why per row rather than only "empty".
        raise KBError(
            f"knowledge base {root} is empty: no FAQ entries or documents found "
            "(expected *.yaml FAQ files, *.md/*.txt/*.html documents or CSV/TSV/JSONL/XLSX tables)",
            [str(n) for n in report.notes] + [f"{name}: {skip_reason(name)}" for name in skipped],
        )
    if log_changes and (report.notes or report.ids_mapped):
        log.warning("knowledge base %s: %s; `kefu kb check` lists them", root, summary_line(report))
    if log_changes and skipped:
        log.warning("knowledge base %s: %s; `kefu kb check` says why", root, skipped_line(skipped))
    resources = load_resources(loader.root)
    entries = loader.entries
    return KnowledgeBase(
        root=loader.root,
        entries=tuple(entries),
        documents=tuple(loader.documents),
        resources=resources,
        sources=loader.sources,
        content_hash=_content_hash(entries, loader.documents, resources),
        report=report,
        skipped_files=tuple(skipped),
    )


# Not content, and not the user's to hear about: hidden or kefu's own files, OS and Office leftovers.
QUIET_NAMES = frozenset({"Thumbs.db", "desktop.ini"})
KEFU_FILES = frozenset({"calibration.json"})  # at the top of a KB: the shipped calibration (indexer/build.py)
SKIP_HINTS = {
    **dict.fromkeys(
        (".pdf", ".odt", ".rtf", ".pages", ".ppt", ".pptx", ".epub"), "save it as .docx, .md, .txt or .html"
    ),
    **dict.fromkeys((".xls", ".xlsm", ".ods", ".numbers"), "save it as .xlsx or export it as CSV UTF-8"),
    **dict.fromkeys(
        (".png", ".jpg", ".jpeg", ".gif", ".webp", ".svg", ".bmp"), "images are not read; articles' text is"
    ),
    ".doc": "save it from Word as .docx",
    ".json": "write FAQ rows as JSON Lines (.jsonl): one object per line",
    ".markdown": "rename it .md",
}


def quiet_file(rel: Path) -> bool:
    """A file skipped without a word: in a hidden folder, OS clutter, kefu's own."""
    return (
        any(part.startswith(".") for part in rel.parts)
        or rel.name in QUIET_NAMES
        or (len(rel.parts) == 1 and rel.name in KEFU_FILES)
    )


def skip_reason(name: str) -> str:
    """Why the file ``name`` was skipped, and how to include it."""
    suffix = Path(name).suffix.lower()
    kind = f"{suffix} files" if suffix else "files without a suffix"
    return f"skipped: kefu does not read {kind}; {SKIP_HINTS.get(suffix, 'save it as .md, .txt, .html or a table')}"


def skipped_line(skipped: list[str] | tuple[str, ...], shown: int = 5) -> str:
    """``2 files skipped (…): a.pdf, b.docx``: the count and the first few names."""
    names = ", ".join(skipped[:shown]) + (f" and {len(skipped) - shown} more" if len(skipped) > shown else "")
    n = len(skipped)
    return f"{n} file{'s' if n != 1 else ''} skipped (types kefu does not read): {names}"


REPORT_LABELS = {
    "ids_mapped": "ids mapped to slugs",
    "ids_made_unique": "duplicate ids made unique",
    "duplicates_merged": "duplicate questions merged",
    "answers_differing": "merged rows with a different answer (first kept)",
    "alternatives_dropped": "alternative questions dropped (another entry has them)",
    "short_answers_accepted": f"short answers accepted (under {MIN_ANSWER} characters)",
    "cites_dropped": "rules cites dropped (malformed, or no such clause)",
    "rows_skipped": "rows skipped",
    "columns_ignored": "columns not read (not one of kefu's)",
    "files_not_utf8": "files read as GBK or Big5, not UTF-8",
}


def summary_line(report: ImportReport) -> str:
    """The non-zero counts of ``report`` in one line, e.g. ``3 ids mapped to slugs, 1 rows skipped``."""
    counts = report.counts()
    return ", ".join(f"{counts[k]} {label}" for k, label in REPORT_LABELS.items() if counts[k]) or "no changes"


def _content_hash(entries: list[FAQEntry], documents: list[Document], resources: Resources) -> str:
    h = hashlib.sha256()
    for e in sorted(entries, key=lambda e: e.id):
        # An empty ``replaces`` or ``rules`` and a missing ``source_id`` are left out, so a KB that
        # uses none of them keeps the hash it had before the fields existed (and its index stays current).
        unset = {k for k in ("replaces", "source_id", "rules") if not getattr(e, k)}
        h.update(e.model_dump_json(exclude=unset or None).encode())
    for d in sorted(documents, key=lambda d: d.id):
        fields: list[object] = [d.id, d.title, d.category, d.body, d.kind]
        if d.questions:  # left out when absent: a KB without unit questions keeps its hash
            fields.append([[u, list(qs)] for u, qs in d.questions])
        h.update(json.dumps(fields, ensure_ascii=False).encode())
    for name, path in resources.files:  # what the service reads from the build: a change is a new KB
        h.update(name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()
