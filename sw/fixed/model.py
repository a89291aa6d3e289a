"""The bit-exact model: exactly what the accelerator computes for a fine-tuning job, in integers.

docs/numerics.md is the prose form of this file. A job runs ``epochs`` passes over cache entries
0..n-1 in order, in mini-batches of ``batch`` consecutive entries (the last one may be shorter).
Inside a batch every sample sees the adapters as they were at the batch start; the gradients are
summed in accumulators wide enough never to overflow, so the order of samples inside a batch
cannot change a result; after the batch the adapters take one SGD step with saturation.

Integer products are evaluated with float64 matrix products, which are exact here: every partial
sum stays below 2**53 (the widest, the B-gradient accumulator, is below 2**48).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import formats as F
from .quantize import code_range

__all__ = ["Geometry", "Adapters", "CacheEntries", "JobConfig", "JobResult", "run_job", "forward",
           "softmax_gradient", "predict"]


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
    """A job's registers: samples used, batch, epochs, learning-rate register, per-tap scales."""

    samples: int
    batch: int
    epochs: int
    lr: int  # formats.lr_register(eta, batch)
    exponents: tuple
    signed: tuple

    def validate(self, g: Geometry, cached: int) -> "JobConfig":
        n, b, e, lr = (_int_like(v, name) for v, name in ((self.samples, "samples"), (self.batch, "batch"),
                                                            (self.epochs, "epochs"), (self.lr, "lr")))
        if n < 1:
            raise ValueError(f"samples must be at least 1, not {n}")
        if n > cached:
            raise ValueError(f"samples ({n}) exceeds the {cached} cached entries")
        if not 1 <= b <= F.BATCH_MAX:
            raise ValueError(f"batch must be in [1, {F.BATCH_MAX}], not {b}")
        if b > n:
            raise ValueError(f"batch ({b}) is larger than the number of samples ({n})")
        if not 1 <= e <= F.EPOCHS_MAX:
            raise ValueError(f"epochs must be in [1, {F.EPOCHS_MAX}], not {e}")
        if not 1 <= lr < (1 << F.LR_BITS):
            raise ValueError(f"lr register must be in [1, {(1 << F.LR_BITS) - 1}], not {lr}")
        if len(self.exponents) != g.taps or len(self.signed) != g.taps:
            raise ValueError(f"need one exponent and one signedness per tap ({g.taps})")
        for x in self.exponents:
            if not F.EXP_MIN <= _int_like(x, "tap exponent") <= F.EXP_MAX:
                raise ValueError(f"tap exponent must be in [{F.EXP_MIN}, {F.EXP_MAX}], not {x}")
        return self


@dataclass
class JobResult:
    adapters: Adapters
    correct: list = field(default_factory=list)  # training samples classified right, per epoch


def softmax_gradient(y: np.ndarray, labels: np.ndarray):
    """g = softmax(y) - onehot(label) in Q15, and the argmax (first maximum), as the RTL computes them.

    exp(y_c - max) = 2**(-t) with t = d * log2(e) in Q8: a 256-entry table gives 2**-frac(t), a
    shift applies 2**-int(t); p_c = e_c * floor(2**31 / sum e) >> 16 (rounded).
    """
    y = np.asarray(y, np.int64)
    m = y.max(axis=1, keepdims=True)
    d = m - y  # >= 0, below 2**17
    t = (d * F.LOG2E + (1 << (F.LOG2E_FRAC - 1))) >> F.LOG2E_FRAC
    lut = np.asarray(F.EXP2_LUT, np.int64)
    e = lut[t & ((1 << F.EXP2_LUT_BITS) - 1)] >> np.minimum(t >> F.EXP2_LUT_BITS, 31)
    recip = (np.int64(1) << F.RECIP_SHIFT) // e.sum(axis=1, keepdims=True)
    p = (e * recip + (1 << 15)) >> 16
    rows = np.arange(len(y))
    p[rows, labels] -= 1 << F.P_FRAC
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


def run_job(g: Geometry, cache: CacheEntries, adapters: Adapters, config: JobConfig) -> JobResult:
    """Run one fine-tuning job exactly as the accelerator does; returns the adapters and statistics."""
    config.validate(g, len(cache))
    cache.validate(g, config.signed)
    adapters.validate(g)
    st = _State(g, adapters, config.exponents)
    n, batch, lr = config.samples, config.batch, config.lr
    codes = np.asarray(cache.codes[:n], np.float64)
    logits = np.asarray(cache.logits[:n], np.int64)
    labels = np.asarray(cache.labels[:n], np.int64)
    da_shift = F.T_FRAC - F.A_FRAC
    db_shift = F.GL_FRAC + F.U_FRAC - F.B_FRAC
    gl_shift = F.P_FRAC + F.LR_FRAC - F.GL_FRAC
    correct = []
    for _ in range(config.epochs):
        right = 0
        for s in range(0, n, batch):
            q, z, lab = codes[s:s + batch], logits[s:s + batch], labels[s:s + batch]
            u, y = st.forward(q, z)
            gq, top = softmax_gradient(y, lab)
            right += int((top == lab).sum())
            gl = F.round_shift(gq * lr, gl_shift)                       # |gl| <= 2**24
            glf = gl.astype(np.float64)
            db = np.rint(u.T.astype(np.float64) @ glf).astype(np.int64)  # sum_batch u gl, (K*R, C)
            sl = np.rint(glf @ st.b.T).astype(np.int64)                   # B^T gl per sample, (n, K*R)
            t = F.saturate(F.round_shift(sl, st.t_shift), F.T_BITS)
            da = np.rint(q.T @ t.astype(np.float64)).astype(np.int64)     # sum_batch q t, (D, K*R)
            st.a[st.mask] = F.saturate(st.a[st.mask].astype(np.int64) - F.round_shift(da[st.mask], da_shift),
                                       F.W_BITS)
            st.b = F.saturate(st.b.astype(np.int64) - F.round_shift(db, db_shift), F.W_BITS).astype(np.float64)
        correct.append(right)
    return JobResult(st.adapters(), correct)


def forward(g: Geometry, codes, logits, adapters: Adapters, exponents):
    """Logits y (int, Z format) for cache entries under given adapters (the inference datapath)."""
    st = _State(g, adapters, exponents)
    return st.forward(np.asarray(codes, np.float64), np.asarray(logits, np.int64))[1]


def predict(g: Geometry, codes, logits, adapters: Adapters, exponents) -> np.ndarray:
    y = forward(g, codes, logits, adapters, exponents)
    return y.argmax(axis=1)
