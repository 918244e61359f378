"""Load a knowledge base from a folder, with `file:line: message` errors.

Accepted inside the folder (recursively):
- ``*.yaml``/``*.yml`` with ``entries:`` — FAQ entries in kefu's format (strict checks);
- ``*.md`` with YAML front matter (``id``, ``title``, ``category``, ``effective``) — rules documents;
  ``*.md`` without front matter and ``*.txt`` — plain help documents;
- ``*.csv``, ``*.tsv``, ``*.jsonl``, ``*.xlsx`` — FAQ tables with columns ``question``, ``answer``
  and optional ``alt_questions`` (separated by ``|`` or new lines), ``category``, ``id``;
- ``resources/`` — jieba ``userdict.txt``, ``synonyms.yaml``, ``out_of_scope.yaml``,
  ``greetings.yaml``; where a folder has none, the bundled ones are used.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from kb.errors import KBError
from kb.schema import (
    MIN_RULES_BODY,
    Document,
    FAQEntry,
    ImportedEntry,
    KnowledgeBase,
    Resources,
    RulesMeta,
    Source,
)
from kb.settings import BUNDLED_KB

TABLE_SUFFIXES = {".csv", ".tsv", ".jsonl", ".xlsx"}
MIN_DOC_BODY = 20  # a document shorter than this is almost certainly an export mistake
ALT_SPLIT = re.compile(r"\s*(?:\||\n|；|;)\s*")
FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*\n", re.S)


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that records the line of every mapping as ``__line__``."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    mapping = yaml.SafeLoader.construct_mapping(loader, node, deep=deep)
    mapping["__line__"] = node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def question_key(text: str) -> str:
    """Comparison key for duplicate questions: width-folded, lower-case, no punctuation or spaces."""
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(ch for ch in text if ch.isalnum())


def _fmt_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "entry"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


class _Loader:
    def __init__(self, root: Path, strict: bool) -> None:
        self.root = root
        self.strict = strict
        self.problems: list[str] = []
        self.entries: list[FAQEntry] = []
        self.documents: list[Document] = []
        self.sources: dict[str, Source] = {}
        self.placed: list[tuple[str, Source]] = []  # every (id, source), duplicates included

    def rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def problem(self, src: Source, message: str) -> None:
        self.problems.append(f"{src}: {message}")

    # --- FAQ YAML ------------------------------------------------------------------------
    def load_yaml(self, path: Path) -> None:
        src = Source(self.rel(path))
        try:
            data = yaml.load(path.read_text("utf-8"), Loader=_LineLoader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else 1
            self.problem(Source(src.path, line), f"invalid YAML: {getattr(exc, 'problem', exc)}")
            return
        except UnicodeDecodeError:
            self.problem(src, "not UTF-8 text; save the file as UTF-8")
            return
        if not isinstance(data, dict) or "entries" not in data:
            self.problem(src, "expected a mapping with an `entries:` list (see kb/content/faq/*.yaml)")
            return
        default_category = data.get("category")
        entries = data.get("entries") or []
        if not isinstance(entries, list):
            self.problem(src, "`entries` must be a list")
            return
        for raw in entries:
            if not isinstance(raw, dict):
                self.problem(src, "each entry must be a mapping with id, question, alt_questions, answer")
                continue
            line = int(raw.pop("__line__", 1))
            raw.setdefault("category", default_category)
            if default_category and raw["category"] != default_category:
                self.problem(
                    Source(src.path, line),
                    f"entry {raw.get('id')!r} has category {raw['category']!r} but the file is {default_category!r}",
                )
            self.add_entry(raw, Source(src.path, line), FAQEntry)

    def add_entry(self, raw: dict[str, Any], src: Source, model: type[FAQEntry]) -> None:
        raw = {k: v for k, v in raw.items() if v is not None and k != "__line__"}
        for key in ("alt_questions", "tags", "related", "replaces"):
            if isinstance(raw.get(key), list):
                raw[key] = tuple(str(x) for x in raw[key])
        try:
            entry = model.model_validate(raw)
        except ValidationError as exc:
            self.problem(src, f"entry {raw.get('id', '?')!r}: {_fmt_validation(exc)}")
            return
        self.entries.append(entry)
        self.placed.append((entry.id, src))
        self.sources.setdefault(entry.id, src)

    # --- documents --------------------------------------------------------------------------
    def load_markdown(self, path: Path) -> None:
        src = Source(self.rel(path))
        text = self.read_text(path, src)
        if text is None:
            return
        m = FRONT_MATTER.match(text)
        if m is None:
            self.add_plain_doc(path, text, src)
            return
        try:
            meta_raw = yaml.safe_load(m.group(1)) or {}
            meta = RulesMeta.model_validate(meta_raw)
        except yaml.YAMLError as exc:
            self.problem(Source(src.path, 2), f"invalid front matter: {exc}")
            return
        except ValidationError as exc:
            self.problem(Source(src.path, 1), f"front matter: {_fmt_validation(exc)}")
            return
        body = text[m.end() :]
        body_line = text[: m.end()].count("\n") + 1
        size = len(re.sub(r"\s", "", body))
        minimum = MIN_RULES_BODY if self.strict else MIN_DOC_BODY
        if size < minimum:
            self.problem(Source(src.path, body_line), f"rules body has {size} characters; at least {minimum} required")
            return
        self.documents.append(
            Document(meta.id, meta.title, meta.category, body, src, "rules", meta.effective, meta.supersedes)
        )
        self.placed.append((meta.id, src))
        self.sources.setdefault(meta.id, src)

    def add_plain_doc(self, path: Path, text: str, src: Source) -> None:
        if len(text.strip()) < MIN_DOC_BODY:
            self.problem(src, f"document is empty or shorter than {MIN_DOC_BODY} characters")
            return
        heading = re.search(r"^#\s+(.+)$", text, re.M)
        title = heading.group(1).strip() if heading else path.stem
        doc_id = _slugify(path.stem, fallback=f"doc-{hashlib.sha1(self.rel(path).encode()).hexdigest()[:8]}")
        self.documents.append(Document(doc_id, title, "文档", text, src, "doc"))
        self.placed.append((doc_id, src))
        self.sources.setdefault(doc_id, src)

    def read_text(self, path: Path, src: Source) -> str | None:
        try:
            return path.read_text("utf-8-sig")
        except UnicodeDecodeError:
            self.problem(src, "not UTF-8 text; save the file as UTF-8")
            return None

    # --- tables ---------------------------------------------------------------------------------
    def load_table(self, path: Path) -> None:
        src = Source(self.rel(path))
        try:
            rows = list(_table_rows(path))
        except UnicodeDecodeError:
            self.problem(src, "not UTF-8 text; save the table as UTF-8")
            return
        except (ValueError, OSError, csv.Error) as exc:
            self.problem(src, f"cannot read table: {exc}")
            return
        if not rows:
            self.problem(src, "table has no rows")
            return
        for line, row in rows:
            if isinstance(row, str):
                self.problem(Source(src.path, line), row)
                continue
            row = {str(k).strip().lower(): v for k, v in row.items() if k is not None}
            missing = [c for c in ("question", "answer") if not str(row.get(c) or "").strip()]
            if missing:
                self.problem(Source(src.path, line), f"missing {' and '.join(missing)} (columns: question, answer)")
                continue
            alts = row.get("alt_questions") or ()
            if isinstance(alts, str):
                alts = tuple(a for a in ALT_SPLIT.split(alts) if a)
            raw = {
                "id": str(row.get("id") or "").strip()
                or f"{_slugify(path.stem, 'faq')}-{path.suffix[1:].lower()}-{line}",
                "category": str(row.get("category") or "").strip() or path.stem,
                "question": str(row["question"]),
                "answer": str(row["answer"]),
                "alt_questions": tuple(str(a) for a in alts),
            }
            self.add_entry(raw, Source(src.path, line), ImportedEntry)

    # --- whole-KB checks --------------------------------------------------------------------------
    def cross_check(self) -> None:
        seen: dict[str, Source] = {}
        for obj_id, src in self.placed:
            if obj_id in seen:
                self.problem(src, f"duplicate id {obj_id!r} (first at {seen[obj_id]})")
            seen.setdefault(obj_id, src)
        ids = set(seen)
        merged: dict[str, str] = {}
        for e in self.entries:
            src = self.sources[e.id]
            for old in e.replaces:
                if old in ids:
                    why = f"which still exists; delete {old!r} or drop it from replaces"
                    self.problem(src, f"entry {e.id!r} replaces {old!r}, {why}")
                elif old in merged:
                    self.problem(src, f"entry {e.id!r} replaces {old!r}, which {merged[old]!r} replaces too; keep one")
                merged.setdefault(old, e.id)
        questions: dict[str, str] = {}
        for e in self.entries:
            src = self.sources[e.id]
            for rel in e.related:
                if rel in merged:
                    new = merged[rel]
                    self.problem(src, f"entry {e.id!r}: related id {rel!r} was merged into {new!r}; write {new!r}")
                elif rel not in ids:
                    self.problem(src, f"entry {e.id!r}: related id {rel!r} does not exist")
            for q in (e.question, *e.alt_questions):
                key = question_key(q)
                owner = questions.get(key)
                if owner is not None and owner != e.id:
                    self.problem(src, f"entry {e.id!r}: question {q!r} duplicates one of {owner!r}")
                elif owner is None:
                    questions[key] = e.id


def _slugify(text: str, fallback: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug if len(slug) >= 2 else fallback


def _table_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """Yield (line number, row) pairs; a str row is an error message for that line."""
    suffix = path.suffix.lower()
    if suffix in {".csv", ".tsv"}:
        text = path.read_text("utf-8-sig")
        reader = csv.DictReader(io.StringIO(text), delimiter="\t" if suffix == ".tsv" else ",")
        if not reader.fieldnames or "question" not in [f.strip().lower() for f in reader.fieldnames]:
            raise ValueError(f"header must name the columns question and answer, found {reader.fieldnames}")
        for row in reader:
            yield reader.line_num, row
    elif suffix == ".jsonl":
        for n, line in enumerate(path.read_text("utf-8-sig").splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                yield n, f"invalid JSON: {exc.msg}"
                continue
            yield n, obj if isinstance(obj, dict) else "each line must be a JSON object"
    elif suffix == ".xlsx":
        from openpyxl import load_workbook

        wb = load_workbook(path, read_only=True, data_only=True)
        ws = wb.worksheets[0]
        rows = ws.iter_rows(values_only=True)
        header = [str(h or "").strip().lower() for h in next(rows, ())]
        if "question" not in header:
            raise ValueError(f"first row must name the columns question and answer, found {header}")
        for n, values in enumerate(rows, 2):
            if all(v is None for v in values):
                continue
            yield n, {h: ("" if v is None else v) for h, v in zip(header, values, strict=False) if h}
        wb.close()


def load_resources(root: Path) -> Resources:
    """Domain resources from ``root/resources``; the bundled ones where that folder has none."""
    folder = root / "resources"
    if not folder.is_dir():
        folder = BUNDLED_KB / "resources"

    def read_yaml(name: str) -> dict[str, Any]:
        p = folder / name
        if not p.is_file():
            p = BUNDLED_KB / "resources" / name
        if not p.is_file():
            return {}
        try:
            data = yaml.safe_load(p.read_text("utf-8")) or {}
        except yaml.YAMLError as exc:
            raise KBError(f"{p}: invalid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise KBError(f"{p}: expected a mapping of names to lists")
        return data

    def lists(data: dict[str, Any]) -> dict[str, tuple[str, ...]]:
        return {str(k): tuple(str(x) for x in (v or [])) for k, v in data.items()}

    greet = lists(read_yaml("greetings.yaml"))
    userdict = folder / "userdict.txt"
    if not userdict.is_file():
        userdict = BUNDLED_KB / "resources" / "userdict.txt"
    return Resources(
        userdict=userdict if userdict.is_file() else None,
        synonyms=lists(read_yaml("synonyms.yaml")),
        out_of_scope=lists(read_yaml("out_of_scope.yaml")),
        greetings=greet.get("greetings", ()),
        thanks=greet.get("thanks", ()),
    )


def load_kb(path: Path, strict: bool | None = None) -> KnowledgeBase:
    """Load and validate the knowledge base at ``path``; raise KBError listing every problem.

    ``strict`` (default: only for the bundled KB) enforces the content bar of the bundled help
    center, such as the minimum length of rules documents.
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise KBError(f"knowledge base {root} does not exist; pass --kb with a folder or file")
    if strict is None:
        strict = root.resolve() == BUNDLED_KB.resolve()
    loader = _Loader(root if root.is_dir() else root.parent, strict)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    for p in files:
        if "resources" in p.relative_to(loader.root).parts or p.name.startswith("."):
            continue
        suffix = p.suffix.lower()
        if suffix in {".yaml", ".yml"}:
            loader.load_yaml(p)
        elif suffix == ".md":
            loader.load_markdown(p)
        elif suffix == ".txt":
            src = Source(loader.rel(p))
            text = loader.read_text(p, src)
            if text is not None:
                loader.add_plain_doc(p, text, src)
        elif suffix in TABLE_SUFFIXES:
            loader.load_table(p)
    loader.cross_check()
    if loader.problems:
        raise KBError(
            f"knowledge base {root} has {len(loader.problems)} problem(s); fix them and run `kefu kb check`",
            loader.problems,
        )
    if not loader.entries and not loader.documents:
        raise KBError(
            f"knowledge base {root} is empty: no FAQ entries or documents found "
            "(expected *.yaml FAQ files, *.md/*.txt documents or CSV/TSV/JSONL/XLSX tables)"
        )
    resources = load_resources(loader.root)
    return KnowledgeBase(
        root=loader.root,
        entries=tuple(loader.entries),
        documents=tuple(loader.documents),
        resources=resources,
        sources=loader.sources,
        content_hash=_content_hash(loader.entries, loader.documents, resources),
    )


def _content_hash(entries: list[FAQEntry], documents: list[Document], resources: Resources) -> str:
    h = hashlib.sha256()
    for e in sorted(entries, key=lambda e: e.id):
        # An empty ``replaces`` is left out, so a KB that merges nothing keeps the hash it had
        # before the field existed (and its index stays current).
        h.update(e.model_dump_json(exclude=None if e.replaces else {"replaces"}).encode())
    for d in sorted(documents, key=lambda d: d.id):
        h.update(json.dumps([d.id, d.title, d.category, d.body, d.kind], ensure_ascii=False).encode())
    h.update(json.dumps([sorted(resources.out_of_scope.items())], ensure_ascii=False).encode())
    return h.hexdigest()
