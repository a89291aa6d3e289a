"""A minimal progress bar on stderr (the host install has no dependency beyond NumPy).

It redraws one line in place on a terminal and prints nothing when stderr is not a terminal
(CI logs, pipes, ``--json`` consumers), unless forced.
"""

from __future__ import annotations

import sys
import time

__all__ = ["Progress"]


class Progress:
    def __init__(self, total: int, label: str, *, enabled: bool | None = None, stream=None, unit: str = ""):
        self.total = max(int(total), 1)
        self.label = label
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else bool(enabled)
        self.done = 0
        self.start = time.perf_counter()
        self._last = 0.0

    def update(self, n: int = 1, note: str = "") -> None:
        self.done = min(self.done + n, self.total)
        now = time.perf_counter()
        if not self.enabled or (now - self._last < 0.1 and self.done < self.total):
            return
        self._last = now
        frac = self.done / self.total
        bar = "#" * int(28 * frac)
        elapsed = now - self.start
        self.stream.write(f"\r{self.label} [{bar:<28}] {100 * frac:5.1f}% {self.done}/{self.total}{self.unit}"
                          f" {elapsed:6.1f}s {note}\033[K")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.update(0)
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
