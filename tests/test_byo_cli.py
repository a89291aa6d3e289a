"""Bring your own model and data: `skip2lora finetune --model FILE --data FILE|DIR` on the float and fixed
backends, the same run from Python, the defaults a new data set gets, and the KV260 build's honesty
(it runs any model within its maxima, set by registers; one beyond them is refused naming the limit;
--config custom names its own build).

A tiny model (12-7-5-3 MLP, saved in the project's .npz format: no onnx needed) and synthetic data keep
each run to seconds; one test goes through ONNX with LeNet-5's geometry (skips without onnx, fails in CI).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from skip2lora import hparams
from skip2lora.accel_job import ConfigurationError, accelerator_job
from skip2lora.cli import main
from skip2lora.data import from_arrays
from skip2lora.finetune import finetune
from skip2lora.nn.layers import BatchNorm, Dense, Flatten, ReLU
from skip2lora.nn.model_io import save_model
from skip2lora.nn.network import lenet5, sequential
from skip2lora.workload import check_fits, resolve_workload

from optional_modules import need_module
from test_cli import one_json, run_cli



def tiny_model(seed=0):
    layers = [Dense("fc1", 12, 7), BatchNorm("bn1", 7), ReLU("r1"), Dense("fc2", 7, 5), ReLU("r2"),
              Dense("fc3", 5, 3)]
    return sequential(layers, (12,), 3, "tiny").init(seed)


def many_classes_model(seed=0):
    """tiny_model with 17 outputs: beyond the KV260 build's 16 classes."""
    layers = [Dense("fc1", 12, 7), ReLU("r1"), Dense("fc2", 7, 17)]
    return sequential(layers, (12,), 17, "wide").init(seed)


def tiny_arrays(n=60, m=30, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n + m, 12)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1)
    return dict(x_train=x[:n], y_train=y[:n], x_test=x[n:], y_test=y[n:])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("byo")
    save_model(tiny_model(), d / "model.npz")
    save_model(many_classes_model(), d / "wide_model.npz")
    np.savez(d / "data.npz", **tiny_arrays())
    bad = tiny_arrays()
    bad["x_train"][5, 3] = np.inf
    np.savez(d / "inf.npz", **bad)
    np.savez(d / "wide.npz", **{k: (np.pad(v, ((0, 0), (0, 1))) if k.startswith("x") else v)
                                for k, v in tiny_arrays().items()})
    return d


def cli_json(capsys, *args):
    code = main([*map(str, args), "--json"])
    return code, one_json(capsys.readouterr().out)


def test_a_new_data_set_takes_the_fashion_mnist_recipe_sized_to_its_pool():
    assert hparams.new_data_run(5000) == {"samples": 1024, "epochs": 10, "batch": 16}
    assert hparams.new_data_run(1000) == {"samples": 1000, "epochs": 11, "batch": 16}  # 63 steps: 11 epochs
    assert hparams.new_data_run(54) == {"samples": 54, "epochs": 160, "batch": 16}   # at least 640 steps
    assert hparams.new_data_run(3) == {"samples": 3, "epochs": 600, "batch": 3}      # at most 600 epochs
    d = hparams.defaults(None, "skip2-lora", pool=54)
    assert d == {"samples": 54, "epochs": 160, "batch": 16, "optimizer": hparams.SKIP_OPTIMIZER, "lr": 0.03,
                 "source": "defaults for a new data set"}
    assert hparams.defaults(None, "quant-skip2-lora", accelerator=True, pool=54) == dict(d)
    assert hparams.defaults("fmnist-rot75", "skip2-lora")["source"].startswith("tuned for the fmnist data sets")
    with pytest.raises(ValueError, match="needs pool="):
        hparams.defaults(None, "skip2-lora")


def test_float_backend_with_model_and_data(files, capsys):
    code, r = cli_json(capsys, "finetune", "--backend", "float", "--model", files / "model.npz",
                       "--data", files / "data.npz")
    assert code == 0, r
    assert r["dataset"] == "data.npz" and r["model"] == "model.npz" and r["method"] == "skip2-lora"
    assert r["hparams"] == {"samples": 54, "epochs": 160, "batch": 16, "lr": 0.03, "order": "shuffle",
                            "schedule": "warmup-linear", "optimizer": hparams.SKIP_OPTIMIZER,
                            "source": "defaults for a new data set", "given": []}
    assert (r["samples"], r["epochs"], r["batch"]) == (54, 160, 16) and not r["diverged"]
    # the same run from Python, from the arrays and the Network: the same figures
    api = finetune("skip2-lora", from_arrays(**tiny_arrays()), model=tiny_model(), progress=False)
    assert api.accuracy == r["accuracy"] and api.accuracy_before == r["accuracy_before"]
    assert api.model == "Network" and api.hparams["source"] == "defaults for a new data set"


