"""The PL fill through the driver: `Backend.fill` (the FILL command) and `Backend.predict_pl` (PREDICT)
on the fixed backend and on the RTL (the sim backend, Verilator; the virtual KV260),
`AcceleratorConfig.fill_base`, and `Session(fill=...)`, whose predictions run on the PL.

The fast tests use the fixed backend; the RTL ones (``--runslow``) export and build the
``lenet5-fill`` configuration once (about 2 minutes, cached under sim_build/) and share one
simulation.
"""

import dataclasses

import numpy as np
import pytest

from skip2lora.driver import FixedBackend, Session
from skip2lora.driver.backend import expected_fill_cycles, expected_predict_cycles, fill_images, fill_plan_of
from skip2lora.fixed import fill_plan as FP
from skip2lora.fixed.config import CONFIGS, KV260, LENET5_FILL, LENET5_GEOMETRY, SMALL, AcceleratorConfig
from skip2lora.fixed.model import Adapters, CacheEntries, Geometry, JobConfig, forward, predict
from skip2lora.fixed.packing import Layout, pack_cache_for

N = 6  # images in the fast tests' fills


@pytest.fixture(scope="module")
def pl_base():
    return FixedBackend(LENET5_FILL).pl_base


@pytest.fixture(scope="module")
def samples():
    """Float images in the pretraining data's range (0..1), their labels."""
    rng = np.random.default_rng(3)
    x = rng.random((12, 1, 28, 28)).astype(np.float32) ** 2
    return x, rng.integers(0, 10, len(x)).astype(np.int64)


@pytest.fixture(scope="module")
def lenet():
    from skip2lora.nn.pretrained import _load, package_dir

    return _load(package_dir(), "lenet5-fmnist")[0]


def exponents(base):
    return tuple(base.calibration["cache_exponents"])


def encoded(base, x, y, exps=None):
    """What the host makes for these samples: `IntBase.encode` at the cache exponents."""
    codes, logits, _, _ = base.encode(base.quantize_input(x), exponents(base) if exps is None else exps)
    return CacheEntries(codes, logits, y)


def job(base, n, epochs=2, batch=2, exps=None):
    return JobConfig(n, batch, epochs, 1 << 10, exponents(base) if exps is None else exps, tuple(base.tap_signed),
                     seed=7)


def one_line(exc_info):
    text = str(exc_info.value)
    assert "\n" not in text and text
    return text


# -- the configuration -------------------------------------------------------------------------------

#: LeNet-5's geometry without a PL base (the KV260 build less its FILL): a build whose fills are the host's
HOST_ONLY = dataclasses.replace(KV260, name="kv260", fill_base="")


def test_fill_base_is_part_of_the_configuration():
    assert LENET5_FILL.fill_base == "lenet5-fmnist" and CONFIGS["lenet5-fill"] is LENET5_FILL
    assert KV260.fill_base == "lenet5-fmnist" and SMALL.fill_base == ""  # the KV260 build carries the PL base
    assert LENET5_FILL.fill_geometry == LENET5_GEOMETRY == KV260.fill_geometry and SMALL.fill_geometry is None
    assert AcceleratorConfig.from_dict(LENET5_FILL.to_dict()) == LENET5_FILL
    assert AcceleratorConfig.from_dict(KV260.to_dict()) == KV260
    assert AcceleratorConfig.from_dict({k: v for k, v in KV260.to_dict().items() if k != "fill_base"}) == HOST_ONLY
    with pytest.raises(ValueError, match="fill_base 'nope': no shipped integer base 'nope'; shipped: lenet5-fmnist"):
        dataclasses.replace(LENET5_FILL, fill_base="nope")
    with pytest.raises(ValueError, match="fill_base 'lenet5-fmnist': the x build runs at most 3 taps"):
        AcceleratorConfig("x", SMALL.geometry, 4, 8, fill_base="lenet5-fmnist")
    with pytest.raises(TypeError, match="fill_base must be"):
        dataclasses.replace(LENET5_FILL, fill_base=None)


def test_the_vivado_top_builds_the_core_with_the_pl_base(monkeypatch):
    """hw/top.py gives the core the configuration's shipped base (checked without elaborating it)."""
    from skip2lora.hw import top

    seen = []

    class Core:
        def __init__(self, config, fill_base=None):
            seen.append(fill_base)
            raise StopIteration

    monkeypatch.setattr(top, "Skip2LoRACore", Core)
    for config in (LENET5_FILL, SMALL):
        with pytest.raises(StopIteration):
            top.Skip2LoRATop(config).elaborate(None)
    assert seen[0].name == "lenet5-fmnist-int8" and seen[1] is None


