"""The host driver's Session on the fixed backend: the flow, online appending, bad input, adapter files."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from skip2lora.driver import AdapterFileError, FixedBackend, Session
from skip2lora.driver.adapters_io import load_adapters_file, save_adapters_file
from skip2lora.fixed.config import AcceleratorConfig
from skip2lora.fixed.model import Adapters, CacheEntries, Geometry, JobConfig, run_job
from small_model import CONFIG, data, small_base


def make_session(seed=0):
    return Session(small_base(), FixedBackend(CONFIG), seed=seed)


def test_session_flow_matches_the_model_and_learns():
    s = make_session()
    x, y = data(24)
    s.add_samples(x, y)
    before = s.accuracy(x, y)
    initial = s.adapters
    report = s.finetune(epochs=20, batch=4, lr=0.2)
    # the same job straight through the bit-exact model
    codes, z = s.encode(x)
    expected = run_job(CONFIG.geometry, CacheEntries(codes, z, y), initial, s.job(epochs=20, batch=4, lr=0.2))
    assert s.adapters.equals(expected.adapters)
    assert report["correct"] == expected.correct[-1] and report["cycles"] > 0
    assert s.accuracy(x, y) > before


def test_online_appending_between_jobs():
    s = make_session()
    x, y = data(20)
    s.add_samples(x[:12], y[:12])
    exps = list(s.quantizer.exponents)
    s.finetune(epochs=2, batch=4, lr=0.1)
    assert s.add_samples(x[12:], y[12:]) == 20
    assert s.quantizer.exponents == exps  # the cache's scales stay fixed
    assert s.finetune(epochs=1, batch=5, lr=0.1)["samples"] == 20


@pytest.mark.parametrize("x,y,message,exc", [
    (np.zeros((4, 11), np.float32), np.zeros(4, np.int64), r"samples must have shape \(n, 12\)", ValueError),
    (np.zeros((4, 12), np.float32), np.zeros(3, np.int64), r"labels must have shape \(4,\)", ValueError),
    (np.full((4, 12), np.nan, np.float32), np.zeros(4, np.int64), "sample 0 contains NaN or Inf", ValueError),
    (np.zeros((4, 12), np.float32), np.array([0, 1, 3, 0]), r"label 3 is out of range \[0, 3\)", ValueError),
    (np.zeros((4, 12), np.float32), np.zeros(4, np.float32), "labels must be integers", TypeError),
    (np.array([["a"] * 12] * 4), np.zeros(4, np.int64), "samples must be numbers", TypeError),
    (np.zeros((0, 12), np.float32), np.zeros(0, np.int64), "no samples given", ValueError),
])
def test_bad_samples_are_refused(x, y, message, exc):
    s = make_session()
    with pytest.raises(exc, match=message):
        s.add_samples(x, y)
    assert s.n_loaded == 0  # nothing half-loaded


def test_more_samples_than_the_cache_holds():
    s = make_session()
    x, y = data(40)
    with pytest.raises(ValueError, match="the cache holds 32 entries: 0 are loaded, 40 more do not fit"):
        s.add_samples(x, y)
    s.add_samples(x[:30], y[:30])
    with pytest.raises(ValueError, match="30 are loaded, 3 more do not fit"):
        s.add_samples(x[30:33], y[30:33])
    assert s.n_loaded == 30


def test_bad_job_settings():
    s = make_session()
    with pytest.raises(RuntimeError, match="add samples before fine-tuning"):
        s.finetune()
    x, y = data(8)
    s.add_samples(x, y)
    with pytest.raises(ValueError, match=r"batch \(9\) is larger than the number of samples \(8\)"):
        s.finetune(batch=9)
    with pytest.raises(ValueError, match="epochs must be in"):
        s.finetune(epochs=0, batch=4)
    with pytest.raises(ValueError, match="learning rate"):
        s.finetune(lr=-1, batch=4)


def test_base_model_and_accelerator_must_match():
    other = AcceleratorConfig("other", Geometry((12, 7, 6), 4, 3), 4, 32)
    with pytest.raises(ValueError, match="does not match the accelerator's geometry"):
        Session(small_base(), FixedBackend(other))


def test_adapters_round_trip_and_corruption(tmp_path):
    s = make_session()
    x, y = data(12)
    s.add_samples(x, y)
    s.finetune(epochs=3, batch=4, lr=0.1)
    path = tmp_path / "a.npz"
    s.save_adapters(path)
    t = make_session(seed=5)
    t.quantizer = s.quantizer
    t.load_adapters(path)
    assert t.adapters.equals(s.adapters)

    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (tmp_path / "flipped.npz").write_bytes(bytes(raw))
    (tmp_path / "short.npz").write_bytes(bytes(raw[:len(raw) // 3]))
    (tmp_path / "junk.npz").write_bytes(b"not an npz at all")
    for name in ("flipped.npz", "short.npz", "junk.npz"):
        with pytest.raises(AdapterFileError):
            t.load_adapters(tmp_path / name)
    assert t.adapters.equals(s.adapters)  # a refused file changes nothing

    g2 = Geometry((12, 7, 5), 2, 3)
    save_adapters_file(tmp_path / "g2.npz", Adapters.lora_init(g2, 0), g2, None)
    with pytest.raises(AdapterFileError, match="adapters for geometry .* but this accelerator has"):
        t.load_adapters(tmp_path / "g2.npz")
    with pytest.raises(FileNotFoundError):
        t.load_adapters(tmp_path / "missing.npz")


WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from skip2lora.driver.adapters_io import save_adapters_file
    from skip2lora.fixed.model import Adapters, Geometry
    g = Geometry((60000, 50000), 4, 10)
    rng = np.random.default_rng(0)
    i = 0
    print("ready", flush=True)
    while True:
        i += 1
        a = Adapters([np.full((4, d), i % 30000, np.int16) for d in g.dims],
                     [np.full((10, 4), i % 30000, np.int16) for _ in g.dims])
        save_adapters_file(sys.argv[1], a, g, None)
""")


