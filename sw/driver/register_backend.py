"""What the KV260 and the RTL-simulation backends share: the accelerator driven through its registers.

Both talk to the same hardware (the sim backend to its Verilog under cocotb, the pynq backend to
the bitstream through PYNQ): this class is the driver proper — command sequences, identity check,
error decoding, timeouts — written once. A subclass provides register ``read``/``write`` (by
byte offset), ``_send(bytes)`` to the stream input, ``_recv(nbytes)`` from the stream output,
and ``_wait_idle(what, cycles)``.

The DDR cache (``cache="ddr"``, or ``"auto"`` beyond the on-chip cache): the entries stay on the
host, packed as the DDR buffer holds them (`pack_ddr_cache`), and are written into a buffer the
accelerator reads when a job starts (only what changed). A subclass places that buffer:
``_ddr_buffer(nbytes)`` returns the bus address of a 4 KB aligned buffer of at least ``nbytes``
(its content kept while the address stays; a subclass that replaces the buffer calls
``_ddr_replaced()``), ``_ddr_write(offset, data)`` writes into it and ``_ddr_sync()`` makes the
writes visible to the accelerator. A job from DDR sets CACHE_MODE.ddr
and DDR_ADDR before its registers and START; an on-chip job clears CACHE_MODE.ddr.
"""

from __future__ import annotations

import numpy as np

from ..fixed.config import AcceleratorConfig
from ..fixed.cycles import DDRTiming
from ..fixed.model import Adapters, CacheEntries, Geometry, JobConfig
from ..fixed.packing import Layout, pack_adapters, pack_cache, pack_ddr_cache, unpack_adapters
from ..fixed.formats import STAT_EPOCHS
from .backend import AcceleratorError, Backend, epoch_stats
from .registers import RegisterFile, cache_registers, job_registers, regmap

__all__ = ["RegisterBackend"]


