"""What the KV260 and the RTL-simulation backends share: the accelerator driven through its registers.

Both talk to the same hardware (the sim backend to its Verilog under cocotb, the pynq backend to
the bitstream through PYNQ): this class is the driver proper — command sequences, identity check,
error decoding, timeouts — written once. A subclass provides register ``read``/``write`` (by
byte offset), ``_send(bytes)`` to the stream input, ``_recv(nbytes)`` from the stream output,
and ``_wait_idle(what, cycles)``.
"""

from __future__ import annotations

from ..fixed.config import AcceleratorConfig
from ..fixed.cycles import job_cycles
from ..fixed.model import Adapters, CacheEntries, Geometry, JobConfig
from ..fixed.packing import pack_adapters, pack_cache, unpack_adapters
from ..fixed.formats import STAT_EPOCHS
from .backend import AcceleratorError, Backend, epoch_stats
from .registers import RegisterFile, job_registers, regmap

__all__ = ["RegisterBackend"]


class RegisterBackend(Backend):
    """Subclasses set ``self.regs`` (a `RegisterFile`) before calling `_attach`."""

    regs: RegisterFile
    reports_epoch_stats = True  # the STAT_* registers (the last 1024 epochs)

    def _attach(self, config: AcceleratorConfig | None) -> None:
        """Check the accelerator's identity and geometry, then reset it to a clean idle state."""
        self._check_identity()
        found = self.read_config()
        if config is not None and (config.geometry != found.geometry or config.lanes != found.lanes
                                   or config.cache_depth > found.cache_depth):
            raise AcceleratorError(f"the accelerator is {found.to_dict()}, the job needs {config.to_dict()}")
        Backend.__init__(self, config if config is not None else found)
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
        return AcceleratorConfig("accelerator", Geometry(dims, geo["rank"], geo["classes"]),
                                 self.regs.read("LANES"), self.regs.read("CACHE_DEPTH"))

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
            raise AcceleratorError(f"{what}: the accelerator reports {name}{more}: "
                                   f"{regmap().get('error_docs', {}).get(name, '')}")

    def soft_reset(self) -> None:
        """Abort everything and clear errors; the cache is empty and adapters must be loaded again."""
        self.regs.write("CTRL", soft_reset=1)

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

    # -- Backend interface ------------------------------------------------------------------------
    @property
    def n_loaded(self) -> int:
        return self.regs.read("N_LOADED")

    def load_cache(self, entries: CacheEntries) -> None:
        self.check_room(len(entries))
        self.check_error("before loading cache entries")
        self.regs.write("LOAD_COUNT", len(entries))
        self.regs.write("CTRL", load_cache=1)
        self.check_error("arming the cache load")
        self._send(pack_cache(self.layout, entries), f"loading {len(entries)} cache entries")
        self._wait_idle("loading cache entries", 1000)
        self.check_error(f"loading {len(entries)} cache entries")

    def clear_cache(self) -> None:
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
        self.check_error("before starting a job")
        for name, value in job_registers(job).items():
            self.regs.write(name, value)
        self.regs.write("IRQ", done=1)  # clear a stale completion
        self.regs.write("CTRL", start=1)
        self.check_error("starting the job")
        expected = job_cycles(self.layout, job.samples, job.batch, job.epochs, shuffle=job.shuffle)
        st = self._wait_idle("the fine-tuning job", expected + 10_000, expected=expected)
        if not st["done"]:
            raise AcceleratorError(f"the job ended without DONE (status {st})")
        self.check_error("the fine-tuning job")
        cycles = self.regs.read("CYCLES_LO") | (self.regs.read("CYCLES_HI") << 32)
        return {"cycles": cycles, **self.read_epoch_stats(job.epochs)}

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
