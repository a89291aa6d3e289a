"""The accelerator core: registers, commands, errors, and the blocks wired together.

    AXI4-Lite -> register bank -> commands -> sequencer -> datapath (MAC array) <-> head unit
    AXI4-Stream in -> stream loader -> cache memory / A memory / B      A memory, B -> streamer -> AXI4-Stream out

A soft reset resets every block's state (not the memories): the core is idle, errors are cleared,
the cache is empty and the adapters must be loaded again.
"""

from __future__ import annotations

from amaranth.hdl import Module, ResetInserter, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..fixed import formats as F
from ..fixed.config import AcceleratorConfig
from .adapter_memory import AdapterMemory
from .axi_lite import AXI4LiteRegisterBank, AXI4LiteSignature
from .cache import CacheMemory
from .cycle_counter import CycleCounter
from .datapath import Datapath
from .head import HeadUnit
from .params import HwParams
from .regmap import ACCEL_ID, REGISTER_MAP, VERSION, ErrorCode
from .sequencer import Sequencer
from .stream_in import StreamLoader, axis_signature
from .stream_out import AdapterStreamer

__all__ = ["Skip2LoRACore"]


class Skip2LoRACore(wiring.Component):
    def __init__(self, config: AcceleratorConfig):
        self.params = HwParams(config)
        p = self.params
        super().__init__({
            "bus": In(AXI4LiteSignature(REGISTER_MAP.address_width)),
            "s_axis": In(axis_signature(p.beat_bits)),
            "m_axis": Out(axis_signature(p.beat_bits)),
            "irq": Out(1),
        })

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

        cache = block("cache", CacheMemory(p))
        amem = block("amem", AdapterMemory(p))
        dp = block("datapath", Datapath(p))
        head = block("head", HeadUnit(p))
        seq = block("sequencer", Sequencer(p))
        loader = block("loader", StreamLoader(p))
        streamer = block("streamer", AdapterStreamer(p))
        counter = block("cycles", CycleCounter(64))
        wiring.connect(m, wiring.flipped(self.s_axis), loader.s_axis)
        wiring.connect(m, streamer.m_axis, wiring.flipped(self.m_axis))

        # -- constant and status registers -------------------------------------------------------
        m.d.comb += [
            regs.ID_value.eq(ACCEL_ID), regs.VERSION_major.eq(VERSION[0]), regs.VERSION_minor.eq(VERSION[1]),
            regs.GEOMETRY_taps.eq(K), regs.GEOMETRY_rank.eq(p.R), regs.GEOMETRY_classes.eq(p.C),
            regs.LANES_value.eq(p.P), regs.CACHE_DEPTH_value.eq(p.n_max),
        ]
        for k, d in enumerate(p.geometry.dims):
            m.d.comb += getattr(regs, f"TAP{k}_DIM_value").eq(d)

        # -- per-tap configuration: exponent e_k -> shift amounts --------------------------------
        exps = [getattr(regs, f"TAP{k}_CFG_exponent").as_signed() for k in range(K)]
        exp_ok = Signal()
        m.d.comb += exp_ok.eq(1)
        for k in range(K):
            e = exps[k]
            m.d.comb += [dp.tap_signed[k].eq(getattr(regs, f"TAP{k}_CFG_signed")),
                         dp.u_shift[k].eq(F.A_FRAC - F.U_FRAC - e),
                         head.t_shift[k].eq(F.B_FRAC + F.GL_FRAC - F.T_FRAC - e)]
            with m.If((e < F.EXP_MIN) | (e > F.EXP_MAX)):
                m.d.comb += exp_ok.eq(0)

        # -- commands, errors, interrupt ----------------------------------------------------------
        n_loaded = Signal(16)
        done = Signal()
        error_code = Signal(8)
        busy = Signal()
        m.d.comb += busy.eq(seq.busy | loader.armed | streamer.busy | head.busy)
        samples, batch, epochs = regs.SAMPLES_value, regs.BATCH_value, regs.EPOCHS_value
        config_ok = Signal()
        m.d.comb += config_ok.eq(
            (samples >= 1) & (samples <= n_loaded) & (batch >= 1) & (batch <= samples)
            & (batch <= F.BATCH_MAX) & (epochs >= 1) & (regs.LR_value != 0) & exp_ok)

        def fail(code):
            with m.If(error_code == ErrorCode.NONE):
                m.d.sync += error_code.eq(code)

        any_cmd = (regs.CTRL_start | regs.CTRL_load_cache | regs.CTRL_load_adapters
                   | regs.CTRL_read_adapters | regs.CTRL_clear_cache)
        with m.If(any_cmd & busy):
            fail(ErrorCode.BUSY)
        with m.Elif(regs.CTRL_start):
            with m.If(config_ok):
                m.d.comb += [seq.start.eq(1), counter.clear.eq(1)]
                m.d.sync += done.eq(0)
            with m.Else():
                fail(ErrorCode.BAD_CONFIG)
        with m.Elif(regs.CTRL_clear_cache):
            m.d.sync += n_loaded.eq(0)
        m.d.comb += [loader.load_cache.eq(regs.CTRL_load_cache & ~busy),
                     loader.load_adapters.eq(regs.CTRL_load_adapters & ~busy),
                     loader.count.eq(regs.LOAD_COUNT_value), loader.n_loaded.eq(n_loaded),
                     streamer.start.eq(regs.CTRL_read_adapters & ~busy)]
        with m.If(loader.error):
            fail(loader.error_code)
        with m.If(loader.commit):
            m.d.sync += n_loaded.eq(n_loaded + regs.LOAD_COUNT_value)
        with m.If(seq.done):
            m.d.sync += done.eq(1)
        with m.If(soft_reset):
            m.d.sync += [n_loaded.eq(0), done.eq(0), error_code.eq(ErrorCode.NONE)]
        m.d.comb += [
            regs.STATUS_busy.eq(busy), regs.STATUS_error.eq(error_code != 0),
            regs.STATUS_done.eq(done | seq.done),  # already set in the cycle busy falls
            regs.STATUS_loading.eq(loader.armed), regs.STATUS_sending.eq(streamer.busy),
            regs.STATUS_error_code.eq(error_code), regs.N_LOADED_value.eq(n_loaded),
            regs.IRQ_done.eq(seq.done), self.irq.eq(regs.IRQ_done_held & regs.IRQ_ENABLE_done),
            regs.CORRECT_value.eq(head.correct),
            counter.enable.eq(seq.busy),
            regs.CYCLES_LO_value.eq(counter.count[:32]), regs.CYCLES_HI_value.eq(counter.count[32:]),
        ]

        # -- the training datapath ----------------------------------------------------------------
        m.d.comb += [
            seq.samples.eq(samples), seq.batch.eq(batch), seq.epochs.eq(epochs),
            dp.issue_valid.eq(seq.issue_valid), dp.issue_op.eq(seq.issue_op), dp.issue_line.eq(seq.issue_line),
            dp.issue_base.eq(seq.issue_base), dp.issue_last.eq(seq.issue_last),
            dp.issue_epoch_first.eq(seq.issue_epoch_first), dp.t_take.eq(seq.t_take),
            head.start.eq(dp.sample_done), head.label.eq(dp.label), head.epoch_first.eq(dp.epoch_first),
            head.lr.eq(regs.LR_value), head.t_take.eq(seq.t_take), seq.t_ready.eq(head.t_ready),
            head.b_update.eq(seq.b_update), head.clear_grads.eq(seq.clear_grads),
        ]
        m.d.comb += [head.u[k][r].eq(dp.u[k][r]) for k in range(K) for r in range(p.R)]
        m.d.comb += [head.z[c].eq(dp.z[c]) for c in range(p.C)]
        m.d.comb += [dp.t_next[k][r].eq(head.t[k][r]) for k in range(K) for r in range(p.R)]

        # -- memories: the datapath while training, the loader / streamer otherwise ---------------
        m.d.comb += [
            dp.cache_data.eq(cache.rd_data), cache.rd_addr.eq(dp.cache_addr),
            cache.wr_addr.eq(loader.cache_addr), cache.wr_data.eq(loader.cache_data), cache.wr_en.eq(loader.cache_en),
            dp.a_rd_data.eq(amem.a_rd_data), streamer.a_data.eq(amem.a_rd_data),
            dp.g_rd_data.eq(amem.g_rd_data),
            amem.g_rd_addr.eq(dp.g_rd_addr), amem.g_wr_addr.eq(dp.g_wr_addr),
            amem.g_wr_data.eq(dp.g_wr_data), amem.g_wr_en.eq(dp.g_wr_en),
            head.b_load_valid.eq(loader.b_valid), head.b_load_beat.eq(loader.b_beat),
            head.b_load_data.eq(loader.b_data),
            head.b_read_beat.eq(streamer.b_beat), streamer.b_data.eq(head.b_read_data),
        ]
        with m.If(streamer.busy):
            m.d.comb += amem.a_rd_addr.eq(streamer.a_addr)
        with m.Else():
            m.d.comb += amem.a_rd_addr.eq(dp.a_rd_addr)
        with m.If(loader.armed):
            m.d.comb += [amem.a_wr_addr.eq(loader.a_addr), amem.a_wr_data.eq(loader.a_data),
                         amem.a_wr_en.eq(loader.a_en)]
        with m.Else():
            m.d.comb += [amem.a_wr_addr.eq(dp.a_wr_addr), amem.a_wr_data.eq(dp.a_wr_data),
                         amem.a_wr_en.eq(dp.a_wr_en.replicate(amem.segments))]
        return m