# -- the fixed backend ---------------------------------------------------------------------------------

def test_fixed_fill_is_encode_and_load_cache_bit_for_bit(pl_base, samples):
    """Two host-made entries, then a fill of N images: the cache (its packed bytes), a job's adapters,
    statistics and cycles equal those of load_cache of `IntBase.encode`'s entries; the fill's cycles
    are `fill_plan.fill_command_cycles` (first beat the cycle after the command)."""
    x, y = samples
    filled, loaded = FixedBackend(LENET5_FILL), FixedBackend(LENET5_FILL)
    first = encoded(pl_base, x[:2], y[:2])
    filled.load_cache(first)
    report = filled.fill(fill_images(pl_base, pl_base.quantize_input(x[2:2 + N])), y[2:2 + N], exponents(pl_base))
    assert filled.n_loaded == 2 + N
    loaded.load_cache(first)
    loaded.load_cache(encoded(pl_base, x[2:2 + N], y[2:2 + N]))
    layout = Layout(LENET5_GEOMETRY, 32)
    a, b = (pack_cache_for(layout, layout, CacheEntries.concatenate(be._cache)) for be in (filled, loaded))
    assert a.tobytes() == b.tobytes()
    assert report == {"fill_cycles": FP.fill_command_cycles(pl_base, FP.plan_fill(pl_base), N, 128, 1), "images": N}
    assert report["fill_cycles"] == expected_fill_cycles(LENET5_FILL, N)
    init = Adapters.lora_init(LENET5_GEOMETRY, 1)
    results = []
    for be in (filled, loaded):
        be.load_adapters(init)
        results.append((be.run(job(pl_base, 2 + N)), be.read_adapters()))
    assert results[0][0] == results[1][0] and results[0][1].equals(results[1][1])


def test_fill_images_is_the_nhwc_byte_order(pl_base, samples):
    x, _ = samples
    q = pl_base.quantize_input(x[:2])
    img = fill_images(pl_base, q)
    assert img.dtype == np.uint8 and img.shape == (2, 784)
    assert np.array_equal(img, q.transpose(0, 2, 3, 1).reshape(2, -1))


def test_fill_errors_are_one_line(pl_base, samples):
    x, y = samples
    images = fill_images(pl_base, pl_base.quantize_input(x[:3]))
    exps = exponents(pl_base)
    with pytest.raises(ValueError) as e:
        FixedBackend(SMALL).fill(images, y[:3], exps)
    assert one_line(e).startswith("the small build has no PL base (config.fill_base is empty): fill needs one")
    be = FixedBackend(LENET5_FILL)
    assert FixedBackend(HOST_ONLY).pl_base is None and be.pl_base.name == "lenet5-fmnist-int8"
    be.set_geometry(Geometry((784, 1176, 400, 120, 84), 4, 9))
    with pytest.raises(ValueError) as e:
        be.fill(images, y[:3] % 9, exps)
    assert "fills entries of taps (784, 1176, 400, 120, 84) and 10 classes; the backend runs taps" in one_line(e)
    be.set_geometry(Geometry(LENET5_GEOMETRY.dims, 2, 10))  # another rank: fine
    be.fill(images, y[:3], exps)
    for bad, what in ((images.astype(np.int16), "images must be uint8 of shape (n, 784)"),
                      (images[:, :100], "images must be uint8 of shape (n, 784)")):
        with pytest.raises(ValueError) as e:
            be.fill(bad, y[:3], exps)
        assert what in one_line(e)
    with pytest.raises(ValueError) as e:
        be.fill(images, y[:3] + 10, exps)
    assert "labels must be in [0, 10)" in one_line(e)
    with pytest.raises(ValueError) as e:
        be.fill(images, y[:3], (-10,) + exps[1:])  # below tap 0's LSB exponent (-8): a negative shift
    assert "tap 0: the PL base's cache exponent must be in [-8, 4]" in one_line(e)
    with pytest.raises(ValueError) as e:
        be.fill(images, y[:3], exps[:4])
    assert "expected 5 tap exponents, got 4" in one_line(e)
    assert be.n_loaded == 3  # nothing half-filled


