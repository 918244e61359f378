"""Read documents into a load: Markdown rules with front matter, plain Markdown/text, HTML pages and
Word documents."""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from kb.clauses import CLAUSE, duplicate_clauses
from kb.docx import DocxError, parse_docx
from kb.encoding import EncodingError, decode_text, encoding_note
from kb.html import PageError, decode_page, parse_page
from kb.loadstate import LoadState, fmt_validation, slugify
from kb.schema import MIN_RULES_BODY, SLUG, Document, RulesMeta, Source, entry_slug

HTML_SUFFIXES = {".html", ".htm"}
MIN_DOC_BODY = 20  # a document shorter than this is almost certainly an export mistake
FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*\n", re.S)
RULES_KEYS = ("effective", "supersedes")  # front matter only rules documents have
PLAIN_CATEGORY = "文档"  # the category of articles that do not name one

log = logging.getLogger("kefu.kb")


def load_markdown(state: LoadState, path: Path) -> None:
    """Add the ``.md`` file at ``path``: a rules document if its front matter or clauses say so (see
    ``rules_reason``), else a plain article, titled and filed by its front matter where it has one."""
    src = Source(state.rel(path))
    text = read_text(state, path, src)
    if text is None:
        return
    m = FRONT_MATTER.match(text)
    if m is None:
        add_plain_doc(state, path, text, src)
        return
    try:
        meta_raw = yaml.safe_load(m.group(1)) or {}
    except yaml.YAMLError as exc:
        state.problem(Source(src.path, 2), f"invalid front matter: {exc}")
        return
    if not isinstance(meta_raw, dict):
        state.problem(Source(src.path, 1), "front matter must be `key: value` lines, such as title: and category:")
        return
    body = text[m.end() :]
    why = rules_reason(meta_raw, body)
    if why is None:
        add_article(state, path, meta_raw, body, src)
        return
    try:
        meta = RulesMeta.model_validate(meta_raw)
    except ValidationError as exc:
        state.problem(
            Source(src.path, 1),
            f"front matter: {fmt_validation(exc)} (read as a rules document because {why}; "
            "a rules document needs id, title, category and effective: YYYY-MM-DD)",
        )
        return
    body_line = text[: m.end()].count("\n") + 1
    size = len(re.sub(r"\s", "", body))
    minimum = MIN_RULES_BODY if state.strict else MIN_DOC_BODY
    if size < minimum:
        state.problem(Source(src.path, body_line), f"rules body has {size} characters; at least {minimum} required")
        return
    doc = Document(meta.id, meta.title, meta.category, body, src, "rules", meta.effective, meta.supersedes)
    twice = duplicate_clauses(doc)
    if twice:
        # a clause is cited and served by its number, which must name one clause
        why = f"clause number(s) used more than once: {', '.join(twice)}; cites reach the first"
        if state.strict:
            state.problem(Source(src.path, body_line), why)
        else:
            log.warning("%s: %s", src, why)
    state.documents.append(doc)
    state.doc_placed.append((next(state.seq), meta.id, src))


def rules_reason(meta: dict[str, Any], body: str) -> str | None:
    """Why a Markdown file with front matter is a rules document, or None for an article. Front matter
    alone does not make one (help-center exports from Hugo or Jekyll carry it): the front matter says
    when the rules take effect, or the body numbers its clauses (第一条 …)."""
    said = [k for k in RULES_KEYS if k in meta]
    if said:
        return f"its front matter has {' and '.join(said)}"
    if any(CLAUSE.match(line.strip()) for line in body.splitlines()):
        return "it has numbered clauses (第…条)"
    return None


