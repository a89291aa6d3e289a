"""The optimizers of the float reference (sw/optim.py): first steps against hand-computed values,
state, bias correction, the power-of-two rounding, and their use by the fine-tuning methods."""

import math
import re

import numpy as np
import pytest

from skip2lora import optim
from skip2lora.methods import METHODS
from skip2lora.nn.network import mlp


def _step(spec, p, g, lr, steps=1):
    opt = optim.make(spec, lr)
    p = np.array(p, np.float64)
    for gi in (g if steps > 1 else [g]):
        opt.step([p], [np.array(gi, np.float64)])
    return p, opt


def test_sgd_first_step_is_exact():
    p, _ = _step("sgd", [1.0, -2.0, 0.0], [0.5, 0.25, -1.0], 0.5)
    assert p.tolist() == [0.75, -2.125, 0.5]


def test_momentum_and_nesterov_first_steps():
    g1, g2 = [1.0, -2.0], [0.5, 0.5]
    p, _ = _step("momentum", [0.0, 0.0], [g1, g2], 0.5, steps=2)
    # b1 = g1, p = -0.5 g1; b2 = 0.9 g1 + g2 = [1.4, -1.3], p -= 0.5 b2
    np.testing.assert_allclose(p, [-0.5 - 0.7, 1.0 + 0.65], rtol=1e-15)
    p, _ = _step("nesterov", [0.0, 0.0], [g1, g2], 0.5, steps=2)
    # step 1: p -= 0.5 (g1 + 0.9 g1); step 2: p -= 0.5 (g2 + 0.9 [1.4, -1.3])
    np.testing.assert_allclose(p, [-0.95 - 0.5 * (0.5 + 1.26), 1.9 - 0.5 * (0.5 - 1.17)], rtol=1e-15)
    p, _ = _step("momentum:beta=0.5", [0.0], [[1.0], [1.0]], 1.0, steps=2)
    assert p.tolist() == [-2.5]  # b = 1, then 1.5


def test_adam_first_step_is_lr_times_sign():
    """m_hat = g and v_hat = g^2 after one step: the update is lr g / (|g| + eps)."""
    p, opt = _step("adam", [1.0, 1.0, 1.0], [0.3, -4.0, 0.0], 0.01)
    np.testing.assert_allclose(p, [1 - 0.01 * 0.3 / (0.3 + 1e-8), 1 + 0.01 * 4 / (4 + 1e-8), 1.0], rtol=1e-14)
    np.testing.assert_allclose(opt.state[0]["m"], [0.03, -0.4, 0.0], rtol=1e-14)  # stored uncorrected
    np.testing.assert_allclose(opt.state[0]["v"], [0.00009, 0.016, 0.0], rtol=1e-13)


@pytest.mark.parametrize("hyper", [{}, {"b1": 1 - 2 ** -3, "b2": 1 - 2 ** -10}, {"eps": 1e-3}])
def test_adam_folded_bias_correction_equals_kingma_and_ba(hyper):
    """The correction folded into the per-step rate (and eps) is the textbook update, step by step."""
    rng = np.random.default_rng(0)
    b1, b2, eps = hyper.get("b1", 0.9), hyper.get("b2", 0.999), hyper.get("eps", 1e-8)
    opt = optim.Adam(0.0, **hyper)
    p = rng.normal(size=50)
    ref, m, v = p.copy(), np.zeros(50), np.zeros(50)
    for t in range(1, 31):
        g = rng.normal(size=50) * 10.0 ** rng.integers(-4, 1)
        lr = 0.001 * t
        opt.lr = lr
        opt.step([p], [g])
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        ref -= lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
        np.testing.assert_allclose(p, ref, rtol=1e-12, atol=1e-15)


def test_adam_without_bias_correction():
    p, _ = _step("adam:bias_correction=0", [0.0], [2.0], 0.01)
    np.testing.assert_allclose(p, [-0.01 * 0.2 / (math.sqrt(0.004) + 1e-8)], rtol=1e-14)


