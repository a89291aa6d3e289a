"""The link between the host and the accelerator RTL running under cocotb in another process.

`SimLink` starts ``python -m skip2lora.sim.serve`` (the simulator, with the cocotb test
``serve`` that executes our requests), and talks to it over a local socket: register reads and
writes on AXI4-Lite, byte streams in and out on AXI4-Stream, and waiting a number of cycles; on a
build with the DDR cache path also the DDR behind its ``m_axi_cache`` port: writing and reading
buffers there (`SimLink.ddr_write`, `SimLink.ddr_read`), the memory's fixed latency
(`SimLink.ddr_latency`, `SimLink.ddr_latency_cycles`: a job's cycle counter equals
``job_cycles(..., ddr=DDRTiming(ddr_latency_cycles))``) and read faults (`SimLink.ddr_fail`).
Only the standard library is needed on this side, so the link works from the board environment
(numpy 1.x, pynq) while the simulator runs in the development environment
(``SKIP2LORA_SIM_PYTHON`` names its Python; default: this one). Every wait has a timeout.

Messages: a 4-byte big-endian length, a JSON header, then ``header["nbytes"]`` raw bytes. DDR
transfers go in requests of at most `DDR_CHUNK` bytes (a 134 MB buffer is 9 requests).
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque

__all__ = ["SimLink", "SimLinkError", "send_message", "recv_message"]

START_TIMEOUT = float(os.environ.get("SKIP2LORA_SIM_START_TIMEOUT", 3600))  # includes Verilog export + build
REQUEST_TIMEOUT = 600.0  # host seconds for one request (the simulator enforces cycle timeouts too)
DDR_CHUNK = 16 << 20     # bytes of DDR data in one request


class SimLinkError(RuntimeError):
    """The simulator failed, refused a request, or did not answer in time."""


def _recv_exact(sock, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise ConnectionError("the simulator closed the connection")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def send_message(sock, header: dict, payload: bytes = b"") -> None:
    header = dict(header, nbytes=len(payload))
    raw = json.dumps(header).encode()
    head = struct.pack(">I", len(raw)) + raw
    if len(payload) < (1 << 20):
        sock.sendall(head + bytes(payload))  # one write: no Nagle/delayed-ACK stall for small requests
    else:
        sock.sendall(head)
        sock.sendall(payload)  # (a large DDR chunk: not copied once more)


def recv_message(sock) -> tuple[dict, bytes]:
    (n,) = struct.unpack(">I", _recv_exact(sock, 4))
    header = json.loads(_recv_exact(sock, n).decode())
    return header, _recv_exact(sock, header.get("nbytes", 0))


class SimLink:
    """A running simulation of one accelerator configuration."""

    def __init__(self, config_dict: dict, *, sim: str | None = None, log=None):
        self.config = dict(config_dict)
        self._log_lines = deque(maxlen=200)
        self._log = log
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(1.0)
        port = listener.getsockname()[1]
        python = os.environ.get("SKIP2LORA_SIM_PYTHON") or sys.executable
        env = dict(os.environ)
        if sim:
            env["SIM"] = sim
        self.sock = None
        self._keep_log = False  # a failure keeps the simulator's log for the user to read
        self._logfile = tempfile.NamedTemporaryFile(prefix="skip2lora-sim-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [python, "-m", "skip2lora.sim.serve", "--port", str(port), "--config", json.dumps(self.config)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True, bufsize=1)
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while True:
                try:
                    self.sock, _ = listener.accept()
                    break
                except socket.timeout:
                    if self.proc.poll() is not None:
                        self._reader.join(timeout=5)  # the log is complete once the pipe is drained
                        raise SimLinkError(f"the simulator exited ({self.proc.returncode}) before connecting"
                                           + self._failure_note())
                    if time.monotonic() > deadline:
                        self.proc.kill()
                        raise SimLinkError(f"the simulator did not connect within {START_TIMEOUT:g} s"
                                           + self._failure_note())
        except BaseException:
            if self.proc.poll() is None:  # e.g. Ctrl-C while the RTL compiles: do not wait for it
                self.proc.kill()
            self.close()
            raise
        finally:
            listener.close()
        self.sock.settimeout(REQUEST_TIMEOUT)
        hello, _ = recv_message(self.sock)
        self.info = hello
        #: the DDR memory's fixed latency in cycles (None: the build has no DDR cache path)
        self.ddr_latency_cycles = hello.get("ddr_latency")

    def _pump(self):
        for line in self.proc.stdout:
            self._log_lines.append(line.rstrip("\n"))
            self._logfile.write(line.encode())
            self._logfile.flush()
            if self._log is not None and line.startswith("[sim]"):
                self._log(line.rstrip("\n"))

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(list(self._log_lines)[-n:])

    @property
    def log_path(self) -> str:
        """The simulator's whole output (deleted by `close` unless something failed)."""
        return self._logfile.name

    def _failure_note(self) -> str:
        """': <the log's last line>; details in <log file>' -- one line for the user, the log kept."""
        self._keep_log = True
        last = next((line.strip() for line in reversed(self._log_lines) if line.strip()), "")
        return (f": {last}" if last else "") + f" (the simulator's log: {self.log_path})"

    def request(self, op: str, payload: bytes = b"", **fields) -> tuple[dict, bytes]:
        if self.proc.poll() is not None:
            raise SimLinkError(f"the simulator is not running (exit {self.proc.returncode})" + self._failure_note())
        if self.sock is None:
            raise SimLinkError("the simulation is closed")
        try:
            send_message(self.sock, {"op": op, **fields}, payload)
            reply, data = recv_message(self.sock)
        except (OSError, ConnectionError) as exc:  # socket.timeout is an OSError
            raise SimLinkError(f"simulator request {op!r} failed: {exc}" + self._failure_note()) from exc
        if not reply.get("ok"):
            raise SimLinkError(f"simulator request {op!r}: {reply.get('error')}")
        return reply, data

    # -- the operations ------------------------------------------------------------------------
    def write(self, addr: int, value: int) -> None:
        self.request("write", addr=int(addr), value=int(value))

    def read(self, addr: int, advance: int = 0) -> int:
        """Read a register, first letting ``advance`` clock cycles pass (time passes on a board too)."""
        return self.request("read", addr=int(addr), advance=int(advance))[0]["value"]

    def send(self, data: bytes, timeout_cycles: int | None = None) -> None:
        """Stream bytes into s_axis as one packet (TLAST on the last beat)."""
        data = bytes(data)
        self.request("send", data, timeout_cycles=timeout_cycles or 64 * len(data) + 10_000)

    def recv(self, timeout_cycles: int) -> bytes | None:
        """The next packet from m_axis, or None if none completes within ``timeout_cycles``."""
        reply, data = self.request("recv", timeout_cycles=int(timeout_cycles))
        return data if reply.get("received") else None

    def run(self, cycles: int) -> None:
        self.request("run", cycles=int(cycles))

    def wait_idle(self, status_addr: int, busy_mask: int, timeout_cycles: int, poll: int = 1024) -> int:
        """Poll a status register until ``value & busy_mask == 0``; returns the value (timeout: error)."""
        return self.request("wait_idle", addr=int(status_addr), mask=int(busy_mask),
                            timeout_cycles=int(timeout_cycles), poll=int(poll))[0]["value"]

    # -- the DDR behind m_axi_cache (builds with the DDR cache path) ------------------------------
    @property
    def has_ddr(self) -> bool:
        """The build has the DDR cache path, and the simulation a DDR memory on it."""
        return bool(self.info.get("ddr"))

    def _require_ddr(self) -> None:
        if not self.has_ddr:
            raise SimLinkError(f"the simulated build {self.config.get('name')!r} has no DDR cache path")

    def ddr_write(self, addr: int, data: bytes) -> None:
        """Write bytes at DDR bus address ``addr`` (no simulated time passes), in `DDR_CHUNK` requests."""
        self._require_ddr()
        view = memoryview(data)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")  # (e.g. a numpy array of wider elements)
        addr = int(addr)
        for off in range(0, len(view), DDR_CHUNK):
            self.request("ddr_write", view[off:off + DDR_CHUNK], addr=addr + off)

    def ddr_read(self, addr: int, n: int) -> bytes:
        """``n`` bytes from DDR bus address ``addr`` (unwritten bytes read 0)."""
        self._require_ddr()
        addr, n = int(addr), int(n)
        if n < 0:
            raise ValueError(f"cannot read {n} bytes")
        parts = [self.request("ddr_read", addr=addr + off, n=min(DDR_CHUNK, n - off))[1]
                 for off in range(0, n, DDR_CHUNK)]
        return b"".join(parts)

    def ddr_latency(self, cycles: int) -> None:
        """Make the DDR memory the exact fixed-latency one, ``DDRTiming(cycles)``: each burst's first
        beat ``cycles`` after its address, then a beat a cycle (`ddr_latency_cycles` follows)."""
        self._require_ddr()
        cycles = int(cycles)
        if cycles < 0:
            raise ValueError(f"a DDR latency is a non-negative number of cycles, not {cycles}")
        self.ddr_latency_cycles = self.request("ddr_latency", cycles=cycles)[0]["latency"]

    def ddr_fail(self, addr: int, n: int) -> None:
        """From now on every read of a beat overlapping bytes ``addr .. addr + n - 1`` answers SLVERR
        (the accelerator reports DDR_READ); `ddr_clear_faults` ends all of them."""
        self._require_ddr()
        self.request("ddr_fail", addr=int(addr), n=int(n))

    def ddr_clear_faults(self) -> None:
        self._require_ddr()
        self.request("ddr_clear_faults")

    def close(self) -> None:
        if self.sock is not None:
            try:
                send_message(self.sock, {"op": "quit"})
                recv_message(self.sock)
            except (OSError, ConnectionError, struct.error):
                pass
            self.sock.close()
            self.sock = None
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._reader.join(timeout=5)
        self._logfile.close()
        if not self._keep_log:
            try:
                os.unlink(self._logfile.name)
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
