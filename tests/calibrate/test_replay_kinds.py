"""A saved AWQ search replays exactly for every prev-op kind (offset norms, fused row slices, routers)."""
import pytest
import torch

from awq_ext.calibrate import SearchRecord, quantize_model
from awq_ext.config import AWQConfig, QuantizeConfig
from tests.models.tiny_archs import calib_ids, tiny_model


@pytest.mark.parametrize("model_type", ["gemma", "phi3", "qwen2_moe"])
def test_record_replays_to_identical_codes(model_type, tmp_path):
    cfg = QuantizeConfig(method="awq", group_size=64, device="cpu", awq=AWQConfig(n_grid=5, clip_n_grid=5))
    searched = quantize_model(tiny_model(model_type), calib_ids(), cfg, progress=False)
    kinds = {e.kind for e in searched.record.scales.values()}
    assert kinds & {"offset_norm", "rows"} or any(e.routers for e in searched.record.scales.values())
    searched.record.save(tmp_path / "rec.safetensors")
    replayed = quantize_model(tiny_model(model_type), None, cfg, record=SearchRecord.load(tmp_path / "rec.safetensors"),
                              progress=False)
    assert set(replayed.quantized) == set(searched.quantized)
    for n, q in searched.quantized.items():
        assert torch.equal(replayed.quantized[n].q, q.q), n
