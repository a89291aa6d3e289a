"""The forward engine's Verilog (hw/forward_engine.py) in cocotb + Verilator (sim/test_forward_engine.py):
random layer geometries streaming back-to-back samples, bit-exact against `IntLayer.apply` and, with
always-valid / always-ready streams, every ``done`` at `forward_cycles.layer_done_cycles`'s cycle;
random input pauses and output back-pressure change nothing but time; the scoreboard catches a
wrong model; and (slow) the shipped LeNet-5 layer by layer at `fill_plan.plan_fill`'s plan, each
engine's real outputs streamed into the next, equal to `IntBase.forward`'s logits and taps.

Each distinct engine is one Verilator build (cached by its Verilog's hash under the simulator
build directory); the runs of a build share it.
"""

import json

import numpy as np
import pytest

from skip2lora.fixed import base_formats as BF
from skip2lora.fixed import forward_cycles as FC
from skip2lora.fixed.base_int import IntLayer
from skip2lora.hw.forward_engine import ForwardEngine

TEST_MODULE = "skip2lora.sim.test_forward_engine"
TESTCASE = "forward_engine_layer"
Z_RANGE = (-(1 << (BF.Z_BITS - 1)), (1 << (BF.Z_BITS - 1)) - 1)


def random_layer(seed, kind, *, pool=False, padding=0, kernel=3, in_signed=False, relu=True, logits=False):
    """A random layer of ``kind`` with random dimensions; each channel's shift from its
    accumulators' spread on random inputs (less 0..1), so outputs span their range and some saturate."""
    rng = np.random.default_rng(seed)
    if kind == "dense":
        in_shape, fan_in = (int(rng.integers(8, 48)),), None
    else:
        dims = []
        for _ in range(2):
            o = int(rng.integers(2, 4)) * (2 if pool else 1)  # the conv output size (even with a pool)
            dims.append(o + kernel - 1 - 2 * padding)
        in_shape = (*dims, int(rng.integers(1, 4)))
    out = int(rng.integers(3, 10))
    fan_in = in_shape[0] if kind == "dense" else in_shape[2] * kernel * kernel
    w = rng.integers(-128, 128, size=(out, fan_in)).astype(np.int8)
    bias = rng.integers(-(1 << 14), 1 << 14, size=out).astype(np.int64)
    lo, hi = Z_RANGE if logits else BF.act_range(not relu)
    kw = dict(kernel=kernel, padding=padding) if kind == "conv" else {}

    def make(shift):
        return IntLayer(f"{kind}{seed}", kind, in_shape, w, bias, shift, np.zeros(out, np.int64), in_frac=-8,
                        in_signed=in_signed, out_frac=-4, out_lo=lo, out_hi=hi, relu=relu, pool=pool, **kw)

    layer = make(np.zeros(out, np.int64))
    alo, ahi = layer.in_range
    acc = np.abs(layer.accumulate(rng.integers(alo, ahi + 1, size=(8, *in_shape)))).reshape(-1, out).max(axis=0)
    bits = 15 if logits else 7
    shift = np.maximum(np.ceil(np.log2(acc + 1)).astype(np.int64) - bits - rng.integers(0, 2, out), 0)
    return make(shift)


def random_input(rng, layer, n):
    lo, hi = layer.in_range
    return rng.integers(lo, hi + 1, size=(n, int(np.prod(layer.in_shape)))).astype(np.int64)


def run_layer(tmp_path, layer, lanes, simd, x, *, in_pause=0.0, out_pause=0.0, seed=0, corrupt=False,
              tag="run"):
    """``x`` ((n, in_size), NHWC) through the engine's Verilog after one start; returns the values
    taken ((n, out_size)) and each sample's done cycle (the TB has checked them)."""
    from skip2lora.sim.blocks import run_block
    from skip2lora.sim.test_forward_engine import CONFIG_ENV, read_results, write_case

    case = write_case(tmp_path / f"{tag}-case.npz", layer, x)
    out = tmp_path / f"{tag}-out.npz"
    cfg = dict(case=str(case), out=str(out), lanes=lanes, simd=simd, in_pause=in_pause, out_pause=out_pause,
               seed=seed, corrupt=corrupt)
    run_block("forward_engine", ForwardEngine(layer, lanes, simd), TEST_MODULE, TESTCASE,
              env={CONFIG_ENV: json.dumps(cfg)})
    return read_results(out)


