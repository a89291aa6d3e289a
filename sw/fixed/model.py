"""The bit-exact model: exactly what the accelerator computes for a fine-tuning job, in integers.

docs/numerics.md is the prose form of this file. A job runs ``epochs`` passes over cache entries
0..n-1, each epoch in cache order or in a new pseudo-random order (`order`), in mini-batches of
``batch`` entries (the last one may be shorter). Inside a batch every sample sees the adapters as
they were at the batch start; the gradients are summed in accumulators wide enough never to
overflow, so the order of samples inside a batch cannot change a result; after the batch every
weight takes one optimizer step (`optimizer`) whose size follows the schedule (`schedule`).

Integer products are evaluated with float64 matrix products, which are exact here: every partial
sum stays below 2**53 (the widest, the B-gradient accumulator, is below 2**48).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import formats as F
from .optimizer import Optimizer, OptimizerState, grad_from_sum, update
from .order import job_orders
from .quantize import code_range
from .schedule import job_lrs, recip_batch, steps_per_epoch, total_steps

__all__ = ["Geometry", "Adapters", "CacheEntries", "JobConfig", "JobResult", "run_job", "forward",
           "softmax_gradient", "sample_loss", "sample_orders", "predict"]


def _int_like(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    return int(value)


@dataclass(frozen=True)
class Geometry:
    """What is fixed when the accelerator is built: tap dims d_k, rank R, classes C."""

    dims: tuple
    rank: int
    classes: int

    def __post_init__(self):
        dims = tuple(_int_like(d, "tap dim") for d in self.dims)
        if not dims:
            raise ValueError("a geometry needs at least one tap")
        if any(d < 1 for d in dims):
            raise ValueError(f"tap dims must be at least 1, not {dims}")
        object.__setattr__(self, "dims", dims)
        if _int_like(self.rank, "rank") < 1:
            raise ValueError(f"rank must be at least 1, not {self.rank}")
        if _int_like(self.classes, "classes") < 2:
            raise ValueError(f"classes must be at least 2, not {self.classes}")
        if self.classes > (1 << (F.LABEL_BITS - 1)):
            raise ValueError(f"classes must be at most {1 << (F.LABEL_BITS - 1)}, not {self.classes}")

    @property
    def taps(self) -> int:
        return len(self.dims)

    @property
    def total_dim(self) -> int:
        return sum(self.dims)

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.dims)]).astype(np.int64)

    def to_dict(self) -> dict:
        return {"dims": list(self.dims), "rank": self.rank, "classes": self.classes}


@dataclass
class Adapters:
    """Integer adapters: A_k (R, d_k) and B_k (C, R), int16 stand-ins for value * 2**-14."""

    a: list
    b: list

    def validate(self, g: Geometry) -> "Adapters":
        if len(self.a) != g.taps or len(self.b) != g.taps:
            raise ValueError(f"expected {g.taps} A and B matrices, got {len(self.a)} and {len(self.b)}")
        lo, hi = F.weight_range()
        for k, (a, b) in enumerate(zip(self.a, self.b)):
            for name, m, shape in (("A", a, (g.rank, g.dims[k])), ("B", b, (g.classes, g.rank))):
                m = np.asarray(m)
                if m.shape != shape:
                    raise ValueError(f"{name}_{k} must have shape {shape}, not {m.shape}")
                if not np.issubdtype(m.dtype, np.integer):
                    raise TypeError(f"{name}_{k} must hold integers, not {m.dtype}")
                if m.size and (m.min() < lo or m.max() > hi):
                    raise ValueError(f"{name}_{k} has values outside the {F.W_BITS}-bit range")
        return self

    def copy(self) -> "Adapters":
        return Adapters([np.array(a, np.int16) for a in self.a], [np.array(b, np.int16) for b in self.b])

    def equals(self, other: "Adapters") -> bool:
        return all(np.array_equal(x, y) for x, y in zip(self.a + self.b, other.a + other.b)) and \
            len(self.a) == len(other.a)

    @classmethod
    def from_float(cls, a_list, b_list) -> "Adapters":
        return cls([F.to_fixed(a, F.A_FRAC, F.W_BITS).astype(np.int16) for a in a_list],
                   [F.to_fixed(b, F.B_FRAC, F.W_BITS).astype(np.int16) for b in b_list])

    def to_float(self):
        return ([F.from_fixed(a, F.A_FRAC) for a in self.a], [F.from_fixed(b, F.B_FRAC) for b in self.b])

    @classmethod
    def lora_init(cls, g: Geometry, seed: int) -> "Adapters":
        """LoRA's usual start: A uniform in +-1/sqrt(d_k), B = 0 (output equals the base model's)."""
        rng = np.random.default_rng(seed)
        a = [rng.uniform(-1, 1, (g.rank, d)) / np.sqrt(d) for d in g.dims]
        return cls.from_float(a, [np.zeros((g.classes, g.rank)) for _ in g.dims])


@dataclass
class CacheEntries:
    """The accelerator's cache: 4-bit codes of the concatenated taps, base logits (Z format), labels."""

    codes: np.ndarray   # (N, D) int8, tap k in columns offsets[k]:offsets[k+1]
    logits: np.ndarray  # (N, C) int16
    labels: np.ndarray  # (N,) int

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    def validate(self, g: Geometry, signed) -> "CacheEntries":
        codes, logits, labels = (np.asarray(v) for v in (self.codes, self.logits, self.labels))
        n = codes.shape[0] if codes.ndim else 0
        if codes.ndim != 2 or codes.shape[1] != g.total_dim:
            raise ValueError(f"codes must have shape (N, {g.total_dim}), not {codes.shape}")
        if logits.shape != (n, g.classes):
            raise ValueError(f"logits must have shape ({n}, {g.classes}), not {logits.shape}")
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), not {labels.shape}")
        for name, v in (("codes", codes), ("logits", logits), ("labels", labels)):
            if not np.issubdtype(v.dtype, np.integer):
                raise TypeError(f"{name} must hold integers, not {v.dtype}")
        if n and (labels.min() < 0 or labels.max() >= g.classes):
            bad = labels[(labels < 0) | (labels >= g.classes)][0]
            raise ValueError(f"label {bad} is out of range [0, {g.classes})")
        zlo, zhi = -(1 << (F.Z_BITS - 1)), (1 << (F.Z_BITS - 1)) - 1
        if n and (logits.min() < zlo or logits.max() > zhi):
            raise ValueError(f"base logits exceed the {F.Z_BITS}-bit range")
        off = g.offsets
        for k in range(g.taps):
            lo, hi = code_range(signed[k])
            block = codes[:, off[k]:off[k + 1]]
            if n and (block.min() < lo or block.max() > hi):
                raise ValueError(f"tap {k} codes must be in [{lo}, {hi}] ({'signed' if signed[k] else 'unsigned'})")
        return self

    def subset(self, idx) -> "CacheEntries":
        return CacheEntries(self.codes[idx], self.logits[idx], self.labels[idx])

    @classmethod
    def concatenate(cls, parts) -> "CacheEntries":
        return cls(np.concatenate([p.codes for p in parts]), np.concatenate([p.logits for p in parts]),
                   np.concatenate([p.labels for p in parts]))


