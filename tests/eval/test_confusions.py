"""kb_confusions on the tiny answerer, and the pair table on hand-made confusions."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from eval.confusions import Confusion, ConfusionReport, kb_confusions


def test_pairs_add_up_both_directions_by_hand():
    rep = ConfusionReport(
        10,
        6,
        (
            Confusion("b", "a", ("q1", "q2")),
            Confusion("a", "b", ("q3",)),
            Confusion("c", "a", ("q4",)),
        ),
    )
    assert rep.accuracy == 0.6
    assert rep.pairs() == [("a", "b", 1, 2), ("a", "c", 0, 1)]
    assert ConfusionReport(0, 0, ()).accuracy == 1.0


def test_every_alternative_is_asked_once_and_lands_somewhere(tiny_answerer):
    index = tiny_answerer.index
    alts = [r for r, c in enumerate(index.chunks) if c.kind == "alt"]
    rep = kb_confusions(tiny_answerer)
    assert rep.alternatives == len(alts)
    assert rep.right + sum(len(c.questions) for c in rep.confusions) == rep.alternatives
    # the oracle: each alternative, left out, through the same pool (no ranker in the tiny index)
    wrong = set()
    for r in alts:
        pool = index.candidate_pool(index.vectors[r], index.norm_texts[r], 20, exclude_row=r)
        if pool.units[0].unit_id != index.chunks[r].unit_id:
            wrong.add((index.chunks[r].unit_id, pool.units[0].unit_id, index.chunks[r].text))
    assert wrong == {(c.entry, c.other, q) for c in rep.confusions for q in c.questions}
    assert all(c.entry != c.other for c in rep.confusions)


def test_cli_confusions_json(tiny_settings, tiny_index, fake_encoder, monkeypatch):
    import service.runtime
    from kefu_cli import app

    monkeypatch.setattr(service.runtime, "load_encoder", lambda settings: fake_encoder)
    for k, v in {"KEFU_KB_DIR": tiny_settings.kb_dir, "KEFU_DATA_DIR": tiny_settings.data_dir}.items():
        monkeypatch.setenv(k, str(v))
    monkeypatch.setenv("KEFU_MODEL", "fake:hash-128")
    r = CliRunner().invoke(app, ["eval", "confusions", "--json", "--top", "3"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["alternatives"] == sum(c.kind == "alt" for c in tiny_index.chunks)
    assert 0.0 <= out["alt_hit@1"] <= 1.0 and len(out["pairs"]) <= 3