class RegisterBackend(Backend):
    """Subclasses set ``self.regs`` (a `RegisterFile`) before calling `_attach`."""

    regs: RegisterFile
    reports_epoch_stats = True  # the STAT_* registers (the last 1024 epochs)

    def _attach(self, config: AcceleratorConfig | None, *, cache: str = "auto",
                ddr_timing: DDRTiming | None = None) -> None:
        """Check the accelerator's identity and geometry (and its DDR path against ``config``'s), then
        reset it to a clean idle state."""
        self._forget_host_cache()
        self._ddr_addr = None  # the DDR buffer's bus address, once placed
        self._ddr_written = 0  # bytes of the host's entries already in it
        self._check_identity()
        found = self.read_config()
        if config is not None and (config.geometry != found.geometry or config.lanes != found.lanes
                                   or config.cache_depth > found.cache_depth
                                   or config.ddr_samples > found.ddr_samples or config.ddr_batch > found.ddr_batch):
            raise AcceleratorError(f"the accelerator is {found.to_dict()}, the job needs {config.to_dict()}")
        if found.ddr:
            stride, packed = self.regs.read("DDR_STRIDE"), Layout(found.geometry, found.lanes).ddr_stride
            if stride != packed:
                raise AcceleratorError(f"the accelerator reads DDR cache entries {stride} bytes apart (DDR_STRIDE), "
                                       f"this driver packs them {packed} bytes apart: update skip2lora or the bitstream")
        Backend.__init__(self, config if config is not None else found, cache=cache, ddr_timing=ddr_timing)
        self.soft_reset()

    def _check_identity(self) -> None:
        rm = regmap()
        ident, version = self.regs.read("ID"), self.regs.read_fields("VERSION")
        if ident != rm["id"]:
            raise AcceleratorError(f"no Skip2-LoRA accelerator here (ID register {ident:#010x}, "
                                   f"expected {rm['id']:#010x}): wrong bitstream?")
        if version["major"] != rm["version"][0]:
            raise AcceleratorError(f"the accelerator is version {version['major']}.{version['minor']}, this "
                                   f"driver needs {rm['version'][0]}.x: rebuild the bitstream or update skip2lora")

    def read_config(self) -> AcceleratorConfig:
        geo = self.regs.read_fields("GEOMETRY")
        dims = tuple(self.regs.read(f"TAP{k}_DIM") for k in range(geo["taps"]))
        ddr_samples, ddr_batch = self.regs.read("DDR_SAMPLES"), self.regs.read("DDR_BATCH")
        try:
            return AcceleratorConfig("accelerator", Geometry(dims, geo["rank"], geo["classes"]),
                                     self.regs.read("LANES"), self.regs.read("CACHE_DEPTH"), ddr_samples, ddr_batch)
        except ValueError as exc:
            raise AcceleratorError(f"the accelerator reports a configuration this driver cannot use: {exc}") from exc

    # -- status ---------------------------------------------------------------------------------
    def status(self) -> dict:
        return self.regs.read_fields("STATUS")

    def check_error(self, what: str) -> None:
        """Raise on a latched error, after clearing it (the cache and adapters stay valid): the
        accelerator ignores commands while an error is latched."""
        st = self.status()
        if st["error"]:
            names = {v: k for k, v in regmap()["error_codes"].items()}
            name = names.get(st["error_code"], st["error_code"])
            more = " (and later errors)" if st.get("overrun") else ""
            self.regs.write("CTRL", clear_error=1)
            if name == "DDR_READ":
                where = f" at {self._ddr_addr:#x}" if self._ddr_addr is not None else ""
                raise AcceleratorError(
                    f"{what}: reading the DDR cache buffer{where} failed (the accelerator reports DDR_READ{more}: "
                    f"the memory answered with an error): the job ran on what it received, so its adapters "
                    f"and statistics are not valid; load adapters again before the next job")
            raise AcceleratorError(f"{what}: the accelerator reports {name}{more}: "
                                   f"{regmap().get('error_docs', {}).get(name, '')}")

    def soft_reset(self) -> None:
        """Abort everything and clear errors; the cache is empty (on chip and in DDR) and adapters must
        be loaded again."""
        self.regs.write("CTRL", soft_reset=1)
        self._forget_host_cache()

    # -- the primitives a subclass provides -----------------------------------------------------
    def _send(self, data, what: str) -> None:
        raise NotImplementedError

    def _recv(self, nbytes: int, what: str, command):
        """Arm the stream output's receiver, call ``command()`` (which makes the accelerator send),
        and return the ``nbytes`` received."""
        raise NotImplementedError

    def _wait_idle(self, what: str, cycles: int, expected: int | None = None) -> dict:
        """Wait until STATUS.busy clears, at most ``cycles`` accelerator cycles (``expected``: how
        long the work should take, for a progress display); returns the STATUS fields."""
        raise NotImplementedError

    def _ddr_buffer(self, nbytes: int) -> int:
        """The bus address of a buffer of at least ``nbytes`` bytes the accelerator reads the DDR
        cache from (4 KB aligned; its content is kept while the address stays the same)."""
        raise NotImplementedError

    def _ddr_write(self, offset: int, data: np.ndarray) -> None:
        """Write ``data`` (uint8) at byte ``offset`` of the `_ddr_buffer`."""
        raise NotImplementedError

    def _ddr_sync(self) -> None:
        """Make the writes into the DDR buffer visible to the accelerator (e.g. flush the CPU's cache)."""

    def _ddr_replaced(self) -> None:
        """The subclass replaced its DDR buffer: the next job writes all the entries into the new one."""
        self._ddr_addr, self._ddr_written = None, 0

    # -- the DDR cache's host side --------------------------------------------------------------
    def _forget_host_cache(self) -> None:
        self._host_chunks: list[np.ndarray] = []  # the loaded entries, packed as in the DDR buffer
        self._host_count = 0
        self._ddr_written = 0

    @property
    def _keeps_host_copy(self) -> bool:
        """Loaded entries are kept on the host when a job may run them from DDR."""
        return self.config.ddr and self.cache_placement != "chip"

    def _sync_ddr(self) -> int:
        """Write the loaded entries not yet in the DDR buffer into it; returns its bus address."""
        total = self._host_count * self.layout.ddr_stride
        addr = int(self._ddr_buffer(total))
        try:
            cache_registers(addr)
        except ValueError as exc:
            raise AcceleratorError(str(exc)) from None
        if addr != self._ddr_addr:  # a new buffer: everything is written again
            self._ddr_addr, self._ddr_written = addr, 0
        offset, wrote = 0, False
        for chunk in self._host_chunks:
            if offset + chunk.size > self._ddr_written:
                skip = max(self._ddr_written - offset, 0)
                self._ddr_write(offset + skip, chunk[skip:])
                wrote = True
            offset += chunk.size
        if wrote:
            self._ddr_sync()
        self._ddr_written = total
        return addr

    # -- Backend interface ------------------------------------------------------------------------
    @property
    def cache_mode(self) -> str:
        return self._placement_for(self._host_count) if self._keeps_host_copy else "chip"

    @property
    def n_loaded(self) -> int:
        if self.cache_mode == "ddr":
            return self._host_count
        return self.regs.read("N_LOADED")

    def load_cache(self, entries: CacheEntries) -> None:
        """Append entries: to the on-chip cache (through the stream input) or, when the placement puts
        them in DDR, to the host's copy that the next job writes into the DDR buffer."""
        self.check_room(len(entries))
        if self._keeps_host_copy:
            packed = pack_ddr_cache(self.layout, entries)
            if self._placement_for(self._host_count + len(entries)) == "ddr":
                self._host_chunks.append(packed)
                self._host_count += len(entries)
                return
        self.check_error("before loading cache entries")
        self.regs.write("LOAD_COUNT", len(entries))
        self.regs.write("CTRL", load_cache=1)
        self.check_error("arming the cache load")
        self._send(pack_cache(self.layout, entries), f"loading {len(entries)} cache entries")
        self._wait_idle("loading cache entries", 1000)
        self.check_error(f"loading {len(entries)} cache entries")
        if self._keeps_host_copy:  # on chip now, and kept for the DDR buffer should they outgrow it
            self._host_chunks.append(packed)
            self._host_count += len(entries)

    def clear_cache(self) -> None:
        """Empty the cache: the on-chip one and the DDR one (the DDR buffer stays allocated)."""
        self._forget_host_cache()
        self.regs.write("CTRL", clear_cache=1)
        self.check_error("clearing the cache")

    def load_adapters(self, adapters: Adapters) -> None:
        adapters.validate(self.config.geometry)
        self.check_error("before loading adapters")
        self.regs.write("CTRL", load_adapters=1)
        self._send(pack_adapters(self.layout, adapters), "loading the adapters")
        self._wait_idle("loading the adapters", 1000)
        self.check_error("loading the adapters")

    def read_adapters(self) -> Adapters:
        data = self._recv(self.layout.adapter_beats * self.layout.beat_bytes, "reading the adapters",
                          lambda: self.regs.write("CTRL", read_adapters=1))
        self.check_error("reading the adapters")
        return unpack_adapters(self.layout, data)

    def run(self, job: JobConfig) -> dict:
        job.validate(self.config.geometry, self.n_loaded)
        mode = self.cache_mode
        if mode == "ddr":
            self.check_ddr_job(job)
        self.check_error("before starting a job")
        where = cache_registers(self._sync_ddr() if mode == "ddr" else None)
        for name, value in {**where, **job_registers(job)}.items():
            self.regs.write(name, value)
        self.regs.write("IRQ", done=1)  # clear a stale completion
        self.regs.write("CTRL", start=1)
        self.check_error("starting the job")
        expected = self.expected_cycles(job, mode)
        # from DDR the memory may be slower than the timing assumed: twice the time before giving up
        limit = expected + 10_000 if mode == "chip" else 2 * expected + 10_000
        st = self._wait_idle("the fine-tuning job", limit, expected=expected)
        if not st["done"]:
            raise AcceleratorError(f"the job ended without DONE (status {st})")
        self.check_error("the fine-tuning job")
        cycles = self.regs.read("CYCLES_LO") | (self.regs.read("CYCLES_HI") << 32)
        return {"cycles": cycles, "cache": mode, **self.read_epoch_stats(job.epochs)}

    def read_epoch_stats(self, epochs: int) -> dict:
        """The per-epoch statistics of the last job (the last 1024 epochs are kept on chip)."""
        first = max(0, epochs - STAT_EPOCHS)
        rows = []
        for e in range(first, epochs):
            self.regs.write("STAT_EPOCH", e % STAT_EPOCHS)
            rows.append((self.regs.read("STAT_CORRECT"), self.regs.read("STAT_LOSS"), self.regs.read("STAT_SAT")))
        out = epoch_stats(*zip(*rows))
        out["first_epoch"] = first
        return out
