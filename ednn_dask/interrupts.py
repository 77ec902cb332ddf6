"""Sections of code that SIGINT and SIGTERM may not cut in two.

A batch job appends a row to its results table and then reports it; a signal
between the two would keep a row the user was never shown. Inside :func:`deferred`
the main thread's handlers of SIGINT and SIGTERM only note a signal; the first one
noted goes to the handlers in place before as the section ends.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Deferral:
    """The handler in place inside :func:`deferred`: it notes the signals it gets."""

    def __init__(self) -> None:
        self.signals: list[int] = []

    def __call__(self, signum: int, frame) -> None:
        self.signals.append(signum)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Run the block whole; a SIGINT or SIGTERM that comes meanwhile is delivered after it.

    Python runs signal handlers in the main thread only, so elsewhere this does
    nothing. The block should be short: the signal waits for it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    note = Deferral()
    # a handler not set from Python (None) cannot be put back: such a signal is left alone
    previous = {sig: handler for sig in SIGNALS
                if (handler := signal.getsignal(sig)) is not None}
    for sig in previous:
        signal.signal(sig, note)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if note.signals:
            signal.raise_signal(note.signals[0])
