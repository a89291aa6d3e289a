"""cocotb testbench of the forward engine's Verilog (hw/forward_engine.py): one layer, samples back to back.

The engine computes one `IntLayer` per sample after one ``start``. The bench:

* `ActivationDriver` offers the samples on ``act_in`` (valid/ready, one 8-bit integer a beat,
  NHWC), valid from the cycle after ``start``, with an optional random pause generator;
* `ValueMonitor` takes ``values_out`` (random back-pressure optional) and records every value,
  its ``last`` flag and the cycle it was taken, and every ``done`` pulse's cycle (cycle 0 is the
  one with ``start`` high, as in `skip2lora.fixed.forward_cycles`);
* `LayerModel` is `IntLayer.apply` of the layer, read from the case file;
* `Scoreboard` checks every sample's values bit for bit, ``last`` on each sample's last value
  only, ``done`` the cycle after each sample's last value was taken, ``busy`` down at the end
  and, when neither stream pauses, every ``done`` cycle against `forward_cycles.layer_done_cycles`.

``SKIP2LORA_FWD`` (JSON) carries the case: ``case`` (an .npz written by `write_case`: the layer's
arrays and geometry, the input samples), ``out`` (an .npz this test writes: the values taken, the
done cycles), ``lanes``, ``simd``, ``in_pause`` / ``out_pause`` (probabilities of a pause a
beat / a cycle), ``seed`` and ``corrupt`` (a scoreboard self-test: the model's first value off by one).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge
from cocotb.utils import get_sim_time

from skip2lora.fixed import forward_cycles as FC
from skip2lora.fixed.base_int import IntLayer

__all__ = ["write_case", "read_case", "read_results", "CONFIG_ENV"]

CONFIG_ENV = "SKIP2LORA_FWD"
PERIOD_NS = 10
OUT_BITS = 16  # values_out's payload: data (int16) in bits 0..15, last in bit 16


# -- the case file (written by the pytest side, read here) -------------------------------------------

def write_case(path, layer: IntLayer, x) -> Path:
    """``layer`` (its arrays and `IntLayer.to_dict`) and the samples ``x`` ((n, in_size) integers,
    NHWC) to an .npz."""
    x = np.asarray(x, np.int64).reshape(len(x), -1)
    if x.shape[1] != int(np.prod(layer.in_shape)):
        raise ValueError(f"{layer.name}: samples of {x.shape[1]} values, the layer takes {np.prod(layer.in_shape)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, meta=np.array(json.dumps(layer.to_dict())), weight=np.asarray(layer.weight, np.int8),
             bias=np.asarray(layer.bias, np.int64), shift=np.asarray(layer.shift, np.int64),
             acc_frac=np.asarray(layer.acc_frac, np.int64), x=x)
    return path


def read_case(path) -> tuple[IntLayer, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        meta = json.loads(str(f["meta"]))
        layer = IntLayer(weight=f["weight"], bias=f["bias"], shift=f["shift"], acc_frac=f["acc_frac"],
                         **dict(meta, in_shape=tuple(meta["in_shape"])))
        return layer, f["x"].astype(np.int64)


def read_results(path) -> tuple[np.ndarray, list[int]]:
    """What the test took: the values (n, out_size) and each sample's done cycle."""
    with np.load(path, allow_pickle=False) as f:
        return f["values"].astype(np.int64), [int(c) for c in f["done"]]


# -- the testbench ------------------------------------------------------------------------------------

def pauses(rng: random.Random, p: float):
    """A pause generator: True (pause this beat / cycle) with probability ``p``."""
    while True:
        yield p > 0 and rng.random() < p


class Clocked:
    """Cycle numbers from simulation time: cycle 0 is the one with ``start`` high (it ends at the
    edge `t0`); the values seen in the ReadOnly phase after edge k belong to cycle k + 1."""

    def __init__(self):
        self.t0 = None

    def cycle(self) -> int:
        return round((get_sim_time(unit="ns") - self.t0) / PERIOD_NS) + 1


class ActivationDriver:
    """Offers each sample's integers on ``act_in`` (the low 8 bits: uint8 or int8), a beat a cycle
    unless the pause generator says so; valid stays high while a beat waits for ready."""

    def __init__(self, dut, pause_gen=None):
        self.dut, self.pause_gen, self._task = dut, pause_gen, None
        dut.act_in__valid.value = 0
        dut.act_in__payload.value = 0

    def start(self, samples) -> None:
        self._task = cocotb.start_soon(self._run(samples))

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self, samples) -> None:
        dut = self.dut
        for sample in samples:
            for v in sample:
                while self.pause_gen is not None and next(self.pause_gen):
                    dut.act_in__valid.value = 0
                    await RisingEdge(dut.clk)
                dut.act_in__payload.value = int(v) & 0xFF
                dut.act_in__valid.value = 1
                while True:  # taken at the edge ending a cycle with ready high
                    await ReadOnly()
                    taken = bool(dut.act_in__ready.value)
                    await RisingEdge(dut.clk)
                    if taken:
                        break
        dut.act_in__valid.value = 0


