"""A progress line for long work: shown on stderr when it is a terminal and the work takes over a second.

``BYTEIR_PROGRESS=0`` turns it off everywhere; ``BYTEIR_PROGRESS=1`` shows it even when stderr is not a terminal
(then as one plain line per stage). Used by ``byteir_core.compile`` and by ``torch.compile``'s graph compiles.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from typing import Callable, Iterator

#: Work shorter than this shows nothing.
DELAY_S = 1.0


def enabled() -> bool:
    env = os.environ.get("BYTEIR_PROGRESS", "").strip().lower()
    if env in ("0", "false", "no", "off"):
        return False
    if env in ("1", "true", "yes", "on"):
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # closed or replaced stderr
        return False


class _Delayed:
    """A rich status that appears only after ``delay`` seconds, showing the current stage and the elapsed time."""

    def __init__(self, label: str, delay: float):
        self.label, self.stage = label, ""
        self.t0 = time.perf_counter()
        self._lock = threading.Lock()
        self._status = None
        self._shown = False
        self._closed = False
        self._timer = threading.Timer(delay, self._show)
        self._timer.daemon = True
        self._timer.start()

    def _text(self) -> str:
        stage = f": {self.stage}" if self.stage else ""
        return f"{self.label}{stage} ({time.perf_counter() - self.t0:.0f} s)"

    def _show(self) -> None:
        from rich.console import Console

        with self._lock:
            if self._closed:
                return
            self._console = Console(stderr=True, highlight=False, soft_wrap=True)
            if self._console.is_terminal:
                self._status = self._console.status(self._text())
                self._status.start()
            else:  # forced on where there is no terminal (a CI log): one plain line per stage
                self._console.print(self._text(), markup=False)
            self._shown = True

    def update(self, stage: str) -> None:
        with self._lock:
            self.stage = stage
            if self._status is not None:
                self._status.update(self._text())
            elif self._shown:
                self._console.print(self._text(), markup=False)

    def close(self) -> None:
        self._timer.cancel()
        with self._lock:
            self._closed = True
            if self._status is not None:
                self._status.stop()


@contextlib.contextmanager
def progress_for(progress, label: str) -> Iterator[Callable[[str], None] | None]:
    """The stage callback for ``progress``: a callable is used as is, False gives None, None shows a delayed
    progress line when :func:`enabled`."""
    if callable(progress):
        yield progress
        return
    if progress is False or (progress is None and not enabled()):
        yield None
        return
    shown = _Delayed(label, DELAY_S)
    try:
        yield shown.update
    finally:
        shown.close()
