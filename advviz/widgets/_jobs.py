"""One runner for the widgets' jobs: run, stop, wait, progress, and results that stay with their state.

A :class:`JobRunner` belongs to one component (the attack lab, the Robustness tab, the Train tab)
and runs one :class:`Job` at a time:

* **run**: :meth:`JobRunner.start` snapshots what the job starts from: the explorer state's model
  and image, the versions of the topics the job depends on (:meth:`ExplorerState.versions`: its
  identity) and the settings the component gives as ``inputs``. The work runs in a worker thread
  (``background=True``) or in the calling thread (``background=False``, for tests and scripts).
* **progress**: while a background job runs, a :class:`Ticker` calls the component's ``tick``
  every quarter second with the elapsed time; it is stopped *and joined* before the job's result
  is shown, so no "running…" can overwrite the final status.
* **stale results are dropped**: the job finishes under the state's lock. When a topic it depends
  on changed meanwhile (the user switched the model or the image), its result is *not* attached to
  the new state: the component's ``dropped`` hook gets the reason in a student's words
  (:data:`CHANGED`, e.g. "the model changed") and says the result was dropped and why. Partial
  results go through :meth:`Job.publish`, which checks the same thing.
* **errors** raised by the work or by a hook are shown in the component's error area
  (:func:`advviz.widgets._errors.report`, what :func:`~advviz.widgets._errors.guarded` does).
* **stop**: :meth:`JobRunner.stop` sets the job's stop flag; the work polls
  :meth:`Job.stop_requested` (training between batches, the security curve between attacks).
* **wait**: :meth:`JobRunner.wait` joins the worker thread (and its ticker). A script that ends
  right after ``wait()`` then exits cleanly; one that ends while a job still runs asks it to stop
  and joins it at exit (a daemon thread killed inside torch aborts the interpreter:
  ``terminate called without an active exception``, exit 134).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from advviz.widgets._errors import report
from advviz.widgets._state import ExplorerState

__all__ = ["CHANGED", "Job", "JobRunner", "Ticker"]

#: What changed, in the words a student reads ("… while the attack ran; run it again").
CHANGED = {"model": "the model changed", "image": "the image changed"}

TICK_SECONDS = 0.25

_ids = itertools.count(1)
_RUNNERS: weakref.WeakSet[JobRunner] = weakref.WeakSet()


class Ticker:
    """Calls ``fn(elapsed seconds)`` every ``every`` seconds in a thread, from :meth:`start` to :meth:`stop`.

    :meth:`stop` joins the thread, so no call comes after it returns. Also a context manager
    (``with Ticker(fn): work()``).

    Args:
        fn: the progress update; it runs in the ticker's thread.
        every: seconds between calls.
        name: the thread's name.
    """

    def __init__(self, fn: Callable[[float], Any], *, every: float = TICK_SECONDS, name: str = "advviz-ticker") -> None:
        self.fn = fn
        self.every = every
        self.name = name
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    @property
    def alive(self) -> bool:
        """Whether the ticker's thread is running."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Ticker:
        self._halt.clear()
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=self.name)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._halt.wait(self.every):
            self.fn(time.perf_counter() - self._t0)

    def stop(self) -> None:
        """Stop ticking and join the thread (a no-op from inside a tick)."""
        self._halt.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join()

    def __enter__(self) -> Ticker:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


