"""The forward engine (hw/forward_engine.py) in amaranth.sim: bit-exact against `IntLayer.apply`
(random conv and dense geometries, saturating extremes, stalled streams, SIMD widths from 1 to past
fan_in, two lanes a DSP or one) and, layer after layer, against `IntBase.forward` (a tiny base and
the calibrated LeNet-5, one engine per layer and also chained in one simulation); cycle-exact
against `fixed.forward_cycles`, per pass and for back-to-back samples (every ``done``); its
argument checks."""

import random

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from skip2lora.fixed import base_formats as BF
from skip2lora.fixed import forward_cycles as FC
from skip2lora.fixed.base_int import IntBase, IntLayer
from skip2lora.hw.forward_engine import (LANES_MAX, SIMD_MAX, ForwardEngine, activation_signature,
                                         geometry_registers, value_signature)

Z_RANGE = (-(1 << (BF.Z_BITS - 1)), (1 << (BF.Z_BITS - 1)) - 1)
#: LeNet-5's (lanes, simd) per layer: `fill_plan.plan_fill`'s, the fewest DSPs at 1,800 cycles a sample
LENET5_PLAN = {"conv1": (6, 13), "conv2": (8, 18), "fc1": (2, 14), "fc2": (2, 3), "fc3": (1, 1)}


def make_layer(rng, kind, in_shape, out, *, kernel=0, padding=0, relu=True, pool=False, in_signed=False,
               extreme=False, logits=False, name="layer"):
    """A random IntLayer; ``extreme``: weights at -128/127 and shifts 0 or 31 (saturating outputs)."""
    fan_in = in_shape[2] * kernel * kernel if kind == "conv" else in_shape[0]
    if extreme:
        w = rng.choice([-128, 127, 0], size=(out, fan_in)).astype(np.int8)
        shift = rng.choice([0, 1, 31, 24], size=out).astype(np.int64)
        bias = rng.choice([-(1 << 23), (1 << 23) - 1, 0], size=out).astype(np.int64)
    else:
        w = rng.integers(-128, 128, size=(out, fan_in)).astype(np.int8)
        shift = rng.integers(0, 16, size=out).astype(np.int64)
        bias = rng.integers(-(1 << 20), 1 << 20, size=out).astype(np.int64)
    lo, hi = Z_RANGE if logits else BF.act_range(not relu)
    return IntLayer(name, kind, tuple(in_shape), w, bias, shift, np.zeros(out, np.int64), in_frac=-8,
                    in_signed=in_signed, out_frac=-4, out_lo=lo, out_hi=hi, relu=relu, pool=pool,
                    kernel=kernel, padding=padding)


def random_input(rng, layer, n=1, extreme=False):
    lo, hi = layer.in_range
    shape = (n, *layer.in_shape)
    if extreme:
        return rng.choice([lo, hi], size=shape).astype(np.int64)
    return rng.integers(lo, hi + 1, size=shape).astype(np.int64)


def run_engine(dut, samples, *, in_gaps=None, out_stalls=None, restart_at=(), stream=False):
    """Runs ``samples`` (flattened NHWC input integers) through ``dut``; returns (outputs per
    sample, cycles). Per pass (``stream`` false): a ``start`` per sample, its input offered once
    that start was taken, cycles = start -> done of each pass. Streaming: one ``start``, the
    samples back to back, cycles = each sample's done cycle counted from the start.
    ``restart_at``: cycles (of a pass, or of the stream) at which ``start`` pulses again (while
    busy: ignored)."""
    results, cycles = [], []
    n_out = FC.engine_geometry(dut.layer).out_size
    r_in = random.Random(7)

    async def feeder(ctx):
        for k, x in enumerate(samples):
            if k == 0 or not stream:  # a taken start opens the input
                await ctx.tick().until(dut.start & ~dut.busy)
            for v in x:  # valid before the engine is ready: an always-valid producer
                if in_gaps and r_in.random() < 0.3:
                    ctx.set(dut.act_in.valid, 0)
                    await ctx.tick().repeat(r_in.randint(1, in_gaps))
                ctx.set(dut.act_in.p.data, int(v) & 0xFF)
                ctx.set(dut.act_in.valid, 1)
                await ctx.tick().until(dut.act_in.ready)
            ctx.set(dut.act_in.valid, 0)

    async def bench(ctx):
        r_out = random.Random(11)
        for _ in range(1 if stream else len(samples)):
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            got, dones, n = [], [], 1
            expect = len(samples) if stream else 1
            while len(dones) < expect:
                ready = not (out_stalls and r_out.random() < 0.3)
                ctx.set(dut.values_out.ready, ready)
                ctx.set(dut.start, n in restart_at)
                _, _, valid, data, last, done = await ctx.tick().sample(
                    dut.values_out.valid, dut.values_out.p.data, dut.values_out.p.last, dut.done)
                if valid and ready:
                    got.append((int(data), bool(last)))
                if done:
                    dones.append(n)
                n += 1
                assert n < 10 * expect * dut.cycles + 1000, "the pass never finished"
            ctx.set(dut.values_out.ready, 0)
            ctx.set(dut.start, 0)
            assert [last for _, last in got] == ([False] * (n_out - 1) + [True]) * expect
            results.extend([d for d, _ in got[i:i + n_out]] for i in range(0, len(got), n_out))
            cycles.extend(dones)
            await ctx.tick().repeat(2)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.add_testbench(feeder, background=True)
    sim.run()
    return results, cycles