def test_fixed_backend_with_model_and_data_on_the_kv260_build(files, capsys):
    """The tiny model (taps 12, 7, 5; 3 classes) is within the KV260 build's maxima: the one bitstream
    runs it, its geometry set by registers at the job's start."""
    code, r = cli_json(capsys, "finetune", "--backend", "fixed", "--model", files / "model.npz",
                       "--data", files / "data.npz", "--epochs", "3")
    assert code == 0, r
    assert r["config"] == "kv260" and r["kv260_build"] is True
    assert r["geometry"] == {"dims": [12, 7, 5], "rank": 4, "classes": 3}
    assert r["cycles"] == r["cycles_model"] > 0 and len(r["train_accuracy_per_epoch"]) == 3
    assert r["hparams"]["source"] == "defaults for a new data set" and r["hparams"]["given"] == ["epochs"]
    assert r["dataset"] == "data.npz" and r["model"] == "model.npz" and 0 <= r["accuracy"] <= 1
    # the same job from Python, from the arrays and the Network: the same figures, bit for bit
    api = accelerator_job(from_arrays(**tiny_arrays()), tiny_model(), epochs=3)
    assert (api["accuracy"], api["cycles"], api["config"]) == (r["accuracy"], r["cycles"], r["config"])
    assert api["train_accuracy_per_epoch"] == r["train_accuracy_per_epoch"] and api["model"] == "Network"
    # --config custom: the KV260 build where it runs the job (here), a rank below the build's too
    code, r2 = cli_json(capsys, "finetune", "--backend", "fixed", "--config", "custom", "--model",
                        files / "model.npz", "--data", files / "data.npz", "--epochs", "3", "--rank", "2")
    assert code == 0, r2
    assert r2["config"] == "kv260" and r2["geometry"] == {"dims": [12, 7, 5], "rank": 2, "classes": 3}


def test_a_model_beyond_the_kv260_maxima_runs_on_a_build_sized_for_it(files, capsys):
    code, r = cli_json(capsys, "finetune", "--backend", "fixed", "--config", "custom", "--model",
                       files / "model.npz", "--data", files / "data.npz", "--epochs", "3", "--rank", "8")
    assert code == 0, r
    assert r["config"] == "custom-12x7x5-r8-n54" and r["kv260_build"] is False
    assert r["geometry"] == {"dims": [12, 7, 5], "rank": 8, "classes": 3} and r["cycles"] == r["cycles_model"] > 0
    api = accelerator_job(from_arrays(**tiny_arrays()), tiny_model(), config="custom", epochs=3, rank=8)
    assert (api["accuracy"], api["cycles"], api["config"]) == (r["accuracy"], r["cycles"], r["config"])
    with pytest.raises(ConfigurationError, match=r"the kv260 build runs at most 4 rank; this model needs 8 .*"
                                                 r"--config custom"):
        accelerator_job(from_arrays(**tiny_arrays()), tiny_model(), epochs=3, rank=8)


def test_the_kv260_build_refuses_a_model_beyond_its_maxima_in_one_json_object(files):
    code, out, err = run_cli("finetune", "--backend", "fixed", "--model", str(files / "wide_model.npz"),
                             "--data", str(files / "data.npz"), "--json")
    r = one_json(out)  # exactly one JSON object on stdout, also on error
    assert code == 2 and r["exit_code"] == 2 and r["type"] == "ConfigurationError"
    assert r["error"] == ("the kv260 build runs at most 16 classes; this model needs 17 (taps (12, 7), rank 4, "
                          "17 classes); --config custom simulates a build sized for this job (no bitstream exists "
                          "for it)")


@pytest.mark.parametrize("args, message", [
    (["--data", "{d}/data.npz"], "--data needs --model"),
    (["--data", "{d}/data.npz", "--dataset", "har", "--model", "{d}/model.npz"], "not allowed with argument"),
    (["--data", "{d}/inf.npz", "--model", "{d}/model.npz"], "inf.npz: x_train row 5 contains NaN or Inf"),
    (["--data", "{d}/wide.npz", "--model", "{d}/model.npz"],
     "the model model.npz takes samples of shape (12,), but the data set wide.npz has samples of shape (13,)"),
    (["--data", "{d}/data.npz", "--model", "{d}/absent.onnx"], "no model file"),
    (["--data", "{d}/data.npz", "--model", "{d}/model.h5"], "unknown model format"),
    (["--data", "{d}/absent.npz", "--model", "{d}/model.npz"], "no data file"),
])
@pytest.mark.parametrize("backend", ["float", "fixed"])
def test_bad_models_and_data_are_one_line_errors(files, capsys, args, message, backend):
    args = [a.format(d=files) for a in args]
    code, r = cli_json(capsys, "finetune", "--backend", backend, *args)
    assert code == 2 and message in r["error"] and "\n" not in r["error"], r


def test_a_model_with_fewer_outputs_than_the_data_has_classes(files):
    with pytest.raises(ValueError, match=r"has 3 outputs, but the data set arrays has labels up to 4 \(5 classes\)"):
        check_fits(tiny_model(), from_arrays(**tiny_arrays(), classes=5), "the model")
    with pytest.raises(ValueError, match="is not built in, so there is no pretrained base model"):
        resolve_workload(files / "data.npz")
    w = resolve_workload(files / "data.npz", model=files / "model.npz")
    assert w.hparams_key is None and w.model == "model.npz" and w.base.tap_dims == [12, 7, 5]