@dataclass(eq=False)
class Job:
    """One run of a component's work, with what it started from.

    Attributes:
        id: a number unique in this process.
        name: what the job does, for display ("pgd", "security curves").
        model: the state's model when the job started (the work uses this one, never the state's
            current model).
        image: the state's current image ``(C, H, W)`` when the job started (``None`` if none).
        versions: the state's versions of the topics the job depends on (its identity).
        inputs: the settings the component snapshotted (attack parameters, budgets, data...).
        started: ``time.perf_counter()`` at the start.
        outcome: ``None`` while running, then ``"done"``, ``"dropped"`` or ``"failed"``.
        reason: why the result was dropped (:data:`CHANGED`: "the model changed"), else ``""``.
        result: what the work returned (kept on a drop, never shown).
        error: the exception the work raised, if any.
    """

    id: int
    name: str
    model: Any
    image: Any
    versions: dict[str, int]
    inputs: dict[str, Any]
    started: float
    outcome: str | None = None
    reason: str = ""
    result: Any = None
    error: BaseException | None = None
    _state: ExplorerState | None = field(default=None, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _finished: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def finished(self) -> bool:
        """Whether the job ended (its hooks ran)."""
        return self._finished.is_set()

    def stop_requested(self) -> bool:
        """Whether Stop was pressed (or the process is exiting): the work should end soon."""
        return self._stop.is_set()

    def elapsed(self) -> float:
        """Seconds since the job started."""
        return time.perf_counter() - self.started

    def stale(self) -> str | None:
        """Why the job's result no longer fits the state ("the model changed"), ``None`` when it does."""
        if self._state is None:
            return None
        now = self._state.versions(tuple(self.versions))
        return next((CHANGED[t] for t in ("model", "image") if t in self.versions and now[t] != self.versions[t]),
                    None)

    @contextlib.contextmanager
    def holding(self) -> Iterator[str | None]:
        """Hold the state's lock (no model or image change meanwhile) and give :meth:`stale`."""
        lock = self._state.lock if self._state is not None else contextlib.nullcontext()
        with lock:
            yield self.stale()

    def publish(self, fn: Callable[..., Any], *args: Any) -> bool:
        """Call ``fn(*args)`` (e.g. draw a partial result) unless the job is stale; whether it was called.

        It runs under the state's lock: the state cannot change between the check and the drawing.
        """
        with self.holding() as reason:
            if reason is not None:
                return False
            fn(*args)
            return True


Hook = Callable[..., Any]


class JobRunner:
    """Runs a component's jobs one at a time; see the module docstring.

    Args:
        component: the widget the jobs belong to; errors are shown in its ``errors`` area.
        state: the shared :class:`ExplorerState` (``None``: the jobs depend on no state).
        background: run the work in a worker thread (``False``: in the calling thread).
        tick: ``tick(job, elapsed seconds)``, called every :data:`TICK_SECONDS` while a background
            job works (never after its result is shown).
        name: the worker thread's name.
    """

    def __init__(self, component: Any, *, state: ExplorerState | None = None, background: bool = True,
                 tick: Callable[[Job, float], Any] | None = None, name: str = "advviz-job") -> None:
        self.component = component
        self.state = state
        self.background = background
        self.tick = tick
        self.name = name
        self.job: Job | None = None
        self._thread: threading.Thread | None = None
        self._ticker: Ticker | None = None
        self._lock = threading.Lock()
        _RUNNERS.add(self)

    @property
    def running(self) -> bool:
        """Whether a job was started and has not ended yet."""
        job = self.job
        return job is not None and not job.finished

    @property
    def ticking(self) -> bool:
        """Whether the progress ticker's thread is alive."""
        return self._ticker is not None and self._ticker.alive

    def start(self, work: Callable[[Job], Any], *, name: str = "", inputs: dict[str, Any] | None = None,
              depends: tuple[str, ...] = ("model", "image"), done: Hook | None = None,
              dropped: Hook | None = None, failed: Hook | None = None, ended: Hook | None = None) -> Job:
        """Start a job; it runs ``work(job)``, then exactly one of the hooks, then ``ended(job)``.

        Args:
            work: the computation; reads ``job.model``, ``job.image``, ``job.inputs``, polls
                ``job.stop_requested()`` if it can stop early, and returns the result.
            name: what the job does, for display.
            inputs: the settings to keep with the job.
            depends: the state's topics whose change makes the result stale (``()``: none).
            done: ``done(job, result)``, under the state's lock, when the job is not stale.
            dropped: ``dropped(job, reason)`` when it is stale (the result is not shown).
            failed: ``failed(job, exc)`` when the work raised (and the job is not stale); the
                exception is then shown in the component's error area.
            ended: ``ended(job)`` in every case, last (re-enable buttons here).

        Raises:
            RuntimeError: a job is already running.
        """
        with self._lock:
            if self.running:
                raise RuntimeError("a job is already running here: wait for it to finish (or press Stop)")
            st = self.state
            if st is not None:
                with st.lock:
                    model, image, versions = st.model, st.x, st.versions(tuple(depends))
            else:
                model, image, versions = None, None, {}
            job = Job(id=next(_ids), name=name, model=model, image=image, versions=versions, inputs=dict(inputs or {}),
                      started=time.perf_counter(), _state=st if depends else None)
            self.job = job
        hooks = (work, done, dropped, failed, ended)
        if self.background:
            if self.tick is not None:
                tick = self.tick
                self._ticker = Ticker(lambda el: tick(job, el), name=f"{self.name}-progress").start()
            self._thread = threading.Thread(target=self._execute, args=(job, *hooks), daemon=True, name=self.name)
            self._thread.start()
        else:
            self._ticker = None
            self._execute(job, *hooks)
        return job

    def stop(self) -> None:
        """Ask the running job to stop (it ends after the unit of work in progress)."""
        job = self.job
        if job is not None:
            job._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ended and its threads are joined; ``False`` on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in (self._thread, self._ticker._thread if self._ticker is not None else None):
            if t is None or t is threading.current_thread():
                continue
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                return False
        job = self.job
        return job is None or job.finished

    # ------------------------------------------------------------------------------------ worker
    def _call(self, hook: Hook | None, *args: Any) -> None:
        if hook is None:
            return
        try:
            hook(*args)
        except Exception as exc:  # a hook's error is shown like any callback's
            report(self.component, getattr(hook, "__name__", "job"), exc)

    def _execute(self, job: Job, work: Callable[[Job], Any], done: Hook | None, dropped: Hook | None,
                 failed: Hook | None, ended: Hook | None) -> None:
        try:
            try:
                job.result = work(job)
            except Exception as exc:  # shown below, unless the job is stale
                job.error = exc
            finally:
                if self._ticker is not None:
                    self._ticker.stop()  # joined: no progress update after the final status
            with job.holding() as reason:
                if reason is not None:
                    job.outcome, job.reason = "dropped", reason
                    self._call(dropped, job, reason)
                elif job.error is not None:
                    job.outcome = "failed"
                    self._call(failed, job, job.error)
                    report(self.component, getattr(work, "__name__", "job"), job.error)
                else:
                    job.outcome = "done"
                    self._call(done, job, job.result)
        finally:
            self._call(ended, job)
            job._finished.set()


@atexit.register
def _finish_running_jobs() -> None:
    """At exit, ask every running job to stop and join it (a daemon thread killed inside torch aborts)."""
    for runner in list(_RUNNERS):
        if runner.running:
            runner.stop()
            runner.wait()
