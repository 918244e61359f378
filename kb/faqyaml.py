"""Read kefu's own FAQ YAML files (``entries:`` lists) into a load, with the line of each entry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kb.loadstate import LoadState
from kb.schema import FAQEntry, Source


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that records the line of every mapping as ``__line__``."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    mapping = yaml.SafeLoader.construct_mapping(loader, node, deep=deep)
    mapping["__line__"] = node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(state: LoadState, path: Path) -> None:
    """Add the entries of the FAQ file at ``path`` to ``state`` (strict checks)."""
    src = Source(state.rel(path))
    try:
        data = yaml.load(path.read_text("utf-8"), Loader=_LineLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        state.problem(Source(src.path, line), f"invalid YAML: {getattr(exc, 'problem', exc)}")
        return
    except UnicodeDecodeError:
        state.problem(src, "not UTF-8 text; save the file as UTF-8")
        return
    if not isinstance(data, dict) or "entries" not in data:
        state.problem(src, "expected a mapping with an `entries:` list (see kb/content/faq/*.yaml)")
        return
    default_category = data.get("category")
    entries = data.get("entries") or []
    if not isinstance(entries, list):
        state.problem(src, "`entries` must be a list")
        return
    for raw in entries:
        if not isinstance(raw, dict):
            state.problem(src, "each entry must be a mapping with id, question, alt_questions, answer")
            continue
        line = int(raw.pop("__line__", 1))
        raw.setdefault("category", default_category)
        if default_category and raw["category"] != default_category:
            state.problem(
                Source(src.path, line),
                f"entry {raw.get('id')!r} has category {raw['category']!r} but the file is {default_category!r}",
            )
        state.add_entry(raw, Source(src.path, line), FAQEntry)
