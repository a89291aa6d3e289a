"""The cache writer (hw/cache_writer.py) against the model: tap values quantized by `base_int.cache_codes`
(`IntBase.codes`' rule) and packed as `packing.pack_cache` does, entry after entry, bit for bit."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from skip2lora.fixed import base_formats as BF
from skip2lora.fixed.base_int import cache_codes
from skip2lora.fixed.config import SMALL, AcceleratorConfig
from skip2lora.fixed.model import CacheEntries, Geometry
from skip2lora.fixed.packing import Layout, pack_cache
from skip2lora.hw.cache_writer import LATENCY, CacheWriter
from skip2lora.hw.params import HwParams

CONFIGS = [SMALL, AcceleratorConfig("wide", Geometry((33, 16, 70, 5), 3, 7), 16, 8),
           AcceleratorConfig("one", Geometry((9,), 1, 2), 4, 8),
           AcceleratorConfig("tail3", Geometry((8, 40), 2, 17), 8, 4)]


def _entries(config, n, rng):
    """Random tap activations (uint8 or int8 per tap), shifts, logits and labels; the model's entries."""
    g = config.geometry
    signed = [bool(rng.random() < 0.4) for _ in g.dims]
    shifts = [int(rng.choice([0, 1, 2, 3, 4, 5, 6, 8, 17, 31])) for _ in g.dims]  # up to the port's range
    taps = []
    for d, sg in zip(g.dims, signed):
        lo, hi = BF.act_range(sg)
        taps.append(rng.integers(lo, hi + 1, (n, d)))
    codes = np.concatenate([cache_codes(t, s, sg) for t, s, sg in zip(taps, shifts, signed)], axis=1)
    logits = rng.integers(-(1 << 15), 1 << 15, (n, g.classes)).astype(np.int16)
    labels = rng.integers(0, g.classes, n)
    return taps, shifts, signed, CacheEntries(codes, logits, labels)


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
@pytest.mark.parametrize("gaps", [False, True], ids=["streaming", "gaps"])
def test_cache_writer_writes_the_models_entries(config, gaps):
    p = HwParams(config)
    rng = np.random.default_rng(len(config.name) + gaps)
    n = min(5, p.n_max)
    first = (p.n_max - n) * p.sample_lines  # the cache's last n entries
    taps, shifts, signed, entries = _entries(config, n, rng)
    want = pack_cache(Layout(config.geometry, config.lanes), entries)
    dut = CacheWriter(p)
    pick = random.Random(7)
    lines, done, timing = {}, [], {}

    async def driver(ctx):
        for k in range(p.K):
            ctx.set(dut.shift[k], shifts[k])
            ctx.set(dut.tap_signed[k], int(signed[k]))
        ctx.set(dut.first_line, first)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for i in range(n):
            values = [int(v) for t in taps for v in t[i]] + [int(v) for v in entries.logits[i]] + [int(entries.labels[i])]
            for j, v in enumerate(values):
                while gaps and pick.random() < 0.3:
                    ctx.set(dut.values.valid, 0)
                    await ctx.tick()
                ctx.set(dut.values.valid, 1)
                ctx.set(dut.values.p, v)
                assert ctx.get(dut.values.ready)
                if i == 0 and j == len(values) - 1:
                    timing["last_value"] = timing["cycle"]
                await ctx.tick()
        ctx.set(dut.values.valid, 0)
        await ctx.tick().repeat(LATENCY + 3)

    async def monitor(ctx):
        timing["cycle"] = 0
        while True:
            _, _, en, addr, data, dn = await ctx.tick().sample(dut.write.en, dut.write.addr, dut.write.data, dut.done)
            timing["cycle"] += 1
            if en:
                assert addr not in lines, f"line {addr} written twice"
                lines[addr] = data
            if dn:
                done.append(timing["cycle"])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(driver)
    sim.add_testbench(monitor, background=True)
    sim.run()
    assert sorted(lines) == list(range(first, first + n * p.sample_lines))
    got = b"".join(lines[a].to_bytes(p.beat_bits // 8, "little") for a in sorted(lines))
    assert got == want.tobytes()
    assert len(done) == n
    if not gaps:  # the first entry's last value is taken at the edge after "last_value"; its last line
        # is written into the cache LATENCY edges later (``done`` is sampled at that edge)
        assert done[0] - (timing["last_value"] + 1) == LATENCY
