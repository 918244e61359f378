"""The ``kefu`` command: the one place that assembles every package's sub-commands."""

from __future__ import annotations

import inspect
import os
import warnings
from pathlib import Path

import typer

from eval.cli import eval_app
from eval.learn_cli import learn_app
from indexer.cli import index_app, model_app
from kb.cli import kb_app
from kb.clikit import edge
from kb.settings import Settings
from service.cli import ask, build, chat, handoffs_app, serve
from service.ops_cli import gaps_app, stats
from service.shops_cli import shops_app

# Library chatter (weight-loading bars, deprecation notices) is noise in a CLI.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)

app = typer.Typer(
    help="kefu 客服 — retrieval-augmented FAQ assistant with calibrated 转人工 decisions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
@edge  # a setting that is not allowed (KEFU_TOP_K=99, --model "") is one line and exit 2
def main(
    ctx: typer.Context,
    model: str | None = typer.Option(None, "--model", help="override KEFU_MODEL"),
    kb_dir: Path | None = typer.Option(None, "--kb", help="override KEFU_KB_DIR"),
    index_dir: Path | None = typer.Option(None, "--index-dir", help="override KEFU_INDEX_DIR"),
) -> None:
    """Settings come from KEFU_* variables and .env; these flags override them."""
    ctx.obj = Settings.load().with_overrides(model=model, kb_dir=kb_dir, index_dir=index_dir)


app.add_typer(kb_app, name="kb")
app.add_typer(model_app, name="model")
app.add_typer(index_app, name="index")
app.command("build")(build)
app.command("ask")(ask)
app.command("chat")(chat)
app.command("serve")(serve)
app.add_typer(handoffs_app, name="handoffs")
app.add_typer(shops_app, name="shops")
app.add_typer(eval_app, name="eval")
app.add_typer(learn_app, name="learn")
app.add_typer(gaps_app, name="gaps")
app.command("stats")(stats)


def one_line_summaries(t: typer.Typer) -> None:
    """Give every command of ``t`` (and of its groups) its docstring's first paragraph as one line
    for the command lists: typer's rich help keeps a docstring's line breaks there, so a summary
    wrapped in the source broke mid-sentence at any terminal width."""
    for c in t.registered_commands:
        if c.short_help is None and c.help is None and c.callback is not None:
            c.short_help = " ".join((inspect.getdoc(c.callback) or "").split("\n\n")[0].split())
    for g in t.registered_groups:
        if g.typer_instance is not None:
            one_line_summaries(g.typer_instance)


one_line_summaries(app)

if __name__ == "__main__":  # pragma: no cover
    app()
