"""The static performance model (awq_ext.bench.static*): its loop finder and instruction classes on SASS
text written here and on a tiny CUDA kernel compiled here, its pure arithmetic on hand-computed cases,
the launch mirrors on the grids the issue quotes, and a run over every kernel in csrc/.

Compiling tests skip when nvcc / cuobjdump / nvdisasm / c++filt are missing (scripts/ci_kernels.sh
installs the PyPI tools); everything else runs anywhere.
"""
from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from awq_ext.bench import sass, static_launch
from awq_ext.bench.sass import SassError
from awq_ext.bench.static_model import (GPUS, LaunchWork, fp16_baseline_us, issue_ceiling_bytes_per_s,
                                        littles_law_bytes_per_sm, occupancy, predict_launch, waves)
from awq_ext.errors import AWQInputError, KernelUnavailableError

H200 = GPUS["H200"]


def _listing(name: str, body: str) -> str:
    """An nvdisasm-style listing of one function: '/*off*/ insn ;' lines and '.L_x_N:' labels."""
    out = [f"\t.section\t.text.{name},\"ax\",@progbits", f"\t.sectioninfo\t@\"SHI_REGISTERS=8\"", f"{name}:"]
    off = 0
    for line in textwrap.dedent(body).strip().splitlines():
        line = line.strip()
        if line.endswith(":"):
            out.append(line)
        else:
            out.append(f"        /*{off:04x}*/                   {line} ;")
            off += 16
    return "\n".join(out) + "\n"


def _fn(name: str, body: str) -> sass.Function:
    return sass.parse_functions(_listing(name, body))[name]


# ---- loop finder on hand-written SASS --------------------------------------------------------------------

LOOP_WITH_IF_ELSE = """
    S2R R0, SR_TID.X
    ISETP.GE.AND P0, PT, R0, c[0x0][0x210], PT
    @P0 BRA `(.L_x_9)
.L_x_1:
    LDG.E.128 R4, desc[UR4][R2.64]
    ISETP.NE.AND P1, PT, R4, RZ, PT
    @P1 BRA `(.L_x_2)
    FFMA R8, R5, R6, R8
    BRA `(.L_x_3)
.L_x_2:
    LOP3.LUT R8, R8, R4, RZ, 0x3c, !PT
    LOP3.LUT R9, R9, R5, RZ, 0x3c, !PT
    HMMA.16816.F32 R12, R4, R6, R12
.L_x_3:
    IADD3 R0, R0, 0x80, RZ
    ISETP.GE.AND P0, PT, R0, c[0x0][0x210], PT
    @!P0 BRA `(.L_x_1)
.L_x_9:
    STG.E desc[UR4][R2.64], R8
    EXIT
.L_x_10:
    BRA `(.L_x_10)
"""


def test_loop_finder_counts_the_longest_path_of_one_iteration():
    f = _fn("k", LOOP_WITH_IF_ELSE)
    loops = sass.find_loops(f)
    assert len(loops) == 1, "the trap loop after EXIT must not count as a loop"
    st = sass.hot_loop(f)
    assert st.header_offset == 3 * 16
    # header (3) + the longer arm (3: two LOP3 + HMMA) + latch (3); the FFMA+BRA arm is shorter
    assert st.path_instructions == 9
    assert st.body_instructions == 11
    assert st.by_class == {"memory": 1, "hmma": 1, "int_dequant": 5, "float": 0, "control": 2, "other": 0}
    assert st.hmma == 1 and st.global_stream_loads == 1
    assert sum(st.by_class.values()) == st.path_instructions