def test_an_image_folder_with_a_model(tmp_path, capsys):
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    for c, level in (("dark", 40), ("light", 215)):
        for i in range(10):
            pixels = np.clip(level + rng.normal(0, 20, (4, 4)), 0, 255).astype(np.uint8)
            (tmp_path / "img" / c).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels, "L").save(tmp_path / "img" / c / f"{i}.png")
    net = sequential([Flatten("flat"), Dense("fc1", 16, 6), ReLU("r"), Dense("fc2", 6, 2)], (1, 4, 4), 2, "img")
    save_model(net.init(0), tmp_path / "img.npz")
    code, r = cli_json(capsys, "finetune", "--backend", "float", "--model", tmp_path / "img.npz",
                       "--data", tmp_path / "img", "--method", "ft-all", "--epochs", "100")
    assert code == 0, r
    assert r["dataset"] == "img" and r["samples"] == 16 and r["hparams"]["batch"] == 16  # 4 of 20 are test images
    assert r["accuracy_before"] == 0.5 and r["accuracy"] == 1.0  # dark against light, learnt by the whole net


def test_lenet5_geometry_from_onnx_runs_on_the_kv260_build(tmp_path, capsys):
    need_module("onnx", "pip install 'skip2lora[onnx]'")
    from skip2lora.nn.onnx_export import to_onnx

    to_onnx(lenet5(10).init(0), tmp_path / "lenet.onnx")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "digits.npz", x_train=rng.random((40, 1, 28, 28)), y_train=np.arange(40) % 10,
             x_test=rng.random((20, 1, 28, 28)), y_test=np.arange(20) % 10)
    code, r = cli_json(capsys, "finetune", "--backend", "fixed", "--model", tmp_path / "lenet.onnx",
                       "--data", tmp_path / "digits.npz", "--epochs", "1")
    assert code == 0, r
    assert r["config"] == "kv260" and r["kv260_build"] is True and r["samples"] == 36
    assert r["cycles"] == r["cycles_model"]


def test_pretrain_says_to_bring_a_trained_model(capsys):
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "bring a trained model" in text and "--model FILE.onnx" in text


def test_compare_with_model_and_data(files, capsys):
    code, r = cli_json(capsys, "compare", "--model", files / "model.npz", "--data", files / "data.npz",
                       "--methods", "ft-last", "skip2-lora", "--epochs", "3")
    assert code == 0, r
    assert r["dataset"] == "data.npz" and r["model"] == "model.npz"
    assert r["hparams_source"] == "defaults for a new data set"
    assert [row["method"] for row in r["results"]] == ["ft-last", "skip2-lora"]
    code, r = cli_json(capsys, "compare", "--data", files / "data.npz")
    assert code == 2 and "--data needs --model" in r["error"]


def test_an_onnx_input_without_fixed_sizes_takes_the_data_shape(files, tmp_path, capsys):
    need_module("onnx", "pip install 'skip2lora[onnx]'")
    from skip2lora.nn.onnx_export import to_onnx

    model = to_onnx(tiny_model())
    for dim in model.graph.input[0].type.tensor_type.shape.dim[1:]:
        dim.dim_param = "features"  # e.g. an exporter that left every size symbolic
    (tmp_path / "symbolic.onnx").write_bytes(model.SerializeToString())
    code, r = cli_json(capsys, "finetune", "--backend", "float", "--model", tmp_path / "symbolic.onnx",
                       "--data", files / "data.npz", "--epochs", "2")
    assert code == 0, r
    direct = finetune("skip2-lora", files / "data.npz", model=tiny_model(), epochs=2, progress=False)
    assert r["accuracy"] == direct.accuracy and r["model"] == "symbolic.onnx"


@pytest.mark.filterwarnings("ignore:.*torch.jit.*is deprecated:DeprecationWarning")  # TorchScript: still read
def test_a_torchscript_model_takes_the_data_shape(files, tmp_path, capsys):
    torch = need_module("torch", "pip install 'skip2lora[torch]'")
    need_module("onnx", "pip install 'skip2lora[onnx]'")
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(12, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3)).eval()
    torch.jit.save(torch.jit.script(m), str(tmp_path / "mlp.pt"))
    code, r = cli_json(capsys, "finetune", "--backend", "fixed", "--model", tmp_path / "mlp.pt",
                       "--data", files / "data.npz", "--epochs", "2")
    assert code == 0, r
    assert r["config"] == "kv260" and r["geometry"]["dims"] == [12, 7] and r["model"] == "mlp.pt"


def test_an_image_folder_without_pillow_is_unavailable_in_one_line(files, tmp_path, capsys, monkeypatch):
    import sys

    (tmp_path / "img" / "a").mkdir(parents=True)
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    code, r = cli_json(capsys, "finetune", "--backend", "float", "--model", files / "model.npz",
                       "--data", tmp_path / "img")
    assert code == 4 and "pip install 'skip2lora[images]'" in r["error"], r
