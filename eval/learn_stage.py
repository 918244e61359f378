"""The KB as ``kefu learn`` will leave it: a staged copy with the plan applied, and its learned examples."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from eval.dataset import EvalItem
from kb.learn_files import read_examples
from kb.learn_journal import kb_lock
from kb.learned import Plan, plan_apply
from kb.loader import load_kb, load_resources
from kb.schema import KnowledgeBase
from kb.settings import BUNDLED_KB
from kb.sidecar import LEARNED, SIDECAR


def kb_folder(path: Path) -> Path:
    return path if path.is_dir() else path.parent


def learned_items(root: Path, split: str) -> list[EvalItem]:
    """The learned examples of one split as labelled items (eval/data's format)."""
    return [
        EvalItem(
            e.id, e.query, e.relevant, e.expect, "low_confidence" if e.expect == "handoff" else None, (), e.category
        )
        for e in read_examples(root)
        if e.split == split
    ]


def stage(kb_path: Path, plan: Plan, strict: bool | None) -> KnowledgeBase:
    """The KB as it will be once ``plan`` is written, loaded from a copy (the KB is not touched),
    with the real folder as its root (the manifest and resources name it)."""
    root = kb_folder(kb_path)
    with tempfile.TemporaryDirectory(prefix="kefu-learn-stage-") as tmp:
        copy = Path(tmp) / "kb"
        if kb_path.is_dir():
            shutil.copytree(root, copy, ignore=shutil.ignore_patterns(".*"))
        else:  # one table or YAML file: it and the learning files beside it
            copy.mkdir()
            for name in (kb_path.name, SIDECAR, LEARNED):
                if (root / name).is_file():
                    shutil.copy2(root / name, copy / name)
        for rel, text in plan.files.items():
            target = copy / rel
            if text is None:
                target.unlink(missing_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text, "utf-8")
        staged = load_kb(copy if kb_path.is_dir() else copy / kb_path.name, strict=strict, log_changes=False)
    return dataclasses.replace(staged, root=root, resources=load_resources(root))


class StagedExamples:
    """The learned examples as they will be after the plan: the file's, plus the plan's version."""

    def __init__(self, root: Path, plan: Plan) -> None:
        self.root, self.plan = root, plan

    def items(self, split: str) -> list[EvalItem]:
        text = self.plan.files.get(LEARNED)
        if LEARNED not in self.plan.files:
            return learned_items(self.root, split)
        with tempfile.TemporaryDirectory(prefix="kefu-learned-") as tmp:
            if text is not None:
                (Path(tmp) / LEARNED).write_text(text, "utf-8")
            return learned_items(Path(tmp), split)


@dataclass(frozen=True)
class Staging:
    """The KB folder, its pending decisions, and the KB and learned examples as they will be."""

    root: Path
    plan: Plan
    kb: KnowledgeBase
    examples: StagedExamples


@contextmanager
def staging(kb_dir: Path, alternatives: bool = True) -> Iterator[Staging]:
    """Hold the KB's lock (another learn or tune at the same time fails at once) with the pending
    decisions staged: what ``kefu learn`` and ``kefu learn tune`` work on (``alternatives`` as
    ``plan_apply`` takes it)."""
    kb_path = Path(kb_dir).expanduser()
    root, strict = kb_folder(kb_path), _strict(kb_path)
    with kb_lock(root, wait_s=0):
        plan = plan_apply(load_kb(kb_path, strict=strict, log_changes=False), alternatives=alternatives)
        yield Staging(root, plan, stage(kb_path, plan, strict), StagedExamples(root, plan))


def as_it_is(kb_dir: Path) -> KnowledgeBase:
    """The KB with none of its pending decisions applied, loaded as ``stage`` loads one."""
    kb_path = Path(kb_dir).expanduser()
    return stage(kb_path, Plan({}, ()), _strict(kb_path))


def _strict(kb_path: Path) -> bool | None:
    """The bundled KB loads strictly (its files are ours); any other as ``kefu build`` loads it."""
    return True if kb_folder(kb_path).resolve() == BUNDLED_KB.resolve() else None