def add_article(state: LoadState, path: Path, meta: dict[str, Any], body: str, src: Source) -> None:
    """Add an article whose front matter may give its ``title``, ``category`` (or Hugo's
    ``categories``, the first) and ``id``; other keys (date, tags, draft…) are not read."""

    def plain(value: Any) -> str:
        return "" if value is None or isinstance(value, dict | list) else str(value).strip()

    cats = meta.get("categories")
    category = plain(meta.get("category")) or (plain(cats[0]) if isinstance(cats, list) and cats else "")
    doc_id = plain(meta.get("id"))
    if doc_id and not SLUG.match(doc_id):
        slug = entry_slug(doc_id)
        why = f"front matter: id {doc_id!r} is not a readable slug (lowercase letters, digits and hyphens)"
        if state.strict:
            state.problem(Source(src.path, 1), f"{why}; rename it, or load without --strict to map it to {slug!r}")
            return
        log.warning("%s: %s; the article is %r", src, why, slug)
        doc_id = slug
    add_plain_doc(state, path, body, src, plain(meta.get("title")), category, doc_id)


def add_plain_doc(
    state: LoadState,
    path: Path,
    text: str,
    src: Source,
    title: str = "",
    category: str = "",
    doc_id: str = "",
) -> None:
    """Add ``text`` as a plain help document titled by ``title``, its first heading or the file name,
    filed under ``category`` (default 文档) as ``doc_id`` (default: from the file name)."""
    if len(text.strip()) < MIN_DOC_BODY:
        state.problem(src, f"document is empty or shorter than {MIN_DOC_BODY} characters")
        return
    heading = re.search(r"^#\s+(.+)$", text, re.M)
    title = title or (heading.group(1).strip() if heading else path.stem)
    doc_id = doc_id or slugify(path.stem, fallback=f"doc-{hashlib.sha1(state.rel(path).encode()).hexdigest()[:8]}")
    state.documents.append(Document(doc_id, title, category or PLAIN_CATEGORY, text, src, "doc"))
    state.doc_placed.append((next(state.seq), doc_id, src))


def load_html(state: LoadState, path: Path) -> None:
    """Add the help-center page at ``path`` as a plain document of its visible text."""
    src = Source(state.rel(path))
    try:
        text, encoding = decode_page(path.read_bytes())
        page = parse_page(text)
    except PageError as exc:
        state.problem(Source(src.path, exc.line), str(exc))
        return
    if encoding not in ("utf-8", "utf-16"):
        state.note("encoding", src, encoding_note(encoding))
    if page.size < MIN_DOC_BODY:
        where = f" inside {page.region}" if page.region else ""
        state.problem(
            Source(src.path, page.line),
            f"page has {page.size} characters of text{where} once scripts, navigation and hidden parts are "
            f"dropped; at least {MIN_DOC_BODY} required. If a browser shows more, the page is filled in by "
            "JavaScript: save the page as the browser shows it, or copy its text into a .md file",
        )
        return
    add_plain_doc(state, path, page.body, src, page.title)


def load_docx(state: LoadState, path: Path) -> None:
    """Add the Word document at ``path`` as a plain document, split along its headings."""
    src = Source(state.rel(path))
    try:
        doc = parse_docx(path.read_bytes())
    except DocxError as exc:
        state.problem(src, f"{exc}; save it from Word as .docx, or copy its text into a .md file")
        return
    if len(doc.body.strip()) < MIN_DOC_BODY:
        state.problem(
            src,
            f"document has {len(doc.body.strip())} characters of text, fewer than {MIN_DOC_BODY}: text in "
            "pictures or text boxes is not read; copy it into the document's body or into a .md file",
        )
        return
    add_plain_doc(state, path, doc.body, src, doc.title)


def read_text(state: LoadState, path: Path, src: Source) -> str | None:
    """The file's text (UTF-8, or GBK or Big5 with a note: ``kb.encoding``), or None with a problem recorded."""
    try:
        text, encoding = decode_text(path.read_bytes())
    except EncodingError as exc:
        state.problem(src, str(exc))
        return None
    if encoding != "utf-8":
        state.note("encoding", src, encoding_note(encoding))
    return text
