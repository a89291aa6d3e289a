"""The `skip2lora` command: JSON output, figures, and a clear error for every kind of bad input."""

import json
import os
import subprocess
import sys

import pytest

from skip2lora.cli import main


def run_cli(*args, env=None, prelude="pass"):
    """Run the command in a subprocess; returns (exit code, stdout, stderr). ``prelude``: Python run
    first (e.g. to hide a package: ``sys.modules['matplotlib'] = None``)."""
    code = f"import sys; {prelude}; from skip2lora.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=900,
                          env=None if env is None else dict(os.environ, **env))
    return proc.returncode, proc.stdout, proc.stderr


def one_json(out):
    """stdout must be exactly one JSON object."""
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    return json.loads(lines[0])


def one_line(err):
    """The error on stderr: one line, no traceback."""
    lines = [line for line in err.strip().splitlines() if line.startswith("skip2lora")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]



@pytest.mark.requires_data("fan-damage1")
def test_float_finetune_json_has_the_contract_keys():
    code, out, err = run_cli("finetune", "--backend", "float", "--method", "skip2-lora", "--dataset", "fan-damage1",
                             "--epochs", "3", "--json")
    assert code == 0, err
    r = json.loads(out)
    for key in ("method", "backend", "dataset", "accuracy_before", "accuracy", "ft_seconds"):
        assert key in r
    assert r["method"] == "skip2-lora" and r["backend"] == "float" and r["dataset"] == "fan-damage1"
    assert r["order"] == "shuffle" and r["schedule"] == "warmup-linear"  # the float backend's defaults
    assert 0 <= r["accuracy_before"] <= 1 and 0 <= r["accuracy"] <= 1 and r["ft_seconds"] > 0
    assert r["base_forward_samples"] == r["samples"]  # the cache: one base forward per sample