@dataclass(frozen=True)
class JobConfig:
    """A job's registers: samples, batch, epochs, the peak step size, per-tap scales, the recipe.

    ``lr`` is the LR register (`formats.lr_register(eta)`); ``shuffle`` and ``seed`` choose the
    sample order (`order`); ``warmup`` (steps) and ``decay`` the learning-rate schedule
    (`schedule`); ``optimizer`` the update rule (`optimizer.Optimizer`).
    """

    samples: int
    batch: int
    epochs: int
    lr: int
    exponents: tuple
    signed: tuple
    shuffle: bool = False
    seed: int = 0
    warmup: int = 0
    decay: bool = False
    optimizer: int = Optimizer.SGD

    def validate(self, g: Geometry, cached: int) -> "JobConfig":
        n, b, e, lr = (_int_like(v, name) for v, name in ((self.samples, "samples"), (self.batch, "batch"),
                                                            (self.epochs, "epochs"), (self.lr, "lr")))
        if n < 1:
            raise ValueError(f"samples must be at least 1, not {n}")
        if n > cached:
            raise ValueError(f"samples ({n}) exceeds the {cached} cached entries")
        if n > F.SAMPLES_MAX:
            raise ValueError(f"samples must be at most {F.SAMPLES_MAX}, not {n}")
        if not 1 <= b <= F.BATCH_MAX:
            raise ValueError(f"batch must be in [1, {F.BATCH_MAX}], not {b}")
        if b > n:
            raise ValueError(f"batch ({b}) is larger than the number of samples ({n})")
        if not 1 <= e <= F.EPOCHS_MAX:
            raise ValueError(f"epochs must be in [1, {F.EPOCHS_MAX}], not {e}")
        if total_steps(n, b, e) > F.STEPS_MAX:
            raise ValueError(f"a job may run at most {F.STEPS_MAX} mini-batch steps, not "
                             f"{total_steps(n, b, e)} ({e} epochs of {steps_per_epoch(n, b)})")
        if not 1 <= lr < (1 << F.LR_BITS):
            raise ValueError(f"lr register must be in [1, {(1 << F.LR_BITS) - 1}], not {lr}")
        if len(self.exponents) != g.taps or len(self.signed) != g.taps:
            raise ValueError(f"need one exponent and one signedness per tap ({g.taps})")
        for x in self.exponents:
            if not F.EXP_MIN <= _int_like(x, "tap exponent") <= F.EXP_MAX:
                raise ValueError(f"tap exponent must be in [{F.EXP_MIN}, {F.EXP_MAX}], not {x}")
        if not 0 <= _int_like(self.seed, "seed") < 1 << F.SEED_BITS:
            raise ValueError(f"seed must be in [0, 2**{F.SEED_BITS}), not {self.seed}")
        if not 0 <= _int_like(self.warmup, "warmup") <= F.STEPS_MAX:
            raise ValueError(f"warm-up steps must be in [0, {F.STEPS_MAX}], not {self.warmup}")
        try:
            Optimizer(self.optimizer)
        except ValueError:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of "
                             f"{', '.join(f'{o.value} ({o.name.lower()})' for o in Optimizer)}") from None
        return self


