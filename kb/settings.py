"""One settings object for the whole of kefu (pydantic-settings, env prefix ``KEFU_``).

It is built once at the edge (CLI callback, API start-up) and passed down; CLI flags override
it with :meth:`Settings.with_overrides`. A ``.env`` file in the working directory is read too.
Precedence, highest first: CLI flag > environment variable > ``.env`` > default.
"""

from __future__ import annotations

import json
import re
import types
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

from platformdirs import user_cache_dir, user_data_dir
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from kb.errors import ConfigError
from kb.modes import DocPrecision, IndexKind, QueryRuntime, RetrievalMode

BUNDLED_KB = Path(__file__).resolve().parent / "content"
DEFAULT_MODEL = "builtin:multilingual-e5-small"
# Defaults that components read too (they are declared here once; a component's own keyword
# default names the constant): what a handoff says, and how long the micro-batcher waits.
HANDOFF_MESSAGE = "已为您转接人工客服，请稍候，客服接入后会先查看您刚才的问题，无需重复描述。"
MICROBATCH_WAIT_MS = 0.0  # batch whatever queued while the encoder was busy; no extra wait
# Answers one request may ask for: retrieval keeps the best 10 units (CANDIDATE_UNITS in
# service/pipeline/retrieve.py), so a larger top_k could never be served. The settings, the API
# schema, check_request and `kefu ask --top-k` all read this one bound.
MAX_TOP_K = 10
# The CLI flags that override a setting (``with_overrides``), so an error names what was typed.
CLI_FLAGS = {
    "model": "--model",
    "kb_dir": "--kb",
    "index_dir": "--index-dir",
    "index_kind": "--kind",
    "host": "--host",
    "port": "--port",
    "workers": "--workers",
}
# A CSP source expression as frame-ancestors takes it: a keyword, a scheme, or an origin
# (a host may start with a *. wildcard, a port may be *), without a path.
_CSP_SOURCE = re.compile(
    r"'self'|'none'|[a-z][a-z0-9+.-]*:|(?:[a-z][a-z0-9+.-]*://)?(?:\*\.)?[A-Za-z0-9.-]+(?::(?:\d{1,5}|\*))?"
)


def _default_cache() -> Path:
    return Path(user_cache_dir("kefu")) / "models"


def _default_data() -> Path:
    return Path(user_data_dir("kefu"))


