"""Runtime.answerer: what it checks of the index it serves."""

from __future__ import annotations

import logging

from indexer.encoder import FakeEncoder
from service.runtime import Runtime


def test_questions_encoded_another_way_are_flagged(tiny_settings, tiny_index, fake_encoder, caplog):
    with caplog.at_level(logging.WARNING, logger="kefu.runtime"):
        Runtime.create(tiny_settings, encoder=fake_encoder).answerer(index=tiny_index)
    assert not caplog.records  # built and served by the same path
    with caplog.at_level(logging.WARNING, logger="kefu.runtime"):
        answerer = Runtime.create(
            tiny_settings, encoder=FakeEncoder(dim=128, query_path="fake-int8", batch_invariant=False)
        ).answerer(index=tiny_index)
    [record] = caplog.records
    message = record.getMessage()
    assert "as fake" in message and "fake-int8, one per call" in message and "kefu build" in message
    assert answerer.answer("七天无理由退货需要满足什么条件？").decision  # it still serves