def test_hot_loop_is_the_innermost_streaming_loop():
    f = _fn("nest", """
        MOV R0, RZ
    .L_x_1:
        MOV R1, RZ
    .L_x_2:
        LDG.E.128 R4, desc[UR4][R2.64]
        LDG.E.128 R8, desc[UR4][R2.64+0x10]
        IADD3 R1, R1, 0x1, RZ
        ISETP.NE.AND P1, PT, R1, 0x8, PT
        @P1 BRA `(.L_x_2)
    .L_x_3:
        LDS R6, [R7]
        IADD3 R6, R6, 0x1, RZ
        ISETP.NE.AND P2, PT, R6, 0x4, PT
        @P2 BRA `(.L_x_3)
        IADD3 R0, R0, 0x1, RZ
        ISETP.NE.AND P0, PT, R0, 0x10, PT
        @P0 BRA `(.L_x_1)
        EXIT
    """)
    loops = sass.find_loops(f)
    assert len(loops) == 3
    st = sass.hot_loop(f)
    assert st.header_offset == 2 * 16 and st.path_instructions == 5 and st.global_stream_loads == 2
    with pytest.raises(SassError, match="nested loop"):
        outer = loops[0]
        sass.loop_stats(f, sass.build_cfg(f), outer, loops)


MAIN_THEN_REDUCTION = """
    MOV R0, RZ
.L_x_1:
    LDG.E.128 R4, desc[UR4][R2.64]
    LDG.E.128 R8, desc[UR4][R2.64+0x10]
    LOP3.LUT R12, R4, 0xf000f, RZ, 0xc0, !PT
    LOP3.LUT R13, R8, 0xf000f, RZ, 0xc0, !PT
    HFMA2 R14, R12, R13, R14
    IADD3 R0, R0, 0x1, RZ
    ISETP.NE.AND P0, PT, R0, 0x10, PT
    @P0 BRA `(.L_x_1)
    MOV R1, RZ
.L_x_2:
    MOV R5, RZ
.L_x_3:
    LDG.E R6, desc[UR4][R2.64]
    LDG.E R7, desc[UR4][R2.64+0x4]
    LDG.E R9, desc[UR4][R2.64+0x8]
    FADD R15, R6, R15
    IADD3 R5, R5, 0x1, RZ
    ISETP.NE.AND P1, PT, R5, c[0x0][0x214], PT
    @P1 BRA `(.L_x_3)
    IADD3 R1, R1, 0x100, RZ
    ISETP.NE.AND P2, PT, R1, c[0x0][0x210], PT
    @P2 BRA `(.L_x_1)
    EXIT
"""


def test_hot_loop_passes_over_loops_the_kernel_refuses():
    # the split-K reduction (an inner loop of the epilogue nest) streams more loads than the main loop; the
    # kernel's description of its main loop (here: it dequantizes, so it has integer work) picks the right one
    f = _fn("splitk", MAIN_THEN_REDUCTION.replace("@P2 BRA `(.L_x_1)", "@P2 BRA `(.L_x_2)"))
    assert sass.hot_loop(f).global_stream_loads == 3

    def dequantizes(st: sass.LoopStats) -> None:
        if st.by_class["int_dequant"] < 4:
            raise SassError(f"loop at {st.header_offset:#x} does not dequantize")

    st = sass.hot_loop(f, dequantizes)
    assert (st.header_offset, st.path_instructions, st.global_stream_loads) == (16, 8, 2)

    def never(st: sass.LoopStats) -> None:
        raise SassError(f"not {st.header_offset:#x}")

    with pytest.raises(SassError, match=r"none of its 2 streaming loop\(s\) is the main loop: not 0xb0 \| not 0x10"):
        sass.hot_loop(f, never)


