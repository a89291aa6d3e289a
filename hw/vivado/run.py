"""Finding and running Vivado in batch mode."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys

from .design import MIN_VIVADO

__all__ = ["VivadoNotFound", "find_vivado", "vivado_command", "default_jobs", "run_vivado", "log"]

_INSTALL_HINT = (
    "Vivado {min} or newer is needed to build the bitstream: install the AMD Vivado ML Edition "
    "(the free Standard edition covers the KV260's XCK26; select 'Zynq UltraScale+ MPSoC' devices), "
    "then `source <install>/Vivado/<version>/settings64.sh` so that `vivado` is on PATH (or set "
    "$VIVADO to the executable). The Kria KV260 board files come from the Vivado board store "
    "(the flow tries to install them; or Tools > Vivado Store > Boards)."
)


class VivadoNotFound(FileNotFoundError):
    """``vivado`` is not on PATH (nor named by $VIVADO)."""


def find_vivado(vivado=None) -> str:
    """The ``vivado`` executable: the argument, then $VIVADO, then PATH."""
    cand = vivado or os.environ.get("VIVADO") or "vivado"
    path = shutil.which(cand)
    if path is None:
        where = f"{cand!r} is not an executable" if (vivado or os.environ.get("VIVADO")) else \
            "`vivado` is not on PATH"
        raise VivadoNotFound(f"{where}. " + _INSTALL_HINT.format(min=MIN_VIVADO))
    return path


def default_jobs() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def vivado_command(build_dir=".", *, jobs=None, vivado="vivado") -> list:
    """The batch command, run in ``build_dir`` (``-tclargs`` override the script's defaults)."""
    del build_dir  # the script finds its own directory; the command is run with cwd=build_dir
    cmd = [vivado, "-mode", "batch", "-nojournal", "-log", "vivado.log", "-source", "build.tcl"]
    if jobs:
        cmd += ["-tclargs", f"jobs={jobs}"]
    return cmd


def log(msg: str) -> None:
    print(f"skip2lora hw bitstream: {msg}", file=sys.stderr, flush=True)


def run_vivado(cmd, cwd) -> None:
    """Run ``cmd`` in ``cwd``, echoing Vivado's output to stderr; a failure names the log."""
    log(f"running {shlex.join(cmd)} in {cwd} (hours for the kv260 build; log: {cwd}/vivado.log)")
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace")
    tail = []
    for line in proc.stdout:
        sys.stderr.write(line)
        tail = (tail + [line])[-40:]
    rc = proc.wait()
    if rc:
        raise RuntimeError(f"vivado failed with status {rc}; see {cwd}/vivado.log. Last lines:\n"
                           + "".join(tail))
