"""The integer base model (sw/fixed/base_int.py): exact against an int64 reference, its saturation,
calibration rule and determinism, cache codes against the host's quantizer, shapes and errors."""

import numpy as np
import pytest

from skip2lora.fixed import base_formats as BF
from skip2lora.fixed import formats as F
from skip2lora.fixed.base_int import IntBase, IntLayer, calibrate, fit_exponent, fold_layers, quantize_input
from skip2lora.fixed.model import Adapters, CacheEntries, JobConfig, predict, run_job
from skip2lora.fixed.quantize import choose_exponent, quantize
from skip2lora.nn.layers import BatchNorm, Dense, ReLU
from skip2lora.nn.network import Network, lenet5, mlp
from skip2lora.nn.pretrained import load_base

from small_model import CONFIG, data, small_base

FMNIST = BF.INPUT_FORMATS["lenet5-fmnist"]
Z_LO, Z_HI = -(1 << (BF.Z_BITS - 1)), (1 << (BF.Z_BITS - 1)) - 1


# -- an independent int64 reference ----------------------------------------------------------------
def ref_layer(layer: IntLayer, a: np.ndarray) -> np.ndarray:
    """Direct convolution / dense product in int64 (einsum, no BLAS), requantize, then pool."""
    w = np.asarray(layer.weight, np.int64)
    b = np.asarray(layer.bias, np.int64)
    a = np.asarray(a, np.int64)
    if layer.kind == "dense":
        acc = np.einsum("nj,oj->no", a.reshape(len(a), -1), w) + b
    else:
        k, p = layer.kernel, layer.padding
        c = layer.in_shape[2]
        ap = np.pad(a, ((0, 0), (p, p), (p, p), (0, 0)))
        oh, ow = ap.shape[1] - k + 1, ap.shape[2] - k + 1
        wk = w.reshape(-1, c, k, k)
        acc = np.zeros((len(a), oh, ow, w.shape[0]), np.int64) + b
        for ky in range(k):
            for kx in range(k):
                acc += np.einsum("nhwc,oc->nhwo", ap[:, ky:ky + oh, kx:kx + ow, :], wk[:, :, ky, kx])
    s = np.asarray(layer.shift, np.int64)
    half = np.where(s > 0, np.int64(1) << np.maximum(s - 1, 0), 0)
    y = np.clip((acc + half) >> s, layer.out_lo, layer.out_hi)
    if layer.pool:
        n, h, wd, o = y.shape
        y = y.reshape(n, h // 2, 2, wd // 2, 2, o).max(axis=(2, 4))
    return y


def ref_forward(base: IntBase, x):
    a = np.asarray(x, np.int64)
    if a.ndim == 4:
        a = a.transpose(0, 2, 3, 1)
    taps = []
    for layer in base.layers:
        taps.append(a.reshape(len(a), -1))
        a = ref_layer(layer, a)
    return a, taps


def random_layer(rng, *, big=False):
    kind = "dense" if big else rng.choice(["conv", "dense"])
    relu = bool(rng.integers(2))
    in_signed = bool(rng.integers(2))
    out_lo, out_hi = BF.act_range(not relu)
    if kind == "conv":
        c, o, k = int(rng.integers(1, 4)), int(rng.integers(1, 6)), int(rng.choice([1, 3, 5]))
        p = int(rng.integers(0, 3))
        pool = bool(rng.integers(2))
        h, w = (int(rng.integers(1, 5)) * 2 + k - 1 - 2 * p for _ in range(2))
        h, w = max(h, k), max(w, k)
        if (h + 2 * p - k + 1) % 2:
            h += 1
        if (w + 2 * p - k + 1) % 2:
            w += 1
        in_shape, fan_in = (h, w, c), c * k * k
    else:
        o, fan_in = int(rng.integers(1, 12)), (1200 if big else int(rng.integers(1, 40)))
        k = p = 0
        pool = False
        in_shape = (fan_in,)
    weight = rng.integers(-128, 128, (o, fan_in)).astype(np.int8)
    if big:
        weight[:] = -128
    bias = rng.integers(-(1 << 20), 1 << 20, o)
    shift = rng.integers(0, BF.SHIFT_MAX + 1, o)
    shift[0] = 0  # the no-shift case
    return IntLayer("rand", kind, in_shape, weight, bias, shift, rng.integers(-20, 0, o), -3, in_signed,
                    -2, out_lo, out_hi, relu, pool, k, p)


def random_input(rng, layer, n):
    lo, hi = BF.act_range(layer.in_signed)
    return rng.integers(lo, hi + 1, (n,) + tuple(layer.in_shape))


# -- exactness --------------------------------------------------------------------------------------
def test_random_layers_equal_the_int64_reference():
    rng = np.random.default_rng(0)
    for case in range(60):
        layer = random_layer(rng)
        a = random_input(rng, layer, 5)
        if case % 7 == 0:  # extreme inputs: every value at the top or bottom of its range
            a[:] = BF.act_range(layer.in_signed)[case % 2]
        assert layer.exact_dtype == np.float32
        np.testing.assert_array_equal(layer.apply(a), ref_layer(layer, a), err_msg=f"case {case}: {layer.to_dict()}")
        acc = layer.accumulate(a)
        assert acc.dtype == np.int64 and np.abs(acc).max() <= layer.acc_bound


def test_wide_accumulators_use_float64_and_stay_exact():
    rng = np.random.default_rng(1)
    layer = random_layer(rng, big=True)  # 1200 inputs, every weight -128: |acc| up to ~2**25
    assert layer.acc_bound >= 1 << 24 and layer.exact_dtype == np.float64
    a = random_input(rng, layer, 4)
    a[0] = BF.act_range(layer.in_signed)[1]
    np.testing.assert_array_equal(layer.accumulate(a), ref_layer(
        IntLayer(**{**layer.__dict__, "shift": np.zeros(layer.out_channels, np.int64), "out_lo": -(1 << 40),
                    "out_hi": 1 << 40, "pool": False}), a))
    np.testing.assert_array_equal(layer.apply(a), ref_layer(layer, a))


@pytest.fixture(scope="module")
def lenet_int():
    """The pretrained LeNet-5 calibrated on synthetic images (exactness needs no real data)."""
    net, _ = load_base("fmnist-rot0", pretrain_if_missing=False)
    rng = np.random.default_rng(2)
    x = (rng.random((48, 1, 28, 28)) ** 3).astype(np.float32)
    return net, calibrate(net, x, FMNIST, name="t"), x


def test_lenet5_equals_the_int64_reference(lenet_int):
    _, base, _ = lenet_int
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (40, 1, 28, 28)).astype(np.uint8)
    x[0] = 255
    x[1] = 0
    logits, taps = base.forward(x, taps=True)
    ref_logits, ref_taps = ref_forward(base, x)
    np.testing.assert_array_equal(logits, ref_logits)
    for t, r in zip(taps, ref_taps):
        np.testing.assert_array_equal(t, r)
    assert logits.dtype == np.int16 and all(t.dtype == np.int16 for t in taps)