def test_filled_entries_stay_on_chip(pl_base, samples):
    """With a DDR path, a fill placed in DDR is refused, and so is a load that would move filled
    entries to DDR (they exist on chip only); cache='chip' runs as the on-chip cache allows."""
    x, y = samples
    config = AcceleratorConfig("fill-ddr", LENET5_GEOMETRY, 32, 4, ddr_samples=64, ddr_batch=8,
                               fill_base="lenet5-fmnist")
    images = fill_images(pl_base, pl_base.quantize_input(x[:5]))
    be = FixedBackend(config)
    with pytest.raises(ValueError) as e:
        be.fill(images, y[:5], exponents(pl_base))
    assert "a PL fill writes the on-chip cache only (4 entries; 0 loaded): 5 more would be placed in DDR" in one_line(e)
    be.fill(images[:3], y[:3], exponents(pl_base))
    with pytest.raises(ValueError) as e:
        be.load_cache(encoded(pl_base, x[3:5], y[3:5]))
    assert "the cache holds 3 entries the PL base filled, which exist on chip only" in one_line(e)
    be.load_cache(encoded(pl_base, x[3:4], y[3:4]))
    assert be.n_loaded == 4 and be.cache_mode == "chip"
    be.clear_cache()
    be.load_cache(encoded(pl_base, x[:5], y[:5]))  # host-made entries go to DDR as before
    assert be.cache_mode == "ddr"


# -- the Session -----------------------------------------------------------------------------------------

def test_session_fill_choices(lenet, pl_base):
    pl = Session(lenet, FixedBackend(LENET5_FILL))
    assert pl.fill == "pl" and pl.int_base is not None
    assert Session(lenet, FixedBackend(HOST_ONLY)).fill == "host"  # no PL base
    assert Session(lenet, FixedBackend(KV260)).fill == "pl"  # the KV260 build carries it
    assert Session(lenet, FixedBackend(LENET5_FILL), fill="host").fill == "host"
    assert Session(pl_base, FixedBackend(LENET5_FILL)).fill == "pl"  # the integer base itself
    other = lenet.__class__.__new__(lenet.__class__)
    other.__dict__.update(lenet.__dict__)
    other.params = dict(lenet.params, **{k: lenet.params[k] * 1.01 for k in list(lenet.params)[:1]})
    assert Session(other, FixedBackend(LENET5_FILL)).fill == "host"  # other weights: not the PL base's model
    assert Session(other, FixedBackend(LENET5_FILL), fill="pl").fill == "pl"  # asked for (same geometry)
    with pytest.raises(ValueError) as e:
        Session(lenet, FixedBackend(HOST_ONLY), fill="pl")
    assert one_line(e) == ("fill='pl' needs a backend with a PL base; the kv260 build has none (config.fill_base): "
                           "use fill='host'")
    for bad in ("PL", "ddr", None, 1):
        with pytest.raises(ValueError) as e:
            Session(lenet, FixedBackend(LENET5_FILL), fill=bad)
        assert one_line(e).startswith("fill must be one of 'auto', 'pl', 'host', not")
    with pytest.raises(ValueError) as e:
        Session(pl_base, FixedBackend(HOST_ONLY))
    assert "fills the cache on the PL only" in one_line(e)


def test_session_auto_fills_on_the_host_when_the_first_samples_need_the_ddr_cache(lenet):
    """PL-filled entries exist on chip only: on the KV260 build, fill="auto" turns to the host fill
    when the first samples go to the DDR cache; fill="pl" refuses them in one line, and once PL
    entries are loaded, more that would move the cache to DDR are refused."""
    n = KV260.cache_depth + 1
    x = np.random.default_rng(5).random((n, 1, 28, 28)).astype(np.float32)
    y = np.arange(n) % 10
    s = Session(lenet, FixedBackend(KV260))
    assert s.fill == "pl"
    s.add_samples(x, y)
    assert s.fill == "host" and s.int_base is None and s.backend.cache_mode == "ddr"
    assert s.base_forward_samples == n  # the float base ran on the host, its scales fitted on these samples
    with pytest.raises(ValueError) as e:
        Session(lenet, FixedBackend(KV260), fill="pl").add_samples(x, y)
    assert one_line(e).startswith("a PL fill writes the on-chip cache only (1024 entries; 0 loaded)")
    s = Session(lenet, FixedBackend(KV260))
    s.add_samples(x[:8], y[:8])
    assert s.fill == "pl"
    with pytest.raises(ValueError) as e:
        s.add_samples(x[8:], y[8:])
    assert one_line(e).startswith("a PL fill writes the on-chip cache only (1024 entries; 8 loaded)")


