"""The host driver's Session on the fixed backend: the flow, online appending, bad input, adapter files."""

import os
import signal
import subprocess
import sys
import textwrap
import time

from dataclasses import replace

import numpy as np
import pytest

from skip2lora.driver import AdapterFileError, FixedBackend, Session
from skip2lora.driver.adapters_io import load_adapters_file, save_adapters_file
from skip2lora.fixed.config import AcceleratorConfig
from skip2lora.fixed.cycles import job_cycles
from skip2lora.fixed.model import Adapters, CacheEntries, Geometry, JobConfig, run_job
from skip2lora.fixed.packing import Layout
from small_model import CONFIG, data, other_base, other_data, small_base


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
    with pytest.raises(ValueError, match="the on-chip cache holds 32 entries: 0 are loaded, 40 more do not fit; "
                                         "the small4 build has no DDR cache path"):
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


@pytest.mark.parametrize("build,rank,message", [
    (Geometry((12, 7), 4, 3), None, "the tiny build runs at most 2 taps; this model needs 3 (taps (12, 7, 5), rank 4, "
                                    "3 classes)"),
    (Geometry((12, 7, 5), 4, 2), None, "the tiny build runs at most 2 classes; this model needs 3 (taps (12, 7, 5), "
                                       "rank 4, 3 classes)"),
    (Geometry((12, 7, 5), 4, 3), 5, "the tiny build runs at most 4 rank; this model needs 5 (taps (12, 7, 5), rank 5, "
                                    "3 classes)"),
    (Geometry((12, 7, 4), 4, 3), None, "the tiny build runs at most 6 cache lines of taps (sum of ceil(d_k / 4)); this "
                                       "model needs 7 (taps (12, 7, 5), rank 4, 3 classes)"),
])
def test_a_base_model_beyond_the_builds_maxima_is_refused_naming_the_limit(build, rank, message):
    from skip2lora.driver import GeometryError

    backend = FixedBackend(AcceleratorConfig("tiny", build, 4, 32))
    with pytest.raises(GeometryError) as err:
        Session(small_base(), backend, rank=rank)
    assert str(err.value) == message and isinstance(err.value, ValueError)
    assert backend.geometry == backend.config.geometry  # the backend is left as it was
    with pytest.raises(ValueError, match="rank must be a positive integer, not 0"):
        Session(small_base(), backend, rank=0)


def test_a_base_model_within_the_builds_maxima_runs_as_on_a_build_made_for_it():
    """Run-time geometry on the fixed backend: the model runs in its own geometry (bit-exact), the
    cycles are the cycle model's of that geometry on the build, a lower rank runs too."""
    x, y = data(24)
    runs = {}
    for name, build, rank in (("own", CONFIG, 4), ("wider", AcceleratorConfig("w", Geometry((12, 7, 6), 4, 3), 4, 32), 4),
                              ("maxima", AcceleratorConfig("m", Geometry((4, 4), 4, 2), 4, 32, max_taps=4,
                                                           max_classes=5, max_tap_lines=9), 4),
                              ("rank2", CONFIG, 2)):
        backend = FixedBackend(build)
        s = Session(small_base(), backend, seed=0, rank=rank)
        assert s.geometry == Geometry((12, 7, 5), rank, 3) == backend.geometry
        assert backend.layout.geometry == s.geometry and backend.build_layout.geometry == build.build_geometry
        s.add_samples(x, y)
        out = s.finetune(epochs=3, batch=4, lr=0.2)
        runs[name] = (s.adapters, out)
        assert out["cycles"] == job_cycles(backend.layout, 24, 4, 3, shuffle=True, build=build)
    own_a, own = runs["own"]
    for name in ("wider", "maxima"):
        a, out = runs[name]
        assert a.equals(own_a) and out["correct_per_epoch"] == own["correct_per_epoch"]
        assert out["loss_sum_per_epoch"] == own["loss_sum_per_epoch"]
    assert runs["maxima"][1]["cycles"] > own["cycles"]  # head units sized for 4 taps x 5 classes
    assert [m.shape for m in runs["rank2"][0].a] == [(2, 12), (2, 7), (2, 5)]