#: (id, layer arguments, lanes, simd): conv with and without pool and padding, dense, unsigned and
#: signed inputs, odd and even lanes (a lone lane beside the packed pairs), simd below, at and
#: past a patch word, several words of a position
CASES = [
    ("conv-pool-pad", dict(seed=11, kind="conv", pool=True, padding=1), 3, 6),
    ("conv-signed", dict(seed=12, kind="conv", padding=0, in_signed=True, relu=False), 4, 5),
    ("dense-logits", dict(seed=13, kind="dense", in_signed=True, relu=False, logits=True), 5, 8),
]


@pytest.fixture(params=CASES, ids=[c[0] for c in CASES])
def case(request):
    _, kw, lanes, simd = request.param
    return random_layer(**kw), lanes, simd


def test_streaming_bit_exact_and_cycle_exact(case, tmp_path):
    """4 samples back to back, always-valid input, always-ready output: every value the model's,
    every done at the cycle model's cycle."""
    layer, lanes, simd = case
    rng = np.random.default_rng(layer.out_channels)
    x = random_input(rng, layer, 4)
    values, done = run_layer(tmp_path, layer, lanes, simd, x)
    want = layer.apply(x.reshape(len(x), *layer.in_shape)).reshape(len(x), -1)
    np.testing.assert_array_equal(values, want)
    assert done == FC.layer_done_cycles(layer, lanes, simd, len(x))
    assert want.min() < want.max()  # not all saturated


def test_pauses_change_nothing_but_time(case, tmp_path):
    """Random input pauses and output back-pressure: the same values, done only later."""
    layer, lanes, simd = case
    rng = np.random.default_rng(layer.out_channels + 1)
    x = random_input(rng, layer, 3)
    values, done = run_layer(tmp_path, layer, lanes, simd, x, in_pause=0.3, out_pause=0.4, seed=5)
    np.testing.assert_array_equal(values, layer.apply(x.reshape(len(x), *layer.in_shape)).reshape(len(x), -1))
    assert done[-1] > FC.layer_done_cycles(layer, lanes, simd, len(x))[-1]


def test_scoreboard_catches_a_wrong_model(tmp_path):
    """The TB's self-check: a model off by one in one value fails the cocotb test."""
    from skip2lora.sim.runner import CocotbFailure

    _, kw, lanes, simd = CASES[0]
    layer = random_layer(**kw)
    x = random_input(np.random.default_rng(1), layer, 2)
    with pytest.raises(CocotbFailure, match="sample 0 differs"):
        run_layer(tmp_path, layer, lanes, simd, x, corrupt=True)


@pytest.mark.slow
def test_lenet5_layer_by_layer_at_the_fill_plan(tmp_path):
    """The shipped LeNet-5 at `plan_fill`'s (lanes, simd), 2 samples a layer, each layer's input
    the previous engine's real outputs: every tap and the logits equal `IntBase.forward`, every
    done the cycle model's."""
    from skip2lora.fixed.base_int import shipped
    from skip2lora.fixed.fill_plan import plan_fill

    base = shipped("lenet5-fmnist")
    plan = [(p.lanes, p.simd) for p in plan_fill(base).layers]
    rng = np.random.default_rng(2)
    x = base.quantize_input((rng.random((2, *base.input_shape)) ** 3).astype(np.float32))
    want, want_taps = base.forward(x, taps=True)
    a = np.asarray(x, np.int64).transpose(0, 2, 3, 1).reshape(len(x), -1)  # NCHW -> NHWC
    for k, (layer, (lanes, simd)) in enumerate(zip(base.layers, plan)):
        np.testing.assert_array_equal(a, want_taps[k], err_msg=f"tap {k} ({layer.name}'s input)")
        a, done = run_layer(tmp_path, layer, lanes, simd, a, tag=layer.name)
        assert done == FC.layer_done_cycles(layer, lanes, simd, len(x)), layer.name
    np.testing.assert_array_equal(a, want)
