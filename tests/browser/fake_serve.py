"""``kefu serve`` with the deterministic fake encoder: the server of the browser tests.

Run as ``python -m tests.browser.fake_serve serve --port N`` with ``KEFU_*`` variables naming a KB
and an index built with the fake encoder. Everything but the model is the real thing: the
``kefu`` CLI and its settings, ``kefu serve``'s uvicorn, the app's lifespan, SQLite. The model is
swapped because the real one takes seconds to load, and on the test KB its answers could not be
planned (a clarify needs a query whose confidence falls in a known band).
"""

from __future__ import annotations

import sys

import indexer.encoder
import service.runtime
from indexer.encoder import FakeEncoder

MODEL_ID = "fake:hash-128"  # KEFU_MODEL of the server and the model id of the index it serves


def main() -> None:
    encoder = FakeEncoder(dim=128, model_id=MODEL_ID)
    # every place `kefu serve` may load the model gets the fake encoder (as tests/service/conftest.py does)
    indexer.encoder.load_encoder = lambda settings: encoder  # type: ignore[assignment,return-value]
    service.runtime.load_encoder = lambda settings: encoder  # type: ignore[assignment,return-value]
    from kefu_cli import app

    app(args=sys.argv[1:], prog_name="kefu")


if __name__ == "__main__":
    main()
