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

Run-time geometry: the build's registers describe its maxima (GEOMETRY, TAP_LINES, ENTRY_LINES,
LANES, CACHE_DEPTH, DDR_*), checked against the configuration when the backend attaches; each job
writes its model (TAPk_DIM, CLASSES) with its other registers. The streams are in the build's
sizes: a cache entry padded to ENTRY_LINES lines (`pack_cache_for`), a DDR buffer at the build's
DDR_STRIDE (`pack_ddr_cache_for`), adapter images of the build's taps, rank and classes with the
job's adapters zero-padded (`pack_adapters_for` / `unpack_adapters_for`).

FILL (a build with a PL base): `fill` checks FILL_INFO (present, and the image's beats this
driver packs), writes the base's geometry (TAPk_DIM, CLASSES) and the cache exponents (TAPk_CFG),
LOAD_COUNT and CTRL.fill, streams the images (`pack_images`), waits for the commit and reads
FILL_CYCLES. The filled entries are on chip only: no host copy exists for a DDR buffer
(`Backend.fill` refuses a fill placed in DDR).
"""

from __future__ import annotations

import numpy as np

from ..fixed.config import CONFIGS, AcceleratorConfig
from ..fixed.cycles import DDRTiming
from ..fixed.model import Adapters, CacheEntries, Geometry, JobConfig
from ..fixed.packing import (Layout, image_beats, pack_adapters_for, pack_cache_for, pack_ddr_cache_for, pack_images,
                             result_beats, unpack_adapters_for, unpack_results)
from ..fixed.formats import STAT_EPOCHS
from .backend import AcceleratorError, Backend, epoch_stats, expected_fill_cycles, expected_predict_cycles
from .registers import RegisterFile, cache_registers, fill_registers, job_registers, regmap

PREDICT_VERSION = (3, 2)  # the register map's version that has the PREDICT command

__all__ = ["RegisterBackend", "build_registers"]


def build_registers(config: AcceleratorConfig) -> dict:
    """What a build of ``config`` reports in its read-only registers: its maxima (GEOMETRY: taps, rank,
    classes; TAP_LINES; ENTRY_LINES, the lines of a cache entry as it takes them), LANES, CACHE_DEPTH
    and its DDR path (DDR_SAMPLES, DDR_BATCH, DDR_STRIDE; zeros without one)."""
    build = Layout(config.build_geometry, config.lanes)
    return {"taps": config.taps_max, "rank": config.geometry.rank, "classes": config.classes_max,
            "tap_lines": config.tap_lines_max, "entry_lines": build.sample_lines, "lanes": config.lanes,
            "cache_depth": config.cache_depth, "ddr_samples": config.ddr_samples, "ddr_batch": config.ddr_batch,
            "ddr_stride": build.ddr_stride if config.ddr else 0}


def _build_text(regs: dict) -> str:
    text = (f"{regs['taps']} taps, rank {regs['rank']}, {regs['classes']} classes, {regs['tap_lines']} tap lines "
            f"({regs['entry_lines']}-line entries), {regs['lanes']} lanes, a {regs['cache_depth']}-entry cache")
    if regs["ddr_samples"]:
        text += f", a DDR path of {regs['ddr_samples']} samples (batches up to {regs['ddr_batch']})"
    return text


class RegisterBackend(Backend):
    """Subclasses set ``self.regs`` (a `RegisterFile`) before calling `_attach`."""

    regs: RegisterFile
    reports_epoch_stats = True  # the STAT_* registers (the last 1024 epochs)

    def _attach(self, config: AcceleratorConfig | None, *, cache: str = "auto",
                ddr_timing: DDRTiming | None = None) -> None:
        """Check the accelerator's identity and its build (its maxima, lanes, cache and DDR path against
        ``config``'s; without one, the build is taken as found), then reset it to a clean idle state."""
        self._forget_host_cache()
        self._ddr_addr = None  # the DDR buffer's bus address, once placed
        self._ddr_written = 0  # bytes of the host's entries already in it
        self._check_identity()
        found = self.read_build()
        if config is not None:
            want = build_registers(config)
            same = ("taps", "rank", "classes", "tap_lines", "entry_lines", "lanes", "ddr_stride")
            if any(want[k] != found[k] for k in same) or any(
                    want[k] > found[k] for k in ("cache_depth", "ddr_samples", "ddr_batch")):
                if found["ddr_stride"] != want["ddr_stride"] and all(want[k] == found[k] for k in same[:-1]):
                    raise AcceleratorError(
                        f"the accelerator reads DDR cache entries {found['ddr_stride']} bytes apart (DDR_STRIDE), "
                        f"this driver packs them {want['ddr_stride']} bytes apart: update skip2lora or the bitstream")
                raise AcceleratorError(f"the accelerator's build is {_build_text(found)}; the {config.name} "
                                       f"configuration needs {_build_text(want)}")
        else:
            config = self.read_config(found)
        Backend.__init__(self, config, cache=cache, ddr_timing=ddr_timing)
        self.soft_reset()

    def read_build(self) -> dict:
        """The build as its read-only registers describe it (`build_registers`' keys)."""
        geo = self.regs.read_fields("GEOMETRY")
        return {"taps": geo["taps"], "rank": geo["rank"], "classes": geo["classes"],
                "tap_lines": self.regs.read("TAP_LINES"), "entry_lines": self.regs.read("ENTRY_LINES"),
                "lanes": self.regs.read("LANES"), "cache_depth": self.regs.read("CACHE_DEPTH"),
                "ddr_samples": self.regs.read("DDR_SAMPLES"), "ddr_batch": self.regs.read("DDR_BATCH"),
                "ddr_stride": self.regs.read("DDR_STRIDE") if self.regs.read("DDR_SAMPLES") else 0}

    def _check_identity(self) -> None:
        rm = regmap()
        ident, version = self.regs.read("ID"), self.regs.read_fields("VERSION")
        if ident != rm["id"]:
            raise AcceleratorError(f"no Skip2-LoRA accelerator here (ID register {ident:#010x}, "
                                   f"expected {rm['id']:#010x}): wrong bitstream?")
        if version["major"] != rm["version"][0]:
            raise AcceleratorError(f"the accelerator is version {version['major']}.{version['minor']}, this "
                                   f"driver needs {rm['version'][0]}.x: rebuild the bitstream or update skip2lora")

    def read_config(self, found: dict | None = None) -> AcceleratorConfig:
        """The configuration of the build found (``found``: `read_build`'s registers, read now when
        None): a named one (`skip2lora.fixed.config.CONFIGS`, e.g. the KV260 build, its model the
        default geometry) whose registers are these and whose PL base is there as FILL_INFO says,
        else one named "accelerator" whose default geometry is its maxima (any model within them
        runs: `set_geometry`; no PL base is known, so `fill` needs a configuration)."""
        found = self.read_build() if found is None else found
        pl_base = bool(self.regs.read_fields("FILL_INFO")["present"])
        for config in CONFIGS.values():  # (a build with a PL base matches a configuration naming one)
            if build_registers(config) == found and bool(config.fill_base) == pl_base:
                return config
        p, k, lines = found["lanes"], found["taps"], found["tap_lines"]
        try:
            if not 1 <= k <= lines:
                raise ValueError(f"{k} taps in {lines} tap lines")
            geometry = Geometry((p,) * (k - 1) + (p * (lines - k + 1),), found["rank"], found["classes"])
            config = AcceleratorConfig("accelerator", geometry, p, found["cache_depth"], found["ddr_samples"],
                                       found["ddr_batch"])
        except (ValueError, TypeError) as exc:
            raise AcceleratorError(f"the accelerator reports a configuration this driver cannot use: {exc}") from exc
        seen = build_registers(config)
        for key in ("entry_lines", "ddr_stride"):
            if seen[key] != found[key]:
                raise AcceleratorError(f"the accelerator's build is {_build_text(found)}, but this driver packs "
                                       f"{seen[key]} for its {key.upper()}: update skip2lora or the bitstream")
        return config

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
        self._pl_filled = 0  # entries the PL base filled: on chip only, in no host copy

    @property
    def _keeps_host_copy(self) -> bool:
        """Loaded entries are kept on the host when a job may run them from DDR."""
        return self.config.ddr and self.cache_placement != "chip"

    def _sync_ddr(self) -> int:
        """Write the loaded entries not yet in the DDR buffer into it; returns its bus address."""
        total = self._host_count * self.build_layout.ddr_stride
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
        return self.placement_for(self._host_count + self._pl_filled) if self._keeps_host_copy else "chip"

    @property
    def n_loaded(self) -> int:
        if self.cache_mode == "ddr":
            return self._host_count
        return self.regs.read("N_LOADED")

    def load_cache(self, entries: CacheEntries) -> None:
        """Append entries: to the on-chip cache (through the stream input) or, when the placement puts
        them in DDR, to the host's copy that the next job writes into the DDR buffer."""
        self.check_room(len(entries))
        self._check_load_beside_fill(len(entries))
        if self._keeps_host_copy:
            packed = pack_ddr_cache_for(self.build_layout, self.layout, entries)
            if self.placement_for(self._host_count + len(entries)) == "ddr":
                self._host_chunks.append(packed)
                self._host_count += len(entries)
                return
        self.check_error("before loading cache entries")
        self.regs.write("LOAD_COUNT", len(entries))
        self.regs.write("CTRL", load_cache=1)
        self.check_error("arming the cache load")
        self._send(pack_cache_for(self.build_layout, self.layout, entries), f"loading {len(entries)} cache entries")
        self._wait_idle("loading cache entries", 1000)
        self.check_error(f"loading {len(entries)} cache entries")
        if self._keeps_host_copy:  # on chip now, and kept for the DDR buffer should they outgrow it
            self._host_chunks.append(packed)
            self._host_count += len(entries)

    @property
    def has_predict(self) -> bool:
        """A PL base, and a register map with PREDICT (an older bitstream has FILL only)."""
        if self.pl_base is None:
            return False
        version = self.regs.read_fields("VERSION")
        return (version["major"], version["minor"]) >= PREDICT_VERSION

    def _check_pl_base(self, images, command: str) -> None:
        """The accelerator has this build's PL base (FILL_INFO) and, for PREDICT, the command."""
        info = self.regs.read_fields("FILL_INFO")
        size = images.shape[1]
        want = image_beats(self.build_layout.beat_bytes, size)
        if not info["present"]:
            raise AcceleratorError(f"the accelerator has no PL base (FILL_INFO.present = 0), but the "
                                   f"{self.config.name} configuration names {self.config.fill_base!r}: load a "
                                   f"bitstream built with it")
        if info["image_beats"] != want:
            raise AcceleratorError(f"the accelerator's PL base takes {info['image_beats']}-beat images (FILL_INFO), "
                                   f"this driver packs the {self.config.fill_base!r} base's {size}-byte images in "
                                   f"{want} beats: the bitstream was built with another base")
        version = self.regs.read_fields("VERSION")
        if command == "predict" and (version["major"], version["minor"]) < PREDICT_VERSION:
            raise AcceleratorError(f"the accelerator's register map is version {version['major']}."
                                   f"{version['minor']}: PREDICT needs {PREDICT_VERSION[0]}.{PREDICT_VERSION[1]}; "
                                   f"load a newer bitstream, or predict on the host")

    def _fill(self, base, images, labels, exponents) -> dict:
        """FILL: the images streamed to the PL base, their entries after the N_LOADED held."""
        self._check_pl_base(images, "fill")
        n = len(images)
        self.check_error("before filling the cache")
        for name, value in fill_registers(base, exponents).items():
            self.regs.write(name, value)
        self.regs.write("LOAD_COUNT", n)
        self.regs.write("CTRL", fill=1)
        self.check_error("arming the fill")  # BAD_CONFIG: the registers are not the base's
        self._send(pack_images(self.build_layout, images, labels), f"streaming {n} images to the PL base")
        expected = expected_fill_cycles(self.config, n)
        self._wait_idle(f"filling {n} cache entries on the PL", 2 * expected + 10_000, expected=expected)
        self.check_error(f"filling {n} cache entries on the PL")
        return {"fill_cycles": self.regs.read("FILL_CYCLES"), "images": n}

    def _predict_pl(self, base, images, labels, exponents):
        """PREDICT: the images streamed to the PL base while their results stream back."""
        self._check_pl_base(images, "predict")
        if not self.status()["adapters"]:
            raise RuntimeError("load adapters before predicting (the accelerator holds none)")
        n = len(images)
        self.check_error("before predicting")
        for name, value in fill_registers(base, exponents).items():
            self.regs.write(name, value)
        self.regs.write("LOAD_COUNT", n)
        build = self.build_layout
        nbytes = n * result_beats(build.geometry.classes, build.beat_bits) * build.beat_bytes
        what = f"predicting {n} images on the PL"

        def command():
            self.regs.write("CTRL", predict=1)
            self.check_error("arming the prediction")  # BAD_CONFIG: the registers are not the base's
            self._send(pack_images(build, images, labels), what)

        data = self._recv(nbytes, what, command)
        expected = expected_predict_cycles(self.config, n)
        self._wait_idle(what, 2 * expected + 10_000, expected=expected)
        self.check_error(what)
        y, classes = unpack_results(np.frombuffer(data.tobytes(), "<i2"), n, build.geometry.classes,
                                    build.beat_bits, self.geometry.classes)
        return y, classes, self.regs.read("PREDICT_CYCLES")

    def clear_cache(self) -> None:
        """Empty the cache: the on-chip one and the DDR one (the DDR buffer stays allocated)."""
        self._forget_host_cache()
        self.regs.write("CTRL", clear_cache=1)
        self.check_error("clearing the cache")

    def _forget_job_state(self) -> None:
        """A new geometry: the on-chip cache, the DDR cache and the adapters are forgotten (a soft reset)."""
        self.soft_reset()

    def load_adapters(self, adapters: Adapters) -> None:
        adapters.validate(self.geometry)
        self.check_error("before loading adapters")
        self.regs.write("CTRL", load_adapters=1)
        self._send(pack_adapters_for(self.build_layout, self.layout, adapters), "loading the adapters")
        self._wait_idle("loading the adapters", 1000)
        self.check_error("loading the adapters")

    def read_adapters(self) -> Adapters:
        build = self.build_layout
        data = self._recv(build.adapter_beats * build.beat_bytes, "reading the adapters",
                          lambda: self.regs.write("CTRL", read_adapters=1))
        self.check_error("reading the adapters")
        return unpack_adapters_for(build, self.layout, data)

    def run(self, job: JobConfig) -> dict:
        job.validate(self.geometry, self.n_loaded)
        mode = self.cache_mode
        if mode == "ddr":
            self.check_ddr_job(job)
        self.check_error("before starting a job")
        where = cache_registers(self._sync_ddr() if mode == "ddr" else None)
        for name, value in {**where, **job_registers(job, self.geometry)}.items():
            self.regs.write(name, value)
        self.regs.write("IRQ", done=1)  # clear a stale completion
        self.regs.write("CTRL", start=1)
        self.check_error("starting the job")
        expected = self.expected_cycles(job, mode)
        # from DDR the memory may be slower than the timing assumed: twice the time before giving up
        limit = expected + 10_000 if mode == "chip" else 2 * expected + 10_000
        st = self._wait_idle("the fine-tuning job", limit, expected=expected)
        self.check_error("the fine-tuning job")  # e.g. BAD_CONFIG, found at the job's INIT (no DONE)
        if not st["done"]:
            raise AcceleratorError(f"the job ended without DONE (status {st})")
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