def test_session_pl_fill_trains_and_predicts_with_the_integer_base(lenet, pl_base, samples):
    """fill="pl": the cache holds `IntBase.encode`'s entries at the calibration exponents, the job is
    the one trained on them, and predictions are the integer base's forward with the adapters."""
    x, y = samples
    s = Session(lenet, FixedBackend(LENET5_FILL), seed=2)
    assert s.add_samples(x[:4], y[:4]) == 4 and s.add_samples(x[4:8], y[4:8]) == 8
    assert s.base_forward_samples == 0  # the host ran no base forward
    assert s.quantizer.exponents == list(exponents(pl_base))
    expected = encoded(pl_base, x[:8], y[:8])
    held = CacheEntries.concatenate(s.backend._cache)
    assert np.array_equal(held.codes, expected.codes) and np.array_equal(held.logits, expected.logits)
    report = s.finetune(epochs=2, batch=4, lr=0.03)
    assert report["fill"] == "pl"
    assert report["fill_cycles"] == 2 * expected_fill_cycles(LENET5_FILL, 4)
    # the same job on host-loaded integer entries
    ref = FixedBackend(LENET5_FILL)
    ref.load_cache(expected)
    ref.load_adapters(Adapters.lora_init(LENET5_GEOMETRY, 2))
    ref_report = ref.run(s.job(epochs=2, batch=4, lr=0.03))
    adapters = s.adapters
    assert adapters.equals(ref.read_adapters()) and ref_report["correct"] == report["correct"]
    test = encoded(pl_base, x[8:], y[8:])
    want = predict(LENET5_GEOMETRY, test.codes, test.logits, adapters, exponents(pl_base))
    assert np.array_equal(s.predict(x[8:]), want)
    assert s.accuracy(x[8:], y[8:]) == float((want == y[8:]).mean())
    host = Session(lenet, FixedBackend(LENET5_FILL), fill="host")
    host.add_samples(x[:4], y[:4])
    assert host.finetune(epochs=1, batch=4)["fill"] == "host" and host.base_forward_samples == 4


def trained_adapters(seed=5):
    """Adapters with every weight nonzero (a trained model's look), so y differs from z."""
    rng = np.random.default_rng(seed)
    init = Adapters.lora_init(LENET5_GEOMETRY, 3)
    return Adapters([rng.integers(-3000, 3000, a.shape).astype(np.int16) for a in init.a],
                    [rng.integers(-3000, 3000, b.shape).astype(np.int16) for b in init.b])


def test_fixed_predict_pl_is_the_models_forward(pl_base, samples):
    """`predict_pl`: y of `fixed.model.forward` of `IntBase.encode`'s entries under the adapters
    held, its argmax, the labels' count, PREDICT_CYCLES the cycle model's; the cache stays."""
    x, y = samples
    be = FixedBackend(LENET5_FILL)
    adapters = trained_adapters()
    be.load_adapters(adapters)
    be.fill(fill_images(pl_base, pl_base.quantize_input(x[:2])), y[:2], exponents(pl_base))
    images = fill_images(pl_base, pl_base.quantize_input(x))
    out = be.predict_pl(images, y, exponents(pl_base))
    e = encoded(pl_base, x, y)
    want = forward(LENET5_GEOMETRY, e.codes, e.logits, adapters, exponents(pl_base))
    assert np.array_equal(out["y"], want) and np.array_equal(out["classes"], want.argmax(axis=1))
    assert out["correct"] == int((want.argmax(axis=1) == y).sum()) and out["images"] == len(x)
    assert out["predict_cycles"] == expected_predict_cycles(LENET5_FILL, len(x))
    assert be.n_loaded == 2 and be.read_adapters().equals(adapters)
    assert be.predict_pl(images)["correct"] is None  # no labels; the calibration exponents by default