class ValueMonitor:
    """Takes ``values_out`` (ready low when the pause generator says so) and records (value, last,
    cycle) of every beat taken, and the cycle of every ``done`` pulse."""

    def __init__(self, dut, clock: Clocked, pause_gen=None):
        self.dut, self.clock, self.pause_gen, self._task = dut, clock, pause_gen, None
        self.beats: list[tuple[int, bool, int]] = []
        self.dones: list[int] = []
        dut.values_out__ready.value = 0

    def start(self) -> None:
        self._task = cocotb.start_soon(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.dut.values_out__ready.value = 0

    async def _run(self) -> None:
        dut = self.dut
        while True:
            ready = not (self.pause_gen is not None and next(self.pause_gen))
            dut.values_out__ready.value = int(ready)
            await ReadOnly()
            cycle = self.clock.cycle()
            if ready and dut.values_out__valid.value:
                p = int(dut.values_out__payload.value)
                data = p & ((1 << OUT_BITS) - 1)
                data -= (data >> (OUT_BITS - 1)) << OUT_BITS  # int16
                self.beats.append((data, bool(p >> OUT_BITS & 1), cycle))
            if dut.done.value:
                self.dones.append(cycle)
            await RisingEdge(dut.clk)


class LayerModel:
    """The transaction-level model: a sample's outputs, NHWC, as `IntLayer.apply` computes them."""

    def __init__(self, layer: IntLayer, corrupt: bool = False):
        self.layer, self.corrupt = layer, corrupt

    def expected(self, x: np.ndarray) -> np.ndarray:
        y = self.layer.apply(x.reshape(len(x), *self.layer.in_shape)).reshape(len(x), -1)
        if self.corrupt:  # a deliberately wrong model: the scoreboard must notice
            y = y.copy()
            y[0, 0] += 1
        return y


class Scoreboard:
    """Checks the monitor's record against the model, sample by sample, in order."""

    def __init__(self, layer: IntLayer, lanes: int, simd: int):
        self.layer, self.lanes, self.simd = layer, lanes, simd
        self.out_size = int(np.prod(layer.out_shape))

    def values(self, beats) -> np.ndarray:
        return np.array([b[0] for b in beats], np.int64).reshape(-1, self.out_size)

    def check(self, expected: np.ndarray, beats, dones, *, timed: bool) -> None:
        n, name = len(expected), self.layer.name
        assert len(beats) == n * self.out_size, f"{name}: {len(beats)} values taken, expected {n * self.out_size}"
        assert len(dones) == n, f"{name}: {len(dones)} done pulses for {n} samples"
        got = self.values(beats)
        for s in range(n):
            bad = np.flatnonzero(got[s] != expected[s])
            assert bad.size == 0, (f"{name}: sample {s} differs at {bad.size} of {self.out_size} values, first at "
                                   f"{bad[0]}: got {got[s, bad[0]]}, expected {expected[s, bad[0]]}")
        lasts = [b[1] for b in beats]
        assert lasts == ([False] * (self.out_size - 1) + [True]) * n, f"{name}: last not on each sample's last value"
        taken = [beats[(s + 1) * self.out_size - 1][2] for s in range(n)]
        assert dones == [t + 1 for t in taken], f"{name}: done at {dones}, last values taken at {taken}"
        if timed:
            model = FC.layer_done_cycles(self.layer, self.lanes, self.simd, n)
            assert dones == model, f"{name}: done at cycles {dones}, the cycle model says {model}"


class TB:
    def __init__(self, dut, cfg: dict):
        self.dut, self.cfg = dut, cfg
        self.layer, self.x = read_case(cfg["case"])
        self.lanes, self.simd = int(cfg["lanes"]), int(cfg["simd"])
        rng = random.Random(cfg.get("seed", 0))
        in_p, out_p = float(cfg.get("in_pause", 0.0)), float(cfg.get("out_pause", 0.0))
        self.timed = in_p == 0 and out_p == 0
        self.clock = Clocked()
        self.driver = ActivationDriver(dut, pauses(random.Random(rng.random()), in_p) if in_p else None)
        self.monitor = ValueMonitor(dut, self.clock, pauses(random.Random(rng.random()), out_p) if out_p else None)
        self.model = LayerModel(self.layer, corrupt=bool(cfg.get("corrupt", False)))
        self.scoreboard = Scoreboard(self.layer, self.lanes, self.simd)
        dut.start.value = 0
        cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())

    async def reset(self) -> None:
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 4)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    async def run(self) -> None:
        dut, n = self.dut, len(self.x)
        await self.reset()
        assert not dut.busy.value, "busy after reset"
        dut.start.value = 1
        await RisingEdge(dut.clk)  # the edge that ends cycle 0 (start taken)
        self.clock.t0 = get_sim_time(unit="ns")
        dut.start.value = 0
        self.monitor.start()  # ready from cycle 1 (no value can come earlier)
        self.driver.start(self.x)  # valid from cycle 1
        limit = 20 * FC.layer_cycles(self.layer, self.lanes, self.simd) * max(n, 1) + 2000
        for _ in range(limit):
            await RisingEdge(dut.clk)
            if len(self.monitor.dones) >= n:
                break
        await ClockCycles(dut.clk, 3)  # no extra values or done pulses after the last sample
        await ReadOnly()
        busy = bool(dut.busy.value)
        await RisingEdge(dut.clk)
        self.driver.stop()
        self.monitor.stop()
        beats, dones = self.monitor.beats, self.monitor.dones
        if self.cfg.get("out"):
            vals = np.array([b[0] for b in beats], np.int64)
            if vals.size % self.scoreboard.out_size == 0:
                vals = vals.reshape(-1, self.scoreboard.out_size)
            np.savez(self.cfg["out"], values=vals, done=np.array(dones, np.int64))
        assert len(dones) >= n, f"{self.layer.name}: only {len(dones)} of {n} samples done in {limit} cycles"
        self.scoreboard.check(self.model.expected(self.x), beats, dones, timed=self.timed)
        assert not busy, f"{self.layer.name}: still busy after the last sample"
        dut._log.info("%s: %d samples bit-exact, done at %s%s", self.layer.name, n, dones,
                      " (the cycle model's)" if self.timed else "")


@cocotb.test()
async def forward_engine_layer(dut):
    """One start, the case's samples back to back, every output and done checked."""
    cfg = json.loads(os.environ[CONFIG_ENV])
    await TB(dut, cfg).run()