def check(layer, lanes, x, simd=1, pack=True, **kw):
    dut = ForwardEngine(layer, lanes, simd, pack=pack)
    flat = x.reshape(len(x), -1)
    got, cycles = run_engine(dut, list(flat), **kw)
    want = layer.apply(x).reshape(len(x), -1)
    assert len(got) == len(x)
    for s in range(len(x)):
        assert got[s] == want[s].tolist(), f"{layer.name}: sample {s} differs"
    return cycles


CONV_CASES = [  # (in_shape, out, kernel, padding, pool, relu, lanes)
    ((6, 5, 2), 5, 3, 1, False, True, 2),
    ((6, 6, 1), 6, 5, 2, True, True, 8),
    ((7, 7, 3), 4, 3, 0, False, False, 4),
    ((4, 4, 2), 3, 1, 0, True, True, 4),     # 1x1: fewer patch entries than lanes (idle cycles)
    ((5, 5, 1), 7, 1, 2, False, True, 3),    # 1x1 with padding: zero borders
    ((6, 6, 2), 3, 5, 2, True, False, 1),
    ((6, 8, 2), 9, 3, 2, False, True, 4),
]


@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_conv_bit_exact_and_cycles(case):
    in_shape, out, k, p, pool, relu, lanes = CONV_CASES[case]
    rng = np.random.default_rng(100 + case)
    layer = make_layer(rng, "conv", in_shape, out, kernel=k, padding=p, pool=pool, relu=relu,
                       in_signed=case % 2 == 0, name=f"conv{case}")
    cycles = check(layer, lanes, random_input(rng, layer, 2))
    assert cycles == [FC.layer_cycles(layer, lanes)] * 2


@pytest.mark.parametrize("fan_in,out,lanes,signed,logits", [(13, 5, 2, True, True), (24, 16, 8, False, False),
                                                             (3, 10, 8, False, True), (1, 2, 4, True, False),
                                                             (130, 9, 2, False, False)])  # 2 weight banks
def test_dense_bit_exact_and_cycles(fan_in, out, lanes, signed, logits):
    rng = np.random.default_rng(fan_in * 31 + out)
    layer = make_layer(rng, "dense", (fan_in,), out, relu=not logits and fan_in % 2 == 0, in_signed=signed,
                       logits=logits, name=f"fc{fan_in}")
    cycles = check(layer, lanes, random_input(rng, layer, 3))
    assert cycles == [FC.layer_cycles(layer, lanes)] * 3


def random_geometry(rng):
    """A random small conv or dense layer: kernel 1/3/5, padding 0..2, pool and ReLU on or off."""
    if rng.random() < 0.3:
        return dict(kind="dense", in_shape=(int(rng.integers(1, 30)),), out=int(rng.integers(1, 12)))
    k, p = int(rng.choice([1, 3, 5])), int(rng.integers(0, 3))
    pool = bool(rng.integers(2))
    dims = []
    for _ in range(2):
        o = int(rng.integers(1, 4)) * (2 if pool else 1)  # the conv output size
        dims.append(max(o + k - 1 - 2 * p, 1))
        if pool and (dims[-1] + 2 * p - k + 1) % 2:
            dims[-1] += 1
    return dict(kind="conv", in_shape=(*dims, int(rng.integers(1, 4))), out=int(rng.integers(1, 7)),
                kernel=k, padding=p, pool=pool)


def random_layer(rng, name, in_signed=None):
    """A random layer of a `random_geometry`, its ReLU (and, unless given, its input's sign) drawn."""
    geo = random_geometry(rng)
    kind, in_shape, out = geo.pop("kind"), geo.pop("in_shape"), geo.pop("out")
    relu = bool(rng.integers(2))
    if in_signed is None:
        in_signed = bool(rng.integers(2))
    return make_layer(rng, kind, in_shape, out, relu=relu, in_signed=in_signed, name=name, **geo)


