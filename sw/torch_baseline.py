"""LoRA-All in PyTorch on the KV260 job: what a user would reach for instead (for ``skip2lora bench``).

The same pretrained LeNet-5 (our weights, converted), rank-4 LoRA adapters beside every layer
with our initialisation
(a conv layer's adapter is a k x k convolution to R channels followed by a 1 x 1 convolution),
the same optimizer (torch.optim's SGD, momentum, Nesterov or Adam: the same update rules as
`skip2lora.optim`), learning-rate schedule, batch, epochs and per-epoch sample orders as our
LoRA-All, on one CPU thread like the NumPy runs. Optional: used only when torch is installed.
"""

from __future__ import annotations

import time

import numpy as np

from . import hparams, optim
from .finetune import DEFAULT_ORDER, DEFAULT_SCHEDULE, schedule_lrs

__all__ = ["available", "lora_all_torch"]


def available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def lora_all_torch(base, x, y, x_test, y_test, *, epochs: int, batch: int, lr: float, rank: int = 4,
                   seed: int = 0, threads: int = 1, order: str = DEFAULT_ORDER,
                   schedule: str = DEFAULT_SCHEDULE, optimizer: str | None = None) -> dict:
    """``optimizer``: a `skip2lora.optim` spec (default: our LoRA-All's on Fashion-MNIST)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    from .methods import METHODS

    spec = optim.make(optimizer or hparams.defaults("fmnist-rot75", "lora-all")["optimizer"]).spec
    _torch_optimizer(torch, [torch.zeros(1, requires_grad=True)], lr, spec)  # unsupported: fail before work
    torch.set_num_threads(threads)
    # The same adapter initialisation as our LoRA-All for this seed: the two runs differ only in
    # the framework.
    ours = METHODS["lora-all"](base, lr=lr, rank=rank, seed=seed)
    p = {k: torch.tensor(np.asarray(v, np.float32)) for k, v in ours.net.params.items()}

    class LoraConv(nn.Module):
        def __init__(self, name, cin, cout, k, pad):
            super().__init__()
            self.w = p[f"{name}.w"].reshape(cout, cin, k, k)
            self.b = p[f"{name}.b"]
            self.a = nn.Parameter(p[f"{name}.lora_a"].reshape(rank, cin, k, k).clone())
            self.bb = nn.Parameter(p[f"{name}.lora_b"].reshape(cout, rank, 1, 1).clone())
            self.pad = pad

        def forward(self, v):
            return F.conv2d(v, self.w, self.b, padding=self.pad) + F.conv2d(F.conv2d(v, self.a, padding=self.pad), self.bb)

    class LoraDense(nn.Module):
        def __init__(self, name, w, a):
            super().__init__()
            self.w, self.b = w, p[f"{name}.b"]
            self.a = nn.Parameter(a.clone())
            self.bb = nn.Parameter(p[f"{name}.lora_b"].clone())

        def forward(self, v):
            return F.linear(v, self.w, self.b) + F.linear(F.linear(v, self.a), self.bb)

    # Our fc1 reads the pooled maps flattened in (h, w, c) order; torch flattens (c, h, w).
    def chw(m):
        return m.reshape(m.shape[0], 5, 5, 16).permute(0, 3, 1, 2).reshape(m.shape[0], 400)

    class LeNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = LoraConv("conv1", 1, 6, 5, 2), LoraConv("conv2", 6, 16, 5, 0)
            self.f1 = LoraDense("fc1", chw(p["fc1.w"]), chw(p["fc1.lora_a"]))
            self.f2 = LoraDense("fc2", p["fc2.w"], p["fc2.lora_a"])
            self.f3 = LoraDense("fc3", p["fc3.w"], p["fc3.lora_a"])

        def forward(self, v):
            v = F.max_pool2d(F.relu(self.c1(v)), 2)
            v = F.max_pool2d(F.relu(self.c2(v)), 2).flatten(1)
            return self.f3(F.relu(self.f2(F.relu(self.f1(v)))))

    net = LeNet()
    opt = _torch_optimizer(torch, net.parameters(), lr, spec)
    xt, yt = torch.tensor(np.asarray(x, np.float32)), torch.tensor(np.asarray(y, np.int64))
    order_rng = np.random.default_rng(seed + 1)  # the orders `skip2lora.finetune` draws
    steps = -(-len(xt) // batch)
    t0 = time.perf_counter()
    epoch_times = []
    for epoch in range(epochs):
        te = time.perf_counter()
        perm = torch.from_numpy(order_rng.permutation(len(xt))) if order == "shuffle" else torch.arange(len(xt))
        for k, rate in enumerate(schedule_lrs(lr, epoch, epochs, steps, schedule)):
            for group in opt.param_groups:
                group["lr"] = float(rate)
            idx = perm[k * batch:(k + 1) * batch]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(xt[idx]), yt[idx]).backward()
            opt.step()
        epoch_times.append(time.perf_counter() - te)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        pred = torch.cat([net(torch.tensor(np.asarray(x_test[i:i + 1000], np.float32))).argmax(1)
                          for i in range(0, len(x_test), 1000)]).numpy()
    return {"method": "lora-all (PyTorch)", "torch": torch.__version__, "threads": threads, "optimizer": spec,
            "ft_seconds": seconds, "epoch_seconds": float(np.mean(epoch_times[1:])) if epochs > 1 else None,
            "accuracy": float((pred == np.asarray(y_test)).mean())}


def _torch_optimizer(torch, params, lr: float, spec: str):
    """torch.optim's equivalent of a `skip2lora.optim` spec (the ones torch implements as we do)."""
    o = optim.make(spec)
    h = o.hyper
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if o.name in ("momentum", "nesterov"):
        return torch.optim.SGD(params, lr=lr, momentum=h["beta"], nesterov=o.name == "nesterov")
    if o.name == "adam" and h["bias_correction"]:
        return torch.optim.Adam(params, lr=lr, betas=(h["b1"], h["b2"]), eps=h["eps"])
    raise ValueError(f"the PyTorch baseline runs sgd, momentum, nesterov and adam, not {spec}")
