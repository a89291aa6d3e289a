"""The accelerator core: registers, commands, errors, and the blocks wired together.

    AXI4-Lite -> register bank -> commands -> sequencer -> datapath (MAC array) <-> head unit
                                     |  scalar unit (step sizes), order unit (sample orders)
                                     '-> optimizer (A lines from the datapath, B rows from the head)
    AXI4-Stream in -> stream loader -> cache / A memory / B     A memory, B -> streamer -> AXI4-Stream out
                            '-> fill feeder -> fill pipeline (the PL base) -> cache    (FILL, optional)

A job's registers (and the per-tap shifts derived from them) are registered when it starts, so
the host may change them while it runs. Errors latch (the first code is kept, later ones set
OVERRUN) and block every command but SOFT_RESET and CLEAR_ERROR. A soft reset resets every
block's state (not the memories): the core is idle, no error, the cache is empty, no adapters
are valid (load them again), DONE and IRQ.done are cleared.

FILL (a build given a PL base, ``fill_base``): the host streams LOAD_COUNT images (label and
quantized input, `fill_feeder`'s format) and the fill pipeline (hw/fill_pipeline.py) writes their
cache entries after the N_LOADED held, as LOAD_CACHE of `packing.pack_cache_for` of
`IntBase.encode` with the exponents of TAPk_CFG would have, bit for bit. The command checks the
job registers against the base (TAPk_DIM and CLASSES its geometry, TAPk_CFG.signed its taps'
signedness, each TAPk_CFG.exponent its tap's LSB exponent + 0..31) and registers the shifts; the
stream follows the pipeline's pace (TREADY); N_LOADED grows when every entry is written. A soft
reset, or a TLAST error, resets the feeder and the pipeline (its engines, the writer, its label
queue: the images and labels in flight are dropped; the lines already written past N_LOADED are
free again).

PREDICT (the same builds, docs/pl-predict.md): the host streams LOAD_COUNT images in FILL's format
and receives one result an image on the stream output (`packing.pack_results`: the y of
`fixed.model.forward` under the adapters held, then its class). The command makes FILL's checks
but not its room check, and needs valid adapters. The fill pipeline writes each entry into a
ring of `RING_ENTRIES` entry slots past the cache's entries (the loader takes an image's first
beat only when its slot is free); the sequencer's forward-only mode passes each entry through
the datapath and head 0 as soon as it is written, and the streamer sends the results, so the
images/s are the fill pipeline's. N_LOADED, the cache's entries, A, B, the optimizer's state,
CYCLES, EPOCH, DONE and IRQ.done are unchanged; CORRECT counts the images whose class is their
label. A TLAST error aborts it: the pipeline is reset and the output frame ends (hw/stream_out.py).
PREDICT_CYCLES counts from the cycle the loader is armed to the cycle the last result beat is
taken (`fill_plan.predict_command_cycles`).

FILL_CYCLES counts the cycles the fill is armed: from the cycle the loader is armed (two cycles
after the command's cycle: the accepted command reaches the loader from a register) to the cycle
before its commit. With the transfer's first beat offered ``d`` cycles after the command's cycle
(d >= 1: a beat in the command's own cycle finds nothing armed, STREAM_UNEXPECTED) and the
stream never idle after it, it is exactly `fill_plan.fill_command_cycles` (base, plan, n, beat
bits, d) = ``max(d, 2) - 2 + fill_plan.fill_done_cycles(base, plan, n)[-1] +
fill_plan.first_byte_lag(beat_bits)``: the pipeline's ``start`` is the cycle the loader is armed,
its first image byte `first_byte_lag` after the first beat is taken (the model offers it the cycle
after ``start``), and the commit the cycle after the last entry's ``done`` (the loader's compare).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, ResetInserter, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..fixed import formats as F
from ..fixed.base_int import IntBase
from ..fixed.config import AcceleratorConfig
from ..fixed.optimizer import Optimizer
from ..fixed.packing import image_beats
from .axi4 import AXI4ReadSignature
from .axi_lite import AXI4LiteRegisterBank, AXI4LiteSignature
from .cycle_counter import CycleCounter
from .datapath import Datapath
from .ddr_reader import DDRReader
from .fetcher import POSITION_BITS, BatchFetcher, slot_count
from .fill_feeder import FillFeeder
from .fill_pipeline import FillPipeline
from .geometry_unit import GeometryUnit
from .head import HeadPair
from .job import JOB_FIELDS, JOB_LAYOUT
from .memories import AMemory, BatchBufferBank, CacheMemory, OrderBuffer, StatsMemory, TBuffer
from .optimizer import OptimizerUnit
from .ports import ReadPortSelect, WritePortSelect
from .order_unit import OrderUnit
from .params import RING_ENTRIES, HwParams, invalid
from .regmap import ACCEL_ID, DDR_ADDR_BITS, REGISTER_MAP, VERSION, ErrorCode
from .scalar_unit import ScalarUnit
from .sequencer import Sequencer
from .stream_in import StreamLoader, axis_signature
from .stream_out import AdapterStreamer

__all__ = ["Skip2LoRACore"]

BATCH_MAX_LOG = F.BATCH_MAX.bit_length() - 1  # batch <= BATCH_MAX as bit tests (LUTs), not a subtraction
assert F.BATCH_MAX == 1 << BATCH_MAX_LOG


class Skip2LoRACore(wiring.Component):
    """``config``: the build; ``fill_base``: the PL base of FILL (an `IntBase` whose taps and
    classes fit the build's maxima; None: no FILL, FILL_INFO reads 0), with ``fill_plan`` (a
    `fill_plan.FillPlan`; None: `fill_plan.plan_fill`'s)."""

    def __init__(self, config: AcceleratorConfig, fill_base: IntBase | None = None, fill_plan=None):
        self.params = HwParams(config)
        p = self.params
        self.fill = None
        if fill_base is None:
            if fill_plan is not None:
                raise invalid(self, TypeError("fill_plan needs a fill_base"))
        else:
            if not isinstance(fill_base, IntBase):
                raise invalid(self, TypeError(f"fill_base must be an IntBase or None, not {fill_base!r}"))
            try:
                self.fill = FillPipeline(fill_base, p, fill_plan)  # checks the plan and that the base fits
            except (TypeError, ValueError) as exc:
                raise invalid(self, exc) from None
            self.fill_in_size = self.fill.engines[0].geometry.in_size
        self.fill_base = fill_base
        members = {
            "bus": In(AXI4LiteSignature(REGISTER_MAP.address_width)),
            "s_axis": In(axis_signature(p.beat_bits)),
            "m_axis": Out(axis_signature(p.beat_bits)),
            "irq": Out(1),
        }
        if p.ddr:
            members["m_axi"] = Out(AXI4ReadSignature(DDR_ADDR_BITS, p.beat_bits))  # the DDR cache's reads
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        p = self.params
        K = p.K
        m.submodules.regs = regs = AXI4LiteRegisterBank(REGISTER_MAP)
        wiring.connect(m, wiring.flipped(self.bus), regs.bus)
        soft_reset = regs.CTRL_soft_reset

        def block(name, component):
            m.submodules[name] = ResetInserter(soft_reset)(component)
            return component

        cache = block("cache", CacheMemory(p, ring=self.fill is not None))
        amem = block("amem", AMemory(p))
        tbufs = [block(f"tbuf{s}", TBuffer(p)) for s in range(p.pair)]
        orderbuf = block("orderbuf", OrderBuffer(p))
        stats = block("stats", StatsMemory())
        dp = block("datapath", Datapath(p))
        head = block("head", HeadPair(p))
        opt = block("optimizer", OptimizerUnit(p))
        scalar = block("scalar", ScalarUnit())
        order = block("order", OrderUnit(p))
        seq = block("sequencer", Sequencer(p))
        geo = block("geometry", GeometryUnit(p))
        beats = image_beats(p.beat_bits // 8, self.fill_in_size) if self.fill is not None else 0
        loader = block("loader", StreamLoader(p, beats, RING_ENTRIES if self.fill is not None else 0))
        streamer = block("streamer", AdapterStreamer(p))
        counter = block("cycles", CycleCounter(64))
        if p.ddr:  # the DDR path: fetcher -> reader (AXI4) -> batch buffer (two banks)
            fetcher = block("fetcher", BatchFetcher(p))
            # An AXI manager cannot drop bursts it has started: a soft reset does not reset the
            # reader; it finishes them (the core stays busy until it is idle).
            reader = m.submodules.ddr_reader = DDRReader(
                addr_width=DDR_ADDR_BITS, beat_bits=p.beat_bits, sample_lines=p.sample_lines,
                slots=slot_count(p), entry_bits=POSITION_BITS, runtime_lines=True,
                slot_dest=[((slot & 1) << p.bbuf_addr_bits) | (slot >> 1) * p.sample_lines
                           for slot in range(slot_count(p))])
            bbufs = [block(f"bbuf{s}", BatchBufferBank(p)) for s in range(p.pair)]
        self.blocks = dict(cache=cache, amem=amem, tbufs=tbufs, datapath=dp, head=head, optimizer=opt,
                           scalar=scalar, order=order, sequencer=seq, loader=loader)  # for testbenches
        wiring.connect(m, wiring.flipped(self.s_axis), loader.s_axis)
        wiring.connect(m, streamer.m_axis, wiring.flipped(self.m_axis))

        # -- constant registers ------------------------------------------------------------------
        m.d.comb += [
            regs.ID_value.eq(ACCEL_ID), regs.VERSION_major.eq(VERSION[0]), regs.VERSION_minor.eq(VERSION[1]),
            regs.GEOMETRY_taps.eq(K), regs.GEOMETRY_rank.eq(p.R), regs.GEOMETRY_classes.eq(p.C),
            regs.TAP_LINES_value.eq(p.tap_lines), regs.ENTRY_LINES_value.eq(p.sample_lines),
            regs.LANES_value.eq(p.P), regs.CACHE_DEPTH_value.eq(p.n_max),
            regs.DDR_SAMPLES_value.eq(p.config.ddr_samples), regs.DDR_BATCH_value.eq(p.ddr_batch),
            regs.DDR_STRIDE_value.eq(p.layout.ddr_stride if p.ddr else 0),
            regs.FILL_INFO_present.eq(self.fill is not None), regs.FILL_INFO_image_beats.eq(beats),
        ]

        # -- the configuration check and the job's registers -------------------------------------
        n_loaded = Signal(16)
        samples, batch, epochs = regs.SAMPLES_value, regs.BATCH_value, regs.EPOCHS_value
        exps = [getattr(regs, f"TAP{k}_CFG_exponent").as_signed() for k in range(K)]
        # The checks of the host's registers are registered every cycle, and only the flags' AND
        # sits in the command's cycle: a register's write is visible at least two cycles before a
        # later write's command pulse (axi_lite: one write at a time, each applied a cycle after it
        # is held), so the flags always see it. N_LOADED changes with the loader's commit: the
        # flags that compare against it are computed from the value it takes at the commit
        # (n_after, room_after, set when the transfer was armed), so a command in the cycle after
        # the commit already sees it. Each flag is at most one LUT (or one LUT level and a carry
        # chain) behind its register: "any bit set" tests of wide fields are registered in parts
        # of six bits, which meet in the command's cycle.
        def any_set(value, name):
            parts = [Signal(name=f"any_{name}{i}", reset_less=True) for i in range(-(-len(value) // 6))]
            m.d.sync += [part.eq(value[6 * i:6 * i + 6].any()) for i, part in enumerate(parts)]
            return Cat(*parts).any()

        room_left = Signal(17, init=p.n_max)  # n_max - N_LOADED, kept beside N_LOADED
        n_after = Signal(17, reset_less=True)  # N_LOADED and room_left after the armed transfer's commit
        room_after = Signal(17, reset_less=True)
        n_next, room_next = Signal(17), Signal(17)
        m.d.comb += [n_next.eq(Mux(loader.commit, n_after, n_loaded)),
                     room_next.eq(Mux(loader.commit, room_after, room_left))]
        count = regs.LOAD_COUNT_value
        fits = Signal(18)      # n_next - samples: its sign says whether the cache holds the job
        over = Signal(18)      # room_next - LOAD_COUNT: its sign says whether the transfer overflows
        m.d.comb += [fits.eq(n_next - samples), over.eq(room_next - count)]
        flags = {name: Signal(name=f"ok_{name}", reset_less=True) for name in (
            "batch_fits", "batch_bit", "kind", "fits")}
        # each tap's exponent in range: a flag per tap (one LUT of its 6 bits), met at the command
        exp_ok = [Signal(name=f"ok_exp{k}", reset_less=True) for k in range(K)]
        m.d.sync += [exp_ok[k].eq((e >= F.EXP_MIN) & (e <= F.EXP_MAX)) for k, e in enumerate(exps)]
        count0, count_over = Signal(reset_less=True), Signal(reset_less=True)
        m.d.sync += [
            flags["batch_fits"].eq(batch <= samples), flags["batch_bit"].eq(batch[BATCH_MAX_LOG]),
            flags["kind"].eq(regs.OPT_kind < len(Optimizer)),
            count0.eq(count[0]), count_over.eq(over[-1]),
        ]
        # the job's cache: on chip, the samples are loaded; in DDR, the build has the path, the job
        # is within its limits and the buffer is 4 KB aligned
        mode = regs.CACHE_MODE_ddr
        if p.ddr:  # registered parts (each a LUT or a carry chain from its register), met at the command
            cfg_ddr, ddr_batch, ddr_samples = (Signal(name=f"ok_ddr_{n}", reset_less=True)
                                               for n in ("mode", "batch", "samples"))
            m.d.sync += [cfg_ddr.eq(mode), ddr_batch.eq(batch <= p.ddr_batch),
                         ddr_samples.eq(samples <= p.config.ddr_samples)]
            ok_ddr = ~cfg_ddr | (ddr_batch & ddr_samples & ~any_set(regs.DDR_ADDR_LO_value[:12], "ddr_lo"))
        else:  # no DDR path: DDR mode is a bad configuration
            ok_ddr = Signal(name="ok_ddr", reset_less=True)
            m.d.sync += ok_ddr.eq(~mode)
        m.d.sync += flags["fits"].eq(~fits[-1] | mode)
        # batch <= BATCH_MAX = 2**BATCH_MAX_LOG: nothing above that bit, or that bit alone
        batch_max_ok = ~any_set(batch[BATCH_MAX_LOG + 1:], "batch_hi") & (
            ~flags["batch_bit"] | ~any_set(batch[:BATCH_MAX_LOG], "batch_lo"))
        checks = [any_set(samples, "samples"), any_set(batch, "batch"), any_set(epochs, "epochs"),
                  any_set(regs.LR_value, "lr"), flags["batch_fits"], batch_max_ok, *exp_ok, flags["kind"],
                  flags["fits"], ok_ddr]
        count_rest = any_set(count[1:], "count")
        count_zero, count_one = Signal(), Signal()
        m.d.comb += [count_zero.eq(~count0 & ~count_rest), count_one.eq(count0 & ~count_rest)]
        config_ok = Signal()
        m.d.comb += config_ok.eq(Cat(*checks).all())
        # FILL: the job registers are the base's (registered flags, a LUT each), and their AND
        # registered too (``fill_ok``: its many inputs would else deepen the command's decode into
        # the loader). Two register stages still meet the command: a write's value is visible two
        # cycles before a later write's command pulse (above)
        fill_ok = Signal(reset_less=True)
        predict_ok = Signal(reset_less=True)  # fill_ok, and every tap's exponent in START's range (u_shift, t_shift)
        fill_shift = [Signal(5, name=f"fill_shift{k}") for k in range(K)]  # registered at the command
        if self.fill is not None:
            base = self.fill_base

            def equals(value, const, name):
                parts = [Signal(name=f"ok_{name}{i}", reset_less=True) for i in range(-(-len(value) // 6))]
                m.d.sync += [part.eq(value[6 * i:6 * i + 6] == (const >> 6 * i) & 63) for i, part in enumerate(parts)]
                return parts

            fill_checks = equals(regs.CLASSES_value, base.classes, "fill_classes")
            for k in range(K):
                on = k < len(base.tap_dims)
                fill_checks += equals(getattr(regs, f"TAP{k}_DIM_value"), base.tap_dims[k] if on else 0, f"fill_dim{k}")
                if on:
                    frac = base.tap_fracs[k]
                    ok_tap = Signal(name=f"ok_fill_tap{k}", reset_less=True)
                    m.d.sync += ok_tap.eq((exps[k] >= frac) & (exps[k] <= frac + 31)
                                          & (getattr(regs, f"TAP{k}_CFG_signed") == int(base.tap_signed[k])))
                    fill_checks.append(ok_tap)
            m.d.sync += [fill_ok.eq(Cat(*fill_checks).all()), predict_ok.eq(Cat(*fill_checks, *exp_ok).all())]
        job = Signal(JOB_LAYOUT)  # the job's registers, copied at START (the blocks' ``job`` view)
        tap_signed = [Signal(name=f"job_signed{k}") for k in range(K)]
        u_shift = [Signal(6, name=f"job_ushift{k}") for k in range(K)]
        dims = [Signal(16, name=f"job_dim{k}") for k in range(K)]   # the job's geometry
        classes = Signal(8, name="job_classes")
        t_shift = [Signal(6, name=f"job_tshift{k}") for k in range(K)]
        launch = Signal()  # the cycle after START: the job's registers are valid
        fill_go = Signal()  # the cycle after an accepted FILL: the loader's command, from a register
        cache_go = Signal()  # the same for LOAD_CACHE
        predict_go = Signal()  # the same for PREDICT
        pending = Signal()  # one of these: a command was accepted, its block does not show busy yet
        m.d.comb += pending.eq(launch | fill_go | cache_go | predict_go)
        p_count = Signal(16)  # PREDICT: its images (LOAD_COUNT at the command)
        ring_mode = Signal()  # the last FILL or PREDICT was a PREDICT: the pipeline writes the ring
        p_run = Signal()      # PREDICT_CYCLES counts: from the loader's arming to the last result beat

        # -- commands, errors, interrupt ----------------------------------------------------------
        done = Signal()
        error_code = Signal(8)
        error = Signal()          # error_code != NONE, as its own register (no 8-bit compare behind commands)
        overrun = Signal()
        adapters_valid = Signal()
        busy = Signal()          # what STATUS shows
        busy_r = Signal()        # what a command sees: busy a cycle ago (two commands are >= 2 cycles
        m.d.comb += busy.eq(seq.busy | loader.armed | streamer.busy | pending  # apart)
                            | (~reader.idle if p.ddr else 0))
        m.d.sync += busy_r.eq(busy)

        def take_geometry():
            """The forward pass's registers (a job's, or a PREDICT's): the geometry, per-tap shifts."""
            m.d.sync += [dims[k].eq(getattr(regs, f"TAP{k}_DIM_value")) for k in range(K)]
            m.d.sync += classes.eq(regs.CLASSES_value)
            for k in range(K):
                m.d.sync += [tap_signed[k].eq(getattr(regs, f"TAP{k}_CFG_signed")),
                             u_shift[k].eq(F.A_FRAC - F.U_FRAC - exps[k]),
                             t_shift[k].eq(F.B_FRAC + F.GL_FRAC - F.T_FRAC - exps[k])]

        def take_fill_shifts():
            if self.fill is not None:
                m.d.sync += [fill_shift[k].eq(exps[k] - self.fill_base.tap_fracs[k])
                             for k in range(len(self.fill_base.tap_dims))]

        def fail(code):
            with m.If(~error):
                m.d.sync += [error_code.eq(code), error.eq(1)]
            with m.Else():
                m.d.sync += overrun.eq(1)

        m.d.sync += launch.eq(0)
        with m.If(regs.CTRL_clear_error):
            m.d.sync += [error_code.eq(ErrorCode.NONE), error.eq(0), overrun.eq(0)]
        any_cmd = (regs.CTRL_start | regs.CTRL_load_cache | regs.CTRL_load_adapters
                   | regs.CTRL_read_adapters | regs.CTRL_clear_cache | regs.CTRL_fill | regs.CTRL_predict)
        with m.If(any_cmd & error & ~regs.CTRL_clear_error):
            m.d.sync += overrun.eq(1)  # ignored while an error is latched
        with m.Elif(any_cmd & (busy_r | pending)):
            fail(ErrorCode.BUSY)
        with m.Elif(regs.CTRL_start):
            with m.If(~adapters_valid):
                fail(ErrorCode.NO_ADAPTERS)
            with m.Elif(config_ok):
                m.d.sync += [launch.eq(1), done.eq(0)]
                m.d.sync += [getattr(job, name).eq(getattr(regs, f"{reg}_{field}"))
                             for name, (reg, field) in JOB_FIELDS.items()]
                take_geometry()
                m.d.comb += counter.clear.eq(1)
            with m.Else():
                fail(ErrorCode.BAD_CONFIG)
        with m.Elif(regs.CTRL_load_cache):
            with m.If(count_zero):
                fail(ErrorCode.BAD_CONFIG)
            with m.Elif(count_over):
                fail(ErrorCode.CACHE_OVERFLOW)
            with m.Else():
                m.d.sync += [n_after.eq(n_loaded + regs.LOAD_COUNT_value),
                             room_after.eq(room_left - regs.LOAD_COUNT_value)]
        with m.Elif(regs.CTRL_load_adapters):
            m.d.sync += adapters_valid.eq(0)
        with m.Elif(regs.CTRL_read_adapters):
            with m.If(~adapters_valid):
                fail(ErrorCode.NO_ADAPTERS)
        with m.Elif(regs.CTRL_clear_cache):
            m.d.sync += [n_loaded.eq(0), room_left.eq(p.n_max)]
        with m.Elif(regs.CTRL_fill):
            with m.If(count_zero | ~fill_ok):  # (no PL base: fill_ok is 0)
                fail(ErrorCode.BAD_CONFIG)
            with m.Elif(count_over):
                fail(ErrorCode.CACHE_OVERFLOW)
            with m.Else():
                m.d.sync += [n_after.eq(n_loaded + regs.LOAD_COUNT_value),
                             room_after.eq(room_left - regs.LOAD_COUNT_value), ring_mode.eq(0)]
                take_fill_shifts()
        with m.Elif(regs.CTRL_predict):  # FILL's checks but its room (the ring), and the adapters
            with m.If(~adapters_valid):
                fail(ErrorCode.NO_ADAPTERS)
            with m.Elif(count_zero | ~predict_ok):  # (no PL base: predict_ok is 0)
                fail(ErrorCode.BAD_CONFIG)
            with m.Else():
                m.d.sync += [p_count.eq(regs.LOAD_COUNT_value), ring_mode.eq(1)]
                take_geometry()
                take_fill_shifts()
        # The blocks' command pulses, flat (the chain above in one expression each): a write's
        # first command bit in the order start, load_cache, load_adapters, read_adapters,
        # clear_cache, fill, predict counts; nothing while an error is latched or the core is busy.
        ctrl = [regs.CTRL_start, regs.CTRL_load_cache, regs.CTRL_load_adapters, regs.CTRL_read_adapters,
                regs.CTRL_clear_cache, regs.CTRL_fill, regs.CTRL_predict]
        first = [bit & ~Cat(*ctrl[:i]).any() for i, bit in enumerate(ctrl)]
        free = Signal()
        m.d.comb += [
            free.eq(~(error & ~regs.CTRL_clear_error) & ~busy_r & ~pending),
            loader.load_adapters.eq(first[2] & free),
            streamer.start.eq(first[3] & free & adapters_valid),
            loader.clear_cache.eq(first[4] & free),
        ]
        # FILL and LOAD_CACHE reach the loader a cycle late, from a register: the command's decode
        # (CTRL, the checks, busy) would else sit in front of the loader's registers (7-8 LUT levels
        # on KV260). LOAD_COUNT still holds: the next register write is applied two cycles later.
        m.d.sync += [fill_go.eq(first[5] & free & ~count_zero & fill_ok & ~count_over),
                     cache_go.eq(first[1] & free & ~count_zero & ~count_over),
                     predict_go.eq(first[6] & free & adapters_valid & ~count_zero & predict_ok)]
        m.d.comb += [loader.fill.eq(fill_go), loader.load_cache.eq(cache_go), loader.predict.eq(predict_go)]
        m.d.comb += [loader.count.eq(regs.LOAD_COUNT_value), loader.count_one.eq(count_one)]
        with m.If(loader.error):
            fail(loader.error_code)
        if p.ddr:  # once a job: a bad burst's every beat is one error, not an overrun
            ddr_failed = Signal()
            with m.If(launch):
                m.d.sync += ddr_failed.eq(0)
            with m.Elif(reader.error):
                m.d.sync += ddr_failed.eq(1)
                with m.If(~ddr_failed):
                    fail(ErrorCode.DDR_READ)
        with m.If(loader.commit):
            m.d.sync += [n_loaded.eq(n_after), room_left.eq(room_after)]
        with m.If(loader.adapters_loaded):
            m.d.sync += adapters_valid.eq(1)
        with m.If(seq.done):
            m.d.sync += done.eq(1)
        with m.If(seq.bad_geometry):
            fail(ErrorCode.BAD_CONFIG)
        with m.If(soft_reset):
            m.d.sync += [n_loaded.eq(0), room_left.eq(p.n_max), done.eq(0), error_code.eq(ErrorCode.NONE), error.eq(0), overrun.eq(0),
                         adapters_valid.eq(0), launch.eq(0), fill_go.eq(0), cache_go.eq(0), predict_go.eq(0)]
        m.d.comb += [
            regs.STATUS_busy.eq(busy), regs.STATUS_error.eq(error),
            regs.STATUS_done.eq(done | seq.done),  # already set in the cycle busy falls
            regs.STATUS_loading.eq(loader.armed), regs.STATUS_sending.eq(streamer.busy),
            regs.STATUS_adapters.eq(adapters_valid), regs.STATUS_overrun.eq(overrun),
            regs.STATUS_error_code.eq(error_code), regs.N_LOADED_value.eq(n_loaded),
            regs.IRQ_done.eq(seq.done), regs.IRQ_done_clear.eq(soft_reset),
            self.irq.eq(regs.IRQ_done_held & regs.IRQ_ENABLE_done),
            regs.CORRECT_value.eq(head.ctl.correct), regs.EPOCH_value.eq(seq.epoch),
            counter.enable.eq(seq.busy & ~seq.predicting),  # a job's cycles, not a PREDICT's
            regs.CYCLES_LO_value.eq(counter.count[:32]), regs.CYCLES_HI_value.eq(counter.count[32:]),
        ]

        # -- FILL: the feeder and the fill pipeline (reset with the core and by a failed fill) ------
        fill_counter = block("fill_cycles", CycleCounter(32))
        m.d.comb += [fill_counter.clear.eq(loader.fill), fill_counter.enable.eq(loader.filling & ~loader.predicting),
                     regs.FILL_CYCLES_value.eq(fill_counter.count)]
        # PREDICT_CYCLES: from the loader's arming to the last result beat taken (or the abort's beat)
        predict_counter = block("predict_cycles", CycleCounter(32))
        with m.If(soft_reset | streamer.r_done):
            m.d.sync += p_run.eq(0)
        with m.Elif(predict_go):
            m.d.sync += p_run.eq(1)
        m.d.comb += [predict_counter.clear.eq(predict_go), predict_counter.enable.eq(p_run),
                     regs.PREDICT_CYCLES_value.eq(predict_counter.count)]
        # registered: the loader's FSM decode (``filling``) would else sit in front of the cache's bank decode
        cache_write = m.submodules.cache_write = WritePortSelect(cache.write.signature, registered=self.fill is not None)
        wiring.connect(m, cache_write.memory, cache.write)
        wiring.connect(m, loader.cache_wr, cache_write.a)
        if self.fill is not None:
            fill_reset = Signal()
            m.d.comb += fill_reset.eq(soft_reset | loader.fill_abort)
            feeder, fill = FillFeeder(p, self.fill_in_size), self.fill
            m.submodules.fill_feeder = ResetInserter(fill_reset)(feeder)
            m.submodules.fill = ResetInserter(fill_reset)(fill)
            fill_start = Signal()
            m.d.sync += fill_start.eq(loader.fill | loader.predict)
            wiring.connect(m, loader.beats, feeder.i)
            wiring.connect(m, feeder.image, fill.image)
            wiring.connect(m, feeder.label, fill.label)
            wiring.connect(m, fill.write, cache_write.b)
            # a PREDICT's entries go to the ring, past the cache's entries (ring_mode: registered at its command)
            m.d.comb += [fill.start.eq(fill_start), fill.ring.eq(ring_mode),
                         fill.first_line.eq(Mux(ring_mode, p.cache_lines, loader.next_line)),
                         loader.fill_entries.eq(fill.entries), cache_write.select.eq(loader.filling)]
            m.d.comb += [fill.shift[k].eq(fill_shift[k]) for k in range(len(self.fill_base.tap_dims))]
            self.blocks.update(feeder=feeder, fill=self.fill)

        # -- the job: sequencer, scalar unit, order unit --------------------------------------------
        m.d.comb += [block.job.eq(job) for block in (seq, scalar, order, opt)]
        wiring.connect(m, seq.scalar, scalar.ctl)
        wiring.connect(m, seq.order, order.ctl)
        wiring.connect(m, seq.opt, opt.ctl)
        wiring.connect(m, seq.head, head.ctl)
        # the job's geometry: walked at its start (INIT), then constant
        wiring.connect(m, geo.schedule, seq.geo)
        wiring.connect(m, geo.info_wr, dp.info_wr)
        m.d.comb += [geo.start.eq(launch | predict_go), geo.classes.eq(classes)] + [geo.dims[k].eq(dims[k]) for k in range(K)]
        m.d.comb += [dp.label_line.eq(geo.label_line), dp.label_word.eq(geo.label_word)]
        m.d.comb += [head.tap_on[k].eq(geo.tap_on[k]) for k in range(K)]
        m.d.comb += [head.class_on[c].eq(geo.class_on[c]) for c in range(p.C)]
        m.d.comb += [
            seq.start.eq(launch),
            # PREDICT: the sequencer's forward-only mode, the loader's ring slots, the streamer's results
            seq.predict.eq(predict_go), seq.p_count.eq(p_count), seq.entries.eq(self.fill.entries if self.fill is not None else 0),
            seq.room.eq(streamer.room), seq.abort.eq(loader.fill_abort), loader.slot_free.eq(seq.slot_free),
            streamer.predict.eq(predict_go), streamer.count.eq(p_count), streamer.pass_issued.eq(seq.slot_free),
            streamer.issuing.eq(seq.predicting), streamer.abort.eq(loader.fill_abort),
            stats.read.addr.eq(regs.STAT_EPOCH_value), regs.STAT_CORRECT_value.eq(stats.read.data[:16]),
            regs.STAT_LOSS_value.eq(stats.read.data[16:48]), regs.STAT_SAT_value.eq(stats.read.data[48:80]),
        ]
        wiring.connect(m, order.wr, orderbuf.write)
        if p.ddr:  # the order buffer: read by PREFETCH on chip, by the fetcher in DDR mode
            order_read = m.submodules.order_read = ReadPortSelect(orderbuf.read.signature)
            wiring.connect(m, order_read.memory, orderbuf.read)
            wiring.connect(m, seq.order_rd, order_read.a)
            wiring.connect(m, fetcher.order_rd, order_read.b)
            m.d.comb += order_read.select.eq(job.ddr)
            wiring.connect(m, seq.fetch, fetcher.ctl)
            wiring.connect(m, fetcher.requests, reader.requests)
            wiring.connect(m, reader.filled, fetcher.filled)
            wiring.connect(m, reader.axi, wiring.flipped(self.m_axi))
            m.d.comb += [fetcher.job.eq(job), reader.base.eq(Cat(job.ddr_lo, job.ddr_hi)),
                         reader.lines_m1.eq(geo.lines_m1)]
            for s, bbuf in enumerate(bbufs):  # slot parity -> bank: the address bit above a bank's lines
                m.d.comb += [bbuf.write.addr.eq(reader.write.addr[:p.bbuf_addr_bits]),
                             bbuf.write.data.eq(reader.write.data),
                             bbuf.write.en.eq(reader.write.en & (reader.write.addr[p.bbuf_addr_bits] == s))]
        else:
            wiring.connect(m, seq.order_rd, orderbuf.read)
        wiring.connect(m, seq.stats_wr, stats.write)
        wiring.connect(m, seq.issue, dp.issue)

        # -- the training datapath, the head unit, the optimizer -------------------------------------
        m.d.comb += [dp.tap_signed[k].eq(tap_signed[k]) for k in range(K)]
        m.d.comb += [dp.u_shift[k].eq(u_shift[k]) for k in range(K)]
        m.d.comb += [head.t_shift[k].eq(t_shift[k]) for k in range(K)]
        # (registered: a job's first read is long after its start, and a load or fill's first write
        # at least two cycles after its end)
        port_b_read = Signal()
        m.d.sync += port_b_read.eq(seq.busy & ~seq.predicting)
        m.d.comb += [
            # the cache's second port reads during a job, takes the loader's (and the fill's) writes
            # otherwise; a PREDICT reads on the first port alone while the fill writes its ring
            cache.port_b_read.eq(port_b_read),
        ]
        if p.ddr:  # each datapath port reads the cache and its batch buffer bank; the job's mode picks
            ddr_mode = Signal(reset_less=True)
            m.d.sync += ddr_mode.eq(job.ddr & ~seq.predicting)  # a PREDICT reads the on-chip ring
            for s, cache_port in enumerate((cache.read, cache.read2)):
                rd, bank = dp.cache_rd[s], bbufs[s].read
                m.d.comb += [cache_port.addr.eq(rd.addr), cache_port.en.eq(rd.en),
                             bank.addr.eq(rd.addr[:p.bbuf_addr_bits]), bank.en.eq(rd.en),
                             rd.data.eq(Mux(ddr_mode, bank.data, cache_port.data))]
        else:
            wiring.connect(m, dp.cache_rd[0], cache.read)
            wiring.connect(m, dp.cache_rd[1], cache.read2)
        for s, tbuf in enumerate(tbufs):  # a t buffer per head unit, both read by each backward op
            wiring.connect(m, head.t_wr[s], tbuf.write)
            wiring.connect(m, dp.t_rd[s], tbuf.read)
        wiring.connect(m, dp.pairs, head.pairs)
        wiring.connect(m, dp.a_lines, opt.a_lines)
        wiring.connect(m, opt.b_rows, head.opt_rows)
        wiring.connect(m, opt.b_wr, head.opt_wr)
        wiring.connect(m, scalar.alpha, opt.alpha)

        # -- memories: the loader and the streamer when no job runs --------------------------------
        wiring.connect(m, loader.b_wr, head.b_load)
        wiring.connect(m, streamer.b_rd, head.b_read)
        # the A memory: read by the datapath, or by the streamer while it sends; written by the
        # optimizer, or by the loader while a transfer is armed
        a_read = m.submodules.a_read = ReadPortSelect(amem.read.signature)
        a_write = m.submodules.a_write = WritePortSelect(amem.write.signature)
        wiring.connect(m, a_read.memory, amem.read)
        wiring.connect(m, dp.a_rd, a_read.a)
        wiring.connect(m, streamer.a_rd, a_read.b)
        wiring.connect(m, a_write.memory, amem.write)
        wiring.connect(m, opt.a_wr, a_write.a)
        wiring.connect(m, loader.a_wr, a_write.b)
        m.d.comb += [a_read.select.eq(streamer.a_busy), a_write.select.eq(loader.armed)]
        wiring.connect(m, head.result, streamer.result)
        return m
