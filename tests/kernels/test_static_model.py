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
                                        littles_law_bytes_per_sm, occupancy, predict_launch)
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


def test_predicted_launch_time():
    lat = H200.dram_latency_ns * 1e-9
    # 2 blocks per SM resident, balanced, plenty in flight: 26.4 MB at 4.8 TB/s = 5.5 us, + 2 us launch
    t = predict_launch(H200, LaunchWork(2.0, 1.0, 26.4e6, 0.0, 0.0, 0.0, 1e5))
    assert t.bound == "memory" and t.total_us == pytest.approx(5.5 + 2.0)
    # 1000 B in flight per block: 264e3 B / 800 ns = 0.33 TB/s -> 80 us
    t = predict_launch(H200, LaunchWork(2.0, 1.0, 26.4e6, 0.0, 0.0, 0.0, 1000.0))
    assert t.memory_us == pytest.approx(26.4e6 / (264 * 1000 / lat) * 1e6)
    # stores are bandwidth-bound only
    t = predict_launch(H200, LaunchWork(2.0, 1.0, 0.0, 48e6, 0.0, 0.0, 1.0))
    assert t.memory_us == pytest.approx(10.0)
    # issue-bound: 264 blocks x 7920 warp-instructions over 132 SMs / (4 x 1.98e9) = 2 us
    t = predict_launch(H200, LaunchWork(2.0, 1.0, 0.0, 0.0, 264 * 7920.0, 0.0, 1.0))
    assert t.bound == "issue" and t.issue_us == pytest.approx(2.0)
    # the busiest SM sets the time: at wave efficiency 0.8 every term is 1 / 0.8 longer
    t = predict_launch(H200, LaunchWork(2.0, 0.8, 26.4e6, 0.0, 264 * 7920.0, 0.0, 1e5))
    assert t.memory_us == pytest.approx(5.5 / 0.8) and t.issue_us == pytest.approx(2.0 / 0.8)
    with pytest.raises(AWQInputError):
        predict_launch(H200, LaunchWork(2.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))


def test_fp16_baseline():
    n, k = 4096, 11008
    assert fp16_baseline_us(H200, 1, n, k, launch=False) == pytest.approx((2 * n * k + 2 * k + 2 * n) / 4.8e12 * 1e6)
    assert fp16_baseline_us(H200, 1, n, k) - fp16_baseline_us(H200, 1, n, k, launch=False) == pytest.approx(2.0)


# ---- launch mirrors ------------------------------------------------------------------------------------

def _consts(tmp_path: Path, chunk: str = "4") -> static_launch.CsrcConstants:
    (tmp_path / "tile_configs.cuh").write_text(textwrap.dedent(f"""
        using TileM16 = GemmTile<16, 256, 1, 4, 6, 3>;
        using TileM32 = GemmTile<32, 256, 1, 4, 6, 2>;
        using TileM64 = GemmTile<64, 128, 2, 2, 5, 2>;
        using TileM128 = GemmTile<128, 128, 2, 4, 4, 1>;
        using TileM64W = GemmTile<64, 128, 1, 4, 5, 2, true>;
        constexpr int kGemvWarps = 8;
        constexpr int kGemvThreads = kGemvWarps * 32;
        constexpr int kGemvStrip = 64;
        constexpr int kGemvChunk = {chunk};
        __host__ __device__ constexpr int gemv_rows(int m) {{ return m <= 1 ? 1 : (m <= 2 ? 2 : (m <= 4 ? 4 : 8)); }}
        __host__ __device__ constexpr int gemv_min_ctas(int maxm, bool gidx) {{
          return gidx || maxm > 4 ? 2 : (maxm <= 1 ? 4 : 3);
        }}
        constexpr int kDequantThreads = 256;
        template <typename Tile>
        constexpr int gemm_inflight_bytes() {{ return (Tile::STAGES - 1) * Tile::BK * Tile::BN / 2; }}
        constexpr int kGemvInflightBytes = kGemvWarps * kGemvChunk * 512;
        constexpr int kInflightTargetPerSm = 36 * 1024;
        constexpr int kMmaFlopsPerHbmByte = 103;
        constexpr int kWgmmaOverMmaSync = 2;
        constexpr int kReservedSmemPerCta = 1024;
        constexpr int kStaticSmemAllowance = 16;
        constexpr int kGemmMinKTilesPerSplit = 4;
        """))
    (tmp_path / "awq_kernels.h").write_text("constexpr int kGemvMaxM = 8;\nconstexpr int kMaxSplits = 16;\n")
    (tmp_path / "launch_common.h").write_text("constexpr int kFallbackSms = 108;\nconstexpr int kFallbackSmemPerSm = 164 * 1024;\n")
    return static_launch.read_constants(tmp_path)