@pytest.mark.parametrize("seed", range(14))
def test_random_geometries(seed):
    rng = np.random.default_rng(1000 + seed)
    layer = random_layer(rng, f"rand{seed}")
    lanes = int(rng.integers(1, 9))
    cycles = check(layer, lanes, random_input(rng, layer, 2))
    assert cycles == [FC.layer_cycles(layer, lanes)] * 2


@pytest.mark.parametrize("kind", ["conv", "dense"])
def test_extreme_values_saturate(kind):
    rng = np.random.default_rng(5)
    if kind == "conv":
        layer = make_layer(rng, "conv", (4, 4, 3), 6, kernel=3, padding=1, pool=True, extreme=True)
    else:
        layer = make_layer(rng, "dense", (40,), 6, relu=False, in_signed=True, extreme=True)
    x = np.concatenate([random_input(rng, layer, 2, extreme=True),
                        np.full((1, *layer.in_shape), layer.in_range[1], np.int64)])
    want = layer.apply(x)
    assert want.min() == layer.out_lo or want.max() == layer.out_hi  # the case does saturate
    check(layer, 4, x)


def test_stalled_streams_change_nothing_but_time():
    rng = np.random.default_rng(9)
    layer = make_layer(rng, "conv", (6, 6, 2), 5, kernel=3, padding=1, pool=True)
    cycles = check(layer, 2, random_input(rng, layer, 2), in_gaps=2, out_stalls=True)
    assert all(c > FC.layer_cycles(layer, 2) for c in cycles)


def test_start_while_busy_is_ignored():
    rng = np.random.default_rng(4)
    layer = make_layer(rng, "conv", (4, 4, 2), 3, kernel=3, padding=1, pool=True)
    n = FC.layer_cycles(layer, 2)
    cycles = check(layer, 2, random_input(rng, layer, 2), restart_at=(2, 40, n - 3))  # LOAD, RUN, DRAIN
    assert cycles == [n, n]


def test_cycle_model_closed_form():
    rng = np.random.default_rng(0)
    layer = make_layer(rng, "conv", (28, 28, 1), 6, kernel=5, padding=2, pool=True)
    # 784 loads, 196 positions x 1 group x 4 x 25, the pipeline, 6 values
    assert FC.layer_cycles(layer, 8) == 784 + 196 * 100 + FC.PIPE_LATENCY + 6
    assert FC.PIPE_LATENCY == FC.pipe_latency(1) == 10 and FC.pipe_latency(13) == 10 + 4
    # simd 13: 2 words a patch (the second 12 entries, one masked); the issue span is the interval
    assert FC.layer_cycles(layer, 6, 13) == 784 + 196 * 8 + 14 + 6
    assert FC.layer_interval(layer, 6, 13) == 196 * 8
    assert FC.layer_done_cycles(layer, 6, 13, 3) == [2372 + k * 1568 for k in range(3)]
    # simd 32: windows of 4 x 1 cycles + 2 idle (6 values a position out): 196 x 6 > 784 loads
    assert FC.layer_interval(layer, 6, 32) == 196 * 6
    wide = make_layer(rng, "dense", (400,), 10)
    assert FC.layer_interval(wide, 16, 32) == 400  # 13 issue cycles a sample: the load bounds it
    dense = make_layer(rng, "dense", (2,), 10)
    # 2 groups of 8 and 2 lanes; windows of 2 cycles need 8 - 2 idle cycles but the last
    # (the input is shorter than the front end's fill: the first issue waits for it)
    assert FC.layer_cycles(dense, 8) == FC.FRONT_LATENCY + 2 * 2 + 6 + FC.PIPE_LATENCY + 2
    assert FC.layer_interval(dense, 8) == 2 * (2 + 6)  # idle cycles after every window
    assert FC.window_cycles(FC.engine_geometry(dense), 8, 4) == (1, 7)
    with pytest.raises(ValueError, match="lanes"):
        FC.layer_cycles(layer, 0)
    with pytest.raises(TypeError, match="lanes"):
        FC.layer_cycles(layer, 2.0)
    with pytest.raises(TypeError, match="simd"):
        FC.layer_interval(layer, 2, 1.0)
    for bad in (0, SIMD_MAX + 1):
        with pytest.raises(ValueError, match="simd"):
            FC.layer_cycles(layer, 2, bad)
    with pytest.raises(ValueError, match="n must"):
        FC.layer_done_cycles(layer, 2, 1, -1)
    with pytest.raises(TypeError, match="IntLayer"):
        FC.engine_geometry("conv")
    assert FC.layer_cycles(layer, np.int64(8), np.int64(2)) == FC.layer_cycles(layer, 8, 2)