@pytest.mark.requires_data("fan-damage1")
def test_fixed_finetune_reports_cycles_and_a_labelled_projection():
    code, out, err = run_cli("finetune", "--backend", "fixed", "--dataset", "fan-damage1", "--epochs", "2", "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["backend"] == "fixed" and r["method"] == "quant-skip2-lora"
    assert r["cycles"] > 0 and r["projected_ms"] == pytest.approx(r["cycles"] / (r["clock_mhz"] * 1e3))
    assert "assumed" in r["projection"] and r["wall_seconds"] > 0
    # the Fan MLP (256-96-96-3) is within the KV260 build's maxima: it runs on that build, its geometry named
    assert r["config"] == "kv260" and r["kv260_build"] is True and r["cache"] == "chip"
    assert r["geometry"] == {"dims": [256, 96, 96], "rank": 4, "classes": 3} and r["cycles"] == r["cycles_model"]
    # beyond the maxima (rank 8): --config custom sizes a build, named so and never called the KV260's
    code, out, err = run_cli("finetune", "--backend", "fixed", "--dataset", "fan-damage1", "--epochs", "2",
                             "--rank", "8", "--config", "custom")
    assert code == 0, err
    assert "custom-256x96x96-r8-n470 build" in out and "(not the KV260's)" in out


@pytest.mark.requires_data("har")
def test_har_runs_on_the_kv260_build():
    code, out, err = run_cli("finetune", "--backend", "fixed", "--dataset", "har", "--epochs", "2", "--json")
    r = one_json(out)
    assert code == 0, err
    assert r["config"] == "kv260" and r["kv260_build"] is True and r["samples"] == 896 and r["cache"] == "chip"
    assert r["geometry"] == {"dims": [561, 96, 96], "rank": 4, "classes": 6} and r["cycles"] == r["cycles_model"]


def test_jobs_the_kv260_build_cannot_run_are_refused_with_the_limit():
    for args, message, hint in (
            (["--samples", "2000", "--batch", "128"], "exceed the KV260 build's DDR cache limit of 64", "--batch <= 64"),
            (["--samples", "2000", "--cache", "chip"], "exceed the KV260 build's on-chip cache of 1024 entries",
             "--cache ddr"),
            (["--cache", "ddr", "--config", "custom", "--rank", "8"], "--cache ddr needs the KV260 build's DDR path",
             "--cache auto"),
            (["--rank", "64"], "the kv260 build runs at most 4 rank; this model needs 64 (taps (784, 1176, 400, 120, "
                               "84), rank 64, 10 classes)", "--config custom"),
            (["--dataset", "har", "--rank", "5"], "the kv260 build runs at most 4 rank; this model needs 5 (taps "
                                                  "(561, 96, 96), rank 5, 6 classes)", "--config custom")):
        code, out, err = run_cli("finetune", "--backend", "fixed", *args, "--json")
        r = one_json(out)
        assert code == 2 and message in r["error"] and hint in r["error"], r
        assert r["type"] == "ConfigurationError" and "\n" not in r["error"]


def test_the_kv260_build_names_its_limits():
    from skip2lora.accel_job import ConfigurationError, accelerator_config_for
    from skip2lora.fixed.config import KV260
    from skip2lora.fixed.model import Geometry

    g = KV260.geometry
    assert accelerator_config_for(g, 1024) is KV260 and accelerator_config_for(g, 65535, batch=64) is KV260
    assert accelerator_config_for(g, 100, batch=64, cache="ddr") is KV260
    with pytest.raises(ConfigurationError, match="largest job \\(65535 samples"):
        accelerator_config_for(g, 65536)
    assert accelerator_config_for(g, 65536, allow_custom=True).name == "custom-784x1176x400x120x84-r4-n65536"
    with pytest.raises(ConfigurationError, match="DDR cache limit of 64"):
        accelerator_config_for(g, 100, batch=128, cache="ddr")
    with pytest.raises(ValueError, match="cache must be auto, chip or ddr"):
        accelerator_config_for(g, 100, cache="dram")
    # run-time geometry: the one KV260 build runs every model within its maxima, on chip and from DDR
    for dims, classes in (((561, 96, 96), 6), ((256, 96, 96), 3), ((12, 7, 5), 3), ((32,) * 8, 16),
                          ((32 * 89, 32, 32, 32, 32, 32, 32, 32), 2)):
        geometry = Geometry(dims, 4, classes)
        assert accelerator_config_for(geometry, 1024) is KV260 is accelerator_config_for(geometry, 100, cache="chip")
        assert accelerator_config_for(Geometry(dims, 1, classes), 1024, allow_custom=True) is KV260
    assert accelerator_config_for(Geometry((561, 96, 96), 4, 6), 5000, batch=20) is KV260
    for geometry, limit in ((Geometry((32,) * 9, 4, 3), "at most 8 taps; this model needs 9"),
                            (Geometry((12, 7, 5), 4, 17), "at most 16 classes; this model needs 17"),
                            (Geometry((12, 7, 5), 5, 3), "at most 4 rank; this model needs 5"),
                            (Geometry((32 * 91, 32, 32, 32, 32, 32, 32), 4, 2),
                             "at most 96 cache lines of taps (sum of ceil(d_k / 32)); this model needs 97")):
        with pytest.raises(ConfigurationError) as err:
            accelerator_config_for(geometry, 100)
        assert str(err.value).startswith(f"the kv260 build runs {limit} (taps {geometry.dims}")
        assert str(err.value).endswith("; --config custom simulates a build sized for this job (no bitstream exists "
                                       "for it)")
        custom = accelerator_config_for(geometry, 100, allow_custom=True)
        assert custom.name.startswith("custom-") and custom.geometry == geometry and not custom.ddr
    # entries of under 6 lines: the cycle model times no job of theirs from DDR
    tiny = Geometry((12, 7, 5), 4, 3)  # 3 tap lines + 1 tail line at 32 lanes
    with pytest.raises(ConfigurationError, match="needs cache entries of at least 6 lines .*; this model's take 4: "
                                                 "use --samples <= 1024 for the on-chip cache, or --config custom"):
        accelerator_config_for(tiny, 2000)
    assert accelerator_config_for(tiny, 2000, allow_custom=True).name == "custom-12x7x5-r4-n2000"


@pytest.mark.requires_data("fan-damage1")
def test_compare_json_and_plot(tmp_path):
    plot = tmp_path / "curves.png"
    code, out, err = run_cli("compare", "--dataset", "fan-damage1", "--methods", "ft-last", "skip2-lora",
                             "--epochs", "3", "--json", "--plot", str(plot))
    assert code == 0, err
    r = json.loads(out)
    assert r["dataset"] == "fan-damage1" and [x["method"] for x in r["results"]] == ["ft-last", "skip2-lora"]
    for row in r["results"]:
        assert {"accuracy", "accuracy_std", "ft_seconds", "epoch_seconds", "time_per_batch"} <= set(row)
        assert set(row["time_per_batch"]) == {"forward", "backward", "update"}
    assert plot.stat().st_size > 1000 and plot.read_bytes()[:4] == b"\x89PNG"
    assert r["plot"] == str(plot) and all(len(row["curves"][0]) == 3 for row in r["results"])  # the data behind it


def test_curves_that_would_hide_each_other_are_marked(tmp_path):
    from skip2lora.report import plot_curves

    base = [0.42, 0.6, 0.7, 0.75]
    labels = plot_curves({"ft-all": [[0.58, 0.7, 0.75, 0.8]], "skip-lora": [base, base],
                          "skip2-lora": [base, [0.42, 0.6, 0.7, 0.752]], "quant-skip2-lora": [base]},
                         tmp_path / "c.png")
    assert labels == ["ft-all", "skip-lora", "skip2-lora (\u2248 skip-lora, within 0.1 pp)",
                      "quant-skip2-lora (= skip-lora)"]


def test_bench_json():
    code, out, err = run_cli("bench", "--model-only", "--json")
    assert code == 0, err
    r = json.loads(out)
    for key in ("cycles", "projected_ms", "clock_mhz", "lanes", "utilization"):
        assert key in r
    assert r["cycles"] <= 2_000_000 and r["utilization"] >= 0.8 and r["clock_mhz"] == 200
    for key in ("cpu_speedup_vs_lora_all", "cpu_speedup_vs_torch", "sim_wall_seconds", "resources"):
        assert key in r and r[key] is None  # not measured with --model-only, never made up


@pytest.mark.parametrize("args,message", [
    (["finetune", "--dataset", "mnist"], "unknown data set 'mnist'"),
    (["finetune", "--method", "lora-everything"], "unknown method 'lora-everything'"),
    (["finetune", "--backend", "gpu"], "invalid choice: 'gpu'"),
    (["finetune", "--epochs", "0"], "must be at least 1"),
    (["finetune", "--samples", "-3"], "must be at least 1"),
    (["finetune", "--lr", "nan"], "positive finite number"),
    (["finetune", "--lr", "abc"], "expected a number"),
    (["compare", "--dataset", "har", "--seeds", "0"], "must be at least 1"),
    (["compare", "--dataset", "har", "--order", "random"], "invalid choice: 'random'"),
    (["finetune", "--seed", "-1"], "argument --seed: must be in 0..4294967295, got -1"),
    (["pretrain", "--seed", "x", "--base", "mlp-har"], "argument --seed: expected an integer, got 'x'"),
    (["pretrain"], "the following arguments are required: --base"),
    (["finetune", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["teleport"], "invalid choice: 'teleport'"),
])
def test_bad_arguments_are_named(args, message, capsys):
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert main(args + ["--json"]) == 2  # and with --json: one object on stdout
    captured = capsys.readouterr()
    r = one_json(captured.out)
    assert message in r["error"] and r["exit_code"] == 2 and r["type"] == "UsageError"


@pytest.mark.requires_data("fan-damage1")
def test_batch_larger_than_the_data_is_an_error():
    code, out, err = run_cli("finetune", "--backend", "float", "--dataset", "fan-damage1", "--samples", "10",
                             "--batch", "20", "--json")
    assert code == 2
    assert "batch (20) is larger than the number of samples (10)" in json.loads(out)["error"]


@pytest.mark.requires_data("fan-damage1")
def test_more_samples_than_available_is_an_error():
    code, out, err = run_cli("finetune", "--backend", "float", "--dataset", "fan-damage1", "--samples", "5000")
    assert code == 2 and "exceeds the 470 fine-tuning samples" in err


@pytest.mark.requires_data("fmnist-rot75")
def test_a_diverging_run_is_reported_as_such():
    code, out, err = run_cli("finetune", "--backend", "float", "--method", "skip2-lora", "--dataset", "fmnist-rot75",
                             "--epochs", "3", "--samples", "256", "--lr", "1e30", "--json")  # Adam's steps are bounded by lr
    assert code == 3
    r = json.loads(out)
    assert r["diverged"] is True and r["accuracy"] is None and "diverged" in r["error"]


@pytest.mark.requires_data("fmnist-rot75", "har")
def test_the_kv260_job_fills_on_the_pl_and_reports_it_end_to_end():
    """The KV260 build carries the integer LeNet-5: the default fill is the PL's (FILL_CYCLES, the
    model's count, and the job end to end); --fill host runs the float base on the host."""
    from skip2lora.driver.backend import expected_fill_cycles
    from skip2lora.fixed.config import KV260

    args = ("finetune", "--backend", "fixed", "--samples", "96", "--epochs", "2", "--json")
    code, out, err = run_cli(*args)
    r = one_json(out)
    assert code == 0, err
    assert r["fill"] == "pl" and r["fill_cycles"] == expected_fill_cycles(KV260, 96)
    assert r["end_to_end_cycles"] == r["fill_cycles"] + r["cycles"]
    assert r["end_to_end_ms"] == pytest.approx(r["end_to_end_cycles"] / (r["clock_mhz"] * 1e3))
    code, out, err = run_cli(*args, "--fill", "host")
    h = one_json(out)
    assert code == 0, err
    assert h["fill"] == "host" and h["fill_cycles"] is None and "end_to_end_ms" not in h
    assert h["cycles"] == r["cycles"]  # the same job on other entries
    code, out, err = run_cli("finetune", "--backend", "fixed", "--dataset", "har", "--samples", "64", "--epochs",
                             "1", "--fill", "pl", "--json")
    assert code == 2 and "fill='pl': the PL base 'lenet5-fmnist-int8' computes taps" in one_json(out)["error"]
    code, out, err = run_cli("finetune", "--backend", "float", "--fill", "pl")
    assert code == 2 and "--fill chooses where the accelerator's cache entries are computed" in err


def test_other_methods_are_refused_on_the_accelerator_backends():
    code, out, err = run_cli("finetune", "--backend", "fixed", "--method", "lora-all")
    assert code == 2 and "runs quant-skip2-lora" in err


def test_the_accelerator_backends_run_the_recipe_and_refuse_optimizers_they_lack():
    code, out, err = run_cli("finetune", "--backend", "fixed", "--samples", "64", "--epochs", "2", "--json")
    r = one_json(out)
    assert code == 0 and (r["order"], r["schedule"]) == ("shuffle", "warmup-linear"), r
    assert r["optimizer"].startswith("adam-pow2") and r["kv260_build"] is True
    code, out, err = run_cli("finetune", "--backend", "fixed", "--samples", "64", "--epochs", "2", "--order", "fixed",
                             "--schedule", "constant", "--optimizer", "sgd", "--json")
    r = one_json(out)
    assert code == 0 and (r["order"], r["schedule"], r["optimizer"]) == ("fixed", "constant", "sgd"), r
    code, out, err = run_cli("finetune", "--backend", "fixed", "--optimizer", "lion")
    assert code == 2 and "the accelerator runs the optimizers sgd" in err


# -- help, version, exit codes ------------------------------------------------------------------------

def test_help_shows_defaults_choices_and_the_exit_codes(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["finetune", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "{float,fixed,sim,pynq}" in text and "(default: sim)" in text and "(default: fmnist-rot75)" in text
    assert "(default: 0)" in text  # --seed: a falsy default is still shown
    assert "quant-skip2-lora" in text  # the methods are listed
    for line in ("0    success", "2    usage or input error", "3    training diverged", "130  interrupted"):
        assert line in text
    import skip2lora.cli

    assert "Exit status:" in skip2lora.cli.__doc__ and "4    unavailable here" in skip2lora.cli.__doc__


def test_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"skip2lora {version('skip2lora')}"


def test_an_unexpected_error_is_one_line_with_a_log(monkeypatch, capsys):
    import skip2lora.cli as cli

    def broken(args, out):
        raise TypeError("'NoneType' object is not subscriptable")

    monkeypatch.setitem(cli.COMMANDS, "bench", broken)
    assert main(["bench", "--json"]) == 1
    captured = capsys.readouterr()
    r = one_json(captured.out)
    assert r["type"] == "TypeError" and "please report it" in r["error"] and r["exit_code"] == 1
    assert "Traceback" not in captured.err and "broken" in open(r["details_log"]).read()
    os.unlink(r["details_log"])


def test_with_json_everything_else_goes_to_stderr():
    """Prints and subprocesses of a command cannot add to the one JSON object on stdout."""
    prelude = ("import os, skip2lora.cli as c; "
               "c.COMMANDS['bench'] = lambda a, o: (print('noise'), os.system('echo tool output'), "
               "__import__('skip2lora.cli_output').cli_output.finish(o, {'ok': True}, str))[-1]")
    code, out, err = run_cli("bench", "--json", prelude=prelude)
    assert code == 0 and one_json(out) == {"ok": True}
    assert "noise" in err and "tool output" in err


# -- output paths are checked before the work, results printed before what can fail ---------------

@pytest.mark.parametrize("args", [
    ["finetune", "--backend", "fixed"], ["finetune", "--backend", "float"], ["compare", "--dataset", "har"],
    ["bench", "--no-rtl", "--no-synth"],
])
def test_a_plot_to_a_missing_folder_is_refused_before_the_job(args, tmp_path):
    code, out, err = run_cli(*args, "--plot", str(tmp_path / "missing" / "p.png"), "--json")
    assert code == 2
    r = one_json(out)
    assert r["error"] == f"--plot {tmp_path / 'missing' / 'p.png'}: the folder {tmp_path / 'missing'} does not exist"
    assert "samples cached" not in err and "epoch" not in err  # nothing ran


def test_unwritable_output_paths_are_refused_before_the_work(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = [
        (["finetune", "--backend", "fixed", "--plot", str(afile / "p.png")], f"{afile} is not a folder"),
        (["finetune", "--backend", "fixed", "--plot", str(tmp_path)], "is a folder; give a file name"),
        (["finetune", "--backend", "fixed", "--plot", str(tmp_path / "p.xyz")], "cannot write '.xyz' images"),
        (["finetune", "--backend", "fixed", "--save-adapters", str(tmp_path / "no" / "a.npz")], "does not exist"),
        (["pretrain", "--base", "mlp-fan-damage1", "--out", str(afile / "sub")], f"{afile} is a file, not a folder"),
        (["hw", "export", "--out", str(afile / "sub")], f"{afile} is a file, not a folder"),
        (["bench", "--model-only", "--plot", str(tmp_path / "p.png")], "cannot be combined with --model-only"),
    ]
    for args, message in cases:
        code, out, err = run_cli(*args, "--json")
        assert code == 2 and message in one_json(out)["error"], (args, out, err)
        assert message in one_line(err)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code, out, err = run_cli("finetune", "--backend", "fixed", "--plot", str(ro / "p.png"), "--json")
    finally:
        ro.chmod(0o755)
    assert code == 2 and "cannot write into" in one_json(out)["error"]


def test_plot_without_matplotlib_is_refused_in_one_line():
    code, out, err = run_cli("finetune", "--backend", "fixed", "--plot", "p.png", prelude="sys.modules['matplotlib'] = None")
    assert code == 4
    assert "--plot needs matplotlib, which is not installed here" in one_line(err) and out == ""


def test_fixed_backend_plots_the_training_accuracy_it_counted(tmp_path):
    plot, adapters = tmp_path / "train.png", tmp_path / "adapters.npz"
    code, out, err = run_cli("finetune", "--backend", "fixed", "--dataset", "fan-damage1", "--epochs", "3", "--json",
                             "--config", "custom", "--plot", str(plot), "--save-adapters", str(adapters))
    assert code == 0, err
    r = one_json(out)
    assert len(r["train_accuracy_per_epoch"]) == 3 and all(0 <= a <= 1 for a in r["train_accuracy_per_epoch"])
    assert r["train_accuracy_per_epoch"][-1] == r["train_correct_last_epoch"] / r["samples"]
    assert r["plot"] == str(plot) and plot.read_bytes()[:4] == b"\x89PNG"
    assert r["adapters_file"] == str(adapters)
    from skip2lora.driver import load_adapters_file
    from skip2lora.fixed.model import Geometry

    a, q = load_adapters_file(adapters, Geometry((256, 96, 96), 4, 3))
    assert q.exponents == r["tap_exponents"]


def test_plot_is_refused_on_a_backend_without_epoch_statistics(monkeypatch, capsys):
    from skip2lora.driver.sim_backend import SimBackend

    monkeypatch.setattr(SimBackend, "reports_epoch_stats", False)
    assert main(["finetune", "--backend", "sim", "--plot", "p.png", "--json"]) == 2
    r = one_json(capsys.readouterr().out)
    assert "which the sim backend does not report" in r["error"] and "--backend fixed" in r["error"]


def test_a_plot_that_fails_after_the_job_keeps_the_result(monkeypatch, capsys, tmp_path):
    from skip2lora import report

    def fail(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "plot_curves", fail)
    args = ["finetune", "--backend", "fixed", "--dataset", "fan-damage1", "--config", "custom", "--epochs", "1",
            "--plot", str(tmp_path / "p.png")]
    assert main(args + ["--json"]) == 1
    r = one_json(capsys.readouterr().out)
    assert r["accuracy"] is not None and "No space left on device" in r["plot_error"]
    assert main(args) == 1  # text: the result first, then the error
    captured = capsys.readouterr()
    assert "accuracy after fine-tuning" in captured.out and "No space left on device" in captured.err


def test_pretrain_never_loses_the_weights(monkeypatch, capsys, tmp_path):
    """A save that fails after the training (the folder vanished, the disk filled) falls back to a
    temporary folder and says where."""
    from skip2lora.nn import pretrained

    real = pretrained.save_base
    calls = []

    def flaky(net, meta, directory, key):
        calls.append(directory)
        if len(calls) == 1:
            raise PermissionError(13, "Permission denied", str(directory))
        return real(net, meta, directory, key)

    monkeypatch.setattr(pretrained, "save_base", flaky)
    assert main(["pretrain", "--base", "mlp-fan-damage1", "--epochs", "1", "--out", str(tmp_path / "w"), "--json"]) == 1
    r = one_json(capsys.readouterr().out)
    assert "saved in" in r["save_error"] and "Permission denied" in r["save_error"]
    assert os.path.exists(r["path"]) and os.path.exists(r["path"][:-4] + ".json")
    assert r["input_range"]["min"] == 0.0 and r["input_range"]["max"] > 0.99


# -- missing packages, tools and bitstreams: one line, exit 4 -----------------------------------------

def test_the_sim_backend_without_the_dev_tools():
    code, out, err = run_cli("finetune", "--dataset", "fan-damage1", "--json", prelude="sys.modules['cocotb'] = None",
                             env={"SKIP2LORA_SIM_PYTHON": ""})
    assert code == 4
    message = one_json(out)["error"]
    assert "cocotb is not installed" in message and "--backend fixed" in message and "skip2lora[dev]" in message


def test_the_pynq_backend_without_pynq_or_a_bitstream(tmp_path):
    code, out, err = run_cli("finetune", "--backend", "pynq", "--json", prelude="sys.modules['pynq'] = None")
    assert code == 4 and "the pynq backend needs PYNQ" in one_json(out)["error"]
    code, out, err = run_cli("finetune", "--backend", "fixed", "--bitfile", "x.bit", "--json")
    assert code == 2 and "--bitfile is for --backend pynq" in one_json(out)["error"]
    # past the pynq check (a stand-in module), the bitstream is checked before any work
    code, out, err = run_cli("finetune", "--backend", "pynq", "--bitfile", str(tmp_path / "x.bit"), "--json",
                             prelude="import types; sys.modules['pynq'] = types.ModuleType('pynq')")
    assert code == 2 and "no such file" in one_json(out)["error"] and "skip2lora hw bitstream" in one_line(err)


def test_hw_export_without_amaranth():
    code, out, err = run_cli("hw", "export", "--out", "/tmp/never-written", "--json",
                             prelude="sys.modules['amaranth'] = None")
    assert code == 4
    assert one_json(out)["error"] == ("the Python package 'amaranth' is not installed here (skip2lora hw export "
                                      "needs it): pip install 'skip2lora[dev]'")
    assert not os.path.exists("/tmp/never-written")


def test_a_simulator_that_fails_to_start(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'Traceback (most recent call last):'\necho 'OSError: no licence'\nexit 1\n")
    fake.chmod(0o755)
    code, out, err = run_cli("finetune", "--samples", "16", "--epochs", "1", "--json",
                             env={"SKIP2LORA_SIM_PYTHON": str(fake)})
    assert code == 1
    message = one_json(out)["error"]
    assert message.startswith("the simulator exited (1) before connecting: OSError: no licence (the simulator's log: ")
    assert "Traceback" not in err
    os.unlink(message.rsplit("log: ", 1)[1].rstrip(")"))


def test_problems_found_after_the_job_keep_the_result(monkeypatch, capsys, tmp_path):
    """A cycle count that disagrees with the cycle model, or adapters that cannot be written: the
    result is printed first, then one error line, exit status 1."""
    from skip2lora.driver import FixedBackend, Session

    real_run = FixedBackend.run
    monkeypatch.setattr(FixedBackend, "run", lambda self, job: dict(real_run(self, job), cycles=12345))

    def full_disk(self, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Session, "save_adapters", full_disk)
    args = ["finetune", "--backend", "fixed", "--dataset", "fan-damage1", "--config", "custom", "--epochs", "1",
            "--save-adapters", str(tmp_path / "a.npz")]
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "accuracy after fine-tuning" in captured.out
    assert "the accelerator counted 12,345 cycles, the cycle model predicts" in captured.err
    assert "could not save the adapters" in captured.err and "No space left on device" in captured.err
    assert main(args + ["--json"]) == 1
    r = one_json(capsys.readouterr().out)
    assert r["cycles"] == 12345 != r["cycles_model"] and "No space left" in r["adapters_error"]


def test_the_results_plot_has_one_row_per_point(tmp_path):
    """docs/results.png: every measured or cited point is a row (fastest first), none left out."""
    from skip2lora.bench import _results_rows, accelerator_figures, plot_results

    r = accelerator_figures()
    r["cpu"] = {"results": [
        {"method": "lora-all", "accuracy": 0.756, "accuracy_std": 0.01, "ft_seconds": 8.5, "seeds": 3, "diverged": 0},
        {"method": "skip2-lora", "accuracy": 0.762, "accuracy_std": 0.0, "ft_seconds": 0.56, "seeds": 1, "diverged": 0},
        {"method": "ft-all", "accuracy": None, "accuracy_std": None, "ft_seconds": None, "seeds": 1, "diverged": 1}]}
    r.update(torch=None, fixed={"ft_seconds": 1.3, "accuracy": 0.766}, rtl={"ft_seconds": 13.5, "accuracy": 0.766})
    rows = _results_rows(r)
    assert [row[0] for row in rows] == [
        "accelerator on the KV260, projected (seed 0)", "InstantFT on the KV260 (published)",
        "skip2-lora, NumPy (1 seed)", "accelerator's bit-exact model, host wall (seed 0)",
        "quant Skip2-LoRA, RPi Zero 2W (published)", "lora-all, NumPy (3 seeds)",
        "accelerator RTL, simulation wall (seed 0)"]
    assert rows[2][4] is None and rows[5][4] == pytest.approx(1.0)  # no spread from one seed
    plot_results(r, tmp_path / "results.png")
    assert (tmp_path / "results.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow  # the KV260 build's RTL simulation (its first run exports and compiles it: minutes)
@pytest.mark.requires_data("fan-damage1")
@pytest.mark.parametrize("cache", ["chip", "ddr"])
def test_the_fan_mlp_on_the_kv260_builds_rtl_is_the_fixed_backends_job(cache, tmp_path):
    """One bitstream, another model: the Fan MLP (256-96-96-3) on the KV260 build's RTL, its geometry
    set by registers, gives the fixed backend's adapters, statistics and cycles, on chip and from DDR
    (the simulated memory at the latency the cycle model covers for its 15-line entries)."""
    from skip2lora.driver import load_adapters_file
    from skip2lora.fixed.model import Geometry
    from skip2lora.sim.runner import require_simulator

    require_simulator()
    out = {}
    for backend in ("sim", "fixed"):
        path = tmp_path / f"{backend}.npz"
        code, stdout, err = run_cli("finetune", "--backend", backend, "--dataset", "fan-damage1", "--samples", "64",
                                    "--epochs", "2", "--batch", "8", "--cache", cache, "--save-adapters", str(path),
                                    "--json")
        assert code == 0, err
        out[backend] = (one_json(stdout), load_adapters_file(path, Geometry((256, 96, 96), 4, 3))[0])
    (sim, a_sim), (fixed, a_fixed) = out["sim"], out["fixed"]
    assert sim["config"] == fixed["config"] == "kv260" and sim["cache"] == fixed["cache"] == cache
    assert sim["cycles"] == sim["cycles_model"] == fixed["cycles"]
    assert sim.get("ddr_latency") == fixed.get("ddr_latency") == (39 if cache == "ddr" else None)
    for key in ("train_accuracy_per_epoch", "losses", "saturated_per_epoch", "accuracy", "geometry"):
        assert sim[key] == fixed[key], key
    assert a_sim.equals(a_fixed)


def test_bench_reports_the_end_to_end_job_with_the_pl_fill():
    """`skip2lora bench --json`'s fill_cycles / cycles / end_to_end_ms: the FILL command's cycles of
    the KV260 job's 1024 images through the shipped integer LeNet-5 (the plan's 1,800-cycle
    interval), then the training cycles, at the assumed clock."""
    from skip2lora.bench import accelerator_figures
    from skip2lora.fixed import fill_plan as FP
    from skip2lora.fixed.base_int import shipped

    r = accelerator_figures()
    base = shipped("lenet5-fmnist")
    plan = FP.plan_fill(base)
    assert plan.interval == FP.TARGET_INTERVAL == 1800 and plan.dsps == 129
    fill = FP.fill_done_cycles(base, plan, 1024)[-1] + FP.first_byte_lag(128)
    assert r["fill_cycles"] == r["pl_fill"]["fill_cycles"] == fill == 1_849_906
    assert r["pl_fill"]["cycles"] == r["cycles"] == 927_291
    assert r["end_to_end_ms"] == pytest.approx((fill + r["cycles"]) / 200e3) and r["end_to_end_ms"] <= 20
    assert r["pl_fill"]["fill_images_per_s"] == pytest.approx(111_111.1, abs=0.1)
    assert r["pl_fill"]["configuration"].startswith("the kv260 configuration, its PL base the shipped integer LeNet-5")
