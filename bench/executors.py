"""Ray executor: chunks of cells as Ray tasks, on a local Ray instance or a cluster (https://docs.ray.io).

The driver keeps a bounded window of chunks in flight and takes results back with ``ray.wait`` as they
finish, so the driver alone writes the score cache. A chunk whose worker process or node is lost is
resubmitted by the driver (up to ``max_retries`` times, counted in ``retried``); an error raised by the
scoring code itself is not retried but raised, since rerunning it would fail the same way. A killed
driver loses only the chunks in flight: Ray drops the tasks of a dead driver, and a rerun plans what the
cache lacks.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path


def _ray():
    try:
        import ray
    except ImportError:
        raise ValueError("--executor ray needs Ray: pip install 'proxybench[ray]' (or `make setup`, which "
                         "installs it)") from None
    return ray


def _lost_worker_errors(ray) -> tuple[type[BaseException], ...]:
    """Ray's errors for work lost with its process or node (retrying helps), not errors of the code."""
    names = ("WorkerCrashedError", "NodeDiedError", "ObjectLostError", "OwnerDiedError", "ActorDiedError",
             "LocalRayletDiedError", "ObjectReconstructionFailedError")
    return tuple(getattr(ray.exceptions, n) for n in names if hasattr(ray.exceptions, n))


class RayExecutor:
    """Chunks as Ray tasks (one CPU each, ``gpus_per_task`` GPUs each), results streamed back in finish order.

    Parameters
    ----------
    workers
        CPUs of the local Ray instance started when there is no ``address`` (default: all cores);
        ignored on a cluster, whose resources decide how many chunks run at once.
    address
        A running cluster (``"auto"``, or the head's ``host:port``, or ``ray://host:10001``); ``None``
        starts a local Ray instance in this process (reused by later studies of the same process).
    gpus_per_task
        GPUs a chunk reserves (``0.25`` packs four scorers on one GPU); ``None`` means one GPU per chunk
        when the study's device is ``cuda`` and none otherwise.
    max_retries
        Resubmissions of a chunk whose worker or node was lost before the study fails.
    """

    def __init__(self, workers: int | None = None, address: str | None = None, gpus_per_task: float | None = None,
                 max_retries: int = 3):
        if gpus_per_task is not None and gpus_per_task < 0:
            raise ValueError(f"--gpus-per-task must be >= 0, got {gpus_per_task}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.address = address
        self.local_cpus = max(1, workers or os.cpu_count() or 1)
        self.gpus_per_task = gpus_per_task
        self.max_retries = max_retries
        self.retried = 0
        self.workers = self.local_cpus if address is None else 0  # set from the cluster on connect

    def connect(self):
        """Join ``address``, or start a local instance; an already connected process is reused."""
        ray = _ray()
        if not ray.is_initialized():
            if self.address is None:
                ray.init(num_cpus=self.local_cpus, include_dashboard=False, configure_logging=False)
            else:
                try:
                    ray.init(address=self.address, configure_logging=False)
                except ConnectionError as e:
                    raise ValueError(f"no Ray cluster at --address {self.address} ({e}); start one with "
                                     f"`ray start --head`, or leave --address out for a local instance") from None
        self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        return ray

    def _gpus(self, device: str) -> float:
        if self.gpus_per_task is not None:
            if self.gpus_per_task > 0 and device == "cpu":
                raise ValueError("--gpus-per-task reserves GPUs for chunks that run on the CPU: add --device cuda "
                                 "(or auto), or drop --gpus-per-task")
            return self.gpus_per_task
        return 1.0 if device.startswith("cuda") else 0.0

    def _window(self, ray, gpus: float) -> int:
        """Chunks in flight: twice the slots the cluster has, so workers never wait for the driver."""
        res = ray.cluster_resources()
        slots = res.get("CPU", 1)
        if gpus > 0:
            if res.get("GPU", 0) < gpus:
                raise ValueError(f"--gpus-per-task {gpus}: the Ray cluster has {res.get('GPU', 0):g} GPUs; start "
                                 f"its nodes on GPU machines (ray start detects them) or use --device cpu")
            slots = min(slots, res["GPU"] / gpus)
        return max(2, int(2 * slots))

    def map(self, fn: Callable, jobs: Iterable) -> Iterator:
        ray = self.connect()
        # one CPU per task: one torch thread; a relative --data-dir would not survive a cluster worker's own cwd
        jobs = [replace(j, threads=1, data_dir=j.data_dir and str(Path(j.data_dir).resolve())) for j in jobs]
        if not jobs:
            return
        gpus = self._gpus(jobs[0].device)
        task = ray.remote(fn).options(num_cpus=1, num_gpus=gpus, max_retries=0, retry_exceptions=False)
        lost = _lost_worker_errors(ray)
        window = self._window(ray, gpus)
        queue, pending = deque(jobs), {}  # ObjectRef -> (job, attempt)
        try:
            while queue or pending:
                while queue and len(pending) < window:
                    job = queue.popleft()
                    pending[task.remote(job)] = (job, 0)
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    job, attempt = pending.pop(ref)
                    try:
                        rows = ray.get(ref)
                    except lost as e:
                        if attempt >= self.max_retries:
                            raise RuntimeError(f"a chunk of {len(job.items)} cells ({job.task}) was lost "
                                               f"{attempt + 1} times, the last time: {type(e).__name__}; "
                                               f"finished chunks are cached, rerun to resume") from None
                        self.retried += 1
                        pending[task.remote(job)] = (job, attempt + 1)
                        continue
                    except ray.exceptions.RayTaskError as e:
                        cause = getattr(e, "cause", None)
                        raise (cause if isinstance(cause, Exception) else e) from None
                    yield rows
        finally:
            for ref in pending:  # an interrupted driver leaves no orphan work behind
                ray.cancel(ref, force=True)