def test_lenet5_geometry_and_cost(lenet_int):
    net, base, _ = lenet_int
    assert base.tap_dims == net.tap_dims == [784, 1176, 400, 120, 84]
    cost = base.cost()
    assert [r["macs"] for r in cost] == [117600, 240000, 48000, 10080, 840]
    assert sum(r["macs"] for r in cost) == 416520
    assert [r["weight_bytes"] for r in cost] == [150, 2400, 48000, 10080, 840]
    assert [r["pooled_out_bytes"] for r in cost] == [1176, 400, 120, 84, 20]
    assert all(r["acc_bits_layer"] <= r["acc_bits_format"] <= BF.ACC_BITS for r in cost)


def test_integer_forward_tracks_the_float_forward(lenet_int):
    net, base, x = lenet_int
    zf = net.predict_logits(x)
    zi = base.forward(base.quantize_input(x)) / 2.0 ** BF.Z_FRAC
    assert np.abs(zi - zf).max() < 0.05 * np.abs(zf).max()


# -- saturation -----------------------------------------------------------------------------------
def test_outputs_saturate_never_wrap():
    w = np.array([[127, 127], [-128, -128], [127, 127]], np.int8)
    common = dict(name="sat", kind="dense", in_shape=(2,), weight=w, bias=np.array([(1 << 23) - 1, 0, 0]),
                  shift=np.array([0, 0, 2]), acc_frac=np.array([-8, -8, -8]), in_frac=-8, in_signed=False,
                  out_frac=-8)
    relu = IntLayer(**common, out_lo=0, out_hi=255, relu=True, pool=False)
    y = relu.apply(np.array([[255, 255]]))
    assert y.tolist() == [[255, 0, 255]]  # huge -> 255, negative -> 0 (ReLU), 64770 >> 2 -> 255
    z = IntLayer(**common, out_lo=Z_LO, out_hi=Z_HI, relu=False, pool=False)
    assert z.apply(np.array([[255, 255]])).tolist() == [[Z_HI, Z_LO, 16193]]
    np.testing.assert_array_equal(z.apply(np.array([[255, 255]])), ref_layer(z, np.array([[255, 255]])))