def test_a_new_geometry_forgets_the_cache_and_adapters():
    backend = FixedBackend(CONFIG)
    first = Session(small_base(), backend, seed=0)
    x, y = data(8)
    first.add_samples(x, y)
    again = Session(small_base(), backend, seed=1)  # the same model: the cache stays, new adapters
    assert backend.n_loaded == 8 and again.adapters.equals(Adapters.lora_init(first.geometry, 1))
    other = Session(other_base(), backend, seed=0, rank=2)
    assert backend.geometry == Geometry((9, 5), 2, 2) and backend.n_loaded == 0
    assert backend.set_geometry(Geometry((9, 5), 2, 2)) == other.geometry  # the same: nothing forgotten
    assert other.adapters.equals(Adapters.lora_init(other.geometry, 0))
    with pytest.raises(RuntimeError, match=r"the backend now runs another model \(taps \(9, 5\), rank 2, 2 classes; "
                                           r"another Session set it\): .* start a new Session"):
        first.add_samples(x, y)
    xo, yo = other_data(8)
    other.add_samples(xo, yo)
    assert other.finetune(epochs=1, batch=4)["samples"] == 8
    backend.set_geometry(None)  # the build's own model again
    assert backend.geometry == CONFIG.geometry and backend.n_loaded == 0
    with pytest.raises(RuntimeError, match="no adapters loaded"):
        backend.read_adapters()
    with pytest.raises(ValueError, match="the small4 build runs at most 3 taps; this model needs 4"):
        backend.set_geometry(Geometry((1, 1, 1, 1), 1, 2))


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
    with pytest.raises(AdapterFileError, match="adapters for geometry .* but this session's model is"):
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
    """Kill -9 a process that keeps saving adapters: the file is always a whole, earlier save, and the
    next save removes the temporary file the killed writer left."""
    path = tmp_path / "adapters.npz"
    g = Geometry((60000, 50000), 4, 10)
    left, kills = 0, 0
    delays = (0.05, 0.15, 0.3, 0.45)
    while kills < len(delays) or (left == 0 and kills < 30):  # until a kill has hit a save in progress
        delay = delays[kills % len(delays)]
        kills += 1
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
        left += len(leftovers)
        save_adapters_file(path, Adapters.lora_init(g, 0), g, None)  # the next save cleans up
        assert [p.name for p in tmp_path.iterdir()] == ["adapters.npz"]
    assert left > 0, f"none of {kills} kills hit a save in progress: the clean-up was not exercised"


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


# -- adapters files: stale temporaries, permissions, wrong files -------------------------------------

G2 = Geometry((12, 7, 5), 2, 3)


def _dead_pid():
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_only_stale_temporaries_of_the_same_target_are_removed(tmp_path):
    from skip2lora.driver import adapters_io

    host = adapters_io._HOST
    stale = tmp_path / f".a.npz.{host}-{_dead_pid()}.k2j3h4l5.tmp"
    live = tmp_path / f".a.npz.{host}-{os.getppid()}.k2j3h4l5.tmp"        # a running writer
    other_host = tmp_path / f".a.npz.otherhost-{_dead_pid()}.k2j3h4l5.tmp"  # maybe alive over there
    other_name = tmp_path / f".b.npz.{host}-{_dead_pid()}.k2j3h4l5.tmp"
    for p in (stale, live, other_host, other_name):
        p.write_bytes(b"partial")
    save_adapters_file(tmp_path / "a.npz", Adapters.lora_init(G2, 0), G2, None)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["a.npz", live.name, other_host.name, other_name.name])


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_saved_adapters_get_the_mode_of_a_new_file(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = save_adapters_file(tmp_path / "a.npz", Adapters.lora_init(G2, 0), G2, None)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_wrong_files_are_named_without_a_pickle_hint(tmp_path):
    (tmp_path / "text.npz").write_text("adapters, honestly\n")
    np.save(tmp_path / "array.npy", np.zeros(3))
    (tmp_path / "empty.npz").write_bytes(b"")
    np.savez(tmp_path / "objects.npz", meta=np.array([{"a": 1}], dtype=object))
    cases = {"text.npz": "not a zip archive", "array.npy": "a single NumPy array (.npy)",
             "empty.npz": "it is empty", "objects.npz": "an entry holds Python objects"}
    for name, message in cases.items():
        with pytest.raises(AdapterFileError) as exc:
            load_adapters_file(tmp_path / name, G2)
        assert message in str(exc.value) and "pickle" not in str(exc.value), str(exc.value)


def test_saving_into_a_missing_folder_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"the folder {tmp_path / 'nope'} does not exist"):
        save_adapters_file(tmp_path / "nope" / "a.npz", Adapters.lora_init(G2, 0), G2, None)
    with pytest.raises(IsADirectoryError, match="it is a folder"):
        save_adapters_file(tmp_path, Adapters.lora_init(G2, 0), G2, None)
    assert list(tmp_path.iterdir()) == []


