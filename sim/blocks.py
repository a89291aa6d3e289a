"""Build and run a cocotb test of one block's Verilog (a block of hw/, not the whole accelerator).

    from skip2lora.sim.blocks import run_block
    run_block("ddr_reader", component, "skip2lora.sim.test_ddr_reader_axi", "ddr_reader_fills_slots",
              env={...})

The block is exported with Amaranth (its signature's ports: ``axi__araddr``, ``write__en``, ...,
plus ``clk`` and ``rst``), built once per Verilog text under the simulator build directory (the
accelerator's runner's simulator choice, Verilator options and lock), and the test's results are
read back: a failing cocotb test raises `skip2lora.sim.runner.CocotbFailure` with its log's tail.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path

from . import runner as R

__all__ = ["block_verilog", "run_block"]


def block_verilog(component, name: str) -> str:
    """The component as a Verilog module ``name`` whose ports are its signature's signals."""
    from amaranth.back import verilog
    from amaranth.hdl import Signal
    from amaranth.lib import data

    ports = []
    for _, _, value in component.signature.flatten(component):
        if isinstance(value, data.View):
            value = value.as_value()
        if isinstance(value, Signal):  # (an always-ready stream's ready is a constant, not a port)
            ports.append(value)
    return verilog.convert(component, name=name, ports=ports)


def run_block(name: str, component, test_module: str, testcase: str, *, env: dict | None = None,
              sim: str | None = None, log=R._stderr) -> Path:
    """Export ``component`` as module ``name``, build it (or reuse the build) and run ``testcase``."""
    sim = R.require_simulator(sim)
    text = block_verilog(component, name)
    tag = hashlib.sha256(text.encode()).hexdigest()[:12]
    build_dir = R.cache_dir() / f"{sim}-block-{name}-{tag}"
    stamp = build_dir / "build.done"
    kw = dict(timescale=R.ICARUS_TIMESCALE) if sim == "icarus" else {}
    if not stamp.is_file():
        with R._locked(R.cache_dir() / f"{sim}-block-{name}-{tag}.lock"):
            if not stamp.is_file():
                build_dir.mkdir(parents=True, exist_ok=True)
                source = build_dir / f"{name}.v"
                source.write_text(text)
                if sim == "icarus":
                    source = R.icarus_verilog(source)
                    runner = R._runner(sim)
                else:
                    vlt = build_dir / "public_top.vlt"
                    vlt.write_text(R._PUBLIC_TOP_VLT.format(top=name))
                    runner = R._runner(sim, make_vars=[f"OPT_FAST={R.SMALL_OPT_FAST}", "VM_PARALLEL_BUILDS=0"], vlt=vlt)
                    kw = dict(build_args=list(R.VERILATOR_ARGS))
                log(f"[sim] building block {name!r} with {sim} ...")
                t0 = time.perf_counter()
                runner.build(sources=[source], hdl_toplevel=name, build_dir=build_dir, always=True,
                             log_file=build_dir / "build.log", **kw)
                log(f"[sim] built block {name!r} in {time.perf_counter() - t0:.1f} s")
                stamp.write_text("ok\n")
    test_dir = build_dir / "runs" / f"{testcase}-{os.getpid()}-{time.time_ns() % 10**9}"
    test_dir.mkdir(parents=True, exist_ok=True)
    results = test_dir / "results.xml"
    extra_env = {k: str(v) for k, v in (env or {}).items()}
    extra_env.setdefault("COCOTB_LOG_LEVEL", os.environ.get("COCOTB_LOG_LEVEL", "INFO"))
    log_file = test_dir / "sim.log"
    run_kw = dict(timescale=R.ICARUS_TIMESCALE) if sim == "icarus" else {}
    try:
        R._runner(sim).test(test_module=test_module, hdl_toplevel=name, hdl_toplevel_lang="verilog",
                            build_dir=build_dir, test_dir=test_dir, test_filter=rf"\.{re.escape(testcase)}$",
                            extra_env=extra_env, results_xml=str(results), log_file=log_file, **run_kw)
    except (SystemExit, RuntimeError) as e:
        raise R.CocotbFailure(f"cocotb test {testcase} of block {name} failed ({e}); log {log_file}:\n"
                              f"{R._tail(log_file)}") from None
    from cocotb_tools.runner import get_results

    total, failed = get_results(results)
    if total == 0 or failed:
        raise R.CocotbFailure(f"cocotb test {testcase} of block {name}: {failed} of {total} failed; "
                              f"log {log_file}:\n{R._tail(log_file)}")
    return test_dir
