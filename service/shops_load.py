"""Loading a shop's answerer from its build's pack: its index, its own resources and packed speller tables."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from indexer.vectorstore_index import StoreIndex, read_pack
from kb.loader import load_resources
from kb.schema import Resources
from kb.settings import BUNDLED_KB
from service.answerer import Answerer, EncodeFn
from service.sessions import SessionStore
from service.shops import Shops, write_shop_pack
from service.shops_registry import ShopRecord
from service.speller import KNOWN_AT, MIN_COUNT, RATIO, Speller, jieba_words, read_userdict
from service.synonyms import SynonymExpander

SHOP_OVERHEAD = 48 << 10  # a loaded shop's answerer, calibration and speller tables besides its index
BUNDLED_USERDICT = BUNDLED_KB / "resources" / "userdict.txt"

log = logging.getLogger("kefu.shops")


@dataclass(frozen=True)
class LoadedShop:
    build_id: str
    answerer: Answerer
    nbytes: int  # what it holds in memory, roughly (``StoreIndex.nbytes`` + SHOP_OVERHEAD)


class PairCounts:
    """The speller's character-pair counts as a sorted array, read as its ``Counter`` is: 12 bytes a
    pair, no Python string or dict entry for each of a loaded shop's ~1,500 pairs."""

    def __init__(self, pairs: np.ndarray, counts: np.ndarray) -> None:
        self._pairs, self._counts = pairs, counts

    def get(self, pair: str, default: int = 0) -> int:
        i = int(self._pairs.searchsorted(pair))
        return int(self._counts[i]) if i < self._pairs.size and self._pairs[i] == pair else default

    def __getitem__(self, pair: str) -> int:
        return self.get(pair)


class PairsAtLeast:
    """The pairs counted at least ``n`` times (a set's ``in``), read from the counts themselves."""

    def __init__(self, counts: PairCounts, n: int) -> None:
        self._counts, self._n = counts, n

    def __contains__(self, pair: object) -> bool:
        return isinstance(pair, str) and self._counts.get(pair) >= self._n


class PackedSpeller(Speller):
    """``Speller`` from the pair counts a shop's pack carries (``write_shop_pack``): the same tables
    as ``Speller(texts, words)`` builds, without reading the texts."""

    def __init__(  # the parent's constructor counts the pairs of texts: not called
        self,
        pairs: np.ndarray,
        counts: np.ndarray,
        words: frozenset[str],
        min_count: int = MIN_COUNT,
        ratio: float = RATIO,
        known_at: int = KNOWN_AT,
    ) -> None:
        self.ratio = ratio
        self.pairs = PairCounts(pairs, counts)  # type: ignore[assignment]  # read as a Counter
        self.dictionary = jieba_words()
        self.extra = words
        self._known_pairs = PairsAtLeast(self.pairs, known_at)  # type: ignore[assignment,arg-type]  # read as a set
        keep = counts >= min_count  # the pairs are sorted, as the parent's loop reads them
        self._tables(zip(pairs[keep].tolist(), counts[keep].tolist(), strict=True), min_count)


@lru_cache(maxsize=64)
def _userdict_words(path: Path | None) -> frozenset[str]:
    """A user dictionary's words, one set shared by every shop that uses it."""
    return frozenset(read_userdict(path if path is not None and path.is_file() else None))


def _own_resources(kb_root: Path) -> Resources | None:
    """A shop KB's own ``resources/`` (synonyms, user words), or None: most shop KBs are one FAQ
    table, and parsing the bundled YAML again for each shop loaded cost 55 ms of a 60 ms load."""
    folder = kb_root / "resources"
    if not folder.is_dir():
        return None
    return _resources_at(folder, folder.stat().st_mtime_ns)


@lru_cache(maxsize=256)
def _resources_at(folder: Path, mtime_ns: int) -> Resources:  # the mtime makes a changed folder a new key
    return load_resources(folder.parent)


def load_shop(
    shops: Shops, rec: ShopRecord, platform: Answerer, encode: EncodeFn, sessions: SessionStore, model_id: str | None
) -> LoadedShop:
    """The shop's answerer from its build's pack (written now if the build has none) and its
    vectors read from the store once."""
    store = shops.store(rec.dim)
    folder = shops.folder(rec)
    pack = read_pack(folder)
    if pack is None or pack.header.get("build_id") != rec.build_id:
        index = StoreIndex.open(folder, store, rec.id, model_id)
        try:  # a build from before packs: write its pack, so this is the last slow load
            write_shop_pack(index, folder)
            pack = read_pack(folder)
        except (OSError, ValueError) as exc:
            log.warning("shop %s: cannot write the pack of build %s (%s)", rec.id, rec.build_id, exc)
    if pack is not None:
        index = StoreIndex.from_pack(pack, folder, store, rec.id, model_id)
    index.fetch_vectors()
    own = _own_resources(Path(index.manifest.kb_root))
    speller: Speller | None = None
    if platform.speller is not None:  # typo correction is on: with the shop's own words
        words = _userdict_words(own.userdict if own is not None else BUNDLED_USERDICT)
        extras = pack.extras if pack is not None else {}
        if "speller_pairs" in extras:
            speller = PackedSpeller(extras["speller_pairs"], extras["speller_counts"], words)
        else:
            speller = Speller(index.norm_texts, words)
    answerer = Answerer(
        index,
        encode,
        platform.sensitive,  # the rules are the platform's, so both sides fire alike
        platform.options,
        sessions=sessions,
        greetings=platform.greetings,
        thanks=platform.thanks,
        synonyms=SynonymExpander(own.synonyms) if own is not None else platform.synonyms,
        speller=speller,
        orders=platform.orders,
        merchant=platform.merchant,
        small_talk=platform.small_talk,  # the rules are the platform's
        examples=own.examples if own is not None else (),
        replies=own.replies if own is not None else None,
    )
    return LoadedShop(rec.build_id, answerer, index.nbytes + SHOP_OVERHEAD)