def test_adam_pow2_first_step():
    """g = 4: v = 0.016, sqrt(v) = 0.126 -> 1/8 is the nearest power of two (log2: -2.98)."""
    p, _ = _step("adam-pow2", [0.0], [4.0], 0.01)
    a1 = 0.01 * math.sqrt(0.001) / 0.1  # the folded rate of step 1
    assert p[0] == pytest.approx(-a1 * 0.4 * 8, rel=1e-14)
    # fold=0 rounds sqrt(v_hat) = 4 -> 1/4 and keeps only m's correction in the rate: exactly -lr
    p, _ = _step("adam-pow2:fold=0", [0.0], [4.0], 0.01)
    assert p[0] == pytest.approx(-0.01 / 0.1 * 0.4 / 4, rel=1e-14)
    # half octaves: v = 0.016 -> log2 = -5.97 -> j = -6 -> 2**3 as well; g = 6: v = 0.036, j = -5
    p, _ = _step("adam-pow2h", [0.0], [6.0], 0.01)
    assert p[0] == pytest.approx(-a1 * 0.6 * 2 ** 2.5, rel=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pow2_rsqrt_is_round_half_up_of_the_log(dtype):
    rng = np.random.default_rng(1)
    x = (rng.random(20000) * 2.0 ** rng.integers(-60, 60, 20000)).astype(dtype)
    x = x[x > np.finfo(dtype).tiny]
    ties = np.array([2.0 ** k for k in range(-40, 41)], dtype)  # log2(x)/2 is a half-integer for odd k
    for v in (x, ties):
        ref = 2.0 ** -np.floor(np.log2(v.astype(np.float64)) / 2 + 0.5)
        assert np.array_equal(optim.pow2_rsqrt(v), ref.astype(dtype))
        refh = 2.0 ** (-np.floor(np.log2(v.astype(np.float64)) + 0.5) / 2)
        np.testing.assert_allclose(optim.pow2h_rsqrt(v), refh, rtol=np.finfo(dtype).eps)
    assert optim.pow2_rsqrt(np.array([2.0], dtype))[0] == 0.5  # tie: log2(sqrt 2) = 1/2 rounds up
    # the leading-one position n gives the result alone: 2**-floor((n+1)/2)
    n = np.floor(np.log2(x.astype(np.float64)))
    assert np.array_equal(optim.pow2_rsqrt(x), (2.0 ** -np.floor((n + 1) / 2)).astype(dtype))
    # nearest in the log domain: within half an octave of 1/sqrt(x), and half-octave steps within a quarter
    assert np.all(np.abs(np.log2(optim.pow2_rsqrt(x) * np.sqrt(x.astype(np.float64)))) <= 0.5)
    assert np.all(np.abs(np.log2(optim.pow2h_rsqrt(x) * np.sqrt(x.astype(np.float64)))) <= 0.25 + 1e-6)


def test_lion_first_steps():
    p, opt = _step("lion", [1.0, 1.0, 1.0], [[0.5, -3.0, 0.0], [-0.1, -0.2, 0.0]], 0.25, steps=2)
    # step 1: sign(0.1 g) = [1, -1, 0]; m = 0.01 g = [0.005, -0.03, 0]
    # step 2: c = 0.9 m + 0.1 g = [0.0045 - 0.01, -0.027 - 0.02, 0] -> sign [-1, -1, 0]
    assert p.tolist() == [1 - 0.25 + 0.25, 1 + 0.25 + 0.25, 1.0]
    np.testing.assert_allclose(opt.state[0]["m"], [0.99 * 0.005 - 0.001, 0.99 * -0.03 - 0.002, 0], rtol=1e-14)
    p, _ = _step("lion:weight_decay=0.5", [2.0], [1.0], 0.25)
    assert p.tolist() == [2 * (1 - 0.125) - 0.25]


def test_factored_second_moment():
    """For a rank-1 g^2 the factored v equals Adam's v; the state is one value per row and column."""
    g = np.outer([1.0, 2.0, 0.5], [2.0, -1.0])
    p, opt = _step("adam-factored", np.ones((3, 2)), g, 0.01)
    ref, _ = _step("adam", np.ones((3, 2)), g, 0.01)
    np.testing.assert_allclose(p, ref, rtol=1e-12)
    st = opt.state[0]
    assert st["r"].shape == (3,) and st["c"].shape == (2,) and st["v"] is None
    np.testing.assert_allclose(st["r"], 0.001 * (g ** 2).mean(axis=1), rtol=1e-14)
    one_d, opt = _step("adam-factored", np.ones(4), np.arange(4.0), 0.01)  # 1-D: a full v, as Adam
    np.testing.assert_allclose(one_d, _step("adam", np.ones(4), np.arange(4.0), 0.01)[0], rtol=1e-14)


@pytest.mark.parametrize("spec", [s for s in optim.OPTIMIZERS if optim.OPTIMIZERS[s].elementwise])
def test_elementwise_optimizers_give_the_same_result_on_a_flat_array(spec):
    """Skip2-LoRA steps all adapters as one flat array: bit for bit what the pieces would get."""
    rng = np.random.default_rng(2)
    flat = rng.normal(size=30).astype(np.float32)
    pieces = [flat[:10].copy(), flat[10:].copy().reshape(4, 5)]
    one, many = optim.make(spec), optim.make(spec)
    for t in range(5):
        g = rng.normal(size=30).astype(np.float32)
        one.lr = many.lr = 0.01 * (t + 1)
        one.step([flat], [g])
        many.step({"x": pieces[0], "y": pieces[1]}, {"x": g[:10], "y": g[10:].reshape(4, 5)})
    assert np.array_equal(flat, np.concatenate([pieces[0], pieces[1].ravel()]))


def test_state_is_per_key_in_the_parameter_dtype_and_reset():
    opt = optim.make("adam", 0.1)
    params = {"a": np.ones(3, np.float32), "b": np.ones((2, 2), np.float32)}
    opt.step(params, {"a": np.ones(3, np.float32)})  # only the keys of grads are stepped
    assert set(opt.state) == {"a"} and opt.t == 1 and params["b"].tolist() == [[1, 1], [1, 1]]
    assert opt.state["a"]["m"].dtype == np.float32 and params["a"].dtype == np.float32
    opt.step(params, {"a": np.ones(3, np.float32), "b": np.ones((2, 2), np.float32)})
    assert set(opt.state) == {"a", "b"} and opt.t == 2
    opt.reset()
    assert opt.state == {} and opt.t == 0


@pytest.mark.parametrize("spec", list(optim.OPTIMIZERS))
def test_a_non_finite_gradient_reaches_the_parameters(spec):
    """Divergence stays detectable: no optimizer hides a NaN or Inf gradient (Lion's sign turns an
    Inf into a finite step, but its momentum is then Inf and the next step NaN)."""
    for bad in (np.nan, np.inf):
        p = np.ones((2, 2), np.float32)
        opt = optim.make(spec, 0.1)
        with np.errstate(invalid="ignore"):
            opt.step([p], [np.array([[1, bad], [1, 1]], np.float32)])
            opt.step([p], [np.ones((2, 2), np.float32)])
        assert not np.all(np.isfinite(p)), (spec, bad)


def test_specs_parse_and_round_trip():
    opt = optim.make("adam:b1=1-2^-3, b2=1-2**-10,eps=1e-6")
    assert opt.hyper["b1"] == 0.875 and opt.hyper["b2"] == 1 - 2 ** -10 and opt.hyper["eps"] == 1e-6
    assert optim.make(opt.spec).hyper == opt.hyper
    assert optim.make("adam:b1=0.9").spec == "adam" and optim.make("lion").spec == "lion"
    for bad, msg in [("adamw", "unknown optimizer 'adamw'"), ("adam:b3=0.9", "adam has no hyper-parameter b3"),
                     ("adam:b1", "must read key=value"), ("adam:b2=1", "b2 must lie in"),
                     ("adam:eps=x", "needs a number"), ("adam:eps=0", "eps must be positive"),
                     ("", "optimizer must be")]:
        with pytest.raises(ValueError, match=msg):
            optim.make(bad)


# -- the methods' use of the optimizers ------------------------------------------------------------

def _task(seed=0, n=64):
    rng = np.random.default_rng(seed)
    net = mlp(10, 3, hidden=8).init(seed)
    x = rng.normal(0, 1, (n, 10)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1)
    return net, x, y


@pytest.mark.parametrize("spec", list(optim.OPTIMIZERS) + ["adam-pow2:fold=0"])
@pytest.mark.parametrize("name", ["skip2-lora", "quant-skip2-lora", "skip-lora", "lora-all"])
def test_a_method_step_is_the_generic_optimizer_step_on_its_mean_gradients(name, spec):
    """The methods' update (Skip2-LoRA's fused, flat-array path too) equals: the batch's mean
    gradients from loss_and_grads, then the optimizer stepping the trainable arrays. Batches of 24
    of 64 samples: the last has 16 and is averaged over 16."""
    net, x, y = _task(7)
    fast = METHODS[name](net, lr=0.02, seed=7, optimizer=spec)
    slow = METHODS[name](net, lr=0.02, seed=7, optimizer=spec)
    opt = optim.make(spec, 0.02)
    for m in (fast, slow):
        m.prepare(x, y)
    for epoch in range(2):
        for s in (0, 24, 48):
            b = slice(s, s + 24)
            _, grads = slow.loss_and_grads(b)
            opt.step(slow.trainable(), grads)
            fast.step(b)
    fast.finish_epoch()
    for key, p in slow.trainable().items():
        np.testing.assert_allclose(fast.trainable()[key], p, rtol=2e-5, atol=2e-7, err_msg=key)
    assert fast.opt.t == 6


def test_skip2_lora_steps_one_flat_array_with_preallocated_state():
    net, x, y = _task(1)
    m = METHODS["skip2-lora"](net, lr=0.01, optimizer="adam")
    m.prepare(x, y)
    m.run_epoch(None, 16)
    state = m.opt.state[0]
    assert list(m.opt.state) == [0] and state["m"].shape == m.adapters.flat.shape
    assert np.shares_memory(m.adapters.a[0], m.adapters.flat) and np.shares_memory(m.adapters.b, m.adapters.flat)
    m.run_epoch(None, 16)
    assert m.opt.state[0]["m"] is state["m"] and m.opt.t == 8


@pytest.mark.parametrize("method", ["skip2-lora", "lora-all"])
@pytest.mark.parametrize("spec", list(optim.OPTIMIZERS))
def test_divergence_is_reported_with_every_optimizer(spec, method, monkeypatch):
    """A NaN reaching the training (here: one fine-tuning sample) is reported as divergence with
    every optimizer, never as an accuracy. (Adam and Lion take bounded steps, so a huge rate alone
    inflates their logits without ever making them non-finite.)"""
    import dataclasses

    import skip2lora.data
    from skip2lora import finetune as ft

    ds = skip2lora.data.load_dataset("fan-damage1")
    x = np.array(ds.finetune.x)
    x[:, 3] = np.nan
    broken = dataclasses.replace(ds, finetune=skip2lora.data.Split(x, ds.finetune.y))
    monkeypatch.setattr(skip2lora.data, "load_dataset", lambda *a, **k: broken)
    r = ft.finetune(method, "fan-damage1", samples=30, epochs=2, batch=10, lr=0.01, optimizer=spec, progress=False)
    assert r.diverged and r.accuracy is None and re.match(r"training diverged: loss is nan at epoch 1", r.error)
    assert r.optimizer == spec


def test_finetune_records_the_optimizer_and_names_bad_ones():
    from skip2lora.finetune import finetune

    r = finetune("skip2-lora", "fan-damage1", samples=40, epochs=2, batch=20, lr=0.01,
                 optimizer="adam:b2=0.99", progress=False)
    assert r.optimizer == "adam:b2=0.99" and not r.diverged
    with pytest.raises(ValueError, match="unknown optimizer 'adamw'"):
        finetune("skip2-lora", "fan-damage1", epochs=1, optimizer="adamw", progress=False)
    with pytest.raises(ValueError, match="no learning rate was tuned for optimizer lion:b1=0.5"):
        finetune("skip2-lora", "fan-damage1", epochs=1, optimizer="lion:b1=0.5", progress=False)


@pytest.mark.parametrize("spec", ["sgd", "momentum", "nesterov", "adam", "adam:b2=0.99,eps=1e-6"])
def test_the_pytorch_baseline_runs_the_same_update_rules(spec):
    torch = pytest.importorskip("torch")
    from skip2lora.torch_baseline import _torch_optimizer

    rng = np.random.default_rng(3)
    p = rng.normal(size=(3, 4))
    tp = torch.tensor(p.copy(), requires_grad=True)
    theirs, ours = _torch_optimizer(torch, [tp], 0.0, spec), optim.make(spec)
    for t in range(6):
        g = rng.normal(size=(3, 4))
        for group in theirs.param_groups:
            group["lr"] = 0.01 * (t + 1)
        ours.lr = 0.01 * (t + 1)
        tp.grad = torch.tensor(g)
        theirs.step()
        ours.step([p], [g])
    np.testing.assert_allclose(tp.detach().numpy(), p, rtol=1e-12, atol=1e-14)
    if spec == "sgd":
        with pytest.raises(ValueError, match="runs sgd, momentum, nesterov and adam, not lion"):
            _torch_optimizer(torch, [tp], 0.1, "lion")


def test_specs_write_shift_friendly_values_exactly():
    assert optim.make("adam:b1=0.875,b2=0.9990234375").spec == "adam:b1=1-2^-3,b2=1-2^-10"
    assert optim.make("adam:eps=2^-20").spec == "adam:eps=2^-20"
    assert optim.make("lion:b1=0.5,weight_decay=0.01").spec == "lion:b1=0.5,weight_decay=0.01"


def test_defaults_name_an_optimizer_and_its_tuned_rate():
    from skip2lora import hparams

    d = hparams.defaults("fmnist-rot75", "skip2-lora")
    assert d["optimizer"] == optim.make(d["optimizer"]).spec and d["lr"] > 0
    assert hparams.defaults("fmnist-rot75", "skip2-lora", optimizer="sgd")["lr"] == 0.12
    assert hparams.defaults("fmnist-rot75", "skip2-lora", optimizer="lion:b1=0.5")["lr"] is None  # never tuned
    acc = hparams.defaults("fmnist-rot75", "quant-skip2-lora", accelerator=True)  # the float recipe, on chip
    assert acc == hparams.defaults("fmnist-rot75", "quant-skip2-lora") and acc["optimizer"] == hparams.SKIP_OPTIMIZER
    assert hparams.defaults("har", "quant-skip2-lora", accelerator=True)["optimizer"] == "sgd"
    with pytest.raises(ValueError, match="the accelerator runs the optimizers"):
        hparams.defaults("fmnist-rot75", "quant-skip2-lora", accelerator=True, optimizer="adam")
    # every tuned rate belongs to a spec written the way `make` writes it
    for fam in hparams._LR.values():
        for spec in fam:
            assert optim.make(spec).spec == spec
