"""Where cohort cases run: this process, a pool of local processes, or Ray actors — one interface.

In the spirit of :class:`concurrent.futures.Executor`, the cohort code only asks "run these cases"
and receives each case's small result as soon as it is done (in completion order):

    for result in executor.run(cases, job): ...

Every executor hands the same :class:`~.case.CaseJob` to a :class:`~.case.CaseWorker` per worker
(which loads the model once) and calls the same :func:`~.case.run_case`, so they give identical
numbers as long as each worker uses the same number of torch threads (``threads``: the machine's
cores divided by the workers, set the same way by all of them). Workers read the CTs from the
manifest's paths themselves and write their own files; only paths go out and small rows come back.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from contextlib import contextmanager

from ..errors import InputError
from .case import CaseJob, CaseWorker, failed_result

RETRIES = 1  # a case whose worker died is given to another worker this many more times
# Thread pools that numpy's BLAS, OpenMP and ITK size once, at start-up, from these variables. Ray
# sets OMP_NUM_THREADS to an actor's CPUs (ray/_private/utils.py, set_omp_num_threads_if_unset);
# local worker processes get the same limits, else two workers oversubscribe two cores.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")


def threads_per_worker(workers: int) -> int:
    """Torch threads of each of ``workers`` workers sharing this machine's cores."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


@contextmanager
def thread_limits(threads: int):
    """Processes started inside this block inherit ``threads`` as every thread-pool variable."""
    saved = {k: os.environ.get(k) for k in THREAD_VARIABLES}
    os.environ.update({k: str(threads) for k in THREAD_VARIABLES})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class InProcessExecutor:
    """Runs the cases here, one after another (``--workers 1``): no start-up cost, easy to debug."""

    workers = 1

    def __init__(self):
        self.worker = None

    def run(self, cases, job: CaseJob):
        if self.worker is None:
            self.worker = CaseWorker(job)  # the model is loaded on the first case, not before
        for case in cases:
            yield self.worker.run(case)

    def close(self):
        self.worker = None


# ---- local processes ------------------------------------------------------------------------------
_PROCESS_WORKER = None


def _start_process_worker(job: CaseJob, parent: int | None = None) -> None:
    global _PROCESS_WORKER
    if parent is not None:
        die_with_parent(parent)
    _PROCESS_WORKER = CaseWorker(job)


