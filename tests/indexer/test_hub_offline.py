"""A sentence-transformers hub id is loaded from the local Hugging Face cache only: nothing is
downloaded at run time, and a model that is not cached fails at once with the clear error (not
after a minute of retries)."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from indexer.encoders import SentenceTransformerModel
from kb.errors import ModelError


def test_the_library_is_asked_for_cached_files_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import sentence_transformers

    seen: dict[str, Any] = {}

    class Recording:
        def __init__(self, path: str, **kwargs: Any) -> None:
            seen.update(kwargs, path=path)
            raise OSError("We couldn't connect to 'https://huggingface.co'.\nCheck your internet connection")

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", Recording)
    with pytest.raises(ModelError, match="local Hugging Face cache") as caught:
        SentenceTransformerModel("kefu-tests/not-cached").load()
    assert seen["path"] == "kefu-tests/not-cached" and seen["local_files_only"] is True
    assert "\n" not in str(caught.value)  # one line on stderr


def test_a_model_not_in_the_cache_opens_no_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    tried: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        tried.append(args)
        raise OSError("no network in this test")

    from huggingface_hub import constants

    monkeypatch.setattr(socket.socket, "connect", lambda self, address: refuse(address))
    monkeypatch.setattr(socket, "create_connection", refuse)
    before = constants.HF_HUB_OFFLINE
    with pytest.raises(ModelError, match="cannot load sentence-transformers model 'kefu-tests/not-cached'"):
        SentenceTransformerModel("kefu-tests/not-cached").load()
    assert tried == []
    assert constants.HF_HUB_OFFLINE is before  # offline for that load only
