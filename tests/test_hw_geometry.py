"""The geometry unit on its own: a job's TAPk_DIM / CLASSES walked into the datapath's line table,
the pass ends, the masks, the label's place and the schedule's gaps, against the packing layout and
the cycle model of that geometry on the build; bad geometries flagged."""

import pytest
from amaranth.sim import Simulator

from skip2lora.fixed.config import KV260, SMALL
from skip2lora.fixed.cycles import Timing
from skip2lora.fixed.model import Geometry
from skip2lora.fixed.packing import Layout
from skip2lora.hw.geometry_unit import GeometryUnit, walk_cycles
from skip2lora.hw.params import HwParams


def walk(config, dims, classes):
    """Run one walk; the table writes (line -> entry) and the outputs once ``ready``."""
    p = HwParams(config)
    dut = GeometryUnit(p)
    seen = {"table": {}}

    async def bench(ctx):
        for k in range(p.K):
            ctx.set(dut.dims[k], dims[k] if k < len(dims) else 0)
        ctx.set(dut.classes, classes)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for cycle in range(walk_cycles(p) + 2):
            en, addr, data = ctx.get(dut.info_wr.en), ctx.get(dut.info_wr.addr), ctx.get(dut.info_wr.data)
            ready = ctx.get(dut.schedule.ready)
            if en:
                seen["table"][addr] = data
            if ready:
                seen["cycles"] = cycle
                break
            await ctx.tick()
        s = dut.schedule
        for name in ("bad", "t_last", "s_last", "has_gap", "f_gap_m1", "gate_m1", "gate_b"):
            seen[name] = ctx.get(getattr(s, name))
        seen["tap_on"] = [ctx.get(dut.tap_on[k]) for k in range(p.K)]
        seen["class_on"] = [ctx.get(dut.class_on[c]) for c in range(p.C)]
        seen["label"] = (ctx.get(dut.label_line), ctx.get(dut.label_word))
        seen["lines_m1"] = ctx.get(dut.lines_m1)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return p, seen


@pytest.mark.parametrize("config, geometry", [
    (SMALL, SMALL.geometry), (SMALL, Geometry((28,), 1, 3)), (SMALL, Geometry((1, 2, 3), 2, 2)),
    (KV260, KV260.geometry), (KV260, Geometry((561, 96, 96), 4, 6)), (KV260, Geometry((256, 96, 96), 4, 3)),
    (KV260, Geometry((1024, 512, 512, 256, 256, 128), 2, 16)),
    (KV260, Geometry((1000, 800, 500, 300, 150, 100, 50, 40), 4, 16)), (KV260, Geometry((5,), 1, 2)),
], ids=lambda v: getattr(v, "name", None) or "-".join(map(str, getattr(v, "dims", ()))))
def test_walk_gives_the_geometrys_layout_and_schedule(config, geometry):
    p, seen = walk(config, geometry.dims, geometry.classes)
    lay = Layout(geometry, config.lanes)
    t = Timing.of(lay, config)
    assert not seen["bad"] and seen["cycles"] < walk_cycles(p)
    assert (seen["t_last"], seen["s_last"], seen["lines_m1"]) == (lay.tap_lines - 1, lay.sample_lines - 1,
                                                                  lay.sample_lines - 1)
    want = {}
    line = 0
    for k, n in enumerate(lay.lines_per_tap):
        for i in range(n):
            want[line] = dict(tap=k, first=int(i == 0), last=int(i == n - 1), tail=0, tail_line=0)
            line += 1
    for i in range(lay.tail_lines):
        want[line + i] = dict(tap=0, first=0, last=0, tail=1, tail_line=i)
    got = {a: {f: getattr(v, f) for f in ("tap", "first", "last", "tail", "tail_line")}
           for a, v in ((a, _entry(p, d)) for a, d in seen["table"].items())}
    assert got == want
    assert seen["tap_on"] == [int(k < geometry.taps) for k in range(p.K)]
    assert seen["class_on"] == [int(c < geometry.classes) for c in range(p.C)]
    wpl = lay.beat_bits // 16
    assert seen["label"] == (divmod(geometry.classes, wpl) if wpl > 1 else (geometry.classes, 0))
    assert seen["has_gap"] == (t.f_gap > 0) and (not t.f_gap or seen["f_gap_m1"] == t.f_gap - 1)
    assert (seen["gate_m1"], seen["gate_b"]) == (t.batch_gate - 1, t.batch_gate - t.opt_a_wait)


def _entry(p, raw):
    from types import SimpleNamespace

    from skip2lora.hw.geometry_unit import line_info_layout

    lay, out = line_info_layout(p), {}
    for name, field in lay:
        out[name] = (raw >> field.offset) & ((1 << field.width) - 1)
    return SimpleNamespace(**out)


@pytest.mark.parametrize("dims, classes", [
    ((), 3), ((0, 5), 3), ((5, 0, 5), 3), ((28, 1), 3), ((12, 7, 5), 4), ((12, 7, 5), 1), ((12, 7, 5), 0),
    ((65535,), 3),
], ids=["no_tap", "first_absent", "tap_after_absent", "too_many_lines", "too_many_classes", "one_class",
        "no_class", "huge_tap"])
def test_walk_flags_what_the_small_build_does_not_run(dims, classes):
    _, seen = walk(SMALL, dims, classes)
    assert seen["bad"], seen
