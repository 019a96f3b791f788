"""Runners: where evaluations execute. Searchers and metrics never see them; the run loop
(``paretobench.search``) hands a runner chunks of schedules and stores each chunk's results
the moment they come back.

- ``LocalRunner``: one ``Evaluator`` in this process.
- ``RayRunner``: a pool of Ray actors, one model each (``num_gpus=1`` per actor when CUDA is
  there, CPU actors otherwise). Started locally it binds to loopback only; ``address`` joins an
  existing cluster. A task whose actor dies is retried on the restarted actor, so a killed
  worker costs time, not results.
"""

from __future__ import annotations

import os
from typing import Iterator

from paretobench.evaluator import Evaluator, Workload
from paretobench.schedule import PruningSchedule
from paretobench.store import Evaluation

Chunk = tuple[int, list[PruningSchedule]]  # (chunk id, schedules)


class Runner:
    """``run(chunks)`` yields ``(chunk id, evaluations)`` as chunks finish, in any order."""

    workers: int = 1

    def run(self, chunks: list[Chunk]) -> Iterator[tuple[int, list[Evaluation]]]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class LocalRunner(Runner):
    def __init__(self, evaluator: Evaluator):
        self.evaluator = evaluator

    def run(self, chunks):
        for cid, schedules in chunks:
            yield cid, self.evaluator.evaluate(schedules)


class _Actor:
    """The body of a Ray actor: an evaluator of its own."""

    def __init__(self, workload: Workload):
        self.evaluator = Evaluator(workload)

    def evaluate(self, cid: int, schedules: list[PruningSchedule]) -> tuple[int, list[Evaluation]]:
        return cid, self.evaluator.evaluate(schedules)

    def pid(self) -> int:
        return os.getpid()


class RayRunner(Runner):
    """``workers`` actors, each evaluating a whole chunk at a time. ``threads`` per CPU actor
    (default: the machine's CPUs shared evenly), so two actors on two cores do not fight."""

    def __init__(self, workload: Workload, *, workers: int = 2, address: str | None = None,
                 max_retries: int = 3):  # fmt: skip
        import ray

        self.ray = ray
        self._started = False
        if not ray.is_initialized():
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                os.environ.setdefault("RAY_AUTH_MODE", "disabled")
                os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
                ray.init(num_cpus=max(workers, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False,
                         _node_ip_address="127.0.0.1", _temp_dir=f"/tmp/ray-{os.getuid()}",
                         configure_logging=False)  # fmt: skip
            self._started = True
        gpus = ray.cluster_resources().get("GPU", 0)
        if not workload.threads and not gpus:
            cpus = int(ray.available_resources().get("CPU", workers))
            workload = Workload(**{**workload.__dict__, "threads": max(1, cpus // workers)})
        options = {"max_restarts": max_retries, "max_task_retries": max_retries, "num_cpus": 1}
        if gpus:
            options["num_gpus"] = 1
        cls = ray.remote(_Actor).options(**options)
        self.workers = workers
        self.actors = [cls.remote(workload) for _ in range(workers)]

    def run(self, chunks):
        ray = self.ray
        queue, pending, idle = list(chunks), {}, list(self.actors)
        while queue or pending:
            while queue and idle:
                actor = idle.pop()
                cid, schedules = queue.pop(0)
                pending[actor.evaluate.remote(cid, schedules)] = actor
            done, _ = ray.wait(list(pending), num_returns=1)
            actor = pending.pop(done[0])
            idle.append(actor)
            yield ray.get(done[0])

    def pids(self) -> list[int]:
        return self.ray.get([a.pid.remote() for a in self.actors])

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        self.actors = []
        if self._started:
            self.ray.shutdown()
