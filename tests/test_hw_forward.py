"""The forward engine (hw/forward_engine.py) in amaranth.sim: bit-exact against `IntLayer.apply`
(random conv and dense geometries, saturating extremes, stalled streams) and, layer after layer,
against `IntBase.forward` (a tiny base and the calibrated LeNet-5); cycle-exact against
`fixed.forward_cycles`; its argument checks."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from skip2lora.fixed import base_formats as BF
from skip2lora.fixed import forward_cycles as FC
from skip2lora.fixed.base_int import IntBase, IntLayer
from skip2lora.hw.forward_engine import LANES_MAX, ForwardEngine, geometry_registers

Z_RANGE = (-(1 << (BF.Z_BITS - 1)), (1 << (BF.Z_BITS - 1)) - 1)


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


def run_engine(dut, samples, *, in_gaps=None, out_stalls=None, restart_at=()):
    """One pass per sample (flattened NHWC input integers); returns (outputs, cycles per pass).
    ``restart_at``: cycles of a pass at which ``start`` pulses again (while busy: ignored)."""
    results, cycles = [], []
    n_out = FC.engine_geometry(dut.layer).out_size
    r_in = random.Random(7)

    async def feeder(ctx):
        for x in samples:  # valid before the engine is ready: an always-valid producer
            for v in x:
                if in_gaps and r_in.random() < 0.3:
                    ctx.set(dut.act_in.valid, 0)
                    await ctx.tick().repeat(r_in.randint(1, in_gaps))
                ctx.set(dut.act_in.p.data, int(v) & 0xFF)
                ctx.set(dut.act_in.valid, 1)
                await ctx.tick().until(dut.act_in.ready)
            ctx.set(dut.act_in.valid, 0)

    async def bench(ctx):
        r_out = random.Random(11)
        for _ in samples:
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            got, n = [], 1
            while True:
                ready = not (out_stalls and r_out.random() < 0.3)
                ctx.set(dut.values_out.ready, ready)
                ctx.set(dut.start, n in restart_at)
                _, _, valid, data, last, done = await ctx.tick().sample(
                    dut.values_out.valid, dut.values_out.p.data, dut.values_out.p.last, dut.done)
                n += 1
                if valid and ready:
                    got.append((int(data), bool(last)))
                if done:
                    break
                assert n < 10 * dut.cycles + 1000, "the pass never finished"
            ctx.set(dut.values_out.ready, 0)
            ctx.set(dut.start, 0)
            assert [last for _, last in got] == [False] * (n_out - 1) + [True]
            results.append([d for d, _ in got])
            cycles.append(n - 1)
            await ctx.tick().repeat(2)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.add_testbench(feeder, background=True)
    sim.run()
    return results, cycles


def check(layer, lanes, x, **kw):
    dut = ForwardEngine(layer, lanes)
    flat = x.reshape(len(x), -1)
    got, cycles = run_engine(dut, list(flat), **kw)
    want = layer.apply(x).reshape(len(x), -1)
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


@pytest.mark.parametrize("seed", range(14))
def test_random_geometries(seed):
    rng = np.random.default_rng(1000 + seed)
    geo = random_geometry(rng)
    kind, in_shape, out = geo.pop("kind"), geo.pop("in_shape"), geo.pop("out")
    layer = make_layer(rng, kind, in_shape, out, relu=bool(rng.integers(2)), in_signed=bool(rng.integers(2)),
                       name=f"rand{seed}", **geo)
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
    dense = make_layer(rng, "dense", (2,), 10)
    # 2 groups of 8 and 2 lanes; windows of 2 cycles need 8 - 2 idle cycles but the last
    assert FC.layer_cycles(dense, 8) == 2 + 2 * 2 + 6 + FC.PIPE_LATENCY + 2
    with pytest.raises(ValueError, match="lanes"):
        FC.layer_cycles(layer, 0)
    with pytest.raises(TypeError, match="lanes"):
        FC.layer_cycles(layer, 2.0)
    with pytest.raises(TypeError, match="IntLayer"):
        FC.engine_geometry("conv")
    assert FC.layer_cycles(layer, np.int64(8)) == FC.layer_cycles(layer, 8)


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


# -- whole bases, layer after layer through the engine ------------------------------------------------

def run_base(base, lanes, x):
    """Each layer's pass on its own engine, the previous pass's outputs streamed in; returns the
    logits, each tap's integers and the cycles per sample."""
    a = np.asarray(x, np.int64)
    a = a.transpose(0, 2, 3, 1).reshape(len(a), -1) if a.ndim == 4 else a.reshape(len(a), -1)
    taps, total = [], np.zeros(len(a), np.int64)
    for layer in base.layers:
        taps.append(a)
        got, cycles = run_engine(ForwardEngine(layer, lanes), list(a))
        a, total = np.asarray(got, np.int64), total + cycles
    return a, taps, total.tolist()


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
    logits, taps, cycles = run_base(base, 2, x)
    want, want_taps = base.forward(x, taps=True)
    np.testing.assert_array_equal(logits, want)
    for t, w in zip(taps, want_taps):
        np.testing.assert_array_equal(t, w)
    assert 0 < np.abs(want).max() < Z_RANGE[1]  # logits in range, not all saturated or zero
    assert cycles == [FC.base_cycles(base, 2)] * 3


def test_lenet5_sample_end_to_end():
    """The pretrained LeNet-5, calibrated on synthetic images as in test_base_int, one sample."""
    from skip2lora.fixed.base_int import calibrate
    from skip2lora.nn.pretrained import load_base

    net, _ = load_base("fmnist-rot0", pretrain_if_missing=False)
    rng = np.random.default_rng(2)
    xf = (rng.random((48, 1, 28, 28)) ** 3).astype(np.float32)
    base = calibrate(net, xf, BF.INPUT_FORMATS["lenet5-fmnist"], name="t")
    x = base.quantize_input(xf[:1])
    logits, taps, cycles = run_base(base, 8, x)
    want, want_taps = base.forward(x, taps=True)
    np.testing.assert_array_equal(logits, want)
    for t, w in zip(taps, want_taps):
        np.testing.assert_array_equal(t, w)
    # 8 lanes: 784 + 19,600 | 1,176 + 2 x 25 x 600 | 400 + 15 x 400 | 120 + 11 x 120 | 84 + 2 x 84,
    # each + the pipeline + the last group's values
    assert cycles == [FC.base_cycles(base, 8)] == [59730]
    report = FC.base_report(base, 8)
    assert report["cycles_per_sample"] == 59730 and report["samples_per_s"] == round(200e6 / 59730, 1)


def test_geometry_registers_hold_their_values():
    """Every geometry register's field is wide enough for the value loaded at start (no wrap)."""
    from amaranth.hdl import Shape

    rng = np.random.default_rng(3)
    layers = [make_layer(rng, "conv", c[0], c[1], kernel=c[2], padding=c[3], pool=c[4]) for c in CONV_CASES]
    layers += [make_layer(rng, "conv", (28, 28, 1), 6, kernel=5, padding=2, pool=True),
               make_layer(rng, "conv", (14, 14, 6), 16, kernel=5, pool=True), make_layer(rng, "dense", (400,), 120)]
    for layer in layers:
        for lanes in (1, 8, LANES_MAX):
            layout, values = geometry_registers(layer, lanes)
            for name, field in layout:
                shape = Shape.cast(field.shape)
                lo, hi = (-(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1) if shape.signed \
                    else (0, (1 << shape.width) - 1)
                assert lo <= values[name] <= hi, (layer.name, lanes, name)