def test_a_killed_writer_never_leaves_a_corrupt_file(tmp_path):
    """Kill -9 a process that keeps saving adapters: the file is always a whole, earlier save."""
    path = tmp_path / "adapters.npz"
    g = Geometry((60000, 50000), 4, 10)
    for delay in (0.05, 0.15, 0.3, 0.45):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        if path.exists():
            adapters, _ = load_adapters_file(path, g)
            value = int(adapters.a[0][0, 0])
            assert all(np.all(m == value) for m in adapters.a + adapters.b)  # one consistent save
        leftovers = [p for p in tmp_path.iterdir() if p.name != "adapters.npz"]
        for p in leftovers:  # a killed writer may leave its temporary file, never the target
            assert p.name.startswith(".adapters.npz.") and p.suffix == ".tmp"
            p.unlink()


def test_job_config_must_fit_the_cache():
    s = make_session()
    x, y = data(6)
    s.add_samples(x, y)
    with pytest.raises(ValueError, match=r"samples \(7\) exceeds the 6 cached entries"):
        s.finetune(samples=7, batch=2)
    assert isinstance(s.job(epochs=1, batch=2, lr=0.1), JobConfig)


def test_recipe_reaches_the_job_registers():
    s = make_session(seed=5)
    x, y = data(24)
    s.add_samples(x, y)
    job = s.job(epochs=3, batch=5, lr=0.1)  # the defaults: the float backend's recipe
    assert (job.shuffle, job.seed, job.warmup, job.decay) == (True, 5, 5, True)
    job = s.job(epochs=3, batch=5, lr=0.1, order="fixed", schedule="constant", order_seed=9)
    assert (job.shuffle, job.seed, job.warmup, job.decay) == (False, 9, 0, False)
    for kw, message in ((dict(order="random"), "sample order must be one of"),
                        (dict(schedule="cosine"), "learning-rate schedule must be one of"),
                        (dict(optimizer="adam"), "the accelerator runs the optimizers"),
                        (dict(optimizer="rmsprop"), "unknown optimizer 'rmsprop'")):
        with pytest.raises(ValueError, match=message):
            s.job(epochs=1, batch=4, lr=0.1, **kw)


def test_per_epoch_statistics_and_healthy_training():
    s = make_session()
    x, y = data(24)
    s.add_samples(x, y)
    for optimizer, lr in (("sgd", 0.2), ("adam-pow2", 0.03)):
        out = s.finetune(epochs=6, batch=4, lr=lr, optimizer=optimizer)
        assert len(out["correct_per_epoch"]) == len(out["train_loss_per_epoch"]) == 6
        assert out["train_loss_per_epoch"][-1] < out["train_loss_per_epoch"][0]
        assert not out["diverged"] and out["divergence"] is None and out["clamped_share_last_epoch"] < 0.01


def test_divergence_is_detected_from_the_accelerators_statistics():
    """A step size far beyond the stable range pins the weights at their limits: reported as
    diverged (the accelerator saturates, it never shows NaN)."""
    s = make_session()
    x, y = data(24)
    s.add_samples(x, y)
    out = s.finetune(epochs=6, batch=4, lr=15.9, order="fixed", schedule="constant")
    assert out["diverged"] and "weight updates hit the weight range" in out["divergence"]
    assert out["clamped_share_last_epoch"] > 0.01
