"""The ``kefu`` command: the one place that assembles every package's sub-commands."""

from __future__ import annotations

from pathlib import Path

import typer

from indexer.cli import model_app
from kb.cli import kb_app
from kb.settings import Settings

app = typer.Typer(
    help="kefu 客服 — retrieval-augmented FAQ assistant with calibrated 转人工 decisions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(
    ctx: typer.Context,
    model: str | None = typer.Option(None, "--model", help="override KEFU_MODEL"),
    kb_dir: Path | None = typer.Option(None, "--kb", help="override KEFU_KB_DIR"),
    index_dir: Path | None = typer.Option(None, "--index-dir", help="override KEFU_INDEX_DIR"),
) -> None:
    """Settings come from KEFU_* variables and .env; these flags override them."""
    ctx.obj = Settings().with_overrides(model=model, kb_dir=kb_dir, index_dir=index_dir)


app.add_typer(kb_app, name="kb")
app.add_typer(model_app, name="model")

if __name__ == "__main__":  # pragma: no cover
    app()
