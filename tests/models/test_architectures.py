"""One property suite over EVERY registered spec, each on a tiny random model of its family.

(a) folding random positive scales through every applicable group, without quantizing, leaves every
    block's output unchanged; (b) every linear of every block is quantized or kept float with a reason;
    (c) W4 AWQ -> save -> reload (the ``eval --model DIR`` loader) reproduces the in-memory
    pseudo-quantized logits; (d) AWQ's calibration-set block error is no worse than RTN's.
Registering a spec adds its model types here (``tests/models/tiny_archs.py`` builds any model type
from its transformers config).
"""
from __future__ import annotations

import copy

import pytest
import torch

from awq_ext.calibrate import quantize_model
from awq_ext.calibrate.capture import capture_block_inputs, run_chunked
from awq_ext.calibrate.fold import fold_group
from awq_ext.calibrate.prepare import prepare_model
from awq_ext.config import AWQConfig, QuantizeConfig
from awq_ext.io import load_quantized
from awq_ext.jobs import save_checkpoint
from awq_ext.models import SPECS, bind_groups, block_linears, get_blocks, get_spec, kept_float_linears
from awq_ext.models.groups import consumer_width
from awq_ext.models.spec import get_module
from tests.models.tiny_archs import calib_ids, tiny_model

MODEL_TYPES = sorted(SPECS)


def _cfg(method: str) -> QuantizeConfig:
    return QuantizeConfig(method=method, w_bit=4, group_size=64, device="cpu", chunk_size=4,
                          awq=AWQConfig(n_grid=6, clip_n_grid=6, clip_tokens=64))


def _block_errors(ref, quantized, ids) -> list[float]:
    """Per block: ||quantized block(x) - float block(x)||^2 / ||float block(x)||^2 on the float model's
    own block inputs (the same inputs for every method compared)."""
    spec = get_spec(ref)
    fb, qb = get_blocks(ref, spec), get_blocks(quantized, spec)
    x, kw = capture_block_inputs(ref, fb, ids)
    errs = []
    with torch.no_grad():
        for f, q in zip(fb, qb):
            y, yq = run_chunked(f, x, kw, 4), run_chunked(q, x, kw, 4)
            errs.append(float((yq - y).pow(2).sum() / y.pow(2).sum()))
            x = y
    return errs


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_folding_random_scales_is_exact(model_type):
    model = tiny_model(model_type)
    spec = get_spec(model)
    prepare_model(model, spec)
    blocks = get_blocks(model, spec)
    inps, kw = capture_block_inputs(model, blocks, calib_ids())
    g = torch.Generator().manual_seed(3)
    folded = 0
    with torch.no_grad():
        for block in blocks:
            before = run_chunked(block, inps, kw, 2)
            bound = bind_groups(block, spec)
            consumers = {n for g, _ in bound for n in (*g.linears, *g.routers)}
            for name in block_linears(block, spec):  # no linear is silently left out of the scaling
                assert name in consumers or spec.unscaled_reason(name), f"{model_type}: {name} in no group"
            for group, skip in bound:
                if skip:
                    continue
                width = consumer_width(get_module(block, group.linears[0]), group.linears[0])
                fold_group(block, group, torch.rand(width, generator=g) * 4 + 0.25)
                folded += 1
            after = run_chunked(block, inps, kw, 2)
            assert float((after - before).norm() / before.norm()) <= 1e-5
            inps = before
    assert folded or not spec.groups, f"{model_type}: no group applied anywhere"


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_awq_quantizes_every_linear_saves_reloads_and_beats_rtn(model_type, tmp_path):
    ids = calib_ids()
    model = tiny_model(model_type)
    float_model, rtn_model = copy.deepcopy(model), copy.deepcopy(model)
    prepare_model(float_model, get_spec(float_model))
    res = quantize_model(model, ids, _cfg("awq"), progress=False)
    spec = get_spec(model)
    # (b) every block linear is quantized or kept float with its reason
    for i, block in enumerate(get_blocks(model, spec)):
        prefix = f"{spec.blocks}.{i}."
        kept = kept_float_linears(block, spec)
        assert all(kept.values())
        for name in (n for n, m in block.named_modules() if isinstance(m, torch.nn.Linear)):
            assert (prefix + name in res.quantized) != (name in kept), f"{prefix}{name}"
        assert set(block_linears(block, spec)) == {n[len(prefix):] for n in res.quantized if n.startswith(prefix)}
    # (d) AWQ's block error on the calibration set is no worse than RTN's
    quantize_model(rtn_model, ids, _cfg("rtn"), progress=False)
    awq_err, rtn_err = _block_errors(float_model, model, ids), _block_errors(float_model, rtn_model, ids)
    assert sum(awq_err) <= sum(rtn_err), (awq_err, rtn_err)
    # (c) save -> reload reproduces the in-memory pseudo-quantized logits
    with torch.no_grad():
        ref = model(ids[:2]).logits
    # float32 for the unquantized tensors: the round trip itself must be exact; the default fp16 storage of
    # norms rounds q/k and sandwich norms (gemma2/3, olmo2, qwen3) by ~1e-3 on random tiny models
    save_checkpoint(model, None, res, str(tmp_path / "ckpt"), save_dtype="float32")
    loaded = load_quantized(tmp_path / "ckpt")
    with torch.no_grad():
        got = loaded(ids[:2]).logits
    assert float((got - ref).norm() / ref.norm()) <= 1e-3