# -- API papercuts ----------------------------------------------------------------------------------

def test_accuracy_with_the_wrong_number_of_labels():
    s = make_session()
    x, y = data(12)
    s.add_samples(x, y)
    with pytest.raises(ValueError, match=r"labels must have shape \(12,\), one per sample, not \(10,\)"):
        s.accuracy(x, y[:10])


def test_finetune_after_clear_samples_says_the_cache_is_empty():
    s = make_session()
    x, y = data(12)
    s.add_samples(x, y)
    s.clear_samples()
    with pytest.raises(RuntimeError, match="the cache is empty"):
        s.finetune(batch=4)
    s.add_samples(x, y)  # and it works again, with the same scales
    assert s.finetune(epochs=1, batch=4)["samples"] == 12


def test_the_backends_from_the_package_and_its_registry():
    code = ("import sys; import skip2lora.driver as d; "
            "assert 'cocotb' not in sys.modules and 'pynq' not in sys.modules, 'heavy import'; "
            "from skip2lora.driver import SimBackend, PynqBackend; "
            "assert 'pynq' not in sys.modules and 'cocotb' not in sys.modules; "
            "from skip2lora.driver.sim_backend import SimBackend as S; from skip2lora.driver.pynq_backend import PynqBackend as P; "
            "assert SimBackend is S and PynqBackend is P and d.backend_class('sim') is S; "
            "print(d.BACKEND_NAMES)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "('fixed', 'sim', 'pynq')"
    from skip2lora.driver import make_backend

    assert isinstance(make_backend("fixed", CONFIG), FixedBackend)
    with pytest.raises(ValueError, match="unknown backend 'gpu'; choose one of fixed, sim, pynq"):
        make_backend("gpu", CONFIG)


def _intra_package_imports(package_dir, package):
    """module -> modules of the same package it imports (at top level or inside functions)."""
    import ast

    graph = {}
    for path in package_dir.glob("*.py"):
        name = path.stem
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    deps.add(node.module.split(".")[0])
                else:
                    deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(package + "."):
                deps.add(node.module[len(package) + 1:].split(".")[0])
        graph[name] = {d for d in deps if (package_dir / f"{d}.py").exists() and d != name}
    return graph


def test_the_driver_has_no_import_cycles():
    """Function-local imports included: the registry in __init__ imports the backends, they import
    `backend`, and nothing imports back (``__init__`` itself is imported by no module of the driver)."""
    from pathlib import Path

    import skip2lora.driver

    graph = _intra_package_imports(Path(skip2lora.driver.__file__).parent, "skip2lora.driver")
    assert not any("__init__" in deps for deps in graph.values())
    state = {}

    def visit(node, trail):
        state[node] = "open"
        for dep in sorted(graph[node]):
            assert state.get(dep) != "open", f"import cycle: {' -> '.join(trail + [dep])}"
            if dep not in state:
                visit(dep, trail + [dep])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert "sim_backend" not in graph["backend"] and "pynq_backend" not in graph["backend"]


def test_accelerator_config_from_dict_inverts_to_dict():
    from skip2lora.fixed.config import CONFIGS

    for config in (*CONFIGS.values(), CONFIG):
        assert AcceleratorConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="needs 'lanes'"):
        AcceleratorConfig.from_dict({"name": "x", "dims": [4], "rank": 1, "classes": 2, "cache_depth": 4})