class Settings(BaseSettings):
    """All configuration. Every field can be set as ``KEFU_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="KEFU_", env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # --- model -------------------------------------------------------------------------
    model: str = Field(
        DEFAULT_MODEL,
        description="builtin:multilingual-e5-small, a sentence-transformers hub id, or a local path",
    )
    model_cache: Path = Field(
        default_factory=_default_cache,
        description="where converted models, their exported query graphs and the models `kefu learn tune` keeps live",
    )
    model_profile: str | None = Field(None, description="force a prompt profile (e5, bge-zh, plain)")
    query_prompt: str | None = Field(None, description="override the query prompt of the profile")
    doc_prompt: str | None = Field(None, description="override the document prompt of the profile")
    batch_size: int = Field(32, ge=1, le=1024)
    torch_threads: int = Field(
        0, ge=0, description="compute threads: torch's pool, and ONNX query calls run at once; 0 = one per core"
    )
    query_int8: bool = Field(
        True,
        description="encode queries with int8 matrix products (about 1.5x faster); documents stay float32",
    )
    see_also: bool = Field(
        False,
        description="after the two best answers, the first one's related entries (its related: links) "
        "come next, up to rank 5 (off: on dev recall@5 rose 0.979 -> 0.990, on test it fell 0.979 -> 0.974)",
    )
    dense_int8: bool = Field(
        True,
        description="score queries against an int8 copy of the stored vectors (a quarter of the memory "
        "read per query; cosines within ±0.003 of float32); the vectors on disk stay float32",
    )
    doc_precision: DocPrecision = Field(
        DocPrecision.AUTO,
        description="how answers and document passages are embedded: fp32, bf16 (matrix products in "
        "bfloat16, about 2.6x faster on long passages with AMX; vectors within cosine 1e-5 of fp32), or auto "
        "(bf16 where the CPU does it natively, else fp32)",
    )
    query_runtime: QueryRuntime = Field(
        QueryRuntime.ONNX,
        description="onnx: queries through an exported ONNX Runtime graph (cached in model_cache/onnx); "
        "torch: through the model directly. Falls back to torch when a model cannot be exported",
    )

    # --- knowledge base and index ---------------------------------------------------------
    kb_dir: Path = Field(BUNDLED_KB, description="knowledge base folder (bundled kb/content by default)")
    data_dir: Path = Field(default_factory=_default_data, description="where indexes and tickets live")
    index_dir: Path | None = Field(None, description="index home; default <data_dir>/index")
    index_kind: IndexKind = Field(
        IndexKind.FLAT,
        description="the build's FAISS index, and so the served dense pass: flat scores every row; hnsw and ivf "
        "score the rows the approximate search finds (docs/how-it-works.md)",
    )
    keep_builds: int = Field(3, ge=1, le=50, description="verified builds kept for rollback")
    # --- shops (service/shops.py) ------------------------------------------------------------
    vector_store: Literal["faiss", "milvus"] = Field(
        "faiss", description="where shops' vectors live: faiss (files in the index home) or milvus"
    )
    milvus_uri: str | None = Field(
        None, description="a local file (Milvus Lite, embedded) or http://host:19530; default <index home>/milvus.db"
    )
    shop_cache: int = Field(256, ge=1, le=100_000, description="shops kept loaded (LRU) by a serving process")
    chunk_chars: int = Field(220, ge=40, le=4000, description="target size of a rules chunk")
    retrieval: RetrievalMode = Field(
        RetrievalMode.RRF, description="dense only, lexical (BM25) only, or a fusion; rrf won on the dev split"
    )

    self_precision: float = Field(
        0.87,
        ge=0.5,
        lt=1.0,
        description="answered-precision target of the calibration `kefu build` fits from the KB alone",
    )
    self_oos_share: float = Field(
        0.3,
        gt=0.0,
        lt=1.0,
        description="share of questions assumed to have no answer in the KB when that calibration "
        "predicts precision and coverage",
    )

    # --- answering --------------------------------------------------------------------------
    # Off by default: on the bundled KB's dev split it lifted hit@1 0.859 → 0.865 but cost
    # recall@5 (0.952 → 0.946) and coverage at 95% precision (0.692 → 0.646), 2026-11-26.
    expand_synonyms: bool = Field(False, description="search with the standard terms of resources/synonyms.yaml")
    correct_typos: bool = Field(
        True,
        description="put back the KB's word where a pinyin homophone typo broke it (快第 -> 快递) before "
        "searching; the shopper's text is kept, the trace lists the changes",
    )
    top_k: int = Field(3, ge=1, le=MAX_TOP_K)
    max_query_chars: int = Field(500, ge=1, le=20000)
    session_ttl_s: int = Field(1800, ge=1)
    session_max: int = Field(10000, ge=1)
    tickets_db: Path | None = Field(None, description="handoff tickets (SQLite); default <data_dir>/tickets.db")
    eval_dir: Path | None = Field(
        None, description="labelled sets for `kefu eval` (dev.jsonl, test.jsonl); default the bundled eval/data"
    )
    handoff_message: str = HANDOFF_MESSAGE
    sensitive_terms: list[str] | None = Field(None, description="override the sensitive-term list")
    handoff_candidates: bool = Field(
        False,
        description="also search a request for a person or a sensitive message, so its ticket and answers carry "
        "the best candidates for the agent (costs an encoder call; off: decided by the rules alone)",
    )
    order_detection: bool = Field(
        True,
        description="hand off messages that need the shopper's own order (an order number, 我的快递到哪了, "
        "帮我退款) with reason needs_order; how-to questions are still answered",
    )
    merchant_detection: bool = Field(
        True,
        description="hand off a seller's messages (申请入驻, 我们店铺, 商家后台, 这单顾客没收到) with reason merchant; "
        "the rules a KB's own FAQ questions match are off for it",
    )
    order_webhook: str | None = Field(
        None, description="http(s) URL that each needs_order handoff is POSTed to as JSON (off when unset)"
    )
    order_webhook_timeout_s: float = Field(
        1.0, gt=0.0, le=10.0, description="longest an answer waits for the order webhook; failures are only logged"
    )
    microbatch_wait_ms: float = Field(
        MICROBATCH_WAIT_MS,
        ge=0,
        le=100,
        description="extra wait for more requests; 0 = batch whatever queued while the encoder was busy",
    )
    microbatch_max: int | None = Field(
        None, ge=1, le=512, description="texts per encoder call; default suits the query runtime (4 onnx, 32 torch)"
    )

    # --- server -------------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64)
    admin_token: SecretStr | None = None
    cors_origins: list[str] = Field(default_factory=list)
    frame_ancestors: list[str] = Field(
        default_factory=lambda: ["'self'"],
        description="CSP frame-ancestors of the chat page (JSON list): every site that embeds widget.js "
        "must be listed by origin (https://shop.example.com) next to 'self'",
    )
    max_body_bytes: int = Field(16_384, ge=256)
    rate_limit_per_minute: int = Field(600, ge=0, description="per client IP; 0 disables")
    # Requests admitted at once; the rest get 503 at once. One worker answers about 235/s on 2
    # cores (docs/benchmarks.md), so 64 admitted means at most ~0.3 s of queueing behind them.
    max_inflight: int = Field(64, ge=1, description="requests in flight before shedding with 503")

    @field_validator("model")
    @classmethod
    def _model_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("KEFU_MODEL is empty; use builtin:multilingual-e5-small, a hub id or a path")
        return v.strip()

    @field_validator("order_webhook")
    @classmethod
    def _webhook_is_http(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        parts = urlsplit(v.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("KEFU_ORDER_WEBHOOK must be an http:// or https:// URL with a host")
        return v.strip()

    @field_validator("frame_ancestors")
    @classmethod
    def _ancestors_are_sources(cls, v: list[str]) -> list[str]:
        # Each item goes into a response header: anything but a CSP source expression could end
        # the directive (;) or inject another header.
        for item in v:
            if not _CSP_SOURCE.fullmatch(item):
                raise ValueError(
                    f"KEFU_FRAME_ANCESTORS item {item!r} is not a CSP source: use 'self', 'none', "
                    "an origin like https://shop.example.com, or a scheme like https:"
                )
        if "'none'" in v and len(v) > 1:
            raise ValueError("KEFU_FRAME_ANCESTORS: 'none' cannot be combined with other sources")
        return v

    @property
    def index_home(self) -> Path:
        return self.index_dir if self.index_dir is not None else self.data_dir / "index"

    @property
    def tickets_path(self) -> Path:
        return self.tickets_db if self.tickets_db is not None else self.data_dir / "tickets.db"

    @classmethod
    def load(cls) -> Settings:
        """The settings of the environment and ``.env``, as the CLI builds them: a value that is not
        allowed is a ``ConfigError`` naming its KEFU_ variable (exit 2), not a validation trace."""
        try:
            return cls()
        except (ValidationError, SettingsError) as exc:
            raise settings_error(exc) from None

    def with_overrides(self, **overrides: Any) -> Settings:
        """Return a copy with CLI flags applied; ``None`` means "flag not given". A value that is
        not allowed is a ``ConfigError`` naming the flag (``CLI_FLAGS``) and what it allows."""
        given = {k: v for k, v in overrides.items() if v is not None}
        if not given:
            return self
        try:
            return self.model_validate({**self.model_dump(), **given})
        except ValidationError as exc:
            raise settings_error(exc, {k: CLI_FLAGS[k] for k in given if k in CLI_FLAGS}) from None


def settings_error(exc: ValidationError | SettingsError, flags: Mapping[str, str] | None = None) -> ConfigError:
    """One line for settings that are not allowed: each named as its flag (``flags``: field → flag)
    or its KEFU_ variable, with the value given and what the setting allows."""
    flags = flags or {}
    if isinstance(exc, SettingsError):  # a list or JSON setting whose text is not JSON
        m = re.search(r'field "(\w+)"', str(exc))
        name = m.group(1) if m else ""
        what = allowed(name) or "valid JSON"
        return ConfigError(
            f"KEFU_{name.upper()} is not valid JSON: use {what}" if m else f"a setting cannot be read: {exc}"
        )
    problems = []
    errors = exc.errors()
    for e in errors[:3]:
        name = str(e["loc"][0]) if e["loc"] else ""
        value = e.get("input")
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
        where = f"{flags[name]} {shown}" if name in flags else f"KEFU_{name.upper()}={shown}"
        if e["type"] == "value_error":  # our own validators name the variable and say what to use
            said = str(e.get("ctx", {}).get("error", e["msg"]))
            problems.append(f"{where} is not allowed: {said}" if name in flags else said)
        else:
            problems.append(f"{where} is not allowed: use {allowed(name) or e['msg'].lower()}")
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return ConfigError("; ".join(problems) + more)


_NUMBER_WORDS = {int: "an integer", float: "a number"}


def allowed(name: str) -> str | None:
    """What setting ``name`` accepts, in words (its type and bounds); None when there is nothing to say."""
    info: FieldInfo | None = Settings.model_fields.get(name)
    if info is None:
        return None
    kind: Any = info.annotation
    if get_origin(kind) in (Union, types.UnionType):  # X | None: the X
        kind = next(a for a in get_args(kind) if a is not type(None))
    if isinstance(kind, type) and issubclass(kind, Enum):
        return "one of " + ", ".join(str(m.value) for m in kind)
    if get_origin(kind) is Literal:
        return "one of " + ", ".join(str(a) for a in get_args(kind))
    if kind is bool:
        return "true or false"
    if get_origin(kind) is list:
        return 'a JSON list, e.g. ["a", "b"]'
    if kind in _NUMBER_WORDS:
        bound = {k: getattr(m, k) for m in info.metadata for k in ("ge", "gt", "le", "lt") if hasattr(m, k)}
        if "ge" in bound and "le" in bound:
            return f"{_NUMBER_WORDS[kind]} from {bound['ge']} to {bound['le']}"
        signs = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
        limits = " and ".join(f"{signs[k]} {v}" for k, v in bound.items())
        return f"{_NUMBER_WORDS[kind]} {limits}".strip()
    return None
