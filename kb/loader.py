"""Load a knowledge base from a folder, with `file:line: message` errors.

Accepted inside the folder (recursively):
- ``*.yaml``/``*.yml`` with ``entries:`` — FAQ entries in kefu's format (strict checks);
- ``*.md`` with YAML front matter (``id``, ``title``, ``category``, ``effective``) — rules documents;
  ``*.md`` without front matter and ``*.txt`` — plain help documents;
- ``*.html``/``*.htm`` — help-center pages, read as plain documents (kb/html.py): headings,
  lists, tables and paragraphs kept; scripts, navigation, headers/footers and hidden parts dropped;
- ``*.csv``, ``*.tsv``, ``*.jsonl``, ``*.xlsx`` — FAQ tables with columns ``question``, ``answer``
  and optional ``alt_questions`` (separated by ``|`` or new lines), ``category``, ``id``, ``rules``
  (cited clauses such as ``rules-coupons#5``, separated by ``|``);
  exports from other systems are taken as they are unless ``strict``: any id string (a
  non-slug id becomes a derived slug, the original kept as ``source_id``), short answers,
  duplicate ids made unique, rows that repeat a question merged into the first, rows without
  a question or answer skipped — each change counted in ``KnowledgeBase.report``;
- ``resources/`` — jieba ``userdict.txt``, ``synonyms.yaml``, ``out_of_scope.yaml``,
  ``greetings.yaml``; where a folder has none, the bundled ones are used;
- what ``kefu learn`` keeps (kb/learned.py): ``alternatives.yaml`` (learned alternative questions
  by entry id, added to the entries here, so an imported table is never rewritten); its
  ``learned.jsonl`` and ``learn-journal.jsonl``, and ``drafts/``, are not content and are skipped.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import itertools
import json
import logging
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from kb.cites import cite_problem, clause_index
from kb.clauses import duplicate_clauses, parse_cite
from kb.errors import KBError
from kb.html import PageError, decode_page, parse_page
from kb.schema import (
    MIN_ANSWER,
    MIN_RULES_BODY,
    SLUG,
    Document,
    FAQEntry,
    ImportedEntry,
    ImportNote,
    ImportReport,
    KnowledgeBase,
    NoteKind,
    Resources,
    RulesMeta,
    Source,
    entry_slug,
)
from kb.settings import BUNDLED_KB

TABLE_SUFFIXES = {".csv", ".tsv", ".jsonl", ".xlsx"}
HTML_SUFFIXES = {".html", ".htm"}
MIN_DOC_BODY = 20  # a document shorter than this is almost certainly an export mistake
ALT_SPLIT = re.compile(r"\s*(?:\||\n|；|;)\s*")
CITE_SPLIT = re.compile(r"\s*(?:\||\n|；|;|,|，|、)\s*")
FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*\n", re.S)
# Files of the learning loop (kb/learned.py) at the top of a KB folder: not FAQ content.
SIDECAR = "alternatives.yaml"
LEARNED = "learned.jsonl"
JOURNAL = "learn-journal.jsonl"
DRAFTS = "drafts"
LEARNING_FILES = frozenset({SIDECAR, LEARNED, JOURNAL})

log = logging.getLogger("kefu.kb")


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


@dataclass(frozen=True)
class _Loaded:
    """An entry with where it came from; ``seq`` keeps entries and documents in load order."""

    entry: FAQEntry
    src: Source
    seq: int
    imported: bool  # a table row: outside strict mode its id and duplicates are settled, not refused


class _Loader:
    def __init__(self, root: Path, strict: bool) -> None:
        self.root = root
        self.strict = strict
        self.problems: list[str] = []
        self.loaded: list[_Loaded] = []
        self.documents: list[Document] = []
        self.doc_placed: list[tuple[int, str, Source]] = []  # (seq, id, source) of every document
        self.seq = itertools.count()
        self.notes: list[ImportNote] = []
        self.rows_read = 0
        self.ids_mapped = 0

    @property
    def entries(self) -> list[FAQEntry]:
        return [x.entry for x in self.loaded]

    @property
    def sources(self) -> dict[str, Source]:
        out: dict[str, Source] = {}
        for x in self.loaded:
            out.setdefault(x.entry.id, x.src)
        for _, doc_id, src in self.doc_placed:
            out.setdefault(doc_id, src)
        return out

    def note(self, kind: NoteKind, src: Source, message: str, reason: str = "") -> None:
        self.notes.append(ImportNote(kind, src, message, reason))

    def report(self) -> ImportReport:
        short = sum(1 for x in self.loaded if x.imported and len(x.entry.answer) < MIN_ANSWER)
        notes = sorted(self.notes, key=lambda n: (n.source.path, n.source.line))  # stable: per row, in phase order
        return ImportReport(self.rows_read, self.ids_mapped, short, tuple(notes))

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
        for key in ("alt_questions", "tags", "related", "replaces", "rules"):
            if isinstance(raw.get(key), list):
                raw[key] = tuple(str(x) for x in raw[key])
        try:
            entry = model.model_validate(raw)
        except ValidationError as exc:
            shown = raw.get("source_id") or raw.get("id", "?")
            self.problem(src, f"entry {shown!r}: {_fmt_validation(exc)}")
            return
        self.loaded.append(_Loaded(entry, src, next(self.seq), imported=model is ImportedEntry))

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
        doc = Document(meta.id, meta.title, meta.category, body, src, "rules", meta.effective, meta.supersedes)
        twice = duplicate_clauses(doc)
        if twice:
            # a clause is cited and served by its number, which must name one clause
            why = f"clause number(s) used more than once: {', '.join(twice)}; cites reach the first"
            if self.strict:
                self.problem(Source(src.path, body_line), why)
            else:
                log.warning("%s: %s", src, why)
        self.documents.append(doc)
        self.doc_placed.append((next(self.seq), meta.id, src))

    def add_plain_doc(self, path: Path, text: str, src: Source, title: str = "") -> None:
        if len(text.strip()) < MIN_DOC_BODY:
            self.problem(src, f"document is empty or shorter than {MIN_DOC_BODY} characters")
            return
        heading = re.search(r"^#\s+(.+)$", text, re.M)
        title = title or (heading.group(1).strip() if heading else path.stem)
        doc_id = _slugify(path.stem, fallback=f"doc-{hashlib.sha1(self.rel(path).encode()).hexdigest()[:8]}")
        self.documents.append(Document(doc_id, title, "文档", text, src, "doc"))
        self.doc_placed.append((next(self.seq), doc_id, src))

    def load_html(self, path: Path) -> None:
        src = Source(self.rel(path))
        try:
            page = parse_page(decode_page(path.read_bytes()))
        except PageError as exc:
            self.problem(Source(src.path, exc.line), str(exc))
            return
        if page.size < MIN_DOC_BODY:
            where = f" inside {page.region}" if page.region else ""
            self.problem(
                Source(src.path, page.line),
                f"page has {page.size} characters of text{where} once scripts, navigation and hidden parts are "
                f"dropped; at least {MIN_DOC_BODY} required. If a browser shows more, the page is filled in by "
                "JavaScript: save the page as the browser shows it, or copy its text into a .md file",
            )
            return
        self.add_plain_doc(path, page.body, src, page.title)

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
            here = Source(src.path, line)
            if isinstance(row, str):
                self.problem(here, row)
                continue
            self.rows_read += 1
            row = {str(k).strip().lower(): v for k, v in row.items() if k is not None}
            missing = [c for c in ("question", "answer") if not _cell(row.get(c))]
            if missing:
                what = f"missing {' and '.join(missing)}"
                if self.strict:
                    self.problem(here, f"{what}; fill in the question and answer columns or delete the row")
                elif not any(_cell(v) for v in row.values()):
                    self.note("skipped", here, "empty row; skipped", "empty row")
                else:
                    self.note("skipped", here, f"{what}; row skipped (fill it in to include the row)", what)
                continue
            alts = row.get("alt_questions") or ()
            if isinstance(alts, str):
                alts = tuple(a for a in ALT_SPLIT.split(alts) if a)
            elif not isinstance(alts, list | tuple):
                alts = (_cell(alts),)
            original = _cell(row.get("id"))
            cites = self.table_cites(row.get("rules"), here)
            raw = {
                "id": original or f"{_slugify(path.stem, 'faq')}-{path.suffix[1:].lower()}-{line}",
                "category": _cell(row.get("category")) or path.stem,
                "question": _cell(row["question"]),
                "answer": _cell(row["answer"]),
                "alt_questions": tuple(_cell(a) for a in alts),
                "rules": cites,
            }
            if original and not SLUG.match(original):
                slug = entry_slug(original)
                if self.strict:
                    self.problem(
                        here,
                        f"id {original!r} is not a readable slug (lowercase letters, digits and hyphens); "
                        f"rename it, or load without --strict to map it to {slug!r}",
                    )
                    continue
                raw["id"], raw["source_id"] = slug, original
                self.ids_mapped += 1
            self.add_entry(raw, here, ImportedEntry)

    def table_cites(self, cell: Any, src: Source) -> tuple[str, ...]:
        """A table's ``rules`` cell (``|``-separated, or a JSONL list) as cites; outside strict mode a
        malformed one is dropped with a warning instead of refusing the row."""
        texts = [_cell(x) for x in cell] if isinstance(cell, list | tuple) else CITE_SPLIT.split(_cell(cell))
        out = []
        for text in filter(None, texts):
            try:
                out.append(str(parse_cite(text)))
            except ValueError as exc:
                if self.strict:
                    self.problem(src, str(exc))
                else:
                    self.note("cite_dropped", src, f"{exc}; dropped", "malformed")
        return tuple(out)

    # --- lenient settling of imported rows -------------------------------------------------------
    def settle_imports(self) -> None:
        """Outside strict mode: make imported ids unique, then merge rows that repeat a question."""
        self.unique_ids()
        self.merge_duplicates()

    def unique_ids(self) -> None:
        # Who keeps an id: curated entries and documents, then imported rows whose own id is a
        # slug (first row wins), then derived slugs. So a row literally called "1024-2" keeps
        # that id even when an earlier duplicate "1024" has to move aside.
        holder: dict[str, Source] = {}
        keeps: set[int] = set()
        for x in self.loaded:
            if not x.imported:
                for name in (x.entry.id, *x.entry.replaces):  # an alias is a name in use too
                    holder.setdefault(name, x.src)
        for _, doc_id, src in self.doc_placed:
            holder.setdefault(doc_id, src)
        for rank in (0, 1):  # 0: the row's own id; 1: a derived slug
            for i, x in enumerate(self.loaded):
                if x.imported and (x.entry.source_id is not None) == bool(rank) and x.entry.id not in holder:
                    holder[x.entry.id] = x.src
                    keeps.add(i)
        for i, x in enumerate(self.loaded):
            if not x.imported or i in keeps:
                continue
            e = x.entry
            original = e.source_id or e.id
            new = next(f"{e.id}-{n}" for n in itertools.count(2) if f"{e.id}-{n}" not in holder)
            holder[new] = x.src
            self.note(
                "id_made_unique",
                x.src,
                f"id {original!r} is already used at {holder[e.id]}; this row is now {new!r} "
                "(give it an id of its own to choose one)",
            )
            self.loaded[i] = dataclasses.replace(x, entry=e.model_copy(update={"id": new, "source_id": original}))

    def merge_duplicates(self) -> None:
        # Curated entries own their questions first: an imported row yields to them, never the
        # other way round. Among rows the first one wins, as the export had them in order.
        owner: dict[str, int] = {}
        for i, x in enumerate(self.loaded):
            if not x.imported:
                for q in (x.entry.question, *x.entry.alt_questions):
                    owner.setdefault(question_key(q), i)
        gone: set[int] = set()
        for i, x in enumerate(self.loaded):
            if not x.imported:
                continue
            e = x.entry
            key = question_key(e.question)
            target = owner.get(key) if key else None
            if target is not None and target != i:
                self.merge_into(target, i, owner)
                gone.add(i)
                continue
            kept = []
            for alt in e.alt_questions:
                other = owner.get(question_key(alt))
                if other is not None and other != i:
                    self.drop_alt(x, alt, other)
                else:
                    kept.append(alt)
            if len(kept) != len(e.alt_questions):
                self.loaded[i] = x = dataclasses.replace(x, entry=e.model_copy(update={"alt_questions": tuple(kept)}))
            for q in (e.question, *kept):
                if question_key(q):
                    owner.setdefault(question_key(q), i)
        self.loaded = [x for i, x in enumerate(self.loaded) if i not in gone]

    def merge_into(self, target: int, i: int, owner: dict[str, int]) -> None:
        """Row ``i`` repeats the question of entry ``target``: its questions become alternatives
        of the target and its id a name of the target (``replaces``); the target's answer stays."""
        t, x = self.loaded[target], self.loaded[i]
        alts = list(t.entry.alt_questions)
        texts = {t.entry.question, *alts}
        for q in (x.entry.question, *x.entry.alt_questions):
            other = owner.get(question_key(q))
            if q in texts:
                continue
            if other is not None and other != target:
                self.drop_alt(x, q, other)
                continue
            alts.append(q)
            texts.add(q)
            if question_key(q):
                owner.setdefault(question_key(q), target)
        replaces = (*t.entry.replaces, x.entry.id, *x.entry.replaces)
        self.loaded[target] = dataclasses.replace(
            t, entry=t.entry.model_copy(update={"alt_questions": tuple(alts), "replaces": replaces})
        )
        self.note(
            "merged",
            x.src,
            f"question {x.entry.question!r} repeats {t.entry.id!r} ({t.src}) up to punctuation, width and case; "
            f"merged into it: the question is an alternative there and id {x.entry.source_id or x.entry.id!r} "
            "still reaches it",
        )
        if x.entry.answer != t.entry.answer:
            self.note(
                "answer_differs",
                x.src,
                f"its answer differs from the one of {t.entry.id!r} ({t.src}); kept that first answer — "
                "edit the table if this one is right",
            )

    def drop_alt(self, x: _Loaded, alt: str, other: int) -> None:
        o = self.loaded[other]
        self.note(
            "alt_dropped",
            x.src,
            f"alternative question {alt!r} already belongs to {o.entry.id!r} ({o.src}); dropped it here",
        )

    # --- learned alternatives (kefu learn) ----------------------------------------------------------
    def load_sidecar(self, path: Path) -> None:
        """Add ``alternatives.yaml``'s questions to the entries it names (after ids are settled, so
        a key is the id kefu shows). An id no longer in the KB is skipped with a warning: deleting
        a row from a table must not make the KB unloadable."""
        src = Source(self.rel(path))
        try:
            data = yaml.safe_load(path.read_text("utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            self.problem(src, f"invalid {SIDECAR}: {exc}")
            return
        alts = data.get("alternatives") if isinstance(data, dict) else None
        if not isinstance(alts, dict) or not all(isinstance(v, list) for v in alts.values()):
            self.problem(src, "expected `alternatives:` mapping entry ids to lists of questions")
            return
        where = {x.entry.id: i for i, x in enumerate(self.loaded)}
        for i, x in enumerate(self.loaded):  # an imported row's original id names it too
            if x.entry.source_id is not None:
                where.setdefault(x.entry.source_id, i)
        for entry_id, texts in alts.items():
            at = where.get(str(entry_id))
            if at is None:
                log.warning(
                    "%s: entry %r is not in the knowledge base; its learned questions are skipped", src, entry_id
                )
                continue
            x = self.loaded[at]
            have = {question_key(q) for q in (x.entry.question, *x.entry.alt_questions)}
            new = [str(t).strip() for t in texts if question_key(str(t)) not in have]
            if new:
                raw = {**x.entry.model_dump(), "alt_questions": (*x.entry.alt_questions, *dict.fromkeys(new))}
                try:
                    entry = type(x.entry).model_validate(raw)
                except ValidationError as exc:
                    self.problem(src, f"entry {entry_id!r}: {_fmt_validation(exc)}")
                    continue
                self.loaded[at] = dataclasses.replace(x, entry=entry)

    # --- whole-KB checks --------------------------------------------------------------------------
    def cross_check(self) -> None:
        placed = sorted([(x.seq, x.entry.id, x.src) for x in self.loaded] + self.doc_placed)
        seen: dict[str, Source] = {}
        for _, obj_id, src in placed:
            if obj_id in seen:
                self.problem(src, f"duplicate id {obj_id!r} (first at {seen[obj_id]})")
            seen.setdefault(obj_id, src)
        ids = set(seen)
        sources = self.sources  # a property that builds the map: once, not per entry
        merged: dict[str, str] = {}
        for e in self.entries:
            src = sources[e.id]
            for old in e.replaces:
                if old in ids:
                    why = f"which still exists; delete {old!r} or drop it from replaces"
                    self.problem(src, f"entry {e.id!r} replaces {old!r}, {why}")
                elif old in merged:
                    self.problem(src, f"entry {e.id!r} replaces {old!r}, which {merged[old]!r} replaces too; keep one")
                merged.setdefault(old, e.id)
        questions: dict[str, str] = {}
        for e in self.entries:
            src = sources[e.id]
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
        self.check_cites()

    def check_cites(self) -> None:
        """Each cite names a clause that exists: a problem in curated entries (and in strict mode),
        else a warning and the cite dropped, so an imported table never serves a broken link."""
        if not any(x.entry.rules for x in self.loaded):
            return
        docs = clause_index(self.documents)
        for i, x in enumerate(self.loaded):
            bad = {c: why for c in x.entry.rules if (why := cite_problem(c, docs)) is not None}
            for why in bad.values():
                if x.imported and not self.strict:
                    self.note("cite_dropped", x.src, f"entry {x.entry.id!r} {why}; dropped", "unknown")
                else:
                    self.problem(x.src, f"entry {x.entry.id!r} {why}")
            if bad and x.imported and not self.strict:
                kept = tuple(c for c in x.entry.rules if c not in bad)
                self.loaded[i] = dataclasses.replace(x, entry=x.entry.model_copy(update={"rules": kept}))


def _learning_file(rel: Path) -> bool:
    """The learning loop's own files, and draft entries (``drafts/``, loaded once promoted)."""
    return (len(rel.parts) == 1 and rel.name in LEARNING_FILES) or rel.parts[0] == DRAFTS


def _cell(value: Any) -> str:
    """A table cell as stripped text; a whole number read as a float (XLSX: 1024.0) as "1024"."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


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

    def read_yaml(name: str) -> dict[str, Any]:
        p = files.get(name)
        if p is None:
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
    return Resources(
        userdict=files.get("userdict.txt"),
        synonyms=lists(read_yaml("synonyms.yaml")),
        out_of_scope=lists(read_yaml("out_of_scope.yaml")),
        greetings=greet.get("greetings", ()),
        thanks=greet.get("thanks", ()),
        files=tuple(files.items()),
    )


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
    loader = _Loader(root if root.is_dir() else root.parent, strict)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    for p in files:
        rel = p.relative_to(loader.root)
        if "resources" in rel.parts or p.name.startswith(".") or _learning_file(rel):
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
        elif suffix in HTML_SUFFIXES:
            loader.load_html(p)
        elif suffix in TABLE_SUFFIXES:
            loader.load_table(p)
    if not loader.strict:  # even with problems elsewhere, so rows are not also reported as duplicates
        loader.settle_imports()
    if (loader.root / SIDECAR).is_file():
        loader.load_sidecar(loader.root / SIDECAR)
    loader.cross_check()
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
            [str(n) for n in report.notes],
        )
    if log_changes and (report.notes or report.ids_mapped):
        log.warning("knowledge base %s: %s; `kefu kb check` lists them", root, summary_line(report))
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
    )


REPORT_LABELS = {
    "ids_mapped": "ids mapped to slugs",
    "ids_made_unique": "duplicate ids made unique",
    "duplicates_merged": "duplicate questions merged",
    "answers_differing": "merged rows with a different answer (first kept)",
    "alternatives_dropped": "alternative questions dropped (another entry has them)",
    "short_answers_accepted": f"short answers accepted (under {MIN_ANSWER} characters)",
    "cites_dropped": "rules cites dropped (malformed, or no such clause)",
    "rows_skipped": "rows skipped",
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
        h.update(json.dumps([d.id, d.title, d.category, d.body, d.kind], ensure_ascii=False).encode())
    for name, path in resources.files:  # what the service reads from the build: a change is a new KB
        h.update(name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()
