"""Fine-tuning methods that run the whole network every step: FT-All, FT-Last, FT-Bias, FT-All-LoRA,
LoRA-All and LoRA-Last (the Skip2-LoRA papers' baselines).

Batch-norm layers stay in inference mode (frozen running statistics) while fine-tuning; their
scale and shift are trainable where the method trains the base model.
"""

from __future__ import annotations

from ..nn.layers import BatchNorm, _Weighted
from ..nn.train import softmax_xent
from .base import Method

__all__ = ["NetworkMethod", "FtAll", "FtLast", "FtBias", "FtAllLora", "LoraAll", "LoraLast"]


class NetworkMethod(Method):
    lora = None  # None, "all" or "last": where LoRA adapters go

    def __init__(self, base, *, lr, rank=4, seed=0, optimizer="sgd"):
        super().__init__(base, lr=lr, rank=rank, seed=seed, optimizer=optimizer)
        layers = {"all": self.net.weight_layers, "last": self.net.weight_layers[-1:], None: []}[self.lora]
        for layer in layers:
            self.net.params.update(layer.init_lora(self.rng, rank, self.net.params[layer.w].dtype))
        self.want = set(self.trainable_names())

    def trainable_names(self) -> list[str]:
        raise NotImplementedError

    def _lora_names(self) -> list[str]:
        return [n for layer in self.net.weight_layers for n in (layer.lora_a, layer.lora_b) if n in self.net.params]

    def loss_and_grads(self, idx):
        logits, ctxs = self.net.forward(self.x[idx], record=True)
        loss, dlogits = softmax_xent(logits, self.y[idx])
        return loss, self.net.backward(ctxs, dlogits, self.want)

    def step(self, idx):
        t = self.timer
        t.start("forward")
        logits, ctxs = self.net.forward(self.x[idx], record=True)
        loss, dlogits = softmax_xent(logits, self.y[idx])  # dlogits: divided by the batch's sample count
        t.start("backward")
        grads = self.net.backward(ctxs, dlogits, self.want)
        t.start("update")
        self.opt.step(self.net.params, grads)
        t.stop()
        return loss

    def trainable(self):
        return {n: self.net.params[n] for n in sorted(self.want)}


class FtAll(NetworkMethod):
    name = "ft-all"

    def trainable_names(self):
        return self.net.base_param_names


class FtLast(NetworkMethod):
    name = "ft-last"

    def trainable_names(self):
        return list(self.net.weight_layers[-1].param_names)


class FtBias(NetworkMethod):
    name = "ft-bias"

    def trainable_names(self):
        names = []
        for layer in self.net.layers:
            if isinstance(layer, _Weighted):
                names.append(layer.b)
            elif isinstance(layer, BatchNorm):
                names.append(layer.beta)
        return names


class FtAllLora(NetworkMethod):
    """LoRA adapters beside every layer, trained together with every base parameter."""

    name = "ft-all-lora"
    lora = "all"

    def trainable_names(self):
        return self.net.base_param_names + self._lora_names()


class LoraAll(NetworkMethod):
    name = "lora-all"
    lora = "all"

    def trainable_names(self):
        return self._lora_names()


class LoraLast(NetworkMethod):
    name = "lora-last"
    lora = "last"

    def trainable_names(self):
        return self._lora_names()