def test_predict_pl_errors_are_one_line(pl_base, samples):
    x, y = samples
    images = fill_images(pl_base, pl_base.quantize_input(x[:2]))
    with pytest.raises(RuntimeError, match="load adapters before predicting"):
        FixedBackend(LENET5_FILL).predict_pl(images)
    with pytest.raises(ValueError, match="has no PL base"):
        FixedBackend(SMALL).predict_pl(images)
    be = FixedBackend(LENET5_FILL)
    be.load_adapters(trained_adapters())
    with pytest.raises(ValueError, match=r"images must be uint8 of shape \(n, 784\)"):
        be.predict_pl(images[:, :10])
    with pytest.raises(ValueError, match=r"labels must be in \[0, 10\)"):
        be.predict_pl(images, np.array([0, 12]))


def test_session_predicts_on_the_pl_and_on_the_host_alike(lenet, pl_base, samples):
    """A PL-filled session's `logits` run `predict_pl` (``last_prediction`` says so), the same
    numbers as ``on="host"``; ``on="pl"`` where it cannot is one error naming why."""
    x, y = samples
    s = Session(lenet, FixedBackend(LENET5_FILL), seed=2)
    s.add_samples(x[:8], y[:8])
    s.finetune(epochs=2, batch=4, lr=0.03)
    pl = s.logits(x)
    assert s.last_prediction == {"on": "pl", "images": len(x),
                                 "predict_cycles": expected_predict_cycles(LENET5_FILL, len(x))}
    host = s.logits(x, on="host")
    assert s.last_prediction["on"] == "host" and np.array_equal(pl, host)
    assert np.array_equal(s.predict(x), host.argmax(axis=1))
    assert s.accuracy(x, y) == s.accuracy(x, y, on="host")
    with pytest.raises(ValueError, match="the PL predicts with the adapters the backend holds"):
        s.logits(x, s.adapters, on="pl")
    with pytest.raises(ValueError, match="on must be one of"):
        s.logits(x, on="fpga")
    h = Session(lenet, FixedBackend(LENET5_FILL), fill="host")
    h.add_samples(x[:4], y[:4])
    with pytest.raises(ValueError, match="fills its cache on the host"):
        h.predict(x, on="pl")


def test_session_pl_fill_checks_inputs_as_the_host_fill_does(lenet, samples):
    from skip2lora.driver import InputRangeError

    x, y = samples
    s = Session(lenet, FixedBackend(LENET5_FILL))
    with pytest.raises(InputRangeError):
        s.add_samples(x[:2] * 255, y[:2])
    with pytest.raises(ValueError, match="label 10 is out of range"):
        s.add_samples(x[:2], np.array([0, 10]))
    with pytest.raises(ValueError, match="the on-chip cache holds 64 entries: 0 are loaded, 65 more do not fit"):
        s.add_samples(np.zeros((65, 1, 28, 28), np.float32), np.zeros(65, np.int64))
    assert s.n_loaded == 0


# -- the RTL (Verilator) -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sim():
    from skip2lora.sim.runner import require_simulator

    require_simulator()
    from skip2lora.driver.sim_backend import SimBackend

    with SimBackend(LENET5_FILL) as backend:
        yield backend


@pytest.mark.slow
def test_sim_fill_equals_the_fixed_backend(sim, pl_base, samples):
    """On the RTL: two host-made entries, fills of 3 and 1 images, a job: adapters, statistics and
    cycles equal the fixed backend's. FILL_CYCLES = `fill_command_cycles` plus the wait for the
    stream's first beat: the simulation link offers it a fixed few cycles after the CTRL write (the
    fixed backend reports no wait), the same offset for every fill."""
    x, y = samples
    fixed = FixedBackend(LENET5_FILL)
    sim.clear_cache()
    exps = exponents(pl_base)
    images = fill_images(pl_base, pl_base.quantize_input(x[:6]))
    first = encoded(pl_base, x[6:8], y[6:8])
    init = Adapters.lora_init(LENET5_GEOMETRY, 5)
    out = {}
    for be in (fixed, sim):
        be.load_cache(first)
        fills = [be.fill(images[:3], y[:3], exps), be.fill(images[3:4], y[3:4], exps)]
        assert be.n_loaded == 6
        be.load_adapters(init)
        out[be.name] = (fills, be.run(job(pl_base, 6, epochs=2, batch=2)), be.read_adapters())
    (ffix, rfix, afix), (fsim, rsim, asim) = out["fixed"], out["sim"]
    assert asim.equals(afix)
    assert {k: v for k, v in rsim.items() if k != "first_epoch"} == rfix
    # FILL_CYCLES of the fixed backend: `fill_command_cycles` with no wait for the first beat; the
    # link's offset is the wait (`tests/test_hw_fill_core.py` pins the wait against the RTL)
    assert [f["fill_cycles"] for f in ffix] == [FP.fill_command_cycles(pl_base, fill_plan_of(LENET5_FILL), n, 128)
                                               for n in (3, 1)]
    offsets = {s["fill_cycles"] - f["fill_cycles"] for s, f in zip(fsim, ffix)}
    assert len(offsets) == 1 and 0 <= offsets.pop() < 16


