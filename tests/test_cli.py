"""The `skip2lora` command: JSON output, figures, and a clear error for every kind of bad input."""

import json
import subprocess
import sys

import pytest

from skip2lora.cli import main


def run_cli(*args):
    """Run the command in-process; returns (exit code, stdout, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "skip2lora.cli", *args], capture_output=True, text=True,
                          timeout=900)
    return proc.returncode, proc.stdout, proc.stderr


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
])
def test_bad_arguments_are_named(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


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


def test_other_methods_are_refused_on_the_accelerator_backends():
    code, out, err = run_cli("finetune", "--backend", "fixed", "--method", "lora-all")
    assert code == 2 and "runs quant-skip2-lora" in err


def test_the_accelerator_backends_refuse_a_shuffled_order_and_a_schedule():
    code, out, err = run_cli("finetune", "--backend", "fixed", "--order", "shuffle")
    assert code == 2 and "replays one fixed sample order" in err
    code, out, err = run_cli("finetune", "--backend", "fixed", "--schedule", "warmup-linear")
    assert code == 2 and "one job at one learning rate" in err
