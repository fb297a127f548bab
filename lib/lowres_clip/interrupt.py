"""Ctrl-C in a long loop of jobs: one line saying what finished and what to rerun, no traceback.

Ctrl-C reaches the study, not the notebook's kernel (jupyter_client starts kernels in a session of
their own): the study gets a ``KeyboardInterrupt`` somewhere in papermill, whose clean-up then stops
the kernel. A kernel that gets a ``KeyboardInterrupt`` another way (its cell fails with it, papermill
reports a ``PapermillExecutionError`` whose ``ename`` is ``KeyboardInterrupt``) stops the study too.
Printed as is, that is long tracebacks and no word on what finished. The study loop uses::

    with interrupt.guard(names, result.ran, result.skipped, result.failed, cleanup=bar.close) as g:
        for job in jobs:
            g.current = job.name
            try:
                run(job)
            except Exception as exc:
                interrupt.raise_if_interrupt(exc)   # a kernel's KeyboardInterrupt stops the study
                ...record the failure...

and its command line catches :class:`Interrupted` and prints :meth:`Interrupted.summary` (one line)
with exit code 130 (the shell's code for SIGINT).

While the block runs, Ctrl-C first silences the loggers that would report the kernel's shutdown
(papermill's "Kernel died while waiting for execute reply", asyncio's "Task exception was never
retrieved" traceback at exit: :data:`SHUTDOWN_LOGGERS`), notes it (:func:`pressed`: the job runner
then kills the kernel at once instead of asking it to shut down, which makes an ipykernel busy with a
cell print a zmq traceback), then raises ``KeyboardInterrupt`` as usual.
"""

from __future__ import annotations

import logging
import shlex
import signal
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence

EXIT_CODE = 130
SHUTDOWN_LOGGERS = ("asyncio", "papermill", "nbclient", "traitlets")
"""Loggers silenced once Ctrl-C is pressed: after it they only report the kernel being stopped."""


def silence_shutdown_noise(names: Sequence[str] = SHUTDOWN_LOGGERS) -> None:
    """Mute the loggers that report an interrupted kernel's shutdown (for the rest of the process)."""
    for name in names:
        logging.getLogger(name).setLevel(logging.CRITICAL)


_PRESSED = threading.Event()


def pressed() -> bool:
    """Whether Ctrl-C came during the :func:`guard` block that runs now (its jobs are being stopped)."""
    return _PRESSED.is_set()


def _sigint(signum: int, frame: object) -> None:
    _PRESSED.set()
    silence_shutdown_noise()
    raise KeyboardInterrupt


class Interrupted(KeyboardInterrupt):
    """The user stopped a loop of jobs; carries what finished and what did not.

    Attributes:
        current: the job that was running (``None``: between jobs).
        ran, skipped: names of jobs done (ran now, or already finished).
        failed: names of jobs that failed before the interrupt.
        remaining: names of jobs not finished (the current one first).
    """

    def __init__(self, current: str | None, ran: Sequence[str], skipped: Sequence[str],
                 failed: Sequence[str], remaining: Sequence[str]):
        self.current, self.ran, self.skipped = current, list(ran), list(skipped)
        self.failed, self.remaining = list(failed), list(remaining)
        super().__init__(self.summary())

    def summary(self, rerun: str | None = None) -> str:
        """One line: where it stopped, what finished, what is left and the command that finishes it."""
        at = f" during {self.current}" if self.current else ""
        left = (f"{len(self.remaining)} not finished (first: {self.remaining[0]})" if self.remaining
                else "nothing left to run")
        failed = f", {len(self.failed)} failed" if self.failed else ""
        how = f"`{rerun}`" if rerun else "the same command"
        return (f"interrupted{at}: {len(self.ran)} ran, {len(self.skipped)} already done{failed}; {left}. "
                f"Rerun {how} to finish: finished runs are skipped.")


def rerun_command(argv: Sequence[str] | None = None, module: str = "lowres_clip.study") -> str:
    """The command line that reruns ``python -m module`` with ``argv`` (default ``sys.argv[1:]``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join(shlex.quote(a) for a in ["python", "-m", module, *args])


def is_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` is a Ctrl-C: a ``KeyboardInterrupt``, or a notebook cell that failed with one."""
    return isinstance(exc, KeyboardInterrupt) or getattr(exc, "ename", None) == "KeyboardInterrupt"


def raise_if_interrupt(exc: BaseException) -> None:
    """Re-raise a kernel's ``KeyboardInterrupt`` (reported by papermill as a cell error) as
    ``KeyboardInterrupt``, so that one Ctrl-C stops the study instead of failing one job."""
    if is_interrupt(exc):
        raise KeyboardInterrupt from None


@dataclass
class Guard:
    """The state :func:`guard` reports from; set ``current`` to the job that starts."""

    names: list[str]
    ran: Sequence[str]
    skipped: Sequence[str]
    failed: Sequence[str] | Mapping[str, str]
    current: str | None = None

    def interrupted(self) -> Interrupted:
        done = set(self.ran) | set(self.skipped) | set(self.failed)
        remaining = [n for n in self.names if n not in done]
        if self.current in remaining:  # the interrupted job first
            remaining.remove(self.current)
            remaining.insert(0, self.current)
        return Interrupted(self.current if self.current not in done else None, self.ran, self.skipped,
                           list(self.failed), remaining)


@contextmanager
def guard(names: Sequence[str], ran: Sequence[str], skipped: Sequence[str],
          failed: Sequence[str] | Mapping[str, str], cleanup: Callable[[], object] | None = None) -> Iterator[Guard]:
    """Turn a ``KeyboardInterrupt`` inside the block into :class:`Interrupted` (no chained traceback).

    Args:
        names: every job of the loop, in order.
        ran, skipped, failed: live collections the loop fills (read when the interrupt comes).
        cleanup: called before :class:`Interrupted` is raised (e.g. a progress bar's ``close``).
    """
    g = Guard(list(names), ran, skipped, failed)
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    if main and previous is signal.default_int_handler:  # only replace Python's own Ctrl-C handler
        _PRESSED.clear()
        signal.signal(signal.SIGINT, _sigint)
    try:
        yield g
    except Interrupted:
        raise
    except KeyboardInterrupt:
        silence_shutdown_noise()
        if cleanup is not None:
            cleanup()
        raise g.interrupted() from None
    finally:
        if main and previous is signal.default_int_handler:
            signal.signal(signal.SIGINT, previous)
            _PRESSED.clear()