@pytest.mark.parametrize("body, match", [
    ("MOV R0, RZ\nSTG.E desc[UR4][R2.64], R0\nEXIT\n.L_x_5:\nBRA `(.L_x_5)", "no loop found"),
    ("MOV R0, RZ\n.L_x_1:\nIADD3 R0, R0, 0x1, RZ\nISETP.NE.AND P0, PT, R0, 0x8, PT\n@P0 BRA `(.L_x_1)\nEXIT",
     "loads device memory"),
    ("MOV R0, RZ\n@P0 BRA `(.L_x_7)\nEXIT", "unknown label"),
    ("MOV R0, RZ\nBRX R4 -0x10\nEXIT", "indirect branch"),
    ("@P0 BRA `(.L_x_2)\n.L_x_1:\nLDG.E R4, desc[UR4][R2.64]\n.L_x_2:\nLDG.E R5, desc[UR4][R2.64]\n"
     "@P1 BRA `(.L_x_1)\nEXIT", "irreducible"),
])
def test_loop_finder_fails_loudly(body, match):
    with pytest.raises(SassError, match=match):
        sass.hot_loop(_fn("bad", body))


def test_parser_rejects_an_unknown_line():
    text = _listing("k", "MOV R0, RZ\nEXIT") + "        this is not SASS\n"
    with pytest.raises(SassError, match="neither an instruction"):
        sass.parse_functions(text)


def test_classes():
    assert [sass.classify(op) for op in ("LDGSTS.E.BYPASS.128", "LDSM.16.M88.4", "HMMA.16816.F32.BF16",
                                         "HGMMA.64x128x16.F32", "LOP3.LUT", "HFMA2.MMA", "PRMT", "UIADD3", "FFMA",
                                         "F2FP.F16.F32.PACK_AB", "BAR.SYNC.DEFER_BLOCKING", "LDGDEPBAR", "BRA",
                                         "MOV", "S2R", "CS2R")] == [
        "memory", "memory", "hmma", "hmma", "int_dequant", "int_dequant", "int_dequant", "int_dequant", "float",
        "float", "control", "control", "control", "other", "other", "other"]


def test_resources_from_tool_output():
    res = textwrap.dedent("""
        Resource usage:
         Function kern:
          REG:80 STACK:0 SHARED:1040 LOCAL:0 CONSTANT[0]:632 TEXTURE:0 SURFACE:0 SAMPLER:0
        """)
    log = textwrap.dedent("""
        ptxas info    : Compiling entry function 'kern' for 'sm_90'
        ptxas info    : Function properties for kern
            8 bytes stack frame, 12 bytes spill stores, 4 bytes spill loads
        ptxas info    : Used 80 registers, used 1 barriers, 8 bytes cumulative stack size, 16 bytes smem
        """)
    r = sass.parse_resources(res, log)["kern"]
    assert (r.registers, r.static_smem, r.spill_bytes) == (80, 16, 16)
    with pytest.raises(SassError, match="no entry"):
        sass.parse_resources(res, "")


# ---- pure arithmetic on hand-computed cases ------------------------------------------------------------

def test_occupancy():
    # 80 regs x 32 = 2560 per warp -> 65536 / 2560 = 25 warps -> 6 blocks of 4 warps; smem 233472 / 29712 = 7
    assert occupancy(H200, 80, 128, 28688) == occupancy(H200, 77, 128, 28688)  # 77 rounds up to 80 (unit 256/warp)
    o = occupancy(H200, 80, 128, 28688)
    assert (o.blocks_per_sm, o.limiter) == (6, "registers")
    o = occupancy(H200, 32, 128, 100 * 1024)  # 233472 / (102400 + 1024) = 2
    assert (o.blocks_per_sm, o.limiter) == (2, "shared memory")
    o = occupancy(H200, 16, 1024, 0)  # 64 warps / 32 = 2
    assert (o.blocks_per_sm, o.limiter) == (2, "warps")
    with pytest.raises(AWQInputError):
        occupancy(H200, 0, 128, 0)


