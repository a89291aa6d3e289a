"""Per-block amaranth.sim tests against the bit-exact model, and the generated register map."""

import json

import numpy as np
import pytest
from amaranth.sim import Simulator

from skip2lora.fixed import cycles
from skip2lora.fixed import formats as F
from skip2lora.fixed.config import SMALL, AcceleratorConfig
from skip2lora.fixed.model import Geometry, softmax_gradient
from skip2lora.hw.cycle_counter import CycleCounter
from skip2lora.hw.head import HeadUnit
from skip2lora.hw.mac_array import MacArray
from skip2lora.hw.params import HwParams
from skip2lora.hw.regmap import REGMAP_JSON, regmap_dict
from skip2lora.hw.sgd_update import SgdUpdate, accumulator_start
from skip2lora.hw.softmax import SoftmaxGradient


def run(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("classes", [2, 3, 10])
def test_softmax_unit_matches_the_model(classes):
    rng = np.random.default_rng(classes)
    cases = [(rng.integers(-(20 << 8), 20 << 8, classes), int(rng.integers(classes)),
              int(rng.integers(1, 1 << F.LR_BITS))) for _ in range(6)]
    cases.append((np.full(classes, -(1 << 15)), 0, (1 << F.LR_BITS) - 1))        # all equal, extremes
    cases.append((np.array([32767] + [-32768] * (classes - 1)), classes - 1, 1))  # huge gaps
    dut = SoftmaxGradient(classes)
    seen = []

    async def bench(ctx):
        for y, label, lr in cases:
            for c in range(classes):
                ctx.set(dut.y[c], int(y[c]))
            ctx.set(dut.label, label)
            ctx.set(dut.lr, lr)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            n = 1
            while not ctx.get(dut.done):
                await ctx.tick()
                n += 1
            seen.append((n, [ctx.get(dut.gl[c]) for c in range(classes)], ctx.get(dut.argmax)))

    run(dut, bench)
    for (y, label, lr), (latency, gl, top) in zip(cases, seen):
        g, expected_top = softmax_gradient(y[None], np.array([label]))
        expected = F.round_shift(g[0] * lr, F.P_FRAC + F.LR_FRAC - F.GL_FRAC)
        assert gl == expected.tolist() and top == expected_top[0]
        assert latency == SoftmaxGradient.latency(classes) == cycles.softmax_latency(classes)


def test_head_latency_is_the_cycle_models():
    for k in range(1, 6):
        for c in range(2, 12):
            assert HeadUnit.latency(k, c) == cycles.head_latency(k, c)


def test_sgd_update_unit_saturates_and_rounds_like_the_model():
    """The unit sees start - g (its accumulators count down) and must give sat(w - round(g >> shift))."""
    rng = np.random.default_rng(1)
    n, acc_bits, shift = 24, 36, F.T_FRAC - F.A_FRAC
    w = rng.integers(-(1 << 15), 1 << 15, n)
    g = rng.integers(-(1 << 34), 1 << 34, n)
    w[:8] = [32767, -32768, 100, -100, 0, 0, 5, -5]
    g[:8] = [-(1 << 30), 1 << 30, 128, -128, 127, -129, 383, -384]  # both limits; exact half-LSB ties
    acc = accumulator_start(shift) - g
    dut = SgdUpdate(n, acc_bits, shift)
    out = {}

    async def bench(ctx):
        ctx.set(dut.weights, int(sum((int(v) & 0xFFFF) << (16 * i) for i, v in enumerate(w))))
        ctx.set(dut.accs, int(sum((int(v) & ((1 << acc_bits) - 1)) << (acc_bits * i) for i, v in enumerate(acc))))
        await ctx.tick()
        raw = ctx.get(dut.updated)
        out["w"] = [((raw >> (16 * i)) & 0xFFFF) - (((raw >> (16 * i)) & 0x8000) << 1) for i in range(n)]

    run(dut, bench)
    expected = F.saturate(w - F.round_shift(g, shift), F.W_BITS)
    assert out["w"] == expected.tolist()
    # round half up: 128/256 -> 1, -128/256 -> 0, 127/256 -> 0, -129/256 -> -1, 383/256 -> 1, -384/256 -> -1
    assert out["w"][:8] == [32767, -32768, 99, -100, 0, 1, 4, -4]


def test_mac_array_forward_sums_and_backward_products():
    p = HwParams(AcceleratorConfig("m", Geometry((8,), 2, 2), 8, 4))
    rng = np.random.default_rng(2)
    codes = rng.integers(-8, 8, p.P)
    a = rng.integers(-(1 << 15), 1 << 15, (p.R, p.P))
    t = rng.integers(-(1 << 23), 1 << 23, p.R)
    acc = rng.integers(-(1 << 33), 1 << 33, (p.R, p.P))
    dut = MacArray(p)
    out = {}

    def pack(values, bits):
        return int(sum((int(v) & ((1 << bits) - 1)) << (bits * i) for i, v in enumerate(values)))

    async def bench(ctx):
        ctx.set(dut.codes, pack(codes, 4))
        ctx.set(dut.signed_codes, 1)
        ctx.set(dut.a_line, pack(a.reshape(-1), 16))
        ctx.set(dut.acc, pack(acc.reshape(-1), p.da_bits))
        for r in range(p.R):
            ctx.set(dut.t[r], int(t[r]))
        await ctx.tick()
        raw = ctx.get(dut.acc_next)
        mask, half = (1 << p.da_bits) - 1, 1 << (p.da_bits - 1)
        out["acc"] = [(((raw >> (p.da_bits * i)) & mask) ^ half) - half for i in range(p.R * p.P)]
        await ctx.tick()
        out["sums"] = [ctx.get(dut.sums[r]) for r in range(p.R)]

    run(dut, bench)
    assert out["sums"] == (a @ codes).tolist()
    assert out["acc"] == (acc + t[:, None] * codes[None, :]).reshape(-1).tolist()


def test_cycle_counter_counts_enabled_cycles_and_clears():
    dut = CycleCounter(8)
    out = []

    async def bench(ctx):
        ctx.set(dut.enable, 1)
        await ctx.tick().repeat(5)
        out.append(ctx.get(dut.count))
        ctx.set(dut.enable, 0)
        await ctx.tick().repeat(3)
        out.append(ctx.get(dut.count))
        ctx.set(dut.clear, 1)
        await ctx.tick()
        out.append(ctx.get(dut.count))

    run(dut, bench)
    assert out == [5, 5, 0]


def test_blocks_reject_bad_parameters():
    with pytest.raises(TypeError, match="params must be HwParams"):
        MacArray(SMALL)
    with pytest.raises(ValueError, match="classes must be an integer of at least 2"):
        SoftmaxGradient(1)
    with pytest.raises(TypeError, match="Counter width must be a positive integer"):
        CycleCounter(0)
    with pytest.raises(ValueError, match="shift must be a non-negative integer"):
        SgdUpdate(4, 36, -1)
    with pytest.raises(ValueError, match="lanes must be a power of two"):
        AcceleratorConfig("x", SMALL.geometry, 6, 8)
    with pytest.raises(ValueError, match="at most 8 taps"):
        HwParams(AcceleratorConfig("x", Geometry((1,) * 9, 1, 2), 4, 8))


def test_generated_register_map_is_current():
    """sw/regmap.json is generated from hw/regmap.py: regenerate with `skip2lora hw regmap`."""
    on_disk = json.loads(REGMAP_JSON.read_text())
    assert on_disk == json.loads(json.dumps(regmap_dict())), "sw/regmap.json is stale: run `skip2lora hw regmap`"


def test_verilog_export_of_the_small_build(tmp_path):
    from skip2lora.hw.export import export_verilog

    out = export_verilog(tmp_path, "small")
    text = (tmp_path / "skip2lora.v").read_text()
    assert "module skip2lora(" in text
    for port in ("aclk", "aresetn", "interrupt", "s_axi_control_awaddr", "s_axis_tdata", "m_axis_tlast"):
        assert port in text
    assert json.loads((tmp_path / "regmap.json").read_text()) == json.loads(json.dumps(regmap_dict()))
    assert out["config"] == "small"


def test_cache_memory_asks_for_ultraram_in_the_kv260_build():
    from skip2lora.fixed.config import KV260
    from skip2lora.hw.cache import URAM_THRESHOLD_BITS

    p = HwParams(KV260)
    assert p.cache_lines == 1024 * p.layout.sample_lines and p.cache_lines * p.beat_bits >= URAM_THRESHOLD_BITS


STAT_TAIL = """
=== skip2lora.core.head ===
        +----------Local Count, excluding submodules.
       120   DSP48E2
     21306   FDRE
      9000   LUT6

=== design hierarchy ===

        +----------Count including submodules.
        |
   151135 skip2lora
     4329 skip2lora.core

        +----------Count including submodules.
        |
   151135 cells
        1   BUFG
     7344   CARRY4
      637   DSP48E2
    56339   FDRE
    22846   LUT2
    18830   LUT6
     1909   RAM64M8
       40   URAM288
        1 submodules

End of script. Logfile hash: 0
"""


def test_resource_report_reads_the_design_totals():
    from skip2lora.hw.export import parse_yosys_stat

    r = parse_yosys_stat("2.54. Printing statistics.\n" + STAT_TAIL)
    assert (r["dsp"], r["ff"], r["uram"], r["lut_logic"]) == (637, 56339, 40, 22846 + 18830)
    assert r["lut"] == 22846 + 18830 + 8 * 1909  # a RAM64M8 is eight LUTs
