"""Ctrl-C and SIGTERM that never land in the middle of a state change.

A training step performs K SAC updates, and storing a collected batch extends the replay
buffer and advances several counters. An interrupt between two of those operations would
leave a checkpoint whose counters disagree with its weights or its buffer (the update
counter behind the optimiser steps, a policy-delay phase off by the updates already done).
Code that changes such state runs inside :func:`deferred_interrupts`: a Ctrl-C or SIGTERM
arriving there is remembered, and raised as ``KeyboardInterrupt`` when the outermost
section ends, so the interrupt checkpoint always holds a whole training step.

:func:`install_interrupt_handlers` routes SIGINT and SIGTERM (cluster pre-emption, ``kill``)
through this mechanism; ``vlmrm fit`` installs it for the run. ``kill -9`` cannot be caught:
such a run resumes from its newest periodic checkpoint.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = [
    "deferred_interrupts",
    "hold_interrupts_until_released",
    "install_interrupt_handlers",
    "reclaim_signal_handlers",
    "release_held_interrupts",
]

_depth = 0  # nesting level of deferred_interrupts sections (signals arrive on the main thread)
_pending_signal: int | None = None
# Set from the moment the data stream hands Lightning a batch (or a training batch starts) until
# the stream is asked for the next one: a signal in between waits for the step Lightning runs
# next, its callbacks (metrics, checkpoints, evaluation) and Lightning's logging to finish, so
# the interrupt checkpoint holds the whole step and its logged row.
_holding = False
_installed = False  # install_interrupt_handlers is active (vlmrm's handler owns the signals)


def _handler(signum: int, frame: Any) -> None:
    global _pending_signal
    if _depth > 0 or (_holding and _pending_signal is None):
        if _pending_signal is None:
            print(
                f"vlmrm: signal {signum} received; finishing the current step, then saving "
                "(press Ctrl-C again to stop sooner)",
                file=sys.stderr,
            )
        _pending_signal = signum
        return
    # A second signal while only the batch's callbacks are running stops at once.
    raise KeyboardInterrupt(f"signal {signum}")


def hold_interrupts_until_released() -> None:
    """Defer Ctrl-C and SIGTERM from now until :func:`release_held_interrupts` (the end of a
    training batch: its callbacks and Lightning's logging included)."""
    global _holding
    _holding = True


def release_held_interrupts(raise_pending: bool = True) -> None:
    """End a hold; raise a signal that arrived during it as ``KeyboardInterrupt`` (unless
    ``raise_pending`` is false, e.g. when the run is ending with another exception)."""
    global _holding, _pending_signal
    _holding = False
    if _depth == 0 and _pending_signal is not None:
        signum, _pending_signal = _pending_signal, None
        if raise_pending:
            raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def deferred_interrupts(forget: bool = False) -> Iterator[None]:
    """Run the body to its end even if Ctrl-C or SIGTERM arrives; raise it afterwards.

    ``forget``: forget the signal instead, for work done while the run is already stopping
    (writing the interrupt checkpoint), which a repeated SIGTERM (a cluster repeating its
    pre-emption notice) must not cut short.

    Only effective once :func:`install_interrupt_handlers` has installed the handlers;
    otherwise a plain counter (Python's default SIGINT handling applies).
    """
    global _depth, _pending_signal
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if forget and _depth == 0:
            _pending_signal = None
    if _depth == 0 and _pending_signal is not None and not _holding:
        signum, _pending_signal = _pending_signal, None
        raise KeyboardInterrupt(f"signal {signum}")


def reclaim_signal_handlers() -> None:
    """Route SIGINT and SIGTERM to vlmrm's handler again, if :func:`install_interrupt_handlers`
    is active. Lightning installs its own SIGTERM handler when a fit starts (it keeps ours
    too): at the end of the next training step it would raise ``SIGTERMException``, a
    ``SystemExit`` with status 0 that skips the interrupt checkpoint, so a pre-empted run
    would look finished to the cluster. Called when training starts; Lightning puts back the
    handlers it found when the fit ends."""
    if not _installed or threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _handler)


@contextmanager
def install_interrupt_handlers() -> Iterator[None]:
    """Route SIGINT and SIGTERM through :func:`deferred_interrupts` while the body runs
    (main thread only; elsewhere a no-op), restoring the previous handlers afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    global _installed
    previous: dict[int, Callable[..., Any] | int | None] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.getsignal(signum)
        signal.signal(signum, _handler)
    outer, _installed = _installed, True
    try:
        yield
    finally:
        _installed = outer
        release_held_interrupts(raise_pending=False)
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
