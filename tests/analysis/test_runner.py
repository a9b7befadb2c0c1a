import dataclasses
import json

import pytest
import torch

from awq_ext.analysis.runner import RunSettings, TableResult, md_table
from awq_ext.analysis.salient import keep_salient, rtn_all, scale_salient
from awq_ext.errors import AWQInputError
from awq_ext.models import block_linears, get_blocks, get_spec
from awq_ext.quant import QuantSpec


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_rows_restore_pristine_weights_and_cache(runner, settings):
    before = _weights(runner.model)
    calls = []

    def apply():
        calls.append(1)
        return rtn_all(runner.model, QuantSpec(3, 32))

    r1 = runner.row("t", "rtn", {"m": "rtn"}, settings, apply)
    after = _weights(runner.model)
    assert all(torch.equal(before[k], after[k]) for k in before)  # restored after the row
    fp = runner.row("t", "fp", {"m": "fp"}, settings, lambda: {})
    assert r1["ppl"] != fp["ppl"] and r1["eval_tokens"] == settings.max_windows * (settings.eval_seqlen - 1)
    again = runner.row("t", "rtn", {"m": "rtn"}, settings, apply)
    assert again["cached"] and again["ppl"] == r1["ppl"] and len(calls) == 1
    saved = json.loads((runner.out / "cache" / "rows_t.json").read_text())
    assert len(saved) == 2


def test_awq_record_cached_and_replayed(runner, settings):
    from awq_ext.analysis.runner import quant_cfg

    cfg = quant_cfg("awq", 3, 32, settings)
    runner.restore()
    _, info1 = runner.quantize(cfg, settings)
    w1 = _weights(runner.model)
    runner.restore()
    _, info2 = runner.quantize(cfg, settings)
    w2 = _weights(runner.model)
    assert "replayed_record" not in info1 and "replayed_record" in info2
    assert info2["search_seconds_original"] > 0
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    runner.restore()
    # A loss over at least every calibration sequence is the same search: it replays, not re-searches.
    s_all = dataclasses.replace(settings, loss_samples=settings.n_samples)
    _, info3 = runner.quantize(quant_cfg("awq", 3, 32, s_all), s_all)
    assert "replayed_record" in info3
    runner.restore()
    s_half = dataclasses.replace(settings, loss_samples=1)
    _, info4 = runner.quantize(quant_cfg("awq", 3, 32, s_half), s_half)
    assert "replayed_record" not in info4
    runner.restore()


def test_calibration_after_eval_region(runner, settings):
    ids, start = runner.calib_range(settings)
    assert start >= settings.max_windows * settings.eval_seqlen and ids.shape == (2, 32)


def test_keep_salient_leaves_kept_channels_exact(runner, settings):
    runner.restore()
    act = runner.activation_means(runner.calib_ids(settings))
    ref = _weights(runner.model)
    info = keep_salient(runner.model, act, QuantSpec(3, 32), "activation", 0.05)
    spec = get_spec(runner.model)
    for i, block in enumerate(get_blocks(runner.model, spec)):
        for n, lin in block_linears(block).items():
            full = f"{spec.blocks}.{i}.{n}"
            top = torch.topk(act[full], max(1, round(0.05 * lin.in_features))).indices
            w0 = ref[full + ".weight"]
            assert torch.equal(lin.weight[:, top], w0[:, top])
            assert not torch.equal(lin.weight, w0)
    assert 0 < info["kept_fraction"] < 0.1
    runner.restore()


def test_scale_factor_one_is_rtn(runner, settings):
    runner.restore()
    act = runner.activation_means(runner.calib_ids(settings))
    scale_salient(runner.model, act, QuantSpec(3, 32), 1.0)
    a = _weights(runner.model)
    runner.restore()
    rtn_all(runner.model, QuantSpec(3, 32))
    b = _weights(runner.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    runner.restore()


def test_settings_and_result_writer(tmp_path):
    with pytest.raises(AWQInputError):
        RunSettings(max_windows=0)
    t = TableResult("x", "X", "paper says", {"a": 1}, [{"ppl": 1.0}], md_table(["a"], [["1"]]), ["note"], 1.0)
    paths = t.write(tmp_path)
    assert "paper says" in open(paths["markdown"]).read()
    assert json.loads(open(paths["json"]).read())["rows"] == [{"ppl": 1.0}]
