"""The accelerator RTL as a service: a cocotb test that executes the host's requests.

``python -m skip2lora.sim.serve --port P --config JSON`` builds (or reuses) the simulation of that
accelerator configuration and runs the cocotb test `serve`, which connects to the host's
`skip2lora.driver.sim_link.SimLink` on 127.0.0.1:P and executes its requests on the DUT with
cocotbext-axi bus models: AXI4-Lite reads and writes, AXI4-Stream packets in and out, cycles.
Simulated time only advances inside a request, so the host sets the pace. The sim backend and
the virtual KV260 both run on top of this.

A build with the DDR cache path also has its DDR (`skip2lora.sim.tb.DdrMemory` on ``m_axi_cache``):
the host writes and reads its buffers (``ddr_write``, ``ddr_read``: no simulated time passes), sets
the memory's fixed latency (``ddr_latency``) and makes bytes fail (``ddr_fail``: SLVERR). The memory
is the exact fixed-latency one (`skip2lora.fixed.cycles.DDRTiming`), by default at
`skip2lora.sim.tb.default_ddr_latency` (the assumed KV260 memory's 100 cycles, or the most the
cycle model covers on a build with shorter entries), named in the hello message: a job's cycle
counter equals ``job_cycles(..., ddr=DDRTiming(latency))``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time

import cocotb

__all__ = ["serve", "main"]


@cocotb.test()
async def serve(dut):
    """Execute the host's requests until it says quit."""
    from cocotb.triggers import Timer

    from skip2lora.driver.sim_link import recv_message, send_message

    from .tb import TB, config_from_env, default_ddr_latency

    config = config_from_env()
    latency = default_ddr_latency(config) if config.ddr else None
    tb = TB(dut, backpressure=False, reg_gap=0, ddr_latency=latency)  # the host sets the pace: no random stalls
    await tb.reset()
    axil, sink = tb.axil, tb.sink

    def ddr():
        if tb.ddr is None:
            raise ValueError(f"the {config.name!r} build has no DDR cache path (no m_axi_cache port)")
        return tb.ddr

    def period(cycles):
        return Timer(max(int(cycles), 1) * tb.clock_ns, unit="ns")

    sock = socket.create_connection(("127.0.0.1", int(os.environ["SKIP2LORA_SIM_PORT"])), timeout=60)
    sock.settimeout(None)  # the simulation waits (in zero simulated time) for the host's next request
    hello = {"ok": True, "beat_bytes": tb.beat_bytes, "pid": os.getpid(), "ddr": tb.ddr is not None,
             "ddr_latency": latency}
    if tb.ddr is not None:
        hello.update(ddr_addr_bits=tb.ddr.addr_bits, ddr_beat_bytes=tb.ddr.beat_bytes)
    send_message(sock, hello)
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
                await tb.send_stream(payload, timeout_cycles=req["timeout_cycles"])
            elif op == "recv":
                if sink.empty():
                    await sink.wait(timeout=req["timeout_cycles"] * tb.clock_ns, timeout_unit="ns")
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
            elif op == "ddr_write":
                ddr().write(req["addr"], payload)
            elif op == "ddr_read":
                data = ddr().read(req["addr"], req["n"])
            elif op == "ddr_latency":
                ddr().set_latency(int(req["cycles"]))
                reply["latency"] = tb.ddr.latency
            elif op == "ddr_fail":
                ddr().fail(req["addr"], req["n"])
            elif op == "ddr_clear_faults":
                ddr().clear_faults()
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


def main(argv=None) -> int:
    from skip2lora.fixed.config import AcceleratorConfig

    from . import runner

    p = argparse.ArgumentParser(description="run the accelerator RTL as a service for SimLink")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--config", required=True, help="AcceleratorConfig as JSON (AcceleratorConfig.to_dict())")
    args = p.parse_args(argv)
    config = AcceleratorConfig.from_dict(json.loads(args.config))  # (the DDR path's limits too)

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
