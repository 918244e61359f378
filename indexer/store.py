"""The index home: verified builds, an atomic pointer to the current one, rollback.

Layout of ``KEFU_INDEX_DIR``::

    builds/<build-id>/   one folder per verified build (the last ``keep_builds`` are kept)
    current              the id of the build being served (replaced atomically)
    embcache.sqlite      embedding cache shared by builds
    .build.lock          held by the build in progress (another build is refused, not raced)
    .tmp-*/              a build in progress; never read, removed on the next build

A build is written to a temporary folder, verified (counts, a probe search), renamed into
``builds/`` and only then made current: a failed or interrupted build leaves the serving index
untouched.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from indexer.folder import Manifest
from indexer.index import Index
from kb.errors import BuildInProgressError, IndexMissingError, IndexStateError, NotFoundError
from kb.locks import exclusive


@dataclass(frozen=True)
class BuildInfo:
    build_id: str
    path: Path
    current: bool
    manifest: Manifest | None
    problem: str | None


class IndexStore:
    def __init__(self, home: Path, keep: int = 3, cache_path: Path | None = None) -> None:
        self.home = Path(home).expanduser()
        self.keep = keep
        self.builds = self.home / "builds"
        self.pointer = self.home / "current"
        # The embedding cache is keyed by model, prompt and text, so index homes may share one
        # (``kefu eval suite`` builds in throw-away homes with the user's cache).
        self._cache_path = cache_path

    @property
    def cache_path(self) -> Path:
        return self._cache_path or self.home / "embcache.sqlite"

    def current_id(self) -> str | None:
        try:
            value = self.pointer.read_text("utf-8").strip()
        except FileNotFoundError:
            return None
        return value or None

    def current_path(self) -> Path:
        build_id = self.current_id()
        if build_id is None:
            raise IndexMissingError(f"no index has been built yet in {self.home}; run `kefu build` (or `make index`)")
        path = self.builds / build_id
        if not path.is_dir():
            raise IndexStateError(
                f"current build {build_id} is missing from {self.builds}; run `kefu build` or `kefu index rollback`"
            )
        return path

    def load_current(self, model_id: str | None) -> Index:
        return Index.load(self.current_path(), model_id)

    @contextmanager
    def build_lock(self) -> Iterator[None]:
        """Exclusive while a build runs: a second build on the same home would remove the first
        one's unfinished folder (``new_tmp`` clears leftovers). The lock is the kernel's, so it
        goes with a crashed process."""
        self.home.mkdir(parents=True, exist_ok=True)

        def busy(holder: str) -> BuildInProgressError:
            return BuildInProgressError(
                f"another build is running on {self.home} ({holder}); wait for it to finish, then run "
                "`kefu build` again if the KB changed meanwhile"
            )

        with exclusive(self.home / ".build.lock", busy):
            yield

    def new_tmp(self, build_id: str) -> Path:
        self.builds.mkdir(parents=True, exist_ok=True)
        for stale in self.home.glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = self.home / f".tmp-{build_id}"
        tmp.mkdir()
        return tmp

    def commit(self, tmp: Path, build_id: str) -> Path:
        """Move a verified build into place and point ``current`` at it (atomic rename)."""
        final = self.builds / build_id
        tmp.rename(final)
        self.set_current(build_id)
        self.prune()
        return final

    def set_current(self, build_id: str) -> None:
        if not (self.builds / build_id).is_dir():
            raise NotFoundError(f"no build {build_id!r} in {self.builds}; see `kefu index list`")
        staging = self.home / f".current-{os.getpid()}"
        staging.write_text(build_id + "\n", "utf-8")
        os.replace(staging, self.pointer)  # atomic on POSIX: readers see the old or the new id

    def list(self) -> list[BuildInfo]:
        if not self.builds.is_dir():
            return []
        cur = self.current_id()
        out = []
        for p in sorted(self.builds.iterdir(), key=lambda p: p.name, reverse=True):
            if not p.is_dir():
                continue
            try:
                manifest: Manifest | None = Index.read_manifest(p)
                problem = None
            except (IndexStateError, IndexMissingError) as exc:
                manifest, problem = None, str(exc)
            out.append(BuildInfo(p.name, p, p.name == cur, manifest, problem))
        return out

    def prune(self) -> None:
        """Keep the newest ``keep`` builds, and always the current one."""
        cur = self.current_id()
        builds = [b for b in self.list() if not b.current]
        for b in builds[max(0, self.keep - 1) :]:
            if b.build_id != cur:
                shutil.rmtree(b.path, ignore_errors=True)

    def rollback(self, build_id: str | None = None) -> str:
        """Point ``current`` at ``build_id`` or, by default, at the newest build older than it."""
        builds = self.list()
        if build_id is None:
            cur = self.current_id()
            older = [b for b in builds if cur is None or b.build_id < cur]
            candidates = [b for b in older if b.manifest is not None]
            if not candidates:
                raise NotFoundError("no earlier verified build to roll back to; see `kefu index list`")
            build_id = candidates[0].build_id
        self.set_current(build_id)
        return build_id


def write_calibration(folder: Path, calibration: dict[str, object]) -> None:
    """Store fitted thresholds in a build's manifest (atomic replace). The build's calibration
    line described the calibration replaced, so it goes: ``calibration_note`` composes one."""
    _rewrite_manifest(folder, calibration=calibration, calibration_note=None)


def calibration_note(manifest: Manifest) -> str:
    """The one line on a build's calibration: as ``kefu build`` said it, or, for a build from
    before that line was kept or whose calibration was replaced since, composed from the calibration."""
    from indexer.build import describe_calibration  # the build module imports this one

    return manifest.calibration_note or describe_calibration(manifest.calibration or {})


def _rewrite_manifest(folder: Path, **changes: object) -> None:
    manifest = Index.read_manifest(folder)
    for name, value in changes.items():
        setattr(manifest, name, value)
    tmp = folder / f".manifest-{os.getpid()}.json"
    tmp.write_text(manifest.model_dump_json(indent=1), "utf-8")
    os.replace(tmp, folder / "manifest.json")