@pytest.mark.slow
def test_sim_fill_errors(sim, pl_base, samples):
    """A register the PL base refuses (a negative shift) is the accelerator's BAD_CONFIG, one line, and
    the backend goes on; a build without a PL base, or a base the bitstream was not built with, is
    named by FILL_INFO."""
    from skip2lora.driver import AcceleratorError

    x, y = samples
    sim.clear_cache()
    images = fill_images(pl_base, pl_base.quantize_input(x[:2]))
    bad = (-10,) + exponents(pl_base)[1:]
    with pytest.raises(AcceleratorError) as e:
        sim._fill(pl_base, images, y[:2], bad)  # past the host's checks: the hardware's
    assert "arming the fill: the accelerator reports BAD_CONFIG" in one_line(e)
    assert sim.n_loaded == 0
    assert sim.fill(images, y[:2], exponents(pl_base))["images"] == 2 and sim.n_loaded == 2
    # FILL_INFO against the configuration
    real = sim.regs.read_fields
    try:
        sim.regs.read_fields = lambda name: ({"present": 0, "image_beats": 0} if name == "FILL_INFO" else real(name))
        with pytest.raises(AcceleratorError) as e:
            sim.fill(images, y[:2], exponents(pl_base))
        assert "the accelerator has no PL base (FILL_INFO.present = 0), but the lenet5-fill configuration" in one_line(e)
        sim.regs.read_fields = lambda name: ({"present": 1, "image_beats": 9} if name == "FILL_INFO" else real(name))
        with pytest.raises(AcceleratorError) as e:
            sim.fill(images, y[:2], exponents(pl_base))
        assert "takes 9-beat images (FILL_INFO), this driver packs the 'lenet5-fmnist' base's 784-byte images in 50" \
            in one_line(e)
    finally:
        sim.regs.read_fields = real
    assert sim.n_loaded == 2


@pytest.mark.slow
def test_sim_predict_equals_the_fixed_backend(sim, pl_base, samples):
    """PREDICT on the RTL: 12 images (more than the ring's 10 slots) give the fixed backend's y and
    classes bit for bit; PREDICT_CYCLES is the cycle model's plus the sim link's wait for the first
    beat; the cache and the adapters stay."""
    x, y = samples
    adapters = trained_adapters()
    images = fill_images(pl_base, pl_base.quantize_input(x))
    sim.clear_cache()
    sim.fill(images[:3], y[:3], exponents(pl_base))
    sim.load_adapters(adapters)
    got = sim.predict_pl(images, y, exponents(pl_base))
    fixed = FixedBackend(LENET5_FILL)
    fixed.load_adapters(adapters)
    want = fixed.predict_pl(images, y, exponents(pl_base))
    assert np.array_equal(got["y"], want["y"]) and np.array_equal(got["classes"], want["classes"])
    assert got["correct"] == want["correct"]
    assert want["predict_cycles"] <= got["predict_cycles"] <= want["predict_cycles"] + 64
    assert sim.n_loaded == 3 and sim.read_adapters().equals(adapters)


@pytest.mark.slow
def test_sim_session_pl_fill_equals_the_fixed_one(sim, lenet, samples):
    x, y = samples
    reports, adapters, logits = [], [], []
    sim.clear_cache()  # (the entries of the tests before)
    for be in (FixedBackend(LENET5_FILL), sim):
        s = Session(lenet, be, seed=4)
        assert s.fill == "pl"
        assert s.add_samples(x[:4], y[:4]) == 4
        reports.append(s.finetune(epochs=1, batch=2, lr=0.03))
        adapters.append(s.adapters)
        logits.append(s.logits(x[4:]))
        assert s.last_prediction["on"] == "pl"
    assert adapters[0].equals(adapters[1]) and np.array_equal(logits[0], logits[1])
    keys = ("cycles", "correct", "correct_per_epoch", "loss_sum_per_epoch", "saturated_per_epoch", "fill")
    assert {k: reports[0][k] for k in keys} == {k: reports[1][k] for k in keys}


