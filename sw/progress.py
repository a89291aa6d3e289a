"""A minimal progress bar on stderr (the host install has no dependency beyond NumPy).

It redraws one line in place on a terminal and prints nothing when stderr is not a terminal
(CI logs, pipes, ``--json`` consumers), unless forced.  Used for training epochs, RTL
simulation cycles and data downloads (``scale`` shows bytes as MB; an unknown ``total``
shows the amount so far without a bar).
"""

from __future__ import annotations

import sys
import time

__all__ = ["Progress"]


class Progress:
    def __init__(self, total: int | None, label: str, *, enabled: bool | None = None, stream=None,
                 unit: str = "", scale: float = 1.0):
        self.total = None if total is None else max(int(total), 1)
        self.label = label
        self.unit = unit
        self.scale = float(scale)
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = (bool(isatty()) if isatty else False) if enabled is None else bool(enabled)
        self.done = 0
        self.start = time.perf_counter()
        self._last = 0.0

    def _amount(self, n: int) -> str:
        return str(n) if self.scale == 1.0 else f"{n / self.scale:.1f}"

    def _draw(self, now: float, note: str) -> None:
        elapsed = now - self.start
        if self.total is None:
            head = f"{self._amount(self.done)}{self.unit}"
        else:
            frac = self.done / self.total
            head = (f"[{'#' * int(28 * frac):<28}] {100 * frac:5.1f}% "
                    f"{self._amount(self.done)}/{self._amount(self.total)}{self.unit}")
        self.stream.write(f"\r{self.label} {head} {elapsed:6.1f}s {note}\033[K")
        self.stream.flush()

    def update(self, n: int = 1, note: str = "") -> None:
        self.done += n
        if self.total is not None:
            self.done = min(self.done, self.total)
        now = time.perf_counter()
        finished = self.total is not None and self.done >= self.total
        if not self.enabled or (now - self._last < 0.1 and not finished):
            return
        self._last = now
        self._draw(now, note)

    def close(self, note: str = "") -> None:
        """Draw the final state (with ``note``, e.g. "done" or "failed") and end the line."""
        if self.enabled:
            self._draw(time.perf_counter(), note)
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