def test_ceilings_and_littles_law():
    # 4 warp-instructions/clock x 132 SMs x 1.98 GHz = 1.04544e12 per second
    assert issue_ceiling_bytes_per_s(H200, 0.25) == pytest.approx(4.18176e12)
    assert issue_ceiling_bytes_per_s(H200, 196 / 512) / 1e12 == pytest.approx(2.731, abs=1e-3)  # issue 17's GEMV figure
    assert littles_law_bytes_per_sm(H200) == pytest.approx(4.8e12 * 800e-9 / 132)  # 29090.9 bytes
    assert littles_law_bytes_per_sm(H200, 4.3) == pytest.approx(4.3e12 * 800e-9 / 132)
    with pytest.raises(AWQInputError):
        issue_ceiling_bytes_per_s(H200, 0)


def test_waves():
    w = waves(688, 4, 132)  # issue 17: 688 blocks where 528 fit
    assert (w.slots, w.full_waves) == (528, 2)
    assert w.waves == pytest.approx(688 / 528) and w.efficiency == pytest.approx(688 / 1056)
    assert waves(528, 4, 132).efficiency == 1.0
    assert waves(264, 4, 132).efficiency == pytest.approx(0.5)


def test_predicted_launch_time():
    lat = H200.dram_latency_ns * 1e-9
    # one full wave (264 = 2 x 132), plenty in flight: 26.4 MB at 4.8 TB/s = 5.5 us, + 2 us launch
    t = predict_launch(H200, LaunchWork(264, 2, 26.4e6, 0.0, 0.0, 0.0, 1e5))
    assert t.bound == "memory" and t.total_us == pytest.approx(5.5 + 2.0)
    # 1000 B in flight per block: 264e3 B / 800 ns = 0.33 TB/s -> 80 us
    t = predict_launch(H200, LaunchWork(264, 2, 26.4e6, 0.0, 0.0, 0.0, 1000.0))
    assert t.memory_us == pytest.approx(26.4e6 / (264 * 1000 / lat) * 1e6)
    # stores are bandwidth-bound only
    t = predict_launch(H200, LaunchWork(264, 2, 0.0, 48e6, 0.0, 0.0, 1.0))
    assert t.memory_us == pytest.approx(10.0)
    # issue-bound: 2 blocks per SM x 7920 warp-instructions / (4 x 1.98e9) = 2 us
    t = predict_launch(H200, LaunchWork(264, 2, 0.0, 0.0, 264 * 7920.0, 0.0, 1.0))
    assert t.bound == "issue" and t.issue_us == pytest.approx(2.0)
    # a tail: 300 blocks at 2/SM = one wave of 264 + 36 blocks on 36 SMs (one each), issue-bound
    t = predict_launch(H200, LaunchWork(300, 2, 0.0, 0.0, 300 * 7920.0, 0.0, 1.0))
    assert t.issue_us == pytest.approx(2.0 + 1.0)


def test_fp16_baseline():
    n, k = 4096, 11008
    assert fp16_baseline_us(H200, 1, n, k, launch=False) == pytest.approx((2 * n * k + 2 * k + 2 * n) / 4.8e12 * 1e6)
    assert fp16_baseline_us(H200, 1, n, k) - fp16_baseline_us(H200, 1, n, k, launch=False) == pytest.approx(2.0)


# ---- launch mirrors ------------------------------------------------------------------------------------

def _consts(tmp_path: Path, chunk: str = "4") -> static_launch.CsrcConstants:
    (tmp_path / "tile_configs.cuh").write_text(textwrap.dedent(f"""
        using TileM16 = GemmTile<16, 256, 1, 4, 4, 4>;
        using TileM64 = GemmTile<64, 128, 2, 2, 4, 2>;
        using TileM128 = GemmTile<128, 128, 2, 4, 3, 1>;
        constexpr int kGemvWarps = 8;
        constexpr int kGemvThreads = kGemvWarps * 32;
        constexpr int kGemvStrip = 64;
        constexpr int kGemvChunk = {chunk};
        __host__ __device__ constexpr int gemv_rows(int m) {{ return m <= 1 ? 1 : (m <= 2 ? 2 : (m <= 4 ? 4 : 8)); }}
        __host__ __device__ constexpr int gemv_min_ctas(int maxm, bool gidx) {{
          return gidx || maxm > 4 ? 2 : (maxm <= 1 ? 4 : 3);
        }}
        constexpr int kDequantThreads = 256;
        constexpr int kGemmMinKTilesPerSplit = 4;
        """))
    (tmp_path / "awq_kernels.h").write_text("constexpr int kGemvMaxM = 8;\nconstexpr int kMaxSplits = 16;\n")
    return static_launch.read_constants(tmp_path)