def die_with_parent(parent: int, poll_s: float = 1.0) -> None:
    """End this process when process ``parent`` dies, even by ``kill -9`` (which gives the pool no
    chance to stop its workers: they would sit idle, holding a model's memory, for ever).

    On Linux the kernel sends SIGKILL (prctl PR_SET_PDEATHSIG); everywhere a daemon thread checks
    every ``poll_s`` seconds that this process's parent is still ``parent``. (Linux ties the signal
    to the thread that started the worker: the pool is made and used by one thread, as here.)
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            PR_SET_PDEATHSIG = 1  # linux/prctl.h
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no prctl: the watchdog below still works
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)

    def watch():
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _run_in_process_worker(case) -> dict:
    return _PROCESS_WORKER.run(case)


class ProcessPoolCaseExecutor:
    """``workers`` local processes (``--workers N``), each loading the model once.

    Processes are started with ``spawn`` (a forked process would inherit torch's thread pool in an
    unusable state). A process that dies (killed, out of memory) breaks the pool: the cases it and
    the others held are given to a fresh pool, at most :data:`RETRIES` more times each.
    """

    def __init__(self, workers: int):
        if int(workers) < 1:
            raise InputError(f"--workers must be at least 1, got {workers}")
        self.workers = int(workers)

    def run(self, cases, job: CaseJob):
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
        from concurrent.futures.process import BrokenProcessPool

        job = CaseJob(job.settings, job.fingerprint, job.out_dir, threads_per_worker(self.workers), job.extra)
        todo = deque(cases)
        tries = {}
        while todo:
            finished = False
            pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_start_process_worker, initargs=(job, os.getpid()))
            broken = False
            try:
                with thread_limits(job.threads):  # spawn-started processes start at submit()
                    futures = {pool.submit(_run_in_process_worker, case): case for case in todo}
                todo.clear()
                pending = set(futures)
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        case = futures[future]
                        try:
                            yield future.result()
                        except BrokenProcessPool as err:
                            broken = True
                            tries[case.case_id] = tries.get(case.case_id, 0) + 1
                            if tries[case.case_id] > RETRIES:
                                yield failed_result(job, case, RuntimeError(f"worker process died ({err})"))
                            else:
                                todo.append(case)
                finished = not broken
            finally:
                # Ctrl-C or a broken pool: drop what has not started, do not wait for the rest
                pool.shutdown(wait=finished, cancel_futures=True)

    def close(self):
        pass


# ---- Ray ------------------------------------------------------------------------------------------
class RayExecutor:
    """Ray actors (``--ray auto|ADDRESS|local``): one per worker, each loading the model once.

    ``address``: given to ``ray.init`` ("auto": the running cluster, RAY_ADDRESS or the latest one
    started on this machine; "host:port" or "ray://host:port"; "local": start Ray here). When Ray is
    already initialised (a test, a notebook) that connection is used. Each actor asks for one GPU
    when the cluster has GPUs, else one CPU; ``workers`` defaults to the cluster's GPUs (or CPUs).
    An actor that dies is restarted by Ray (``max_restarts``) and its case retried
    (``max_task_retries``); a case that still fails gets an error row, the run goes on.
    """

    def __init__(self, address: str | None = "auto", workers: int | None = None, init_options: dict | None = None):
        self.address = address
        self.workers = workers
        self.init_options = dict(init_options or {})
        self.actors = []
        self.pids = []
        self._started_ray = False

    def _connect(self):
        try:
            import ray
        except ImportError:
            raise InputError("--ray needs the ray package: pip install 'saliency-inspector[ray]'") from None
        if not ray.is_initialized():
            address = None if self.address == "local" else self.address
            options = {"include_dashboard": False, "log_to_driver": False, **self.init_options}
            try:
                ray.init(address=address, **options)
            except ConnectionError as err:
                raise InputError(f"--ray {self.address}: no Ray cluster found ({str(err).splitlines()[0][:120]}); "
                                 "start one (`ray start --head`), give its address, or use --ray local") from None
            self._started_ray = True
        return ray

    def run(self, cases, job: CaseJob):
        # Actor API as in ray/actor.py (ActorClass.options: num_cpus, num_gpus, max_restarts,
        # max_task_retries) and ray/_private/worker.py (init, wait, get, kill).
        ray = self._connect()
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        workers = int(self.workers or gpus or max(1, int(resources.get("CPU", 1))))
        per_actor = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": 1}
        # one torch thread per CPU the actor holds: the same split as local processes on this machine
        job = CaseJob(job.settings, job.fingerprint, job.out_dir, threads_per_worker(workers), job.extra)
        actor_class = ray.remote(CaseWorker).options(max_restarts=RETRIES + 1, max_task_retries=RETRIES, **per_actor)
        self.actors = [actor_class.remote(job) for _ in range(workers)]
        self.pids = ray.get([actor.pid.remote() for actor in self.actors])  # cheap: the model loads later
        todo = deque(cases)
        pending = {}

        def submit(actor):
            if todo:
                case = todo.popleft()
                pending[actor.run.remote(case)] = (actor, case)

        try:
            for actor in self.actors:
                submit(actor)
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                actor, case = pending.pop(ready[0])
                try:
                    result = ray.get(ready[0])
                except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError) as err:
                    result = failed_result(job, case, RuntimeError(f"Ray worker died ({type(err).__name__})"))
                yield result
                submit(actor)
        finally:  # also on Ctrl-C: the actors and the cases they hold go (they are redone on resume)
            for actor in self.actors:
                ray.kill(actor)
            self.actors = []

    def worker_pids(self) -> list:
        """Process ids of the actors as started (tests kill them to show that a run survives it)."""
        return list(self.pids)

    def close(self):
        if self._started_ray:
            import ray

            ray.shutdown()
            self._started_ray = False


def make_executor(workers: int | None = None, ray_address: str | None = None):
    """The executor for ``--workers N`` (default 1: in this process) or ``--ray ADDRESS`` (workers
    default: one per GPU, else per CPU, of the cluster)."""
    if ray_address:
        return RayExecutor(ray_address, workers=workers)
    if workers is None or int(workers) == 1:
        return InProcessExecutor()
    return ProcessPoolCaseExecutor(workers)
