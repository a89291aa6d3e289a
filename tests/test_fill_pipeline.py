"""The cache fill on the PL (hw/fill_pipeline.py): images in, cache entries written, equal to the
host's integer fill (`IntBase.encode` + `packing.pack_cache`) bit for bit, each entry written at
the cycle `fill_plan.fill_done_cycles` says (samples overlapped across the chain's engines)."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from skip2lora.fixed import fill_plan as FP
from skip2lora.fixed.config import AcceleratorConfig
from skip2lora.fixed.model import CacheEntries, Geometry
from skip2lora.fixed.packing import Layout, pack_cache, pack_cache_for
from skip2lora.hw.fill_pipeline import FillPipeline
from skip2lora.hw.params import HwParams

from test_hw_forward import tiny_base


def flat_inputs(x) -> np.ndarray:
    """Each sample's quantized inputs in the order the engines take them: an image (N, C, H, W) in
    NHWC order, a feature vector (N, features) as it is."""
    x = np.asarray(x)
    return (x.transpose(0, 2, 3, 1) if x.ndim == 4 else x).reshape(len(x), -1)


def run_fill(dut, base, x, labels, exps, first, *, image_gaps=False, max_cycles=400_000):
    """Fill entries of images ``x`` (N, C, H, W; or N, features) from ``first`` on, the images back to back;
    returns (the written bytes in line order, the lines' addresses, each entry's done cycle
    counted from ``start``)."""
    p = dut.params
    images = flat_inputs(x)
    lines, done = {}, []
    writes = []
    rnd = random.Random(3)

    async def bench(ctx):
        for k, (e, frac) in enumerate(zip(exps, base.tap_fracs)):
            ctx.set(dut.shift[k], e - frac)
        ctx.set(dut.first_line, first)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for img in images:
            for v in img:
                if image_gaps and rnd.random() < 0.2:
                    ctx.set(dut.image.valid, 0)
                    await ctx.tick().repeat(rnd.randint(1, 5))
                ctx.set(dut.image.valid, 1)
                ctx.set(dut.image.p.data, int(v))
                await ctx.tick().until(dut.image.ready)
        ctx.set(dut.image.valid, 0)

    async def labeler(ctx):
        await ctx.tick()
        for label in labels:
            ctx.set(dut.label.valid, 1)
            ctx.set(dut.label.p, int(label))
            await ctx.tick().until(dut.label.ready)
        ctx.set(dut.label.valid, 0)

    async def monitor(ctx):
        cycle = 0
        while len(done) < len(images):
            _, _, en, addr, data, d = await ctx.tick().sample(dut.write.en, dut.write.addr, dut.write.data,
                                                              dut.done)
            if en:
                writes.append(addr)
                lines[addr] = data
            if d:
                done.append(cycle)
            cycle += 1
            assert cycle < max_cycles, "the fill hangs"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench, background=True)
    sim.add_testbench(labeler, background=True)
    sim.add_testbench(monitor)
    sim.run()
    assert len(writes) == len(set(writes)), "a line was written twice"
    got = b"".join(lines[a].to_bytes(p.beat_bits // 8, "little") for a in sorted(lines))
    return got, sorted(lines), done


def tiny_setup(seed=5, n=3):
    rng = np.random.default_rng(seed)
    base = tiny_base(rng)
    config = AcceleratorConfig("tinyfill", Geometry(tuple(base.tap_dims), 2, base.classes), 4, 6)
    x = rng.integers(0, 256, (n, 1, 6, 6)).astype(np.uint8)
    labels = rng.integers(0, base.classes, n)
    return base, config, x, labels


@pytest.mark.parametrize("interval", [10_000, 60, 30])
def test_fill_pipeline_writes_the_host_fills_entries(interval):
    base, config, x, labels = tiny_setup()
    p = HwParams(config)
    codes, logits, exps, _ = base.encode(x)          # the cache's scales fitted on these samples
    want = pack_cache(Layout(config.geometry, config.lanes), CacheEntries(codes, logits, labels))
    first = 2 * p.sample_lines
    plan = FP.plan_fill(base, interval)
    got, addrs, done = run_fill(FillPipeline(base, p, plan), base, x, labels, exps, first)
    assert addrs == list(range(first, first + len(x) * p.sample_lines))
    assert got == want.tobytes()
    assert done == FP.fill_done_cycles(base, plan, len(x))


def test_fill_pipeline_image_gaps_change_nothing_but_time():
    base, config, x, labels = tiny_setup(seed=9, n=4)
    p = HwParams(config)
    codes, logits, exps, _ = base.encode(x)
    want = pack_cache(Layout(config.geometry, config.lanes), CacheEntries(codes, logits, labels))
    plan = FP.plan_fill(base, 40)
    got, _, done = run_fill(FillPipeline(base, p, plan), base, x, labels, exps, 0, image_gaps=True)
    assert got == want.tobytes()
    assert all(d >= w for d, w in zip(done, FP.fill_done_cycles(base, plan, len(x))))


def test_fill_pipeline_on_a_build_with_maxima_writes_pack_cache_for():
    """A build with maxima (more taps, tap lines and classes than the base): each entry in the
    build's slot of ENTRY_LINES lines, the base's own layout at its start (`pack_cache_for`); the
    slot's padding lines are not written (no job of the base's geometry reads them)."""
    base, config, x, labels = tiny_setup(seed=4, n=3)
    config = AcceleratorConfig("tinymax", config.geometry, 4, 6, max_taps=6, max_classes=5, max_tap_lines=40)
    p = HwParams(config)
    layout = Layout(config.geometry, 4)
    assert p.sample_lines > layout.sample_lines
    codes, logits, exps, _ = base.encode(x)
    want = pack_cache_for(p.layout, layout, CacheEntries(codes, logits, labels)).reshape(len(x), p.sample_lines, -1)
    plan = FP.plan_fill(base, 60)
    first = p.sample_lines
    got, addrs, done = run_fill(FillPipeline(base, p, plan), base, x, labels, exps, first)
    assert addrs == [first + i * p.sample_lines + line for i in range(len(x)) for line in range(layout.sample_lines)]
    assert got == want[:, :layout.sample_lines].tobytes()
    assert done == FP.fill_done_cycles(base, plan, len(x))


def test_fill_pipeline_checks_its_arguments():
    base, config, _, _ = tiny_setup()
    p = HwParams(config)
    with pytest.raises(TypeError, match="base must be an IntBase"):
        FillPipeline(object(), p)
    with pytest.raises(TypeError, match="params must be HwParams"):
        FillPipeline(base, config)
    with pytest.raises(TypeError, match="plan must be a FillPlan"):
        FillPipeline(base, p, plan=(1, 2))
    small = AcceleratorConfig("fewer", Geometry((36, 27), 2, 3), 4, 4)
    with pytest.raises(ValueError, match="do not fit the build"):
        FillPipeline(base, HwParams(small))


def lenet5_base():
    """The pretrained LeNet-5, calibrated on synthetic images (as in test_hw_forward)."""
    from skip2lora.fixed import base_formats as BF
    from skip2lora.fixed.base_int import calibrate
    from skip2lora.nn.pretrained import load_base

    net, _ = load_base("fmnist-rot0", pretrain_if_missing=False)
    rng = np.random.default_rng(2)
    xf = (rng.random((48, 1, 28, 28)) ** 3).astype(np.float32)
    return calibrate(net, xf, BF.INPUT_FORMATS["lenet5-fmnist"], name="t"), xf


@pytest.mark.slow
def test_fill_pipeline_lenet5():
    """Three images through the KV260 fill plan: the cache entries the host's integer fill writes,
    bit for bit, at the chain's interval."""
    from skip2lora.fixed.config import KV260

    base, xf = lenet5_base()
    x = base.quantize_input(xf[:3])
    labels = np.array([3, 7, 1])
    _, _, exps, _ = base.encode(base.quantize_input(xf))  # scales from all 48 images
    codes, logits, _, _ = base.encode(x, exps)
    layout = Layout(KV260.geometry, KV260.lanes)
    p = HwParams(KV260)  # a build with maxima: entries at its stride, the base's lines at their start
    want = pack_cache_for(p.layout, layout, CacheEntries(codes, logits, labels)).reshape(3, p.sample_lines, -1)
    plan = FP.plan_fill(base)
    got, addrs, done = run_fill(FillPipeline(base, p, plan), base, x, labels, exps, 0)
    assert addrs == [i * p.sample_lines + line for i in range(3) for line in range(layout.sample_lines)]
    assert got == want[:, :layout.sample_lines].tobytes()
    assert done == FP.fill_done_cycles(base, plan, 3)
    assert plan.interval <= FP.TARGET_INTERVAL