def test_argument_errors():
    rng = np.random.default_rng(1)
    layer = make_layer(rng, "dense", (4,), 3)
    with pytest.raises(TypeError, match="IntLayer"):
        ForwardEngine("fc1", 4)
    with pytest.raises(TypeError, match="lanes"):
        ForwardEngine(layer, 4.0)
    with pytest.raises(TypeError, match="lanes"):
        ForwardEngine(layer, True)
    for bad in (0, -1, LANES_MAX + 1):
        with pytest.raises(ValueError, match="lanes"):
            ForwardEngine(layer, bad)
    wide = IntLayer("wide", "dense", (4,), layer.weight, layer.bias, layer.shift, layer.acc_frac, -8, False, -4,
                    -(1 << 20), 1 << 20, False, False)
    with pytest.raises(ValueError, match="output range"):
        ForwardEngine(wide, 4)
    for bad in (2.0, True, "2"):
        with pytest.raises(TypeError, match="simd"):
            ForwardEngine(layer, 4, bad)
    for bad in (0, -3, SIMD_MAX + 1):
        with pytest.raises(ValueError, match="simd"):
            ForwardEngine(layer, 4, bad)
    for bad in (1, None, "yes"):
        with pytest.raises(TypeError, match="pack"):
            ForwardEngine(layer, 4, 2, pack=bad)
    with pytest.raises(ValueError, match="act_ram"):
        ForwardEngine(layer, 4, 2, act_ram="ultra")