@dataclass
class JobResult:
    """The adapters after a job and the statistics the accelerator keeps per epoch."""

    adapters: Adapters
    correct: list = field(default_factory=list)    # training samples classified right, per epoch
    loss: list = field(default_factory=list)       # sum of per-sample losses (Q8 log2), per epoch
    saturated: list = field(default_factory=list)  # weight updates clamped to the Q14 range, per epoch

    def mean_loss(self, samples: int) -> list[float]:
        """Mean training cross-entropy per epoch in nats (from the Q8 log2 sums)."""
        return [float(v) * 2.0 ** -F.LOSS_FRAC * np.log(2.0) / samples for v in self.loss]


def sample_loss(e_label, esum, t_label):
    """-log2 p(label) in Q8: t_label + log2(sum_c e_c / 2**15), the fraction from a 64-entry table,
    saturated to `formats.LOSS_BITS` (docs/numerics.md, "Training statistics")."""
    esum = np.asarray(esum, np.int64)
    n = np.frexp(esum.astype(np.float64))[1].astype(np.int64) - 1  # leading one (exact below 2**53)
    frac = (esum >> (n - F.LOG2_LUT_BITS)) & ((1 << F.LOG2_LUT_BITS) - 1)
    lut = np.asarray(F.LOG2_LUT, np.int64)
    ell = np.asarray(t_label, np.int64) + ((n - F.P_FRAC) << F.LOSS_FRAC) + lut[frac]
    return np.minimum(ell, (1 << F.LOSS_BITS) - 1)


def softmax_gradient(y: np.ndarray, labels: np.ndarray, *, with_loss: bool = False):
    """g = softmax(y) - onehot(label) in Q15, and the argmax (first maximum), as the RTL computes them.

    exp(y_c - max) = 2**(-t) with t = d * log2(e) in Q8: a 256-entry table gives 2**-frac(t), a
    shift applies 2**-int(t); p_c = e_c * floor(2**31 / sum e) >> 16 (rounded). With ``with_loss``
    also the per-sample loss (`sample_loss`).
    """
    y = np.asarray(y, np.int64)
    labels = np.asarray(labels, np.int64)
    m = y.max(axis=1, keepdims=True)
    d = m - y  # >= 0, below 2**17
    t = (d * F.LOG2E + (1 << (F.LOG2E_FRAC - 1))) >> F.LOG2E_FRAC
    lut = np.asarray(F.EXP2_LUT, np.int64)
    e = lut[t & ((1 << F.EXP2_LUT_BITS) - 1)] >> np.minimum(t >> F.EXP2_LUT_BITS, 31)
    esum = e.sum(axis=1, keepdims=True)
    recip = (np.int64(1) << F.RECIP_SHIFT) // esum
    p = (e * recip + (1 << 15)) >> 16
    rows = np.arange(len(y))
    p[rows, labels] -= 1 << F.P_FRAC
    if with_loss:
        return p, y.argmax(axis=1), sample_loss(e[rows, labels], esum[:, 0], t[rows, labels])
    return p, y.argmax(axis=1)