def test_split_stats_by_hand(tmp_path):
    c = _consts(tmp_path)
    # 4096x11008 at M = 16: 16 tiles x 16 splits of 11 k-tiles (the last 7): 256 CTAs, at most 2 on an SM -> the
    # busiest SM does 22 k-tiles, the mean is 16 x 172 / 132 = 20.85: 0.948 (under half of the 528 slots used,
    # yet no SM idles: the old blocks / slots measure said 0.47)
    p = static_launch.split_stats(c, 16, 16, 172, 132, 4, 24576)
    assert (p.ctas, p.busiest_sm_steps, p.slots) == (256, 22, 528)
    assert p.wave_efficiency == pytest.approx(16 * 172 / 132 / 22) and p.waves == pytest.approx(256 / 528)
    assert p.bytes_in_flight_per_sm == pytest.approx(256 / 132 * 24576) and p.latency_cover == 1.0
    # issue 17's 11008x4096: 43 tiles x 11 splits of 6 k-tiles (the last 4) = 473 CTAs, 4 on the busiest SM: 24
    assert static_launch.split_stats(c, 43, 11, 64, 132, 4, 24576).wave_efficiency == pytest.approx(43 * 64 / 132 / 24)
    # a wave tail: 688 one-step CTAs, 528 slots: the busiest SM runs 6, the mean is 5.21
    p = static_launch.split_stats(c, 688, 1, 1, 132, 4, 24576)
    assert p.busiest_sm_steps == 6 and p.wave_efficiency == pytest.approx(688 / 132 / 6)
    # too few bytes in flight: 129 CTAs of 24 KB on 132 SMs hold 23.5 KB per SM, 0.65 of kInflightTargetPerSm
    assert static_launch.split_stats(c, 129, 1, 64, 132, 4, 24576).latency_cover == pytest.approx(129 / 132 * 24576 / 36864)
    # residency: the launch-bounds minimum unless shared memory holds fewer (1 KB reserved per CTA)
    assert static_launch.resident_ctas(c, 4, 49168, 233472) == 4
    assert static_launch.resident_ctas(c, 4, 49168, 167936) == 3
    assert static_launch.resident_ctas(c, 2, 300000, 233472) == 1


