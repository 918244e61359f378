"""Shops as tenants: a registry of shop knowledge bases, each built and calibrated on its own.

Layout under the index home::

    shops/registry.sqlite     one row per shop: its KB, the build it serves, counts, admin token hash
    shops/<shop>/builds/…     the shop's verified builds (an ``IndexStore`` of its own, with its own
                              ``current`` pointer and build lock; the embedding cache is shared)
    vectors/<shop>/<build>.faiss   the FAISS backend's vectors (``indexer.vectorstore``)
    milvus.db                 the Milvus Lite backend's collection (unless KEFU_MILVUS_URI says otherwise)

A (re)build writes a new build folder (chunks, entries, anchors, calibration fitted from the
shop's KB alone, as ``kefu build`` does) and its vectors into the store, and only then points the
registry at it: until that one write, the shop's last good build keeps serving. Builds the shop's
index store pruned are then dropped from the vector store. The registry itself (its table, the shops'
admin tokens) is service/shops_registry.py.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexer.build import ProgressFn, build_and_swap
from indexer.encoder import Encoder
from indexer.index import Index
from indexer.store import BuildInfo, IndexStore, calibration_note
from indexer.vectorstore import (
    MAX_SHOP_ROWS,
    VectorStore,
    VectorStoreKind,
    check_shop_id,
    open_vector_store,
)
from indexer.vectorstore_index import PACK_FILE, StoreIndex, sorted_terms, write_pack
from kb.errors import ConfigError, IndexStateError, KBError, NotFoundError
from kb.loader import load_kb
from kb.settings import Settings
from service.shops_registry import ShopRecord, ShopRegistry

SHOP_KEEP_BUILDS = 2  # the serving build and the one before it (rollback); shops are many and small


@dataclass(frozen=True)
class ShopBuild:
    """What ``Shops.add`` / ``Shops.rebuild`` did."""

    shop: str
    build_id: str
    entries: int
    vectors: int
    seconds: float
    unchanged: bool
    calibration: str
    store: str


def _rows_of(build: BuildInfo) -> int | None:
    """The vector count a kept build's manifest states, or None when it has no readable manifest."""
    return None if build.manifest is None else build.manifest.counts.get("vectors")


def write_shop_pack(index: Index, folder: Path) -> Path:
    """The build's ``shop.pack`` (``indexer.vectorstore_index``) with the speller's character-pair
    counts of its texts, so a serving process builds neither at load."""
    from service.speller import Speller

    pairs, counts = sorted_terms(Speller(index.norm_texts).pairs)
    return write_pack(index, folder, {"speller_pairs": pairs, "speller_counts": counts.astype(np.int32)})


def load_shop_kb(shop: str, path: Path):  # type: ignore[no-untyped-def]
    """The shop's KB as ``kefu kb check`` reads it; one KBError naming the shop when it fails."""
    try:
        return load_kb(path)
    except KBError as exc:
        raise KBError(
            f"shop {shop}: the knowledge base {path} fails `kefu kb check` ({exc}); fix it and run "
            f"`kefu kb check {path}`; nothing was changed",
            exc.problems,
        ) from exc


def rollback_kb_path(registered: str, built_from: str) -> str:
    """The KB path a shop keeps after a rollback: its registered path when the build came from it
    (a manifest names a file's folder, not the file), else the folder the build was made from."""
    path = Path(registered)
    return registered if Path(built_from) in (path, path.parent) else built_from