def test_activation_words():
    """A word of the activation memory holds E channels of a position, E the largest divisor of
    simd that keeps ceil(fan_in / simd) cycles a patch: simd / E replicas."""
    rng = np.random.default_rng(3)
    cases = [  # (kind, in_shape, kernel, simd) -> E, words a bank
        (("conv", (14, 14, 6), 5, 30), (6, 196)),   # conv2: positions of 6 channels, 5 replicas
        (("conv", (28, 28, 1), 5, 13), (1, 784)),   # conv1: one activation a word, 13 replicas
        (("conv", (14, 14, 6), 5, 15), (3, 392)),
        (("conv", (5, 6, 3), 3, 8), (1, 90)),       # 2 channels a word would take 5 cycles, not 4
        (("dense", (400,), 1, 4), (4, 100)),        # fc1: one replica
        (("dense", (13,), 1, 3), (3, 5)),           # the last word's 2 channels are padding
    ]
    for (kind, shape, k, simd), (e, words) in cases:
        layer = make_layer(rng, kind, shape, 2, kernel=k if kind == "conv" else 0)
        g = FC.engine_geometry(layer)
        assert (FC.word_entries(g, simd), FC.activation_words(g, simd)) == (e, words), (shape, simd)
        engine = ForwardEngine(layer, 2, simd)
        assert (engine.entries, engine.replicas) == (e, simd // e)
    for seed in range(200):  # E divides simd, and the words cover a patch in patch_words cycles
        r = np.random.default_rng(seed)
        geo = random_geometry(r)
        kind, in_shape, out = geo.pop("kind"), geo.pop("in_shape"), geo.pop("out")
        g = FC.engine_geometry(make_layer(r, kind, in_shape, out, **geo))
        simd = int(r.integers(1, SIMD_MAX + 1))
        e = FC.word_entries(g, simd)
        assert simd % e == 0 and 1 <= e <= max(1, g.channels)
        assert -(-g.kernel ** 2 * -(-g.channels // e) // (simd // e)) == FC.patch_words(g, simd)


SIMD_CASES = [  # (kind, in_shape, out, conv args, lanes, simd)
    ("conv", (6, 6, 2), 5, dict(kernel=3, padding=1, pool=True), 2, 1),
    ("conv", (6, 6, 2), 5, dict(kernel=3, padding=1, pool=True), 2, 2),
    ("conv", (6, 6, 2), 5, dict(kernel=3, padding=1, pool=True), 3, 3),    # 18 = 6 words of 3
    ("conv", (5, 6, 3), 4, dict(kernel=3, padding=2), 4, 8),               # 27: a partial last word
    ("conv", (6, 6, 1), 6, dict(kernel=5, padding=2, pool=True), 6, 13),   # conv1's shape
    ("conv", (4, 4, 2), 3, dict(kernel=1, pool=True), 4, 5),               # simd > fan_in (2): idle cycles
    ("dense", (13,), 5, {}, 2, 3),
    ("dense", (24,), 16, {}, 8, 32),                                       # simd > fan_in
    ("dense", (130,), 9, {}, 2, 4),
    ("dense", (1,), 2, {}, 4, 2),                                          # one input
    ("conv", (6, 6, 4), 5, dict(kernel=3, padding=1, pool=True), 2, 8),    # words of 4 channels, 2 replicas
    ("conv", (6, 6, 6), 8, dict(kernel=5, padding=1, pool=True), 4, 30),   # conv2's at 2,000 cycles: 5 replicas of a position
    ("conv", (6, 6, 6), 8, dict(kernel=5, padding=1, pool=True), 8, 18),   # conv2's at 1,800 cycles
]


@pytest.mark.parametrize("case", range(len(SIMD_CASES)))
def test_simd_streaming_bit_exact_and_cycles(case):
    """Back-to-back samples after one start: each bit-exact, every done when the model says."""
    kind, in_shape, out, kw, lanes, simd = SIMD_CASES[case]
    rng = np.random.default_rng(300 + case)
    layer = make_layer(rng, kind, in_shape, out, in_signed=case % 2 == 1, relu=case % 3 != 2,
                       name=f"simd{case}", **kw)
    n = 3 + case % 2
    cycles = check(layer, lanes, random_input(rng, layer, n), simd, stream=True)
    assert cycles == FC.layer_done_cycles(layer, lanes, simd, n)


@pytest.mark.parametrize("seed", range(10))
def test_random_geometries_streaming(seed):
    rng = np.random.default_rng(2000 + seed)
    layer = random_layer(rng, f"rand{seed}")
    lanes, simd = int(rng.integers(1, 9)), int(rng.integers(1, min(layer.fan_in + 3, SIMD_MAX + 1)))
    cycles = check(layer, lanes, random_input(rng, layer, 3), simd, stream=True)
    assert cycles == FC.layer_done_cycles(layer, lanes, simd, 3)


@pytest.mark.parametrize("simd", [1, 4])
def test_streaming_gaps_and_stalls_change_nothing_but_time(simd):
    rng = np.random.default_rng(19)
    layer = make_layer(rng, "conv", (6, 6, 2), 5, kernel=3, padding=1, pool=True)
    x = random_input(rng, layer, 4)
    model = FC.layer_done_cycles(layer, 2, simd, 4)
    for gaps, stalls in ((2, None), (None, True), (3, True)):
        cycles = check(layer, 2, x, simd, stream=True, in_gaps=gaps, out_stalls=stalls)
        assert all(c >= m for c, m in zip(cycles, model))  # (short stalls may hide behind the issue)


def test_streaming_start_while_busy_is_ignored():
    rng = np.random.default_rng(6)
    layer = make_layer(rng, "dense", (20,), 6)
    done = FC.layer_done_cycles(layer, 4, 3, 3)
    cycles = check(layer, 4, random_input(rng, layer, 3), 3, stream=True, restart_at=(3, 30, done[0] - 1, done[1]))
    assert cycles == done


def test_extreme_values_saturate_simd():
    rng = np.random.default_rng(15)
    layer = make_layer(rng, "conv", (4, 4, 3), 6, kernel=3, padding=1, pool=True, extreme=True)
    x = random_input(rng, layer, 3, extreme=True)
    want = layer.apply(x)
    assert want.min() == layer.out_lo or want.max() == layer.out_hi
    check(layer, 3, x, 8, stream=True)


# -- two lanes a DSP48E2 (pack) -----------------------------------------------------------------------

def test_dsp_count():
    """A lane pair shares one DSP per patch entry; an odd lane has its own; unpacked, one a lane."""
    rng = np.random.default_rng(1)
    layer = make_layer(rng, "dense", (40,), 9)
    for lanes, simd, dsps in ((1, 3, 3), (2, 3, 3), (5, 4, 12), (8, 5, 20), (9, 1, 5)):
        e = ForwardEngine(layer, lanes, simd)
        assert (e.dsps, e.multipliers, e.pairs, e.singles) == (dsps, lanes * simd, lanes // 2, lanes % 2)
        assert ForwardEngine(layer, lanes, simd, pack=False).dsps == lanes * simd


@pytest.mark.parametrize("seed", range(6))
def test_packed_equals_unpacked_random(seed):
    """Random geometries, odd and even lanes, simd below and above the packed sums' limit of 4:
    two lanes a DSP and one a DSP give the same values at the same cycles (and `IntLayer.apply`'s)."""
    rng = np.random.default_rng(4000 + seed)
    layer = random_layer(rng, f"pack{seed}", in_signed=seed % 2 == 1)
    lanes = (2, 3, 4, 5, 6, 7)[seed]
    simd = int(rng.integers(1, min(layer.fan_in, 12) + 1))
    x = random_input(rng, layer, 2)
    packed = check(layer, lanes, x, simd, stream=True)
    assert packed == check(layer, lanes, x, simd, pack=False, stream=True) == \
        FC.layer_done_cycles(layer, lanes, simd, 2)


def borrow_layer(rng, fan_in, out, in_signed):
    """A dense layer whose products are all at their extremes (weights -128/127, in blocks of 4
    entries of one sign: a packed sum of 4 reaches 4 x 255 x -128, just inside the low field),
    the next block of the other sign, so the accumulators stay small: shift 0, int16 outputs, no
    saturation hides a wrong borrow (an error of 1)."""
    block = (np.arange(fan_in) // 4) % 2
    phase = rng.integers(0, 2, out)  # which lanes start with -128: pairs with either borrow
    w = np.where((block[None, :] ^ phase[:, None]) == 1, 127, -128).astype(np.int8)
    bias = rng.integers(-1000, 1000, out).astype(np.int64)
    lo, hi = Z_RANGE
    return IntLayer("borrow", "dense", (fan_in,), w, bias, np.zeros(out, np.int64), np.zeros(out, np.int64),
                    in_frac=-8, in_signed=in_signed, out_frac=-4, out_lo=lo, out_hi=hi, relu=False, pool=False)


@pytest.mark.parametrize("in_signed", [False, True])
def test_packed_extremes_exercise_the_borrow(in_signed):
    """Weights at -128/127 and activations at both ends of uint8 / int8 (constant over each 8
    entries: blocks cancel), every simd from one product to several packed sums of 4 and splits,
    odd and even lanes: bit-exact, unsaturated."""
    rng = np.random.default_rng(77 + in_signed)
    layer = borrow_layer(rng, 40, 7, in_signed)
    lo, hi = layer.in_range
    x = np.stack([np.repeat(rng.choice([lo, hi], 5), 8) for _ in range(3)] + [np.full(40, hi), np.full(40, lo)])
    want = layer.apply(x)
    assert layer.out_lo < want.min() and want.max() < layer.out_hi and np.abs(want).max() > 100
    products = np.abs(np.asarray(layer.weight, np.int64) * x[:, None, :])
    assert products.max() == (255 * 128 if not in_signed else 128 * 128)
    for lanes, simd in ((2, 1), (7, 4), (3, 5), (4, 8), (7, 13), (2, 32)):
        check(layer, lanes, x, simd, stream=True)


# -- whole bases, layer after layer through the engine ------------------------------------------------

def nhwc(x):
    a = np.asarray(x, np.int64)
    return a.transpose(0, 2, 3, 1).reshape(len(a), -1) if a.ndim == 4 else a.reshape(len(a), -1)


def run_base(base, plan, x, stream=False):
    """Each layer on its own engine (``plan``: (lanes, simd) per layer), the previous layer's
    outputs streamed in; returns the logits, each tap's integers and the cycles (per pass and
    sample summed over the layers; streaming: each layer's done cycles)."""
    a = nhwc(x)
    taps, total = [], []
    for layer, (lanes, simd) in zip(base.layers, plan):
        taps.append(a)
        got, cycles = run_engine(ForwardEngine(layer, lanes, simd), list(a), stream=stream)
        a = np.asarray(got, np.int64)
        total.append(cycles)
    return a, taps, (total if stream else np.sum(total, axis=0).tolist())


class Chain(wiring.Component):
    """One engine per layer, engine k's values into engine k+1's input (the low 8 bits: a hidden
    layer's outputs are its successor's uint8/int8 inputs), one start for all."""

    def __init__(self, base, plan):
        self.engines = [ForwardEngine(layer, lanes, simd) for layer, (lanes, simd) in zip(base.layers, plan)]
        super().__init__({"start": In(1), "busy": Out(1), "done": Out(1),
                          "act_in": In(activation_signature()), "values_out": Out(value_signature())})

    def elaborate(self, platform):
        m = Module()
        e = self.engines
        for k, engine in enumerate(e):
            m.submodules[f"engine{k}"] = engine
            m.d.comb += engine.start.eq(self.start)
        wiring.connect(m, wiring.flipped(self.act_in), e[0].act_in)
        for a, b in zip(e, e[1:]):
            m.d.comb += [b.act_in.valid.eq(a.values_out.valid), b.act_in.p.data.eq(a.values_out.p.data[:8]),
                         a.values_out.ready.eq(b.act_in.ready)]
        wiring.connect(m, e[-1].values_out, wiring.flipped(self.values_out))
        m.d.comb += [self.busy.eq(e[0].busy), self.done.eq(e[-1].done)]
        return m


def run_chain(base, plan, x, **kw):
    """The whole base as one chain of engines, the samples back to back; returns the logits and
    the last engine's done cycles."""
    chain = Chain(base, plan)
    chain.layer = base.layers[-1]  # what run_engine reads
    chain.cycles = sum(e.cycles for e in chain.engines)
    got, cycles = run_engine(chain, list(nhwc(x)), stream=True, **kw)
    return np.asarray(got, np.int64), cycles


def tiny_base(rng):
    layers = [make_layer(rng, "conv", (6, 6, 1), 3, kernel=3, padding=1, pool=True, name="conv1"),
              make_layer(rng, "conv", (3, 3, 3), 4, kernel=3, padding=1, name="conv2"),
              make_layer(rng, "dense", (36,), 5, name="fc1"),
              make_layer(rng, "dense", (5,), 3, relu=False, logits=True, name="fc2")]
    # the real calibration's shifts keep outputs in range; random ones mostly saturate, so pick
    # each layer's shifts from its accumulators' spread on random inputs
    x = rng.integers(0, 256, (16, 6, 6, 1))
    fixed = []
    for layer in layers:
        acc = np.abs(layer.accumulate(x)).reshape(-1, layer.out_channels).max(axis=0)
        shift = np.maximum(np.ceil(np.log2(acc + 1)).astype(np.int64) - 7, 0)
        layer = IntLayer(layer.name, layer.kind, layer.in_shape, layer.weight, layer.bias, shift, layer.acc_frac,
                         layer.in_frac, layer.in_signed, layer.out_frac, layer.out_lo, layer.out_hi, layer.relu,
                         layer.pool, layer.kernel, layer.padding)
        fixed.append(layer)
        x = layer.apply(x)
    return IntBase(fixed, BF.INPUT_FORMATS["lenet5-fmnist"], (1, 6, 6), 3, name="tiny")


def test_tiny_base_end_to_end():
    rng = np.random.default_rng(21)
    base = tiny_base(rng)
    x = rng.integers(0, 256, (3, 1, 6, 6)).astype(np.uint8)
    logits, taps, cycles = run_base(base, [(2, 1)] * 4, x)
    want, want_taps = base.forward(x, taps=True)
    np.testing.assert_array_equal(logits, want)
    for t, w in zip(taps, want_taps):
        np.testing.assert_array_equal(t, w)
    assert 0 < np.abs(want).max() < Z_RANGE[1]  # logits in range, not all saturated or zero
    assert cycles == [FC.base_cycles(base, 2)] * 3


TINY_PLAN = [(3, 5), (4, 9), (2, 4), (3, 2)]


def test_tiny_base_chained_streaming():
    """One engine per layer in one simulation, samples overlapping across the chain (with input
    gaps and output stalls): the logits equal `IntBase.forward`; alone, each engine streams at
    the model's cycles."""
    rng = np.random.default_rng(22)
    base = tiny_base(rng)
    x = rng.integers(0, 256, (4, 1, 6, 6)).astype(np.uint8)
    want = base.forward(x)
    logits, _ = run_chain(base, TINY_PLAN, x)
    np.testing.assert_array_equal(logits, want)
    logits, _ = run_chain(base, TINY_PLAN, x, in_gaps=2, out_stalls=True)
    np.testing.assert_array_equal(logits, want)
    logits, _, cycles = run_base(base, TINY_PLAN, x, stream=True)
    np.testing.assert_array_equal(logits, want)
    for layer, (lanes, simd), c in zip(base.layers, TINY_PLAN, cycles):
        assert c == FC.layer_done_cycles(layer, lanes, simd, len(x)), layer.name


@pytest.fixture(scope="module")
def lenet5():
    """The pretrained LeNet-5, calibrated on synthetic images as in test_base_int, and 2 samples."""
    from skip2lora.fixed.base_int import calibrate
    from skip2lora.nn.pretrained import load_base

    net, _ = load_base("fmnist-rot0", pretrain_if_missing=False)
    rng = np.random.default_rng(2)
    xf = (rng.random((48, 1, 28, 28)) ** 3).astype(np.float32)
    base = calibrate(net, xf, BF.INPUT_FORMATS["lenet5-fmnist"], name="t")
    return base, base.quantize_input(xf[:2])


def test_lenet5_plan_streaming(lenet5):
    """LeNet-5 at the fill's plan (two lanes a DSP), each layer streaming 2 samples on its own
    engine: logits and taps equal `IntBase.forward`, every done cycle the model's; 1,800 cycles a
    sample, 129 DSP48E2s."""
    from skip2lora.fixed.fill_plan import plan_fill

    base, x = lenet5
    fill = plan_fill(base)
    plan = [LENET5_PLAN[layer.name] for layer in base.layers]
    assert [(p.lanes, p.simd) for p in fill.layers] == plan
    assert (fill.interval, fill.dsps, fill.multipliers) == (1800, 129, 257)
    # block RAM (estimated, RAMB18s): conv1's 13 replicas of its input buffer, conv2's input
    # buffer (a position of 6 channels a word), fc1's and fc2's weights
    assert [p.bram18 for p in fill.layers] == [13, 6, 28, 6, 0] and fill.brams == 26.5
    assert [ForwardEngine(layer, *lp).dsps for layer, lp in zip(base.layers, plan)] == [p.dsps for p in fill.layers]
    logits, taps, cycles = run_base(base, plan, x, stream=True)
    want, want_taps = base.forward(x, taps=True)
    np.testing.assert_array_equal(logits, want)
    for t, w in zip(taps, want_taps):
        np.testing.assert_array_equal(t, w)
    for layer, (lanes, simd), c in zip(base.layers, plan, cycles):
        assert c == FC.layer_done_cycles(layer, lanes, simd, len(x)), layer.name
    # conv1: 784 loads, 196 positions x 4 x 2 words, 14 stages, 6 values; then one issue span
    assert cycles[0] == [784 + 1568 + 14 + 6, 784 + 2 * 1568 + 14 + 6]
    report = FC.base_report(base, [p[0] for p in plan], [p[1] for p in plan])
    assert [r["interval"] for r in report["layers"]] == [1568, 1800, 1740, 1680, 840]
    assert report["cycles_per_sample"] == 1800 and report["samples_per_s"] == 111_111.1


@pytest.mark.slow
def test_lenet5_plan_unpacked(lenet5):
    """The same layers with one DSP a lane: the same values and cycles as packed."""
    base, x = lenet5
    a = nhwc(x)
    for layer in base.layers:
        lanes, simd = LENET5_PLAN[layer.name]
        packed = run_engine(ForwardEngine(layer, lanes, simd), list(a), stream=True)
        unpacked = run_engine(ForwardEngine(layer, lanes, simd, pack=False), list(a), stream=True)
        assert packed == unpacked, layer.name
        a = np.asarray(packed[0], np.int64)
    np.testing.assert_array_equal(a, base.forward(x))


@pytest.mark.slow
def test_lenet5_plan_chained(lenet5):
    """LeNet-5 at the plan as one chain of engines in one simulation, 3 samples back to back."""
    base, _ = lenet5
    rng = np.random.default_rng(8)
    xf = (rng.random((3, 1, 28, 28)) ** 3).astype(np.float32)
    x = base.quantize_input(xf)
    logits, cycles = run_chain(base, [LENET5_PLAN[layer.name] for layer in base.layers], x)
    np.testing.assert_array_equal(logits, base.forward(x))
    assert np.diff(cycles).max() <= 1800 + 100  # ~ the slowest engine's interval


@pytest.mark.slow
def test_lenet5_sample_end_to_end(lenet5):
    """One sample per pass through 8-lane, simd-1 engines, as the first increment ran it."""
    base, x = lenet5
    x = x[:1]
    logits, taps, cycles = run_base(base, [(8, 1)] * 5, x)
    want, want_taps = base.forward(x, taps=True)
    np.testing.assert_array_equal(logits, want)
    for t, w in zip(taps, want_taps):
        np.testing.assert_array_equal(t, w)
    # 8 lanes: 784 + 19,600 | 1,176 + 2 x 25 x 600 | 400 + 15 x 400 | 120 + 11 x 120 | 84 + 2 x 84,
    # each + the pipeline + the last group's values: as the first increment
    assert cycles == [FC.base_cycles(base, 8)] == [59730]
    report = FC.base_report(base, 8)
    assert report["latency_cycles"] == 59730


def test_geometry_registers_hold_their_values():
    """Every geometry register's field is wide enough for the value loaded at start (no wrap)."""
    from amaranth.hdl import Shape

    rng = np.random.default_rng(3)
    layers = [make_layer(rng, "conv", c[0], c[1], kernel=c[2], padding=c[3], pool=c[4]) for c in CONV_CASES]
    layers += [make_layer(rng, "conv", (28, 28, 1), 6, kernel=5, padding=2, pool=True),
               make_layer(rng, "conv", (14, 14, 6), 16, kernel=5, pool=True), make_layer(rng, "dense", (400,), 120)]
    for layer in layers:
        for lanes in (1, 8, LANES_MAX):
            for simd in (1, 3, SIMD_MAX):
                layout, values = geometry_registers(layer, lanes, simd)
                for name, field in layout:
                    shape = Shape.cast(field.shape)
                    lo, hi = (-(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1) if shape.signed \
                        else (0, (1 << shape.width) - 1)
                    assert lo <= values[name] <= hi, (layer.name, lanes, simd, name)
