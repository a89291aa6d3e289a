"""The accelerator RTL as a service: a cocotb test that executes the host's requests.

``python -m skip2lora.sim.serve --port P --config JSON`` builds (or reuses) the simulation of that
accelerator configuration and runs the cocotb test `serve`, which connects to the host's
`skip2lora.driver.sim_link.SimLink` on 127.0.0.1:P and executes its requests on the DUT with
cocotbext-axi bus models: AXI4-Lite reads and writes, AXI4-Stream packets in and out, cycles.
Simulated time only advances inside a request, so the host sets the pace. The sim backend and
the virtual KV260 both run on top of this.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import time

__all__ = ["serve", "main"]

CLOCK_NS = 5  # 200 MHz, the KV260 build's clock


async def _serve(dut):
    import cocotb
    from cocotb.clock import Clock
    from cocotb.triggers import ClockCycles, First, Timer
    from cocotbext.axi import (AxiLiteBus, AxiLiteMaster, AxiStreamBus, AxiStreamFrame, AxiStreamSink,
                               AxiStreamSource)

    from skip2lora.driver.sim_link import recv_message, send_message

    for name in ("cocotb.skip2lora", "cocotbext.axi"):
        logging.getLogger(name).setLevel(logging.WARNING)
    cocotb.start_soon(Clock(dut.aclk, CLOCK_NS, unit="ns").start())
    axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axi_control"), dut.aclk, dut.aresetn,
                         reset_active_level=False)
    source = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis"), dut.aclk, dut.aresetn,
                             reset_active_level=False)
    sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis"), dut.aclk, dut.aresetn,
                         reset_active_level=False)
    for obj in (axil.write_if, axil.read_if, source, sink):
        obj.log.setLevel(logging.WARNING)
    dut.aresetn.value = 0
    await ClockCycles(dut.aclk, 10)
    dut.aresetn.value = 1
    await ClockCycles(dut.aclk, 5)

    def period(cycles):
        return Timer(max(int(cycles), 1) * CLOCK_NS, unit="ns")

    sock = socket.create_connection(("127.0.0.1", int(os.environ["SKIP2LORA_SIM_PORT"])), timeout=60)
    sock.settimeout(None)  # the simulation waits (in zero simulated time) for the host's next request
    send_message(sock, {"ok": True, "beat_bytes": len(dut.s_axis_tdata) // 8, "pid": os.getpid()})
    while True:
        req, payload = recv_message(sock)
        op = req.get("op")
        reply, data = {"ok": True}, b""
        try:
            if op == "write":
                await axil.write_dword(req["addr"], req["value"])
            elif op == "read":
                if req.get("advance"):
                    await period(req["advance"])
                reply["value"] = int(await axil.read_dword(req["addr"]))
            elif op == "send":
                await source.send(AxiStreamFrame(payload))
                done = cocotb.start_soon(source.wait())
                await First(done, period(req["timeout_cycles"]))
                if not done.done():
                    done.cancel()
                    raise TimeoutError(f"s_axis did not take the packet within {req['timeout_cycles']} cycles")
            elif op == "recv":
                if sink.empty():
                    await sink.wait(timeout=req["timeout_cycles"] * CLOCK_NS, timeout_unit="ns")
                if not sink.empty():
                    frame = sink.recv_nowait()
                    data = bytes(frame.tdata)
                    reply["received"] = True
                else:
                    reply["received"] = False
            elif op == "run":
                await period(req["cycles"])
            elif op == "wait_idle":
                waited = 0
                while True:
                    value = int(await axil.read_dword(req["addr"]))
                    if not value & req["mask"]:
                        break
                    if waited >= req["timeout_cycles"]:
                        raise TimeoutError(f"still busy after {waited} cycles (status {value:#x})")
                    await period(req["poll"])
                    waited += req["poll"]
                reply["value"] = value
            elif op == "quit":
                send_message(sock, reply)
                break
            else:
                raise ValueError(f"unknown request {op!r}")
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the host, named
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            data = b""
        send_message(sock, reply, data)
    sock.close()


try:
    import cocotb as _cocotb
except ImportError:  # pragma: no cover - cocotb comes with the dev extra
    serve = _serve
else:
    serve = _cocotb.test()(_serve)


def main(argv=None) -> int:
    from skip2lora.fixed.config import AcceleratorConfig
    from skip2lora.fixed.model import Geometry

    from . import runner

    p = argparse.ArgumentParser(description="run the accelerator RTL as a service for SimLink")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--config", required=True, help="AcceleratorConfig as JSON (AcceleratorConfig.to_dict())")
    args = p.parse_args(argv)
    d = json.loads(args.config)
    config = AcceleratorConfig(d["name"], Geometry(tuple(d["dims"]), d["rank"], d["classes"]), d["lanes"],
                               d["cache_depth"])

    def log(msg):
        print(msg, flush=True)

    t0 = time.perf_counter()
    info = runner.build(config, log=log)
    log(f"[sim] simulation of {config.name!r} ready ({info}, {time.perf_counter() - t0:.1f} s)")
    runner.run_cocotb(config, "serve", test_module="skip2lora.sim.serve", name="serve",
                      env={"SKIP2LORA_SIM_PORT": args.port}, log=log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
