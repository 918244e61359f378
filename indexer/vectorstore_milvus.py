"""The ``milvus`` vector store: every shop in one collection, the shop as its partition key.

``uri`` is a local file path (Milvus Lite, embedded: ``pymilvus`` with ``milvus-lite``, the
``kefu[milvus]`` extra) or ``http(s)://host:19530`` (a Milvus server or cluster); the same code
talks to both. Schema of the collection::

    pk      VARCHAR primary key   "<shop>/<build>/<row>"  (writing a row again replaces it)
    shop    VARCHAR partition key  hashed into the collection's partitions: a search filtered
                                   on one shop reads only its partition
    build   VARCHAR                the shop build that wrote the row (old builds are deleted
                                   only after the registry moved on, see indexer.vectorstore)
    row     INT64                  row of the build's vector matrix (the chunk it belongs to)
    vector  FLOAT_VECTOR(dim)      unit vector; index FLAT, metric IP: exact cosines, as FAISS

A search is filtered on ``shop == … and build == …`` and asks for every row of the shop
(a shop's KB is small; its candidate pool reads all of its cosines), so an index type that
prunes (HNSW, IVF) would buy nothing per shop and lose exactness.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from indexer.vectorstore import (
    MAX_SHOP_ROWS,
    VectorHit,
    VectorStoreKind,
    as_matrix,
    check_build_id,
    check_shop_id,
    in_row_order,
)
from kb.errors import ConfigError, IndexStateError

COLLECTION = "kefu_vectors"
NUM_PARTITIONS = 64  # partition-key buckets; shops hash into them (Milvus allows up to 1024)
UPSERT_BATCH = 2_000  # rows per delete and insert call: well inside a gRPC message
FETCH_BATCH = 2_000  # primary keys per get call
# Strong: a search sees every row written before it, also rows another process (kefu shops add)
# wrote just before the registry pointed at them. On Milvus Lite it costs nothing measurable; a
# server makes a Strong read wait for its next time tick (a get of 140 rows: 200-400 ms against
# 5 ms Bounded, Milvus 2.3.5 standalone, 2026-12-07).
CONSISTENCY = "Strong"
# A server's shop load (``fetch``) reads Bounded, and again Strong only when rows are missing: a
# build's rows are never changed once the registry names it, so a Bounded read that finds them
# all has read them as they are.
SERVER_READ = "Bounded"

log = logging.getLogger("kefu.vectorstore")


def is_server_uri(uri: str) -> bool:
    """Whether a KEFU_MILVUS_URI names a Milvus server (any other is a Milvus Lite file path)."""
    return uri.startswith(("http://", "https://", "tcp://", "unix:"))


class MilvusVectorStore:
    """``VectorStore`` on Milvus (Lite or server)."""

    kind = VectorStoreKind.MILVUS

    def __init__(self, uri: str, dim: int, collection: str = COLLECTION) -> None:
        self.uri = uri
        self.dim = dim
        self.collection = collection
        self._client: Any = None

    @property
    def is_lite(self) -> bool:
        return not is_server_uri(self.uri)

    def warm_up(self) -> None:
        """Connect and create the collection if it is missing; IndexStateError (503) when the
        URI cannot be reached or the collection has another dimension."""
        if self._client is not None:
            return
        try:
            from pymilvus import MilvusClient
        except ImportError as exc:
            raise ConfigError(
                "KEFU_VECTOR_STORE=milvus needs pymilvus and milvus-lite: pip install 'kefu[milvus]'"
            ) from exc
        if self.is_lite:
            path = Path(self.uri).expanduser()
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise IndexStateError(f"cannot create the Milvus Lite folder {path.parent}: {exc}") from exc
            self.uri = str(path)
        try:
            client = MilvusClient(uri=self.uri)
            if not client.has_collection(self.collection):
                self._create(client)
            else:
                self._check_dim(client)
                self._load(client)  # a reopened collection starts released
        except (ConfigError, IndexStateError):
            raise
        except Exception as exc:  # pymilvus raises its own tree and gRPC/OS errors
            if self.is_lite and "Open local milvus failed" in str(exc):
                raise IndexStateError(
                    f"cannot open Milvus Lite file {self.uri}: another process holds it (a running `kefu serve`?). "
                    "Milvus Lite serves one process: stop it first, or use a Milvus server (KEFU_MILVUS_URI=http://…)"
                ) from exc
            raise IndexStateError(f"cannot reach Milvus at {self.uri}: {_short(exc)}; check KEFU_MILVUS_URI") from exc
        self._client = client

    def _create(self, client: Any) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=200)
        schema.add_field("shop", DataType.VARCHAR, max_length=64, is_partition_key=True)
        schema.add_field("build", DataType.VARCHAR, max_length=80)
        schema.add_field("row", DataType.INT64)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        params = client.prepare_index_params()
        params.add_index(field_name="vector", index_type="FLAT", metric_type="IP")
        client.create_collection(self.collection, schema=schema, index_params=params, num_partitions=NUM_PARTITIONS)

    def _load(self, client: Any) -> None:
        """Load the collection. Milvus Lite writes each segment's index file after a flush, in a
        thread of its own and in place; a process killed meanwhile leaves it cut short, and every
        later load of the whole collection fails on it. Those files are copies of the stored rows
        that Milvus Lite rebuilds when they are missing, so a cut-short one is removed and the load
        tried once more; any other failure is raised as it is."""
        try:
            client.load_collection(self.collection)
        except Exception:
            torn = drop_torn_index_files(Path(self.uri), self.collection) if self.is_lite else []
            if not torn:
                raise
            log.warning(
                "Milvus Lite at %s: removed %d index file(s) a crash left half-written (%s); "
                "rebuilt from the stored rows",
                self.uri,
                len(torn),
                ", ".join(p.name for p in torn),
            )
            client.load_collection(self.collection)

    def _check_dim(self, client: Any) -> None:
        info = client.describe_collection(self.collection)
        for f in info.get("fields", []):
            if f.get("name") == "vector":
                dim = int(f.get("params", {}).get("dim", self.dim))
                if dim != self.dim:
                    raise IndexStateError(
                        f"Milvus collection {self.collection} at {self.uri} holds {dim}-dimensional vectors, the "
                        f"model makes {self.dim}; rebuild the shops into a new KEFU_MILVUS_URI or drop the collection"
                    )

    @property
    def client(self) -> Any:
        if self._client is None:
            self.warm_up()
        return self._client

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise IndexStateError(f"Milvus at {self.uri} failed to {what}: {_short(exc)}") from exc

    def upsert(self, shop: str, build: str, rows: Sequence[int], vectors: np.ndarray) -> None:
        check_shop_id(shop)
        check_build_id(build)
        x = as_matrix(vectors, self.dim)
        if len(rows) != x.shape[0]:
            raise ConfigError(f"{len(rows)} row ids for {x.shape[0]} vectors")
        # rows are a build's row numbers: below the limit, no build can outgrow it (and no count
        # query, which is slow on Milvus Lite before a flush, is needed)
        if any(not 0 <= int(r) < MAX_SHOP_ROWS for r in rows):
            raise ConfigError(f"row ids of shop {shop} must be in [0, {MAX_SHOP_ROWS}): a shop holds at most that many")
        data = [
            {"pk": f"{shop}/{build}/{int(r)}", "shop": shop, "build": build, "row": int(r), "vector": v}
            for r, v in zip(rows, x.tolist(), strict=True)
        ]
        # A delete by key and an insert, not Milvus's upsert: a Milvus 2.3 server stores upserted
        # rows where a filter on the partition key does not find them (2.3.5: shop == "s1" counted
        # none of a shop's upserted rows, every inserted one). Nobody reads a build while it is
        # written (the registry points at it afterwards), so the two steps need not be one.
        for i in range(0, len(data), UPSERT_BATCH):
            batch = data[i : i + UPSERT_BATCH]
            self._call("replace vectors", self.client.delete, self.collection, ids=[d["pk"] for d in batch])
            self._call("store vectors", self.client.insert, self.collection, batch)

    def flush(self) -> None:
        """Seal Milvus Lite's growing segments: it searches rows that are not yet sealed by brute
        force with the filter applied row by row (74 ms a search over 20 shops' 3,000 rows before a
        flush, 6 ms after, 2026-12-06). A server seals on its own schedule and a flush there takes
        seconds (3.0-3.5 s, Milvus 2.3.5 standalone), so on a server this does nothing."""
        if self.is_lite:
            self._call("flush", self.client.flush, self.collection)

    def search(self, shop: str, build: str, queries: np.ndarray, k: int) -> list[list[VectorHit]]:
        if k < 1:
            raise ConfigError(f"k={k} must be ≥ 1")
        q = as_matrix(queries, self.dim)
        if q.shape[0] == 0:
            return []
        found = self._call(
            "search",
            self.client.search,
            self.collection,
            data=q.tolist(),
            limit=min(k, MAX_SHOP_ROWS),
            filter=_where(shop, build),
            output_fields=["row"],
            search_params={"metric_type": "IP"},
            consistency_level=CONSISTENCY,
        )
        return [
            [VectorHit(int(h["entity"]["row"]), float(h["distance"]), r) for r, h in enumerate(hits)] for hits in found
        ]

    def fetch(self, shop: str, build: str, rows: int) -> np.ndarray:
        """The build's rows. Milvus Lite reads them by primary key (``<shop>/<build>/<row>``, every
        one known from the row count): a point read per row, whose cost does not grow with the
        collection, where a filtered query there evaluates the filter on every row of every segment
        (a shop's search took 14 ms at 100 shops, 151 ms at 1,000; a get of its 140 rows about 10
        ms at both; docs/scaling.md). A server prunes a query on the partition key to the shop's
        partition: at 5,000 shops, 5.1 ms a shop against 10.0 ms by key (Milvus 2.3.5)."""
        check_shop_id(shop)
        check_build_id(build)
        if self.is_lite:
            ids, vectors = self._by_key(shop, build, rows, CONSISTENCY)
        else:
            ids, vectors = self._by_filter(shop, build, rows, SERVER_READ)
            if len(ids) < rows:  # written a moment ago: wait for the server to show it
                ids, vectors = self._by_filter(shop, build, rows, CONSISTENCY)
        matrix = np.asarray(vectors, dtype=np.float32).reshape(len(vectors), self.dim)
        return in_row_order(shop, build, self.kind.value, np.asarray(ids, dtype=np.int64), matrix, rows)

    def _by_key(self, shop: str, build: str, rows: int, level: str) -> tuple[list[int], list[list[float]]]:
        got: list[dict[str, Any]] = []
        for start in range(0, rows, FETCH_BATCH):
            got += self._call(
                "fetch vectors",
                self.client.get,
                self.collection,
                ids=[f"{shop}/{build}/{r}" for r in range(start, min(rows, start + FETCH_BATCH))],
                output_fields=["row", "vector"],
                consistency_level=level,
            )
        return [int(h["row"]) for h in got], [h["vector"] for h in got]

    def _by_filter(self, shop: str, build: str, rows: int, level: str) -> tuple[list[int], list[list[float]]]:
        got = self._call(
            "fetch vectors",
            self.client.query,
            self.collection,
            filter=_where(shop, build),
            output_fields=["row", "vector"],
            limit=max(1, min(rows, MAX_SHOP_ROWS)),
            consistency_level=level,
        )
        return [int(h["row"]) for h in got], [h["vector"] for h in got]

    def holds(self, shop: str, build: str, rows: int) -> bool:
        check_shop_id(shop)
        check_build_id(build)
        found = 0
        for start in range(0, rows, FETCH_BATCH):
            got = self._call(
                "read vectors",
                self.client.get,
                self.collection,
                ids=[f"{shop}/{build}/{r}" for r in range(start, min(rows, start + FETCH_BATCH))],
                output_fields=["row"],
                consistency_level=CONSISTENCY,
            )
            found += len(got)
        return found == rows

    def count(self, shop: str, build: str | None = None) -> int:
        got = self._call(
            "count vectors",
            self.client.query,
            self.collection,
            filter=_where(shop, build),
            output_fields=["count(*)"],
            consistency_level=CONSISTENCY,
        )
        return int(got[0]["count(*)"]) if got else 0

    def delete(self, shop: str, keep: Sequence[str] = ()) -> None:
        where = _where(shop)
        if keep:
            kept = ", ".join(f'"{check_build_id(b)}"' for b in keep)
            where += f" and build not in [{kept}]"
        self._call("delete vectors", self.client.delete, self.collection, filter=where)

    def drop(self, shop: str, build: str, rows: int) -> None:
        """Delete by primary key: 3 ms for a shop's 140 rows in a Milvus Lite collection of 700k,
        where a delete filtered on the shop took 2.6 s (docs/scaling.md)."""
        check_shop_id(shop)
        check_build_id(build)
        for start in range(0, rows, FETCH_BATCH):
            keys = [f"{shop}/{build}/{r}" for r in range(start, min(rows, start + FETCH_BATCH))]
            self._call("delete vectors", self.client.delete, self.collection, ids=keys)

    def close(self) -> None:
        """Disconnect; with Milvus Lite also stop its server (a thread of this process holding the
        file), so the file can be opened again, here or by another process."""
        if self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None
                if self.is_lite:
                    _release_lite(self.uri)


def drop_torn_index_files(db: Path, collection: str) -> list[Path]:
    """Remove the index files of a Milvus Lite collection (``<db>/collections/<name>/partitions/
    */indexes/*.idx``, NumPy arrays for a FLAT index) that hold fewer bytes than their header
    promises; files in any other format are left alone. Returns the files removed."""
    torn = []
    for path in sorted((db / "collections" / collection / "partitions").glob("*/indexes/*.idx")):
        if _npy_is_short(path):
            path.unlink()
            torn.append(path)
    return torn


def _npy_is_short(path: Path) -> bool:
    """True when ``path`` starts as a NumPy array file and ends before its data does."""
    from numpy.lib import format as npy

    try:
        with path.open("rb") as f:
            version = npy.read_magic(f)
            read = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
            shape, _, dtype = read(f)
            need = f.tell() + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    except ValueError:  # not a NumPy file (another index format), or a header cut short
        return path.stat().st_size < 128 and path.read_bytes().startswith(b"\x93NUMPY")
    except OSError:
        return False
    return path.stat().st_size < need


def _release_lite(path: str) -> None:
    import sys

    manager = sys.modules.get("milvus_lite.server_manager")  # loaded by the client that used it
    if manager is not None:
        manager.server_manager_instance.release_server(path)


def _where(shop: str, build: str | None = None) -> str:
    """A filter on one shop (and build); both ids are checked slugs, so quoting them is safe."""
    where = f'shop == "{check_shop_id(shop)}"'
    if build is not None:
        where += f' and build == "{check_build_id(build)}"'
    return where


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:240] + "…") if len(text) > 240 else text or type(exc).__name__