class Shops:
    """Add, rebuild, roll back and remove shops (``kefu shops``). Cheap to construct; the vector
    store connects in ``warm_up`` and the encoder is needed only to build."""

    def __init__(self, settings: Settings, encoder: Encoder | None = None, store: VectorStore | None = None) -> None:
        self.settings = settings
        self.encoder = encoder
        self._store = store
        self.home = settings.index_home / "shops"
        self.cache_path = settings.index_home / "embcache.sqlite"  # shared with `kefu build`: the same texts
        self.registry = ShopRegistry(self.home / "registry.sqlite")

    @property
    def kind(self) -> VectorStoreKind:
        return VectorStoreKind(self.settings.vector_store)

    def store(self, dim: int) -> VectorStore:
        """The configured vector store, connected (one per ``Shops``)."""
        if self._store is None:
            store = open_vector_store(
                self.kind,
                dim,
                root=self.settings.index_home / "vectors",
                milvus_uri=self.settings.milvus_uri or str(self.settings.index_home / "milvus.db"),
            )
            store.warm_up()
            self._store = store
        return self._store

    def index_store(self, shop: str) -> IndexStore:
        return IndexStore(self.home / check_shop_id(shop), SHOP_KEEP_BUILDS, cache_path=self.cache_path)

    def add(
        self,
        shop: str,
        kb_path: Path,
        progress: ProgressFn | None = None,
        fitting: ProgressFn | None = None,
        force: bool = False,
    ) -> ShopBuild:
        """Register ``shop`` with the KB at ``kb_path`` and build it; an existing shop is refused."""
        check_shop_id(shop)
        if self.registry.get(shop) is not None:
            raise ConfigError(f"shop {shop!r} exists; `kefu shops rebuild {shop} [--kb PATH]` rebuilds it")
        return self._build(shop, kb_path, progress, fitting, force)

    def rebuild(
        self,
        shop: str,
        kb_path: Path | None = None,
        progress: ProgressFn | None = None,
        fitting: ProgressFn | None = None,
        force: bool = False,
    ) -> ShopBuild:
        """Build the shop again from its KB (or a new ``kb_path``); its last good build serves
        until the new one is verified and stored."""
        rec = self.registry.require(shop)
        return self._build(shop, kb_path or Path(rec.kb_root), progress, fitting, force, rec)

    def _build(
        self,
        shop: str,
        kb_path: Path,
        progress: ProgressFn | None,
        fitting: ProgressFn | None,
        force: bool,
        previous: ShopRecord | None = None,
    ) -> ShopBuild:
        from service.selfcal import build_calibrator

        t0 = time.perf_counter()
        # The path as given (a file stays a file; made absolute so a rebuild from another folder
        # finds it; symlinks kept, so a swapped link is followed): not ``kb.root``, which for a file
        # is its folder, and a rebuild from that would load every file beside it.
        kb_path = Path(os.path.abspath(kb_path.expanduser()))
        kb = load_shop_kb(shop, kb_path)
        encoder = self._encoder()
        istore = self.index_store(shop)
        kept_before = {b.build_id: _rows_of(b) for b in istore.list()}
        summary = build_and_swap(
            kb,
            encoder,
            istore,
            self.settings.chunk_chars,
            "flat",  # a shop is small: exact search, the same on every vector store
            progress,
            force,
            calibrate=build_calibrator(self.settings, encoder, fitting),
        )
        if summary.vectors > MAX_SHOP_ROWS:
            raise ConfigError(
                f"shop {shop}: {summary.vectors} vectors, a shop may hold {MAX_SHOP_ROWS}; split its KB or serve it "
                "as the platform KB (`kefu build`)"
            )
        store = self.store(encoder.dim)
        folder = Path(summary.path)
        if not summary.unchanged or not (folder / PACK_FILE).is_file():  # before the registry names the build
            write_shop_pack(StoreIndex.open(folder, store, shop, encoder.model_id), folder)
        if not store.holds(shop, summary.build_id, summary.vectors):  # unchanged builds are already stored
            vectors = np.load(Path(summary.path) / "vectors.npy", allow_pickle=False)
            store.upsert(shop, summary.build_id, range(vectors.shape[0]), vectors)
            store.flush()
        now = time.time()
        self.registry.put(
            ShopRecord(
                shop,
                str(kb_path),
                summary.build_id,
                self.kind.value,
                encoder.dim,
                summary.entries,
                summary.vectors,
                summary.calibration,
                previous.created if previous else now,
                now,
                previous.has_token if previous else False,
            )
        )
        # only now that the registry serves the new build: drop vectors of builds no longer kept
        self._drop_builds(store, shop, kept_before, {b.build_id for b in istore.list()})
        return ShopBuild(
            shop,
            summary.build_id,
            summary.entries,
            summary.vectors,
            time.perf_counter() - t0,
            summary.unchanged and previous is not None and previous.build_id == summary.build_id,
            summary.calibration,
            self.kind.value,
        )

    @staticmethod
    def _drop_builds(store: VectorStore, shop: str, before: dict[str, int | None], kept: set[str]) -> None:
        """Drop the vectors of the builds in ``before`` that are not ``kept``: by key when their
        row count is known (a point delete), else with a delete filtered on the shop."""
        gone = {b: rows for b, rows in before.items() if b not in kept}
        if any(rows is None for rows in gone.values()):
            store.delete(shop, keep=sorted(kept))
            return
        for build_id, rows in gone.items():
            store.drop(shop, build_id, rows or 0)

    def rollback(self, shop: str, build_id: str | None = None) -> str:
        """Serve the shop's previous kept build (or ``build_id``) again."""
        rec = self.registry.require(shop)
        istore = self.index_store(shop)
        kept = [b for b in istore.list() if b.manifest is not None]
        if build_id is None:
            older = [b for b in kept if b.build_id < rec.build_id]
            if not older:
                raise NotFoundError(f"shop {shop} has no earlier build to roll back to")
            build_id = older[0].build_id
        target = next((b for b in kept if b.build_id == build_id), None)
        if target is None or target.manifest is None:
            raise NotFoundError(f"shop {shop} has no build {build_id!r}; kept: {', '.join(b.build_id for b in kept)}")
        if not self.store(rec.dim).holds(shop, build_id, target.manifest.counts.get("vectors", 0)):
            raise IndexStateError(f"shop {shop}: build {build_id} has no vectors in the {self.kind} store; rebuild it")
        istore.set_current(build_id)
        m = target.manifest
        self.registry.put(
            ShopRecord(
                shop,
                rollback_kb_path(rec.kb_root, m.kb_root),
                build_id,
                rec.store,
                m.dim,
                m.counts.get("entries", 0),
                m.counts.get("vectors", 0),
                calibration_note(m),  # the rolled-back build's own line, not the one it replaces
                rec.created,
                time.time(),
                rec.has_token,
            )
        )
        return build_id

    def remove(self, shop: str) -> None:
        """Stop serving the shop (registry first), then drop its vectors and builds."""
        rec = self.registry.require(shop)
        self.registry.delete(shop)
        self.store(rec.dim).delete(shop)
        shutil.rmtree(self.home / shop, ignore_errors=True)

    def folder(self, rec: ShopRecord) -> Path:
        return self.home / rec.id / "builds" / rec.build_id

    def _encoder(self) -> Encoder:
        if self.encoder is None:
            from indexer.encoder import load_encoder

            self.encoder = load_encoder(self.settings)
        return self.encoder

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
