"""Long computations off Slicer's GUI thread: a worker thread that never touches MRML, polled by a timer.

How Slicer's own extensions keep the GUI alive differs (TotalSegmentator: a PythonSlicer process
polled by a ``qt.QTimer``); here the work is torch and numpy on arrays already read from MRML, so a
thread is enough (both release the GIL in their kernels) and the model stays cached in memory.
The worker gets the arrays, returns plain results; the ``finish`` callback, run by the timer on the
main thread, makes the MRML nodes. Nothing here imports ``slicer`` or ``qt``: the timer class is
passed in (``qt.QTimer`` in Slicer; the tests' stand-in has the same calls).

Cancel: :meth:`Task.cancel` sets an event; the worker's progress callback and a forward pre-hook on
the model (every forward pass of explain, fidelity and the trust card) raise :class:`Cancelled` at
the next check, so a cancel takes effect within one forward pass.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable

POLL_MS = 50  # the timer's interval: the GUI sees progress and the result this often


class Cancelled(RuntimeError):
    """The user pressed Cancel."""


class Task:
    """``compute(report)`` in a worker thread; ``report(message)`` sends progress and raises
    :class:`Cancelled` once :meth:`cancel` was called. The timer (``timerClass()``: setInterval,
    connect("timeout()", slot), start, stop) delivers on the main thread: ``onProgress(message)``,
    then exactly one of ``onDone(result)``, ``onError(exception)``, ``onCancelled()``."""

    def __init__(self, compute: Callable[[Callable[[str], None]], Any], timerClass, *, onProgress=None,
                 onDone=None, onError=None, onCancelled=None, interval: int = POLL_MS, before=None):
        self._compute, self._interval = compute, interval
        self._onProgress, self._onDone = onProgress or (lambda m: None), onDone or (lambda r: None)
        self._onError, self._onCancelled = onError or (lambda e: None), onCancelled or (lambda: None)
        self._messages: queue.Queue = queue.Queue()
        self._cancel = threading.Event()
        self._outcome: tuple | None = None
        self._thread = threading.Thread(target=self._run, name="SaliencyInspector worker", daemon=True)
        self._timer = timerClass()
        self._timer.setInterval(interval)
        self._timer.connect("timeout()", self._poll)
        self.finished = False  # True once the outcome is delivered (and the finishing steps are done)
        self._handled, self._steps = False, None
        self._before = before  # a generator run on the main thread, one step per tick, before the worker
        self.stepTimes: list = []  # (step, seconds on the main thread) of the finishing steps
        self.cancelledAt: float | None = None

    # ---- main thread ------------------------------------------------------------------------
    def start(self) -> "Task":
        if self._before is None:
            self._thread.start()
        self._timer.start()
        return self

    def cancel(self) -> None:
        self.cancelledAt = time.monotonic()
        self._cancel.set()

    @property
    def workerAlive(self) -> bool:
        """The worker thread still runs (after a cancel: until its next check)."""
        return self._thread.is_alive()

    @property
    def cancelRequested(self) -> bool:
        return self._cancel.is_set()

    def _poll(self) -> None:
        if self._before is not None:
            t = time.monotonic()
            try:
                label = next(self._before)
                self.stepTimes.append((label, time.monotonic() - t))
                if self._cancel.is_set():
                    raise Cancelled("cancelled by the user")
                return
            except StopIteration:
                self._before = None
                self._thread.start()
                return
            except Cancelled:
                self._before, self._handled = None, True
                self._onCancelled()
                self._stop()
                return
            except BaseException as err:  # noqa: BLE001
                self._before, self._handled = None, True
                self._onError(err)
                self._stop()
                return
        while True:
            try:
                self._onProgress(self._messages.get_nowait())
            except queue.Empty:
                break
        if self._steps is not None:
            self._step()
            return
        if self._cancel.is_set() and not self._handled:
            # the GUI is released now; the worker stops at its next check and its result is dropped
            self._handled = True
            self._onCancelled()
            self.finished = True
        if self._handled and not self._thread.is_alive():
            self._timer.stop()  # polled on until the worker has ended: see workerAlive
            return
        if self._outcome is None or self._handled:
            return
        self._handled = True
        kind, value = self._outcome
        if kind == "done":
            steps = self._onDone(value)
            if steps is not None and hasattr(steps, "__next__"):  # a generator: one step per tick
                self._steps = steps
                return
        elif kind == "cancelled":
            self._onCancelled()
        else:
            self._onError(value)
        self._stop()

    def _stop(self) -> None:
        self._timer.stop()
        self.finished = True

    def _step(self) -> None:
        """Main thread: one step of the finishing generator (making MRML nodes one at a time, so no
        single timer tick holds the GUI long)."""
        t = time.monotonic()
        try:
            label = next(self._steps)
            self.stepTimes.append((label, time.monotonic() - t))
        except StopIteration:
            self.stepTimes.append(("end", time.monotonic() - t))
            self._stop()
        except BaseException as err:  # noqa: BLE001
            self._stop()
            self._onError(err)

    # ---- worker thread ----------------------------------------------------------------------
    def report(self, message: str) -> None:
        """Progress from the worker; raises Cancelled when the user has cancelled."""
        if message:
            self._messages.put(str(message))
        self.check()

    def check(self) -> None:
        if self._cancel.is_set():
            raise Cancelled("cancelled by the user")

    def _run(self) -> None:
        try:
            result = self._compute(self.report)
            self._outcome = ("cancelled", None) if self._cancel.is_set() else ("done", result)
        except Cancelled:
            self._outcome = ("cancelled", None)
        except BaseException as err:  # noqa: BLE001  shown on the main thread
            self._outcome = ("error", err)


class cancelOnForward:
    """Context manager: a forward pre-hook on ``module`` (a torch.nn.Module) calling ``check()``
    before every forward pass (and counting them), removed on exit."""

    def __init__(self, module, check: Callable[[], None]):
        self.module, self.check, self.forwards, self._handle = module, check, 0, None

    def __enter__(self):
        def hook(_module, _inputs):
            self.forwards += 1
            self.check()

        if hasattr(self.module, "register_forward_pre_hook"):
            self._handle = self.module.register_forward_pre_hook(hook)
        return self

    def __exit__(self, *exc):
        if self._handle is not None:
            self._handle.remove()
        return False


class Prefetch:
    """Items of ``iterable`` computed in a helper thread, at most ``ahead`` waiting: the main thread
    takes them with :meth:`poll` (one per timer tick) without computing them itself. Used for the
    maps on the CT grid: only a couple of CT-sized arrays exist besides the nodes."""

    WAIT, DONE = object(), object()

    def __init__(self, iterable, ahead: int = 2):
        self._queue: queue.Queue = queue.Queue(maxsize=ahead)
        self._error = None
        self._stop = threading.Event()

        def run():
            try:
                for item in iterable:
                    while not self._stop.is_set():
                        try:
                            self._queue.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if self._stop.is_set():
                        return
            except BaseException as err:  # noqa: BLE001  raised on the main thread by poll()
                self._error = err
            self._queue.put(self.DONE)

        self._thread = threading.Thread(target=run, name="SaliencyInspector prefetch", daemon=True)
        self._thread.start()

    def poll(self, timeout: float = 0.01):
        """The next item, WAIT when none is ready yet, or DONE; re-raises the helper's error."""
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return self.WAIT
        if item is self.DONE and self._error is not None:
            raise self._error
        return item

    def close(self) -> None:
        self._stop.set()