PYNQ_FILL = """
import json, sys
import numpy as np
from skip2lora.driver.pynq_backend import PynqBackend, load
from skip2lora.driver.virtual_kv260 import VirtualKV260
from skip2lora.fixed.config import LENET5_FILL
from skip2lora.fixed.model import Adapters, JobConfig

d = np.load(sys.argv[1])
board = VirtualKV260(LENET5_FILL)
try:
    backend = load(board.bitfile, device=board, timeout=120)  # the configuration read from the board
    fill = backend.fill(d["images"], d["labels"], tuple(int(e) for e in d["exps"]))
    backend.load_adapters(Adapters(list(d[f"a{k}"] for k in range(5)), list(d[f"b{k}"] for k in range(5))))
    job = JobConfig(len(d["labels"]), 2, 2, 1 << 10, tuple(int(e) for e in d["exps"]), (False,) * 5, seed=7)
    report = backend.run(job)
    a = backend.read_adapters()
    pred = backend.predict_pl(d["test"], d["test_labels"], tuple(int(e) for e in d["exps"]))
    np.savez(sys.argv[2], **{f"a{k}": a.a[k] for k in range(5)}, **{f"b{k}": a.b[k] for k in range(5)},
             y=pred["y"], classes=pred["classes"])
    print(json.dumps({"config": backend.config.name, "pl_base": backend.pl_base.name, "fill": fill,
                      "cycles": report["cycles"], "correct": report["correct_per_epoch"],
                      "predict_cycles": pred["predict_cycles"], "predict_correct": pred["correct"]}))
finally:
    board.close()
"""


@pytest.mark.slow
@pytest.mark.requires_pynq
def test_pynq_backend_fills_on_the_virtual_kv260(pl_base, samples, tmp_path):
    """The PYNQ driver (DMA, the configuration read from the board: FILL_INFO names lenet5-fill) fills,
    trains and predicts on the PL (both DMA channels at once) as the fixed backend does, bit for
    bit and cycle for cycle (the job)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from skip2lora.sim.runner import require_simulator

    require_simulator()
    root = Path(__file__).resolve().parents[1]
    x, y = samples
    images = fill_images(pl_base, pl_base.quantize_input(x[:4]))
    init = Adapters.lora_init(LENET5_GEOMETRY, 3)
    test = fill_images(pl_base, pl_base.quantize_input(x))
    np.savez(tmp_path / "in.npz", images=images, labels=y[:4], exps=np.array(exponents(pl_base)),
             test=test, test_labels=y,
             **{f"a{k}": init.a[k] for k in range(5)}, **{f"b{k}": init.b[k] for k in range(5)})
    proc = subprocess.run([str(root / ".venv-pynq" / "bin" / "python"), "-c", PYNQ_FILL, str(tmp_path / "in.npz"),
                           str(tmp_path / "out.npz")], env=dict(os.environ, SKIP2LORA_SIM_PYTHON=sys.executable),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    fixed = FixedBackend(LENET5_FILL)
    ref_fill = fixed.fill(images, y[:4], exponents(pl_base))
    fixed.load_adapters(init)
    ref = fixed.run(job(pl_base, 4))
    assert out["config"] == "lenet5-fill" and out["pl_base"] == "lenet5-fmnist-int8"
    # FILL_CYCLES counts from the command: the DMA's first beat comes later than the cycle after it
    # (and its model may pause the stream), so the count is at least the cycle model's
    assert out["fill"]["fill_cycles"] >= ref_fill["fill_cycles"] and out["fill"]["images"] == 4
    assert out["cycles"] == ref["cycles"] and out["correct"] == ref["correct_per_epoch"]
    with np.load(tmp_path / "out.npz") as got:
        a = fixed.read_adapters()
        for k in range(5):
            assert np.array_equal(got[f"a{k}"], a.a[k]) and np.array_equal(got[f"b{k}"], a.b[k])
        want = fixed.predict_pl(test, y, exponents(pl_base))
        assert np.array_equal(got["y"], want["y"]) and np.array_equal(got["classes"], want["classes"])
    assert out["predict_correct"] == want["correct"] and out["predict_cycles"] >= want["predict_cycles"]
