"""How an answer unit is shown: an FAQ entry with the clauses it cites, a rules clause whole
(《七天无理由退货规范》第五条), or an article's passage around the sentence that matches the query.

``view`` is what an answer item shows for a candidate; ``entry_json`` is ``GET /v1/entries/{id}``.
Both read the build only (``Index.entries``, ``Index.doc_units``, the rows), never the KB folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from indexer.chunking import DocUnit
from indexer.index import Index
from indexer.passage import bigram_cover, passage, sentence_spans
from kb.clauses import clause_label, parse_cite, unit_id
from kb.schema import entry_slug

# A sentence in the unit's best-matching row outranks any other: the retrieval chose that row
# over the unit's others with the query's vector and its words; the query's bigrams then pick
# the sentence inside it (and which neighbours join it).
BEST_ROW_BONUS = 1.0


@dataclass(frozen=True)
class CiteView:
    """A clause an FAQ answer rests on, as the answer shows it."""

    id: str  # the clause's unit id (``GET /v1/entries/{id}``): rules-seven-day-return.5
    doc_id: str
    title: str  # the document's title
    clause: int
    label: str  # 《七天无理由退货规范》第五条


@dataclass(frozen=True)
class UnitView:
    """One answer unit as an answer item shows it."""

    id: str
    title: str  # the FAQ question, or the unit's label (《…》第五条)
    text: str  # the FAQ answer, the whole clause, or an article's passage
    kind: Literal["faq", "rules", "doc"]
    doc_id: str
    section: str  # the FAQ category, or the heading path
    clause: int | None = None
    cites: tuple[CiteView, ...] = ()


def cites(index: Index, entry_id: str) -> tuple[CiteView, ...]:
    """The clauses FAQ entry ``entry_id`` cites, in its order; a cite whose clause is not in the
    build (a KB edited after the cite was checked) is left out rather than shown broken."""
    entry = index.entries.get(entry_id)
    out = []
    for text in entry.rules if entry is not None else ():
        c = parse_cite(text)
        unit = index.doc_units.get(c.unit_id)
        if unit is not None:
            out.append(CiteView(unit.id, unit.doc_id, unit.title, c.clause, unit.label))
    return tuple(out)


def sentence_scores(query: str, text: str, best_row_text: str) -> list[float]:
    """A score per sentence of ``text`` (``sentence_spans``): the query's bigrams it holds, plus
    BEST_ROW_BONUS when it is in the row that matched best."""
    sentences = [text[s:e] for s, e in sentence_spans(text)]
    cover = bigram_cover(query, sentences)
    return [c + (BEST_ROW_BONUS if s in best_row_text else 0.0) for s, c in zip(sentences, cover, strict=True)]


def unit_text(index: Index, unit: DocUnit, query: str, row: int, max_chars: int | None = None) -> str:
    """What a document unit answers with: a clause whole; a section's sentences around the best
    match to ``query`` (within its best row ``row``), at most ``max_chars`` (the build's chunk
    size) unless the best sentence alone is longer."""
    if not shows_passage(index, unit, max_chars):
        return unit.text
    limit = max_chars or index.manifest.chunk_chars
    best = index.chunks[row]
    best_text = best.text if best.kind in ("rules", "doc") else ""  # a question row is not in the text
    return passage(unit.text, sentence_scores(query, unit.text, best_text), limit)


def shows_passage(index: Index, unit: DocUnit, max_chars: int | None = None) -> bool:
    """Whether ``unit_text`` answers with a passage chosen for the query: a section longer than
    ``max_chars`` (the build's chunk size); a clause or a short section shows whole."""
    return unit.clause is None and len(unit.text) > (max_chars or index.manifest.chunk_chars)


def depends_on_query(index: Index, unit: str, max_chars: int | None = None) -> bool:
    """Whether ``view`` shows ``unit`` differently for another query (its best row fixed): only a
    section that answers with a passage (``shows_passage``)."""
    doc_unit = None if unit in index.entries else index.doc_units.get(unit)
    return doc_unit is not None and shows_passage(index, doc_unit, max_chars)


def view(index: Index, unit: str, row: int, query: str, max_chars: int | None = None) -> UnitView:
    """The answer item for candidate ``unit`` whose best row is ``row``, found for ``query``."""
    entry = index.entries.get(unit)
    if entry is not None:
        shown = cites(index, unit)
        return UnitView(entry.id, entry.question, entry.answer, "faq", entry.id, entry.category, None, shown)
    chunk = index.chunks[row]
    doc_unit = index.doc_units.get(unit)
    if doc_unit is None:  # an index copy without units.json: the row is all there is
        kind: Literal["rules", "doc"] = "rules" if chunk.kind == "rules" else "doc"
        return UnitView(chunk.unit_id, chunk.title, chunk.text, kind, chunk.doc_id, chunk.section)
    # the best row may be one of the unit's questions: the unit, not the row, says what it is
    text = unit_text(index, doc_unit, query, row, max_chars)
    u = doc_unit
    return UnitView(u.id, u.label, text, u.kind, u.doc_id, u.section, u.clause)


def resolve_unit(index: Index, name: str) -> str | None:
    """The document unit ``name`` names: its id (``doc.5``, ``doc.s1``), or a cite as FAQ entries
    write it (``doc#5``, ``doc#第五条``), which is also how builds before units named a clause's row."""
    if name in index.doc_units:
        return name
    try:
        c = parse_cite(name)
    except ValueError:
        return None
    found = unit_id(c.doc_id, str(c.clause))
    return found if found in index.doc_units else None


def entry_json(index: Index, name: str) -> dict[str, Any] | None:
    """``GET /v1/entries/{name}``: an FAQ entry (by its id, an id merged into it, or an imported
    table's original id) with its alternative questions and cites, or a document unit with its
    whole text and the questions it was given; None if unknown."""
    e = index.entries.get(index.resolve(name)) or index.entries.get(index.resolve(entry_slug(name)))
    if e is not None:
        return {
            "id": e.id,
            "kind": "faq",
            "question": e.question,
            "answer": e.answer,
            "category": e.category,
            "alternatives": _alt_texts(index, e.id),
            "related": list(e.related),
            "replaces": list(e.replaces),
            "cites": [vars(c) for c in cites(index, e.id)],
        }
    found = resolve_unit(index, name)
    if found is None:
        return None
    u = index.doc_units[found]
    return {
        "id": u.id,
        "kind": u.kind,
        "title": u.title,
        "label": u.label,
        "section": u.section,
        "clause": u.clause,
        "clause_label": clause_label(u.clause) if u.clause is not None else None,
        "text": u.text,
        "doc_id": u.doc_id,
        "category": u.category,
        "questions": _alt_texts(index, u.id),
    }


def _alt_texts(index: Index, unit: str) -> list[str]:
    """The questions a unit was given besides its own text, as the build holds them: an FAQ entry's
    alternatives (its own, merged entries', learned ones), a clause's or section's questions."""
    return [index.chunks[r].text for r in index.units.get(unit, ()) if index.chunks[r].kind == "alt"]