def test_launch_grids_mirror_the_launchers(tmp_path):
    c = _consts(tmp_path)
    h200 = (132, 233472)
    # GEMV 11008x4096 (N x K), M = 1: 172 strips, 64 chunks, 4 CTAs/SM -> 528 slots; 3 splits of 22 chunks: 516
    # CTAs, 4 on the busiest SM (88 chunks vs a mean of 83.4: 0.948); 4 splits would need a second wave
    g = static_launch.gemv_launch(c, 1, 11008, 4096, *h200)
    assert (g.grid, g.config, g.threads, g.steps) == ((172, 3, 1), "MAXM=1", 256, 64) and g.blocks == 516
    assert g.plan.wave_efficiency == pytest.approx(172 * 64 / 132 / 88)
    # GPTQ-R builds for 2 CTAs/SM (264 slots): 64 strips x 4 splits = 256 CTAs, slices of 43 chunks
    assert static_launch.gemv_launch(c, 1, 4096, 11008, *h200, gptq_r=True).grid == (64, 4, 1)
    # GEMM 4096x11008, M = 1..16: 16 tiles of 256 columns, 172 k-tiles; the 6-stage M16 tile keeps 40 KB in
    # flight per CTA, so 1 CTA per SM suffices: 8 splits (128 CTAs). At G = 128 the kernel cuts K in whole groups:
    # 86 groups in slices of 11 - also 8 splits, 11 groups on the busiest SM vs a mean of 10.42: 0.947
    for g_size in (64, 128):
        g = static_launch.gemm_launch(c, 1, 4096, 11008, g_size, *h200)
        assert (g.grid, g.config, g.threads) == ((16, 1, 8), "TileM16", 128)
    assert g.plan.wave_efficiency == pytest.approx(16 * 86 / 132 / 11)
    assert static_launch.gemm_launch(c, 1, 11008, 4096, 128, *h200).grid == (43, 1, 3)
    # M = 17..32: the M16 tile's 256 columns, two m16 tiles per warp, 2 planned per SM: 43 tiles x 3 splits
    g = static_launch.gemm_launch(c, 32, 11008, 4096, 128, *h200)
    assert (g.config, g.grid, g.plan.ctas_per_sm) == ("TileM32", (43, 1, 3), 2)
    # M = 48: the 5-stage M64 tile keeps 16 KB in flight per CTA, 2 planned per SM: 86 tiles x 3 splits
    g = static_launch.gemm_launch(c, 48, 11008, 4096, 128, *h200)
    assert (g.config, g.grid, g.plan.ctas_per_sm) == ("TileM64", (86, 1, 3), 2)
    # on sm_80's 164 KB of shared memory only 2 of the 6-stage M16 CTAs fit: the plan counts on 2
    assert static_launch.gemm_launch(c, 16, 4096, 11008, 128, 108, 167936).plan.ctas_per_sm == 2
    # M = 200: the M128 tile is mma-bound, so waves that balance the SMs pay: 172 tiles alone are 1.3 waves (the
    # busiest SM does 64 K steps against a mean of 41.7); 3 splits, 3.9 waves, 44 (2 splits: 48)
    g = static_launch.gemm_launch(c, 200, 11008, 4096, 128, *h200)
    assert g.grid == (86, 2, 3) and g.plan.busiest_sm_steps == 44
    # the same tiles of a memory-bound M16 launch never take a second wave: 2 x 86 CTAs > 132 x 1 planned
    assert static_launch.plan_splits(c, 172, 64, 4, 132, 1, 8192, 2.25e7, 0.0, 1.0e9).splits == 1
    assert static_launch.gemv_launch(c, 5, 64, 64, *h200).config == "MAXM=8"
    # an explicit request is clamped, never re-planned
    assert static_launch.gemm_launch(c, 1, 4096, 11008, 128, *h200, split_request=3).splits == 3
    assert static_launch.dequant_launch(c, 4096, 11008, 132, 8).grid == (4096 * 11008 // 8 // 256, 1, 1)
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
    assert set(real.gemm_tiles) >= {"TileM16", "TileM32", "TileM64", "TileM128"}


def test_dispatch_and_acceptance_rules():
    from awq_ext.bench.static import acceptance, derive_dispatch, pick

    rows = [{"m": m, "shape": s, "path": p, "predicted_us": t}
            for s in ("a", "b") for m, p, t in ((1, "gemv", 5.0), (1, "gemm", 6.0), (2, "gemv", 7.0), (2, "gemm", 6.5),
                                                (16, "gemm", 8.0), (16, "dequant_cublas", 20.0))]
    table = derive_dispatch(rows)
    assert table == [(1, "gemv"), (16, "gemm")]
    assert pick(table, 2) == "gemm"
    # a near tie (within 2 %) goes to the path with more issue headroom over HBM on its worst shape
    tie = [{"m": 1, "shape": s, "path": p, "predicted_us": t, "issue_ceiling_tbps": c, "hbm_tbps": 4.8}
           for s in ("a", "b") for p, t, c in (("gemv", 7.25, 5.1), ("gemm", 7.33, 7.5))]
    assert derive_dispatch(tie) == [(1, "gemm")]
    assert derive_dispatch([{**r, "predicted_us": r["predicted_us"] * (1.1 if r["path"] == "gemm" else 1)}
                            for r in tie]) == [(1, "gemv")]
    good = {"m": 4, "hbm_tbps": 4.8, "issue_ceiling_tbps": 7.3, "spill_bytes": 0, "bytes_in_flight_per_sm": 30000,
            "littles_law_bytes_per_sm": 29091, "wave_efficiency": 0.95, "planned_residency_fits": True}
    assert acceptance(good)["all"] is True
    assert acceptance({**good, "issue_ceiling_tbps": 7.1})["issue_ceiling"] is False
    assert acceptance({**good, "m": 8, "issue_ceiling_tbps": 5.8})["all"] is True
    assert acceptance({**good, "m": 32, "issue_ceiling_tbps": 1.0})["issue_ceiling"] is None
    assert acceptance({**good, "wave_efficiency": 0.89})["all"] is False
    assert acceptance({**good, "planned_residency_fits": False})["all"] is False


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
    gemm = recognise("m", "void awq::w4a16_gemm_kernel<__half, awq::GemmTile<16, 256, 1, 4, 6, 3, false>, 128, false>"
                          "(awq::W4Args)", c)
    # one iteration = one turn of the 6-stage ring: 6 BK steps x 4 k16 steps x 4 n16 blocks per warp x 2 mma n8
    # tiles, 6 x 8 KB of weights; 5 stages of 64 x 256 / 2 bytes ahead
    assert gemm.expected_hmma_per_iteration == 192 and gemm.weight_bytes_in_flight_per_block == 5 * 8192
    assert gemm.weight_bytes_per_iteration == 6 * 8192 and gemm.min_stream_loads_per_iteration == 6
    gemm.check_loop(loop(1200, 6, hmma=192))
    with pytest.raises(SassError, match="HMMA"):
        gemm.check_loop(loop(1200, 6, hmma=32))  # one step of the ring is not the unrolled loop
    gptq = recognise("m", "void awq::w4a16_gemm_kernel<__half, awq::GemmTile<16, 256, 1, 4, 6, 3, false>, 0, true>"
                          "(awq::W4Args)", c)
    assert gptq.expected_hmma_per_iteration == 32 and gptq.weight_bytes_per_iteration == 8192
    # the wgmma tile: per warp and k16 step one HGMMA per m64 weight tile (2), a quarter of a 64x64x16 wgmma each
    wg = recognise("m", "void awq::w4a16_gemm_kernel<__half, awq::GemmTile<64, 128, 1, 4, 5, 2, true>, 64, false>"
                        "(awq::W4Args)", c)
    assert wg.expected_hmma_per_iteration == 5 * 4 * 2 and wg.mma_dense
    assert wg.mma_flops_per_instruction == 64 * 64 * 16 * 2 // 4 and wg.dynamic_smem == 5 * (8192 + 4096 + 1024) + 1024
    assert recognise("m", "awq::wgmma_probe_kernel(int*)", c) is None  # a helper kernel: nothing to model
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


PLAN_DRIVER = r"""
#include <cstdio>
#include "launch_common.h"
// One line per case: the C++ split-K plan, for the Python mirror to reproduce.
int main() {
  const int tiles[] = {1, 7, 16, 43, 64, 86, 172, 250, 600};
  const int steps[] = {3, 16, 64, 172, 250};
  const int sms[] = {4, 108, 132};
  const int per_sm[] = {1, 2, 4};
  const int inflight[] = {4096, 16384, 24576};
  const double partials[] = {0.0, 4.0e4, 8.8e6};
  const double flops[] = {0.0, 1.2e9, 1.2e10};  // none (GEMV), memory-bound, mma-bound against 2.25e7 weight bytes
  for (int t : tiles) for (int s : steps) for (int q : sms) for (int b : per_sm) for (int f : inflight)
    for (double pb : partials) for (double fl : flops) for (int req : {0, 5}) {
      const awq::detail::SplitPlan p = awq::detail::plan_splits(t, s, 4, q, b, f, 2.25e7, pb, fl, req);
      printf("%d %d %d %d %d %.1f %.1f %d %d %ld %d %ld %.17g %.17g %.17g %.17g\n", t, s, q, b, f, pb, fl, req, p.splits,
             p.ctas, p.ctas_per_sm, p.busiest_sm_steps, p.mean_sm_steps, p.wave_efficiency, p.bytes_in_flight_per_sm,
             p.latency_cover);
    }
  return 0;
}
"""


def test_plan_splits_mirror_matches_the_cpp(tools, tmp_path):
    """launch_common.cu's planner (nvcc, host code) and the static model's mirror agree field for field."""
    import subprocess

    csrc = Path(__file__).resolve().parents[2] / "csrc"
    (tmp_path / "driver.cu").write_text(PLAN_DRIVER)
    exe = tmp_path / "driver"
    subprocess.run([tools.nvcc, "-std=c++17", "-O1", f"-I{csrc}", str(tmp_path / "driver.cu"), str(csrc / "launch_common.cu"),
                    "-o", str(exe)], check=True, capture_output=True)
    lines = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split("\n")
    cases = [ln.split() for ln in lines if ln]
    assert len(cases) == 9 * 5 * 3 * 3 * 3 * 3 * 3 * 2
    c = static_launch.read_constants(csrc)
    for t, s, q, b, f, pb, fl, req, *want in cases:
        p = static_launch.plan_splits(c, int(t), int(s), 4, int(q), int(b), int(f), 2.25e7, float(pb), float(fl),
                                      int(req))
        got = [p.splits, p.ctas, p.ctas_per_sm, p.busiest_sm_steps, p.mean_sm_steps, p.wave_efficiency,
               p.bytes_in_flight_per_sm, p.latency_cover]
        assert got == [int(x) for x in want[:4]] + [float(x) for x in want[4:]], (t, s, q, b, f, pb, fl, req)


# ---- every kernel in csrc/ ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def static_payload(tools):
    from awq_ext.bench.static import run_static

    return run_static(("sm_90", "sm_80"), workers=2)


def test_static_model_over_csrc(static_payload):
    from awq_ext.bench.static import ACCEPTANCE_MAX_M, MS, PATHS, SHAPES

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
        # the launcher's plan never counts on more resident CTAs than the compiled kernel allows (sm_90 and sm_80)
        assert r["planned_residency_fits"], (r["arch"], r["kernel"], r["planned_blocks_per_sm"], r["blocks_per_sm"])
    for arch in ("sm_90", "sm_80"):
        for n, k in SHAPES:
            for m in MS:
                here = [r for r in rows if (r["arch"], r["shape"], r["m"]) == (arch, f"{n}x{k}", m)]
                assert {r["path"] for r in here} == {p_ for p_ in PATHS if (p_ != "gemv" or m <= 8) and
                                                     (p_ != "gemm_wgmma" or arch == "sm_90")}
                assert sum(r["chosen"] for r in here) == 1
                assert (next(r for r in here if r["chosen"])["acceptance"] is not None) == (m <= ACCEPTANCE_MAX_M)
