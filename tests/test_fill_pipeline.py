"""The cache fill on the PL (hw/fill_pipeline.py): images in, cache entries written, equal to the
host's integer fill (`IntBase.encode` + `packing.pack_cache`) bit for bit, in the cycles of
`forward_cycles.fill_cycles`."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from skip2lora.fixed import forward_cycles as FC
from skip2lora.fixed.config import AcceleratorConfig
from skip2lora.fixed.model import CacheEntries, Geometry
from skip2lora.fixed.packing import Layout, pack_cache
from skip2lora.hw.fill_pipeline import FillPipeline
from skip2lora.hw.params import HwParams

from test_hw_forward import tiny_base


def run_fill(dut, base, x, labels, exps, first):
    """Fill entries of images ``x`` (N, C, H, W) from ``first`` on; returns (the written bytes in
    line order, the lines' addresses, the cycles of each sample: first image beat to ``done``)."""
    p = dut.params
    images = np.asarray(x).transpose(0, 2, 3, 1).reshape(len(x), -1)  # NHWC, as the engines take it
    lines, cycles = {}, []

    async def bench(ctx):
        for k, (e, frac) in enumerate(zip(exps, base.tap_fracs)):
            ctx.set(dut.shift[k], e - frac)
        ctx.set(dut.first_line, first)
        ctx.set(dut.origin, 1)
        await ctx.tick()
        ctx.set(dut.origin, 0)
        for img, label in zip(images, labels):
            ctx.set(dut.label, int(label))
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            n = 0
            for v in img:
                ctx.set(dut.image.valid, 1)
                ctx.set(dut.image.p.data, int(v))
                await ctx.tick().until(dut.image.ready)
                n += 1
            ctx.set(dut.image.valid, 0)
            while not ctx.get(dut.done):
                await ctx.tick()
                n += 1
                assert n < 200_000, "the fill hangs"
            cycles.append(n)
            await ctx.tick()

    async def monitor(ctx):
        while True:
            _, _, en, addr, data = await ctx.tick().sample(dut.write.en, dut.write.addr, dut.write.data)
            if en:
                lines[addr] = data

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.add_testbench(monitor, background=True)
    sim.run()
    got = b"".join(lines[a].to_bytes(p.beat_bits // 8, "little") for a in sorted(lines))
    return got, sorted(lines), cycles


@pytest.mark.parametrize("lanes", [2, 4])
def test_fill_pipeline_writes_the_host_fills_entries(lanes):
    rng = np.random.default_rng(5)
    base = tiny_base(rng)
    config = AcceleratorConfig("tinyfill", Geometry(tuple(base.tap_dims), 2, base.classes), 4, 6)
    p = HwParams(config)
    x = rng.integers(0, 256, (3, 1, 6, 6)).astype(np.uint8)
    labels = rng.integers(0, base.classes, 3)
    codes, logits, exps, _ = base.encode(x)          # the cache's scales fitted on these samples
    want = pack_cache(Layout(config.geometry, config.lanes), CacheEntries(codes, logits, labels))
    first = 2 * p.sample_lines
    got, addrs, cycles = run_fill(FillPipeline(base, p, lanes), base, x, labels, exps, first)
    assert addrs == list(range(first, first + 3 * p.sample_lines))
    assert got == want.tobytes()
    assert cycles == [FC.fill_cycles(base, lanes)] * 3


@pytest.mark.slow
def test_fill_pipeline_lenet5_sample():
    """The pretrained LeNet-5 (calibrated on synthetic images, as in test_hw_forward), two images
    through the PL fill at 8 lanes: the cache entries the host's integer fill writes, bit for bit."""
    from skip2lora.fixed import base_formats as BF
    from skip2lora.fixed.base_int import calibrate
    from skip2lora.fixed.config import KV260
    from skip2lora.nn.pretrained import load_base

    net, _ = load_base("fmnist-rot0", pretrain_if_missing=False)
    rng = np.random.default_rng(2)
    xf = (rng.random((48, 1, 28, 28)) ** 3).astype(np.float32)
    base = calibrate(net, xf, BF.INPUT_FORMATS["lenet5-fmnist"], name="t")
    x = base.quantize_input(xf[:2])
    labels = np.array([3, 7])
    _, _, exps, _ = base.encode(base.quantize_input(xf))  # scales from all 48 images
    codes, logits, _, _ = base.encode(x, exps)
    want = pack_cache(Layout(KV260.geometry, KV260.lanes), CacheEntries(codes, logits, labels))
    p = HwParams(KV260)
    got, addrs, cycles = run_fill(FillPipeline(base, p, 8), base, x, labels, exps, 0)
    assert addrs == list(range(2 * Layout(KV260.geometry, KV260.lanes).sample_lines)) and got == want.tobytes()
    assert cycles == [FC.fill_cycles(base, 8)] * 2 == [57_950] * 2
