"""SIGINT and SIGTERM during a transfer run: a clean stop with the best image, and the exit status."""
from __future__ import annotations

import contextlib
import signal
import threading

EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}
SIGNAL_NAMES = {signal.SIGINT: "SIGINT (Ctrl-C)", signal.SIGTERM: "SIGTERM"}


class Signals:
    """SIGINT and SIGTERM as KeyboardInterrupt, remembering which one came (for the exit status).

    ``raising()``: the handlers raise KeyboardInterrupt, which the optimisers
    catch and turn into a clean stop with the best image. ``deferred()``: the
    handlers only remember the signal, so writing the result cannot be cut
    short by a second Ctrl-C. A signal ignored by the parent (SIG_IGN) stays
    ignored; outside the main thread nothing is installed (Python forbids it).
    """

    def __init__(self):
        self.received = None

    def _raise(self, signum, frame):
        self.received = signum
        raise KeyboardInterrupt

    def _remember(self, signum, frame):
        self.received = self.received or signum

    @contextlib.contextmanager
    def _handled_by(self, handler):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.getsignal(s) for s in EXIT_SIGNAL}
        previous = {s: old for s, old in previous.items() if old is not signal.SIG_IGN}
        for s in previous:
            signal.signal(s, handler)
        try:
            yield self
        finally:
            for s, old in previous.items():    # None: a handler not set from Python
                signal.signal(s, signal.SIG_DFL if old is None else old)

    def raising(self):
        return self._handled_by(self._raise)

    def deferred(self):
        return self._handled_by(self._remember)

    def name(self) -> str:
        return SIGNAL_NAMES.get(self.received or signal.SIGINT, f"signal {self.received}")

    def exit_code(self) -> int:
        return EXIT_SIGNAL.get(self.received or signal.SIGINT, 128 + int(self.received or 2))
