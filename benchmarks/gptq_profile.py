"""Where GPTQ's time goes: per-phase wall and CPU seconds for the first decoder block(s) of SmolLM2.

Phases, as the calibration driver runs them per block: the float forward that records every linear's
inputs (``collect_inputs``), one Hessian per distinct input tensor (q/k/v and gate/up share one), the
inverse-Hessian Cholesky factors, the GPTQ column loop, and the forward of the quantized block that
produces the next block's inputs. The whole-model figure is the per-block mean times the block count
(blocks are identical in shape).

    python benchmarks/gptq_profile.py --n-samples 64 --seqlen 512 --json benchmarks/results/gptq/profile.json

CPU seconds (``time.process_time``, all threads) are the better guide on a shared machine: wall time
there includes waiting for the cores.
"""
from __future__ import annotations

import argparse
import json
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from awq_ext.calibrate.capture import capture_block_inputs, run_chunked
from awq_ext.calibrate.pipeline import collect_inputs
from awq_ext.jobs import JobOptions, TextCache, plan_data
from awq_ext.models import block_linears, get_blocks, get_spec
from awq_ext.models.loading import load_model
from awq_ext.quant.gptq import HESSIAN_DTYPES, HessianCache, _inverse_cholesky, gptq_quantize
from awq_ext.quant.quantizer import QuantSpec


@contextmanager
def _timed(acc: dict, key: str):
    w, c = time.perf_counter(), time.process_time()
    yield
    wall, cpu = acc.setdefault(key, [0.0, 0.0])
    acc[key] = [wall + time.perf_counter() - w, cpu + time.process_time() - c]


@torch.no_grad()
def profile(n_samples: int, seqlen: int, blocks: int, bits: int, group: int, chunk: int, static_groups: bool,
            observer: str, hessian_dtype: str) -> dict:
    model, tok = load_model(None)
    ids = plan_data(JobOptions(n_samples=n_samples, seqlen=seqlen), TextCache(tok), True)["calib_ids"]
    layers = get_blocks(model, get_spec(model))
    acc: dict[str, list[float]] = {}
    with _timed(acc, "capture block 0 inputs (once)"):
        inps, kw = capture_block_inputs(model, layers, ids)
    spec = QuantSpec(bits, group)
    dtype = HESSIAN_DTYPES[hessian_dtype]
    for block in list(layers)[:blocks]:
        lins = block_linears(block)
        with _timed(acc, "float forward + record inputs"):
            feats, _ = collect_inputs(block, inps, kw, list(lins), chunk)
        cache = HessianCache()
        with _timed(acc, "Hessians (one per distinct input)"):
            for n in lins:
                cache.get(feats[n], dtype)
        with _timed(acc, "Cholesky of (H + damp I)^-1 (also inside GPTQ)"):
            for n in lins:
                _inverse_cholesky(cache.get(feats[n], dtype).double(), 0.01)
        with _timed(acc, "GPTQ quantize (incl. its Cholesky)"):
            for n, lin in lins.items():
                r = gptq_quantize(lin.weight.data, cache.get(feats[n], dtype), spec, act_order=True,
                                  static_groups=static_groups, observer=observer, name=n)
                lin.weight.data = r.weight
        with _timed(acc, "quantized forward (next block's inputs)"):
            inps = run_chunked(block, inps, kw, chunk)
        del feats, cache
    n_layers = len(layers)
    phases = {k: {"wall_s": round(v[0], 3), "cpu_s": round(v[1], 3),
                  "model_wall_s": round(v[0] if k.endswith("(once)") else v[0] / blocks * n_layers, 1),
                  "model_cpu_s": round(v[1] if k.endswith("(once)") else v[1] / blocks * n_layers, 1)}
              for k, v in acc.items()}
    counted = [v for k, v in phases.items() if not k.startswith("Cholesky")]  # Cholesky is inside GPTQ
    return {"n_samples": n_samples, "seqlen": seqlen, "blocks_profiled": blocks, "n_blocks": n_layers,
            "bits": bits, "group_size": group, "chunk_size": chunk, "static_groups": static_groups,
            "observer": observer, "hessian_dtype": hessian_dtype, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "phases": phases,
            "model_wall_s": round(sum(v["model_wall_s"] for v in counted), 1),
            "model_cpu_s": round(sum(v["model_cpu_s"] for v in counted), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-samples", type=int, default=64)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--blocks", type=int, default=2, help="decoder blocks to profile (the rest extrapolated)")
    ap.add_argument("--w-bit", type=int, default=3)
    ap.add_argument("--group-size", type=int, default=64)
    ap.add_argument("--chunk-size", type=int, default=16)
    ap.add_argument("--static-groups", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--observer", default="minmax")
    ap.add_argument("--hessian-dtype", default="float64", choices=sorted(HESSIAN_DTYPES))
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    res = profile(a.n_samples, a.seqlen, a.blocks, a.w_bit, a.group_size, a.chunk_size, a.static_groups,
                  a.observer, a.hessian_dtype)
    print(f"{a.n_samples} x {a.seqlen}, {res['threads']} threads, {a.blocks} of {res['n_blocks']} blocks profiled")
    print(f"{'phase':52s} {'wall s':>8s} {'cpu s':>8s} {'model wall':>11s} {'model cpu':>10s}")
    for k, v in res["phases"].items():
        print(f"{k:52s} {v['wall_s']:8.2f} {v['cpu_s']:8.2f} {v['model_wall_s']:11.1f} {v['model_cpu_s']:10.1f}")
    print(f"whole model (extrapolated): wall {res['model_wall_s']} s, cpu {res['model_cpu_s']} s")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=2))
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
