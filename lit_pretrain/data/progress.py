"""A progress line for long stages: count, MB, rates and elapsed time, without flooding logs."""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)


class Progress:
    """Logs `label: N docs, X MB (d docs/s, m MB/s)` at most every `interval` seconds, and at the end.

    Each line is one INFO record of `logger` (the stage's own module logger, so that the line is
    attributed to it), a new line every time: on a terminal and in a log file alike.
    """

    def __init__(
        self,
        label: str,
        interval: float = 10.0,
        total: int | None = None,
        total_bytes: int | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.label = label
        self.interval = interval
        self.total = total
        # Documents vary in size by orders of magnitude: when the total size is known, ETA follows bytes.
        self.total_bytes = total_bytes
        self.logger = logger if logger is not None else log
        self.items = 0
        self.bytes = 0
        self._start = time.perf_counter()
        self._last = self._start

    def update(self, items: int = 1, nbytes: int = 0) -> None:
        """Count work done and log a line if the interval has passed."""
        self.items += items
        self.bytes += nbytes
        now = time.perf_counter()
        if now - self._last >= self.interval:
            self._last = now
            self.logger.info("%s", self.line())

    def close(self) -> None:
        """Log the final line."""
        self.logger.info("%s", self.line())

    def line(self) -> str:
        """The progress so far, as one line."""
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        line = (
            f"{self.label}: {self.items:,} docs, {self.bytes / 1e6:,.1f} MB "
            f"({self.items / elapsed:,.0f} docs/s, {self.bytes / 1e6 / elapsed:,.2f} MB/s, {elapsed:,.0f}s)"
        )
        if self.total_bytes:
            done = self.bytes / self.total_bytes
        elif self.total:
            done = self.items / self.total
        else:
            done = 0.0
        if done > 0:
            line += f", {100 * done:.0f}%, ETA {elapsed * (1 - done) / done:,.0f}s"
        return line