# (Fan damage2 is damage1's network with other weights: one Fan base is enough here.)
MLP_CASES = [("mlp-har", "har", 600), ("mlp-har", "har", FP.TARGET_INTERVAL), ("mlp-fan-damage1", "fan-damage1", 600)]


@pytest.mark.parametrize("key,dataset,interval", MLP_CASES, ids=[f"{k}-{i}" for k, _, i in MLP_CASES])
def test_fill_pipeline_mlp_bases(key, dataset, interval):
    """The HAR and Fan MLPs (batch norm folded into the dense layers; HAR's int8 input signed,
    the Fan spectra's uint8 not) on the same engines: three samples' cache entries bit for bit
    what the host's integer fill writes, each at the cycle the plan says."""
    from skip2lora.fixed import base_formats as BF
    from skip2lora.fixed.base_int import calibrate
    from skip2lora.nn.pretrained import load_base

    net, _ = load_base(dataset, pretrain_if_missing=False)
    fmt = BF.INPUT_FORMATS[key]
    rng = np.random.default_rng(7)
    xf = rng.random((48,) + tuple(net.input_shape)).astype(np.float32)
    if fmt.signed:
        xf = 2 * xf - 1
    base = calibrate(net, xf, fmt, name="t")   # synthetic calibration samples, as for LeNet-5 above
    assert [layer.kind for layer in base.layers] == ["dense"] * 3
    x = base.quantize_input(xf[:3])
    labels = rng.integers(0, base.classes, 3)
    _, _, exps, _ = base.encode(base.quantize_input(xf))
    codes, logits, _, _ = base.encode(x, exps)
    config = AcceleratorConfig(f"{key}-fill", Geometry(tuple(base.tap_dims), 4, base.classes), 16, 4)
    p = HwParams(config)
    want = pack_cache(Layout(config.geometry, config.lanes), CacheEntries(codes, logits, labels))
    plan = FP.plan_fill(base, interval)
    got, addrs, done = run_fill(FillPipeline(base, p, plan), base, x, labels, exps, p.sample_lines)
    assert addrs == list(range(p.sample_lines, 4 * p.sample_lines))
    assert got == want.tobytes()
    assert done == FP.fill_done_cycles(base, plan, 3)
    assert plan.interval <= interval