# -- inputs outside the base model's range ----------------------------------------------------------

def test_the_shipped_bases_carry_their_input_range():
    import json

    from skip2lora.nn.pretrained import _load, package_dir

    for meta_path in sorted(package_dir().glob("*.json")):
        meta = json.loads(meta_path.read_text())
        net, _ = _load(package_dir(), meta["key"])
        r = meta["input_range"]
        assert net.input_range == (r["min"], r["max"]) and r["min"] < r["max"] and "pretraining" in r["source"]
    lenet, _ = _load(package_dir(), "lenet5-fmnist")
    assert lenet.input_range == (0.0, 1.0)  # Fashion-MNIST pixels / 255


def ranged_session(**kw):
    base = small_base()
    base.input_range = (0.0, 1.0)
    return Session(base, FixedBackend(CONFIG), **kw)


def test_raw_pixels_are_refused_naming_the_range():
    from skip2lora.driver import InputRangeError

    s = ranged_session()
    x = np.random.default_rng(0).integers(0, 256, (8, 12)).astype(np.uint8)
    with pytest.raises(InputRangeError, match=r"trained on inputs in \[0, 1\].*divide by 255"):
        s.add_samples(x, np.zeros(8, np.int64))
    assert s.n_loaded == 0


def test_huge_inputs_are_refused_without_numpy_warnings():
    import warnings

    from skip2lora.driver import InputRangeError

    s = ranged_session()
    x, y = data(8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow RuntimeWarning would fail here
        with pytest.raises(InputRangeError, match=r"samples span \[.*e\+30.*\]"):
            s.add_samples(np.abs(x) * 1e30, y)
        s.add_samples(np.clip(np.abs(x) / 4, 0, 1), y)
        with pytest.raises(InputRangeError):
            s.predict(np.abs(x) * 1e30)


def test_slightly_outside_the_range_warns_and_the_check_can_be_switched_off():
    from skip2lora.driver.session import InputRangeWarning

    x, y = data(8)
    x = np.clip(np.abs(x), 0, 1.2)
    with pytest.warns(InputRangeWarning, match=r"\[0, 1\]"):
        ranged_session().add_samples(x, y)
    s = ranged_session(input_range=None)
    s.add_samples(np.abs(x) * 255, y)  # the user's call
    assert s.n_loaded == 8
    with pytest.raises(ValueError, match="low < high"):
        ranged_session(input_range=(1, 0))


# -- the sim backend: tools, start failures, progress ----------------------------------------------

def test_sim_backend_without_the_dev_tools_says_what_to_do(monkeypatch):
    from skip2lora.driver import sim_backend
    from skip2lora.driver.backend import BackendUnavailable

    monkeypatch.delenv("SKIP2LORA_SIM_PYTHON", raising=False)
    monkeypatch.setattr(sim_backend, "_importable", lambda m: m != "cocotb")
    with pytest.raises(BackendUnavailable) as exc:
        sim_backend.SimBackend(CONFIG)
    message = str(exc.value)
    assert "cocotb is not installed" in message and "pip install 'skip2lora[dev]'" in message
    assert "--backend fixed" in message and "\n" not in message


def test_a_simulator_that_fails_to_start_gives_one_line_and_its_log(tmp_path, monkeypatch):
    from skip2lora.driver.sim_link import SimLink, SimLinkError

    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'Traceback (most recent call last):'\necho '  File \"serve.py\", line 1'\n"
                    "echo 'ModuleNotFoundError: No module named cocotb'\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("SKIP2LORA_SIM_PYTHON", str(fake))
    with pytest.raises(SimLinkError) as exc:
        SimLink(CONFIG.to_dict())
    message = str(exc.value)
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith("the simulator exited (1) before connecting: ModuleNotFoundError: No module named cocotb")
    log = message.rsplit("the simulator's log: ", 1)[1].rstrip(")")
    assert "Traceback (most recent call last):" in open(log).read()
    os.unlink(log)


def test_the_rtl_progress_bar_ends_at_the_job(monkeypatch, capsys):
    """The bar's total is the job's cycle count (not the 2x timeout): it ends at 100 %."""
    from skip2lora.driver import sim_backend
    from skip2lora.sim.runner import require_simulator

    require_simulator()
    monkeypatch.setattr(sim_backend, "JOB_CHUNK", 500)
    x, y = data(24)
    with sim_backend.SimBackend(CONFIG, progress=True) as backend:
        s = Session(small_base(), backend, seed=0)
        s.add_samples(x, y)
        capsys.readouterr()
        report = s.finetune(epochs=3, batch=4, lr=0.1)
    err = capsys.readouterr().err
    assert report["cycles"] > 4 * 500  # several chunks
    last = err.strip().split("\r")[-1]
    assert f"100.0% {report['cycles']}/{report['cycles']} cycles" in last, last


# -- the KV260 backend: bitstream messages and PYNQ's metadata cache --------------------------------

def test_a_missing_bitstream_says_how_to_build_or_obtain_one(tmp_path):
    from skip2lora.driver.pynq_backend import check_bitfile, default_bitfile

    if not default_bitfile().exists():
        with pytest.raises(FileNotFoundError, match=r"the package ships none.*skip2lora hw bitstream.*Vivado"):
            check_bitfile()
    with pytest.raises(FileNotFoundError, match=r"no such file.*skip2lora hw bitstream"):
        check_bitfile(tmp_path / "x.bit")
    (tmp_path / "x.bit").write_bytes(b"bits")
    with pytest.raises(FileNotFoundError, match=r"x\.hwh is missing"):
        check_bitfile(tmp_path / "x.bit")
    (tmp_path / "x.hwh").write_text("<hwh/>")
    assert check_bitfile(tmp_path / "x.bit") == tmp_path / "x.bit"
    with pytest.raises(ValueError, match="is not a bitstream"):
        check_bitfile(tmp_path / "x.hwh")


PYNQ_STATE_CHECK = """
import json, sys
from pathlib import Path
from pynq.pl_server import global_state as gs
from skip2lora.driver.pynq_backend import forget_cached_metadata
d = Path(sys.argv[1])
ours, other = d / "ours.bit", d / "other.bit"
ours.write_bytes(b"new build"); other.write_bytes(b"another design")
had = gs.load_global_state() if gs.global_state_file_exists() else None
out = {}
try:
    for name, recorded in (("same_path", ours), ("other", other)):
        gs.save_global_state(gs.GlobalState(bitfile_name=str(recorded), active_name="x", timestamp="t",
                                            bitfile_hash=gs.bitstream_hash(str(recorded))))
        out[name] = [forget_cached_metadata(ours), gs.global_state_file_exists()]
    gs.clear_global_state()
finally:
    if had is not None:
        gs.save_global_state(had)
print(json.dumps(out))
"""


def test_load_forgets_pynqs_cached_metadata_of_the_same_bitstream(tmp_path):
    """After a rebuild at the same path PYNQ would reuse the old design's pickled metadata."""
    import json
    from pathlib import Path

    python = Path(__file__).resolve().parents[1] / ".venv-pynq" / "bin" / "python"
    if not python.exists():
        pytest.skip("no .venv-pynq (scripts/setup.sh --with-pynq)")
    proc = subprocess.run([str(python), "-c", PYNQ_STATE_CHECK, str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["same_path"] == [True, False]  # dropped: PYNQ parses the new .hwh
    assert out["other"] == [False, True]      # another design's state stays


# -- the register backends' probe: the build's maxima, never the job's TAPk_DIM -----------------------

def fake_board(config_registers, config=None, pl_base=False, **changes):
    """A `RegisterBackend` over a register file that reports ``config_registers`` (`build_registers`'
    keys, with ``changes``) and FILL_INFO.present = ``pl_base``; returns it, or the error its probe
    raised, and the registers it read."""
    from skip2lora.driver.register_backend import RegisterBackend
    from skip2lora.driver.registers import RegisterFile, register_map, regmap

    found = dict(config_registers, **changes)
    rm, reads = register_map(), []
    values = {"ID": regmap()["id"], "VERSION": regmap()["version"][0] << 16,
              "GEOMETRY": found["taps"] | found["rank"] << 8 | found["classes"] << 16,
              "TAP_LINES": found["tap_lines"], "ENTRY_LINES": found["entry_lines"], "LANES": found["lanes"],
              "CACHE_DEPTH": found["cache_depth"], "DDR_SAMPLES": found["ddr_samples"],
              "DDR_BATCH": found["ddr_batch"], "DDR_STRIDE": found["ddr_stride"], "FILL_INFO": int(pl_base)}
    by_address = {rm.address(k): v for k, v in values.items()}
    names = {rm.address(r.name): r.name for r in rm}

    class Board(RegisterBackend):
        name = "fake"

        def __init__(self):
            self.regs = RegisterFile(lambda a: (reads.append(names[a]), by_address.get(a, 0))[1], lambda a, v: None)
            self._attach(config)

    try:
        return Board(), reads
    except Exception as exc:  # noqa: BLE001 - returned for the test to look at
        return exc, reads


def test_the_probe_compares_the_builds_maxima_and_names_a_known_build():
    from skip2lora.driver import AcceleratorError
    from skip2lora.driver.register_backend import build_registers
    from skip2lora.fixed.config import KV260, SMALL

    kv = build_registers(KV260)
    assert kv == {"taps": 8, "rank": 4, "classes": 16, "tap_lines": 96, "entry_lines": 99, "lanes": 32,
                  "cache_depth": 1024, "ddr_samples": 65535, "ddr_batch": 64, "ddr_stride": 2048}
    board, reads = fake_board(kv, pl_base=True)
    assert board.config is KV260 and board.geometry == KV260.geometry  # found by its registers: the KV260 build
    board, _ = fake_board(kv)  # the same registers without the PL base (FILL_INFO): not the KV260 build
    assert board.config.name == "accelerator" and board.config.fill_base == ""
    assert not any(name.endswith("_DIM") or name == "CLASSES" for name in reads)  # the job's, not the build's
    assert fake_board(kv, KV260)[0].config is KV260
    assert fake_board(kv, replace(KV260, cache_depth=512))[0].config.cache_depth == 512  # a smaller cache is fine
    err, _ = fake_board(kv, SMALL)
    assert isinstance(err, AcceleratorError) and str(err) == (
        "the accelerator's build is 8 taps, rank 4, 16 classes, 96 tap lines (99-line entries), 32 lanes, a 1024-entry "
        "cache, a DDR path of 65535 samples (batches up to 64); the small configuration needs 3 taps, rank 2, 3 "
        "classes, 7 tap lines (11-line entries), 4 lanes, a 64-entry cache, a DDR path of 1024 samples (batches up "
        "to 8)")
    err, _ = fake_board(kv, KV260, ddr_stride=4096)
    assert str(err) == ("the accelerator reads DDR cache entries 4096 bytes apart (DDR_STRIDE), this driver packs "
                        "them 2048 bytes apart: update skip2lora or the bitstream")
    # a build of no known configuration: named "accelerator", its maxima its default geometry
    board, _ = fake_board(build_registers(CONFIG))
    assert board.config.name == "accelerator" and board.config.geometry == Geometry((4, 4, 20), 4, 3)
    assert board.config.check_geometry(CONFIG.geometry) == CONFIG.geometry
    assert board.build_layout.sample_lines == 11 and board.build_layout.adapter_beats == \
        Layout(CONFIG.geometry, 4).adapter_beats
    err, _ = fake_board(build_registers(CONFIG), entry_lines=12)
    assert isinstance(err, AcceleratorError) and "but this driver packs 11 for its ENTRY_LINES" in str(err)
    err, _ = fake_board(build_registers(CONFIG), taps=0)
    assert isinstance(err, AcceleratorError) and "reports a configuration this driver cannot use" in str(err)