def test_round_half_up_at_ties():
    layer = IntLayer("tie", "dense", (1,), np.array([[1]], np.int8), np.array([0]), np.array([2]), np.array([0]),
                     0, True, 0, -128, 127, False, False)
    a = np.array([[-6], [-5], [-2], [2], [6], [5]])  # /4: -1.5, -1.25, -0.5, 0.5, 1.5, 1.25
    assert layer.apply(a).ravel().tolist() == [-1, -1, 0, 1, 2, 1]


# -- calibration ------------------------------------------------------------------------------------
def test_calibration_is_deterministic(lenet_int):
    net, base, x = lenet_int
    again = calibrate(net, x, FMNIST, name="t")
    for a, b in zip(base.layers, again.layers):
        for field in ("weight", "bias", "shift", "acc_frac"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
        assert a.to_dict() == b.to_dict()


def test_calibration_leaves_one_octave_of_headroom(lenet_int):
    """Each hidden activation's exponent is the smallest that saturates nothing, one octave coarser:
    on the calibration samples its largest value lands in [64, 128] of 0..255."""
    _, base, x = lenet_int
    _, taps = base.forward(base.quantize_input(x), taps=True)
    for layer, t in zip(base.layers[:-1], taps[1:]):
        assert 64 <= t.max() <= 128, (layer.name, t.max())
    assert all(nxt.in_frac == layer.out_frac for layer, nxt in zip(base.layers, base.layers[1:]))
    assert base.layers[-1].out_frac == -BF.Z_FRAC
    assert all(np.all(layer.shift == layer.out_frac - layer.acc_frac) for layer in base.layers)


def test_weights_use_the_int8_range_per_channel(lenet_int):
    _, base, _ = lenet_int
    for layer in base.layers:
        peak = np.abs(np.asarray(layer.weight, np.int64)).max(axis=1)
        # The finest exponent that fits: each channel's largest weight (or its bias) fills the range.
        assert np.all((peak >= 64) | (np.abs(layer.bias) >= 1 << (BF.BIAS_BITS - 2)) | (layer.shift == BF.SHIFT_MAX)), \
            layer.name


def test_fit_exponent():
    assert fit_exponent(0.0, 1.0, 0, 255) == -7  # 1.0 * 2**7 = 128 fits, 256 does not
    assert fit_exponent(0.0, 255 * 2.0 ** -8, 0, 255) == -8
    assert fit_exponent(-1.0, 0.5, -128, 127) == -7
    assert fit_exponent(0.0, 0.0, 0, 255) is None
    with pytest.raises(ValueError, match="NaN"):
        fit_exponent(0.0, np.nan, 0, 255)


def test_batch_norm_is_folded_into_the_layer_before():
    net = small_base(seed=3)
    rng = np.random.default_rng(4)
    net.params["bn1.running_mean"] = rng.normal(0, 1, 7).astype(np.float32)
    net.params["bn1.running_var"] = rng.uniform(0.5, 2, 7).astype(np.float32)
    net.params["bn1.gamma"] = rng.uniform(0.5, 1.5, 7).astype(np.float32)
    specs = fold_layers(net)
    assert [s["relu"] for s in specs] == [True, True, False]
    x, _ = data(32)
    h = np.maximum(x @ specs[0]["w"].T + specs[0]["b"], 0)
    h = np.maximum(h @ specs[1]["w"].T + specs[1]["b"], 0)
    np.testing.assert_allclose(h @ specs[2]["w"].T + specs[2]["b"], net.predict_logits(x), rtol=1e-4, atol=1e-4)


# -- the cache ------------------------------------------------------------------------------------
def test_codes_equal_the_host_quantizer_codes(lenet_int):
    _, base, _ = lenet_int
    rng = np.random.default_rng(5)
    taps = [rng.integers(*BF.act_range(s), endpoint=True, size=(30, d)).astype(np.int16)
            for d, s in zip(base.tap_dims, base.tap_signed)]
    for trial in range(4):
        exps = [int(rng.integers(max(f, BF.EXP_MIN), BF.EXP_MAX + 1)) for f in base.tap_fracs]
        codes = base.codes(taps, exps)
        want = np.concatenate([quantize(t * 2.0 ** f, e, s) for t, e, f, s in
                               zip(taps, exps, base.tap_fracs, base.tap_signed)], axis=1)
        np.testing.assert_array_equal(codes, want)
        assert codes.dtype == np.int8


@pytest.mark.parametrize("signed", [False, True])
def test_exponents_follow_choose_exponent(signed):
    """The histogram rule picks what quantize.choose_exponent picks on the same values (when its
    choice is not finer than the tap's LSB, where every finer scale only clips more)."""
    layer = IntLayer("x", "dense", (8,), np.ones((3, 8), np.int8), np.zeros(3, np.int64), np.zeros(3, np.int64),
                     np.zeros(3, np.int64), -5, signed, -8, Z_LO, Z_HI, False, False)
    base = IntBase([layer], BF.InputFormat(signed, 2.0 ** -5, -5, "test"), (8,), 3)
    rng = np.random.default_rng(6 + signed)
    lo, hi = BF.act_range(signed)
    checked = 0
    for trial in range(40):
        spread = rng.uniform(2, 120)
        t = np.clip(np.round(rng.exponential(spread, (500, 8)) * (rng.choice([-1, 1], (500, 8)) if signed else 1)),
                    lo, hi).astype(np.int16)
        (e,) = base.fit_exponents([t])
        host = choose_exponent(t * 2.0 ** -5, signed)
        assert e >= -5
        if host >= -5:
            assert e == host, (trial, spread)
            checked += 1
        else:  # the host went finer than the LSB: no error at the LSB either
            assert np.array_equal(base.codes([t], [e]) * 2.0 ** e, t * 2.0 ** -5)
    assert checked >= 30


def test_exponents_never_finer_than_the_lsb_and_within_range():
    layer = IntLayer("x", "dense", (4,), np.ones((3, 4), np.int8), np.zeros(3, np.int64), np.zeros(3, np.int64),
                     np.zeros(3, np.int64), 3, False, -8, Z_LO, Z_HI, False, False)
    base = IntBase([layer], BF.InputFormat(False, 8.0, 3, "test"), (4,), 3)
    t = np.array([[0, 1, 2, 3]], np.int16)
    assert base.fit_exponents([t]) == (3,)
    big = np.full((1, 4), 255, np.int16)  # 255 * 8 = 2040 > 15 * 2**4: clipped at the largest scale
    assert base.fit_exponents([big]) == (BF.EXP_MAX,)


def test_encode_gives_valid_cache_entries_and_runs_a_job():
    net = small_base(seed=0)
    x, y = data(40)
    fmt = BF.InputFormat(True, 2.0 ** -5, -5, "test: normal features")
    base = calibrate(net, x, fmt)
    xq = base.quantize_input(x)
    codes, logits, exps, signed = base.encode(xq)
    g = CONFIG.geometry
    assert codes.shape == (40, g.total_dim) and codes.dtype == np.int8
    assert logits.shape == (40, 3) and logits.dtype == np.int16
    assert len(exps) == len(signed) == 3 and signed == (True, False, False)
    cache = CacheEntries(codes, logits, y).validate(g, signed)
    job = JobConfig(40, 8, 3, F.lr_register(0.1), exps, signed).validate(g, 40)
    result = run_job(g, cache, Adapters.lora_init(g, 0), job)
    assert predict(g, codes, logits, result.adapters, exps).shape == (40,)
    # Later samples reuse the cache's exponents; the same samples give the same entries.
    again = base.encode(xq[:10], exps)
    np.testing.assert_array_equal(again[0], codes[:10])
    np.testing.assert_array_equal(again[1], logits[:10])
    assert again[2] == exps


def test_save_and_load_round_trip(lenet_int, tmp_path):
    _, base, x = lenet_int
    path = tmp_path / "int.npz"
    base.save(path)
    loaded = IntBase.load(path)
    xq = base.quantize_input(x)
    np.testing.assert_array_equal(loaded.forward(xq), base.forward(xq))
    assert loaded.tap_fracs == base.tap_fracs and loaded.calibration == base.calibration
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not an integer base model file"):
        IntBase.load(tmp_path / "bad.npz")


# -- the input format -------------------------------------------------------------------------------
def test_pixel_bytes_round_trip():
    v = np.arange(256, dtype=np.uint8)
    x = (v.astype(np.float32) / np.float32(255.0)).reshape(1, 1, 16, 16)
    x = np.broadcast_to(x, (1, 1, 16, 16))
    q = quantize_input(x, FMNIST, (1, 16, 16))
    assert q.dtype == np.uint8
    np.testing.assert_array_equal(q.ravel(), v)
    assert quantize_input(np.array([[1.5, -0.2]]), FMNIST, (2,)).tolist() == [[255, 0]]  # saturates
    har = BF.INPUT_FORMATS["mlp-har"]
    assert quantize_input(np.array([[-1.0, 1.0, 0.004]]), har, (3,)).tolist() == [[-128, 127, 1]]


# -- errors ---------------------------------------------------------------------------------------
def test_clear_errors_on_bad_input(lenet_int):
    _, base, x = lenet_int
    xq = base.quantize_input(x[:2])
    with pytest.raises(TypeError, match="quantize_input"):
        base.forward(x[:2])
    with pytest.raises(ValueError, match=r"shape \(n, 1, 28, 28\)"):
        base.forward(xq[:, 0])
    with pytest.raises(ValueError, match="uint8"):
        base.forward(xq.astype(np.int16) + 200)
    bad = x[:2].copy()
    bad[1, 0, 3, 3] = np.nan
    with pytest.raises(ValueError, match="sample 1 contains NaN"):
        base.quantize_input(bad)
    with pytest.raises(TypeError, match="numbers"):
        base.quantize_input(np.full((1, 1, 28, 28), "a"))
    _, taps = base.forward(xq, taps=True)
    with pytest.raises(ValueError, match="exponent must be in"):
        base.codes(taps, [BF.EXP_MAX + 1] * 5)
    with pytest.raises(ValueError, match="at least the tap's LSB"):
        base.codes(taps, [base.tap_fracs[0] - 1] + [0] * 4)
    with pytest.raises(ValueError, match="expected 5 taps"):
        base.codes(taps[:4], [0] * 4)
    with pytest.raises(ValueError, match="zero samples"):
        base.encode(xq[:0])
    with pytest.raises(ValueError, match="at least one sample"):
        calibrate(lenet5().init(0), x[:0], FMNIST)


def test_unsupported_networks_are_refused():
    bn_after_relu = Network("mlp", [Dense("fc1", 4, 3), ReLU("r"), BatchNorm("bn", 3), Dense("fc2", 3, 2)], (4,), 2,
                            {"arch": "custom"}).init(0)
    with pytest.raises(ValueError, match="batch norm must directly follow a weight layer"):
        fold_layers(bn_after_relu)
    relu_last = Network("mlp", [Dense("fc1", 4, 2), ReLU("r")], (4,), 2, {"arch": "custom"}).init(0)
    with pytest.raises(ValueError, match="last weight layer"):
        fold_layers(relu_last)
    with pytest.raises(ValueError, match="shifts must be in"):
        IntLayer("s", "dense", (1,), np.ones((1, 1), np.int8), np.zeros(1, np.int64), np.array([32]),
                 np.zeros(1, np.int64), 0, False, 0, 0, 255, True, False)
    with pytest.raises(ValueError, match="biases exceed"):
        IntLayer("b", "dense", (1,), np.ones((1, 1), np.int8), np.array([1 << 23]), np.zeros(1, np.int64),
                 np.zeros(1, np.int64), 0, False, 0, 0, 255, True, False)


def test_mlp_calibration_shapes():
    net = mlp(20, 4, hidden=16).init(0)
    x = np.random.default_rng(7).uniform(-1, 1, (64, 20)).astype(np.float32)
    base = calibrate(net, x, BF.INPUT_FORMATS["mlp-har"])
    assert base.tap_dims == net.tap_dims == [20, 16, 16] and base.tap_signed == [True, False, False]
    assert base.tap_fracs[0] == -7
    np.testing.assert_array_equal(base.forward(base.quantize_input(x)), ref_forward(base, base.quantize_input(x))[0])


# -- real data (slow) --------------------------------------------------------------------------------
@pytest.mark.slow
def test_fmnist_integer_base_accuracy_within_half_a_point():
    from skip2lora.data import load_dataset
    from skip2lora.fixed.base_int import from_pretrained

    base = from_pretrained("fmnist-rot75")
    net, _ = load_base("fmnist-rot75")
    ds = load_dataset("fmnist-rot75")
    for split in (ds.pretrain_test, ds.test):
        acc_int = float((base.predict(base.quantize_input(split.x)) == split.y).mean())
        assert abs(acc_int - net.accuracy(split.x, split.y)) <= 0.005


def test_four_octaves_below_the_top_are_tried():
    """One outlier puts the top scale at 2**5 LSBs; the bulk of the values wants 2**1, the last candidate."""
    layer = IntLayer("x", "dense", (4,), np.ones((3, 4), np.int8), np.zeros(3, np.int64), np.zeros(3, np.int64),
                     np.zeros(3, np.int64), -6, False, -8, Z_LO, Z_HI, False, False)
    base = IntBase([layer], BF.InputFormat(False, 2.0 ** -6, -6, "test"), (4,), 3)
    t = np.tile(np.arange(1, 31, dtype=np.int16), 400)[:12000].reshape(3000, 4)
    t[0, 0] = 250
    (e,) = base.fit_exponents([t])
    assert e == -6 + 1 == choose_exponent(t * 2.0 ** -6, False)


SHIPPED = [("lenet5-fmnist", "fmnist-rot0", (-4, -2, -2, -1, -1)), ("mlp-har", "har", (-3, -2, -2)),
           ("mlp-fan-damage1", "fan-damage1", (-4, -2, -2)), ("mlp-fan-damage2", "fan-damage2", (-4, -2, -2))]


@pytest.mark.slow
@pytest.mark.parametrize("key,dataset,exponents", SHIPPED, ids=[k for k, _, _ in SHIPPED])
def test_shipped_int_base_is_the_calibration(key, dataset, exponents):
    """sw/pretrained/<key>-int8.npz (the weights of a PL fill, LeNet-5's in the KV260 build) is
    `from_pretrained` of the pretrained base on its first source-domain training samples (10,000
    images; HAR's and Fan's whole pretraining splits), and its cache exponents are
    `calibration_exponents` of the same samples."""
    from skip2lora.data import load_dataset
    from skip2lora.fixed.base_int import calibration_exponents, from_pretrained, shipped

    got, want = shipped(key), from_pretrained(dataset)
    assert len(got.layers) == len(want.layers)
    for a, b in zip(got.layers, want.layers):
        for field in ("weight", "bias", "shift", "acc_frac"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert got.tap_fracs == want.tap_fracs and got.tap_signed == want.tap_signed
    x = load_dataset(dataset).pretrain.x[:want.calibration["samples"]]
    assert tuple(got.calibration["cache_exponents"]) == calibration_exponents(want, x) == exponents


def test_an_unknown_shipped_base_names_the_shipped_ones():
    from skip2lora.fixed.base_int import shipped

    with pytest.raises(ValueError, match="no shipped integer base 'nope'; shipped: lenet5-fmnist, "
                                         "mlp-fan-damage1, mlp-fan-damage2, mlp-har$"):
        shipped("nope")