class _State:
    """Adapters in the block form the vectorized step uses (integers held in float64)."""

    def __init__(self, g: Geometry, adapters: Adapters, exponents):
        k, r = g.taps, g.rank
        off = g.offsets
        self.g = g
        self.a = np.zeros((g.total_dim, k * r))
        self.mask = np.zeros_like(self.a, dtype=bool)
        for i in range(k):
            self.a[off[i]:off[i + 1], i * r:(i + 1) * r] = np.asarray(adapters.a[i], np.float64).T
            self.mask[off[i]:off[i + 1], i * r:(i + 1) * r] = True
        self.b = np.concatenate([np.asarray(b, np.float64).T for b in adapters.b])  # (K*R, C)
        e = np.repeat(np.asarray(exponents, np.int64), r)
        self.u_shift = F.u_shift(e)
        self.t_shift = F.t_shift(e)

    def forward(self, codes, logits):
        """u (int64, (n, K*R)) and y (int64, (n, C)) of a batch."""
        u = F.saturate(F.round_shift(np.rint(codes @ self.a).astype(np.int64), self.u_shift), F.U_BITS)
        yb = np.rint(u.astype(np.float64) @ self.b).astype(np.int64)
        y = F.saturate(logits + F.round_shift(yb, F.B_FRAC + F.U_FRAC - F.Y_FRAC), F.Z_BITS)
        return u, y

    def adapters(self) -> Adapters:
        g, r, off = self.g, self.g.rank, self.g.offsets
        a = [self.a[off[i]:off[i + 1], i * r:(i + 1) * r].T.astype(np.int16) for i in range(g.taps)]
        b = [self.b[i * r:(i + 1) * r].T.astype(np.int16) for i in range(g.taps)]
        return Adapters(a, b)


def sample_orders(config: JobConfig) -> list:
    """The cache entries of each epoch in training order (`order.job_orders` or cache order)."""
    if config.shuffle:
        return job_orders(config.samples, config.seed, config.epochs)
    return [np.arange(config.samples)] * config.epochs


def run_job(g: Geometry, cache: CacheEntries, adapters: Adapters, config: JobConfig) -> JobResult:
    """Run one fine-tuning job exactly as the accelerator does; returns the adapters and statistics."""
    config.validate(g, len(cache))
    cache.validate(g, config.signed)
    adapters.validate(g)
    st = _State(g, adapters, config.exponents)
    n, batch = config.samples, config.batch
    codes = np.asarray(cache.codes[:n], np.float64)
    logits = np.asarray(cache.logits[:n], np.int64)
    labels = np.asarray(cache.labels[:n], np.int64)
    lrs = job_lrs(config.lr, n, batch, config.epochs, config.warmup, config.decay)
    n_a = int(st.mask.sum())
    state = OptimizerState(config.optimizer, n_a + st.b.size)
    a_idx, b_idx = slice(0, n_a), slice(n_a, n_a + st.b.size)
    gl_shift = F.P_FRAC + F.RN_FRAC - F.GL_FRAC
    db_frac = F.GL_FRAC + F.U_FRAC                                       # dB = sum gl u
    result = JobResult(None)
    step = 0
    for order in sample_orders(config):
        right = loss = clamped = 0
        for s in range(0, n, batch):
            idx = order[s:s + batch]
            q, z, lab = codes[idx], logits[idx], labels[idx]
            u, y = st.forward(q, z)
            gq, top, ell = softmax_gradient(y, lab, with_loss=True)
            right += int((top == lab).sum())
            loss += int(ell.sum())
            gl = F.round_shift(gq * recip_batch(len(idx)), gl_shift)       # g / nb, |gl| <= 2**24
            glf = gl.astype(np.float64)
            db = np.rint(u.T.astype(np.float64) @ glf).astype(np.int64)  # sum_batch u gl, (K*R, C)
            sl = np.rint(glf @ st.b.T).astype(np.int64)                   # B^T gl per sample, (n, K*R)
            t = F.saturate(F.round_shift(sl, st.t_shift), F.T_BITS)
            da = np.rint(q.T @ t.astype(np.float64)).astype(np.int64)     # sum_batch q t, (D, K*R)
            alpha = state.rate(lrs[step], step + 1)
            a_new, sat_a = update(st.a[st.mask], grad_from_sum(da[st.mask], F.T_FRAC), alpha, state, a_idx)
            b_new, sat_b = update(st.b.reshape(-1), grad_from_sum(db, db_frac).reshape(-1), alpha, state, b_idx)
            st.a[st.mask] = a_new
            st.b = b_new.reshape(st.b.shape).astype(np.float64)
            clamped += sat_a + sat_b
            step += 1
        result.correct.append(right)
        result.loss.append(loss)
        result.saturated.append(clamped)
    result.adapters = st.adapters()
    return result


def forward(g: Geometry, codes, logits, adapters: Adapters, exponents):
    """Logits y (int, Z format) for cache entries under given adapters (the inference datapath)."""
    st = _State(g, adapters, exponents)
    return st.forward(np.asarray(codes, np.float64), np.asarray(logits, np.int64))[1]


def predict(g: Geometry, codes, logits, adapters: Adapters, exponents) -> np.ndarray:
    y = forward(g, codes, logits, adapters, exponents)
    return y.argmax(axis=1)