def test_launch_grids_mirror_the_launchers(tmp_path):
    c = _consts(tmp_path)
    # GEMV 11008x4096 (N x K), M = 1: 172 strips, 64 chunks, 4 CTAs/SM -> 528 slots; splits <= 64 / 8 warps = 8.
    # s = 3: 516 CTAs fill 516/528 of one wave, slices of 22 chunks (64 / 66): 0.948, the best -> 516 blocks
    g = static_launch.gemv_launch(c, 1, 11008, 4096, 132)
    assert (g.grid, g.config, g.threads, g.steps) == ((172, 3, 1), "MAXM=1", 256, 64) and g.blocks == 516
    assert static_launch.wave_efficiency(172, 3, 64, 528) == pytest.approx(516 / 528 * 64 / 66)
    # GPTQ-R builds for 2 CTAs/SM (264 slots): 64 strips x 4 splits = 256 CTAs, slices of 43 chunks
    assert static_launch.gemv_launch(c, 1, 4096, 11008, 132, gptq_r=True).grid == (64, 4, 1)
    # GEMM 4096x11008, M = 1: 16 tiles of 256 columns, 172 k-tiles; every split count leaves the GPU under half
    # full, so the most allowed (kMaxSplits = 16, slices of 11 k-tiles) wins: 256 of 528 slots, 0.474
    g = static_launch.gemm_launch(c, 1, 4096, 11008, 132)
    assert (g.grid, g.config, g.threads) == ((16, 1, 16), "TileM16", 128)
    assert static_launch.wave_efficiency(16, 16, 172, 528) == pytest.approx(256 / 528 * 172 / 176)
    assert static_launch.gemm_launch(c, 1, 11008, 4096, 132).grid == (43, 1, 11)
    assert static_launch.gemm_launch(c, 32, 11008, 4096, 132).config == "TileM64"
    # M = 200: 172 tiles on 132 slots; a second split would write and re-read 2 x 8.8 MB of fp32 partials
    assert static_launch.gemm_launch(c, 200, 11008, 4096, 132).grid == (86, 2, 1)
    assert static_launch.gemv_launch(c, 5, 64, 64, 132).config == "MAXM=8"
    assert static_launch.dequant_launch(c, 4096, 11008).grid == (4096 * 11008 // 8 // 256, 1, 1)
    # clamp_splits (launch_common.cu): cap by the minimum steps per split, then no empty split
    assert static_launch.clamp_splits(9, 172, 4) == 9
    assert static_launch.clamp_splits(16, 20, 4) == 5
    assert static_launch.clamp_splits(7, 10, 1) == 5
    assert static_launch.clamp_splits(0, 3, 4) == 1


def test_constants_are_read_not_copied(tmp_path):
    assert _consts(tmp_path, chunk="8").gemv_chunk == 8
    (tmp_path / "awq_kernels.h").write_text("constexpr int kGemvMaxM = 8;\n")
    with pytest.raises(SassError, match="kMaxSplits"):
        static_launch.read_constants(tmp_path)
    _consts(tmp_path)
    cfg = tmp_path / "tile_configs.cuh"
    cfg.write_text(cfg.read_text().replace("maxm <= 1 ? 4 : 3", "maxm <= 1 ? 5 : 3"))
    with pytest.raises(SassError, match="gemv_min_ctas"):  # a mirrored helper that changed fails loudly
        static_launch.read_constants(tmp_path)
    real = static_launch.read_constants(Path(__file__).resolve().parents[2] / "csrc")  # the real headers parse
    assert set(real.gemm_tiles) >= {"TileM16", "TileM64", "TileM128"}


def test_dispatch_and_acceptance_rules():
    from awq_ext.bench.static import acceptance, derive_dispatch, pick

    rows = [{"m": m, "shape": s, "path": p, "predicted_us": t}
            for s in ("a", "b") for m, p, t in ((1, "gemv", 5.0), (1, "gemm", 6.0), (2, "gemv", 7.0), (2, "gemm", 6.5),
                                                (16, "gemm", 8.0), (16, "dequant_cublas", 20.0))]
    table = derive_dispatch(rows)
    assert table == [(1, "gemv"), (16, "gemm")]
    assert pick(table, 2) == "gemm"
    good = {"m": 4, "hbm_tbps": 4.8, "issue_ceiling_tbps": 7.3, "spill_bytes": 0, "bytes_in_flight_per_sm": 30000,
            "littles_law_bytes_per_sm": 29091, "wave_efficiency": 0.95}
    assert acceptance(good)["all"] is True
    assert acceptance({**good, "issue_ceiling_tbps": 7.1})["issue_ceiling"] is False
    assert acceptance({**good, "m": 8, "issue_ceiling_tbps": 5.8})["all"] is True
    assert acceptance({**good, "m": 32, "issue_ceiling_tbps": 1.0})["issue_ceiling"] is None
    assert acceptance({**good, "wave_efficiency": 0.89})["all"] is False


def test_kernel_config_rejects_a_loop_that_cannot_be_the_main_loop(tmp_path):
    from awq_ext.bench.static_kernels import recognise

    c = _consts(tmp_path)
    gemv = recognise("m", "void awq::(anonymous namespace)::w4a16_gemv_kernel<__half, 1, 128, false>(awq::W4Args)", c)
    assert (gemv.weight_bytes_per_iteration, gemv.warps_per_iteration, gemv.config) == (4 * 512, 1, "MAXM=1")
    assert gemv.group_size == 128 and gemv.weight_bytes_in_flight_per_block == 8 * 4 * 512

    def loop(n_int: int, loads: int, hmma: int = 0) -> sass.LoopStats:
        by = {"memory": loads, "hmma": hmma, "int_dequant": n_int, "float": 0, "control": 1, "other": 0}
        return sass.LoopStats(0x40, (0x80,), sum(by.values()), sum(by.values()), by, {}, loads, hmma)

    gemv.check_loop(loop(64, 4))  # 64 / 2048 = 1/32: just enough integer work to dequantize 2 KB
    with pytest.raises(SassError, match="not the loop that dequantizes"):
        gemv.check_loop(loop(63, 4))  # a load-only inner loop of a chunked kernel looks like this
    with pytest.raises(SassError, match="device-memory loads"):
        gemv.check_loop(loop(500, 3))
    gemm = recognise("m", "void awq::w4a16_gemm_kernel<__half, awq::GemmTile<16, 256, 1, 4, 4, 4>, 128, false>"
                          "(awq::W4Args)", c)
    # one iteration = one turn of the 4-stage ring: 4 BK steps x 4 k16 steps x 4 n16 blocks per warp x 2 mma n8
    # tiles, 4 x 8 KB of weights; 3 stages of 64 x 256 / 2 bytes ahead
    assert gemm.expected_hmma_per_iteration == 128 and gemm.weight_bytes_in_flight_per_block == 3 * 8192
    assert gemm.weight_bytes_per_iteration == 4 * 8192 and gemm.min_stream_loads_per_iteration == 4
    gemm.check_loop(loop(800, 4, hmma=128))
    with pytest.raises(SassError, match="HMMA"):
        gemm.check_loop(loop(800, 4, hmma=32))  # one step of the ring is not the unrolled loop
    gptq = recognise("m", "void awq::w4a16_gemm_kernel<__half, awq::GemmTile<16, 256, 1, 4, 4, 4>, 0, true>"
                          "(awq::W4Args)", c)
    assert gptq.expected_hmma_per_iteration == 32 and gptq.weight_bytes_per_iteration == 8192
    with pytest.raises(SassError, match="not described"):
        recognise("m", "void awq::w4a16_wgmma_kernel<__half>(awq::W4Args)", c)


# ---- a tiny kernel compiled here ------------------------------------------------------------------------

TINY = r"""
#include <cstdint>
// XOR-reduce a strided stream of 16-byte words: one 128-bit load and four 32-bit XORs per iteration.
extern "C" __global__ void xor_stream(const uint4* __restrict__ x, uint4* __restrict__ y, int n) {
  uint4 acc = make_uint4(0u, 0u, 0u, 0u);
#pragma unroll 1
  for (int i = threadIdx.x; i < n; i += 128) {
    const uint4 v = x[i];
    acc.x ^= v.x;
    acc.y ^= v.y;
    acc.z ^= v.z;
    acc.w ^= v.w;
  }
  y[threadIdx.x] = acc;
}
// No loop at all.
extern "C" __global__ void copy_one(const uint4* __restrict__ x, uint4* __restrict__ y) {
  y[threadIdx.x] = x[threadIdx.x];
}
// 300 ints (1200 B) of static shared memory and a 1 KB run-time-indexed local array (stack frame).
extern "C" __global__ void smem_and_stack(int* y, int k) {
  __shared__ int s[300];
  int a[256];
  for (int i = 0; i < 256; ++i) a[i] = y[i * k];
  s[threadIdx.x] = a[(threadIdx.x * 7 + k) & 255];
  __syncthreads();
  y[threadIdx.x] = s[299 - threadIdx.x % 300];
}
"""


@pytest.fixture(scope="module")
def tools():
    from awq_ext.bench.sass_build import Toolchain

    try:
        return Toolchain.find()
    except KernelUnavailableError as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("arch", ("sm_90", "sm_80"))
def test_tiny_kernel(tools, tmp_path, arch):
    from awq_ext.bench.sass_build import compile_unit

    src = tmp_path / "tiny.cu"
    src.write_text(TINY)
    unit = compile_unit(tools, src, arch, tmp_path / "cache")
    funcs = sass.parse_functions(unit.disassembly)
    assert set(funcs) == {"xor_stream", "copy_one", "smem_and_stack"}
    st = sass.hot_loop(funcs["xor_stream"])
    # independent count: the lines of the listing from the loop's label to its back-edge branch (the loop
    # is one basic block: `#pragma unroll 1` and no branch inside the body)
    text = unit.disassembly.split(".text.xor_stream", 2)[2]
    m = re.search(r"^(\.L_x_\d+):\n(.*?@!?P\d+ BRA `\(\1\) ;)", text, re.S | re.M)
    assert m, "no single-block loop (label ... back-edge BRA) in the xor_stream listing"
    expected = len(re.findall(r"/\*[0-9a-f]+\*/", m.group(2)))
    assert st.path_instructions == st.body_instructions == expected
    assert st.by_class["memory"] == 1 and [op for op in st.opcodes if op.startswith("LDG")][0].count("128")
    assert st.opcodes.get("LOP3.LUT") == 4  # the four XORs
    assert st.by_class["control"] == 1 and st.by_class["hmma"] == 0 and st.by_class["float"] == 0
    assert sum(st.by_class.values()) == expected
    with pytest.raises(SassError, match="no loop found"):
        sass.hot_loop(funcs["copy_one"])
    res = sass.parse_resources(unit.resource_usage, unit.ptxas_log)
    assert res["smem_and_stack"].static_smem == 1200 and res["smem_and_stack"].stack == 1024
    assert res["xor_stream"].static_smem == 0 and res["xor_stream"].spill_bytes == 0
    mtime = unit.cubin.stat().st_mtime_ns
    assert compile_unit(tools, src, arch, tmp_path / "cache").cubin.stat().st_mtime_ns == mtime  # cached


AUTO_SPLITS_DRIVER = r"""
#include <cstdio>
#include "launch_common.h"
// One line per case: the C++ split-K choice, for the Python mirror to reproduce.
int main() {
  const int tiles[] = {1, 7, 16, 43, 64, 86, 172, 250, 600};
  const int steps[] = {3, 16, 64, 172, 250};
  const int slots[] = {132, 264, 396, 528};
  const double partials[] = {0.0, 4.0e4, 8.8e6};
  for (int t : tiles) for (int s : steps) for (int q : slots) for (double pb : partials)
    printf("%d %d %d %.1f %d %.9f\n", t, s, q, pb, awq::detail::auto_splits(t, s, 4, q, 2.25e7, pb),
           awq::detail::wave_efficiency(t, 3, s, q));
  return 0;
}
"""


def test_auto_splits_mirror_matches_the_cpp(tools, tmp_path):
    import subprocess

    csrc = Path(__file__).resolve().parents[2] / "csrc"
    (tmp_path / "driver.cu").write_text(AUTO_SPLITS_DRIVER)
    exe = tmp_path / "driver"
    subprocess.run([tools.nvcc, "-std=c++17", "-O1", f"-I{csrc}", str(tmp_path / "driver.cu"), str(csrc / "launch_common.cu"),
                    "-o", str(exe)], check=True, capture_output=True)
    lines = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split("\n")
    cases = [ln.split() for ln in lines if ln]
    assert len(cases) == 9 * 5 * 4 * 3
    max_splits = static_launch.read_constants(csrc).max_splits
    for t, s, q, pb, want, eff in cases:
        got = static_launch.auto_splits(int(t), int(s), 4, int(q), 2.25e7, float(pb), max_splits)
        assert got == int(want), (t, s, q, pb)
        assert static_launch.wave_efficiency(int(t), 3, int(s), int(q)) == pytest.approx(float(eff), abs=1e-8)


# ---- every kernel in csrc/ ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def static_payload(tools):
    from awq_ext.bench.static import run_static

    return run_static(("sm_90", "sm_80"), workers=2)


def test_static_model_over_csrc(static_payload):
    from awq_ext.bench.static import MS, PATHS, SHAPES

    p = static_payload
    assert {c["arch"] for c in p["configs"]} == {"sm_90", "sm_80"}
    for c in p["configs"]:
        assert c["instructions_per_weight_byte"] > 0 and c["loop_instructions_per_iteration"] > 0
        if c["kernel"].startswith("gemm"):
            assert c["loop_hmma_per_iteration"] > 0
    rows = p["rows"]
    need = {"arch", "shape", "m", "path", "chosen", "issue_ceiling_tbps", "spill_bytes", "bytes_in_flight_per_sm",
            "littles_law_bytes_per_sm", "wave_efficiency", "predicted_speedup_vs_fp16"}
    for r in rows:
        assert need <= set(r), need - set(r)
        # memory-bound at best: never faster than the byte ratio vs 16-bit weights
        assert r["predicted_speedup_vs_fp16_no_launch"] <= r["bandwidth_limit_ratio"] + 1e-6
        assert 0 < r["wave_efficiency"] <= 1
    for arch in ("sm_90", "sm_80"):
        for n, k in SHAPES:
            for m in MS:
                here = [r for r in rows if (r["arch"], r["shape"], r["m"]) == (arch, f"{n}x{k}", m)]
                assert {r["path"] for r in here} == {p_ for p_ in PATHS if p_ != "gemv" or m <= 8}
                assert sum(r["chosen"] for r in here) == 1
                assert next(r for r in here if r["chosen"])["acceptance"] is not None
