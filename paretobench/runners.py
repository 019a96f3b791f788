"""Runners: where evaluations execute. Searchers and metrics never see them; the run loop
(``paretobench.run_loop``) hands a runner chunks of schedules and stores each chunk's results
the moment they come back. ``call(fn, *args)`` runs ``fn(evaluator, *args)`` where a model is
held (VisPCO trains its predictor that way).

- ``LocalRunner``: one ``Evaluator`` in this process.
- ``RayRunner``: a ``ray.util.ActorPool`` of Ray actors, one model each (``num_gpus=1`` per
  actor when the cluster has GPUs and the model is not asked to run on the CPU, else CPU
  actors). Started locally it binds to loopback only; ``address`` joins an existing cluster.
  Asking for more workers than the cluster can place is an error before any actor starts.

A chunk whose actor dies is retried on another actor. Ray restarts nothing (``max_restarts=0``):
the pool hands chunks to its actors, and a chunk whose actor died never comes back from it. Once
the pool has drained, the runner drops the dead actors (those that no longer answer), starts new
ones in their place and submits every chunk that did not come back to a new pool, so it runs on
a survivor or a new actor, never on the dead one (a new pool: an older Ray's ``ActorPool`` keeps
handing work to an actor that died). A chunk is tried at most ``1 + max_retries`` times. A
killed worker costs time, not results.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Iterator

from paretobench.evaluation import Evaluation
from paretobench.evaluator import Evaluator, Workload
from paretobench.schedule import PruningSchedule

Chunk = tuple[int, list[PruningSchedule]]  # (chunk id, schedules)


class Runner:
    """``run(chunks)`` yields ``(chunk id, evaluations)`` as chunks finish, in any order."""

    workers: int = 1

    def run(self, chunks: list[Chunk]) -> Iterator[tuple[int, list[Evaluation]]]:
        raise NotImplementedError

    def call(self, fn: Callable, *args):
        """``fn(evaluator, *args)`` on an evaluator that holds the model, and its result."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class LocalRunner(Runner):
    def __init__(self, evaluator: Evaluator):
        self.evaluator = evaluator

    def run(self, chunks):
        for cid, schedules in chunks:
            yield cid, self.evaluator.evaluate(schedules)

    def call(self, fn, *args):
        return fn(self.evaluator, *args)


class _Actor:
    """The body of a Ray actor: an evaluator of its own, its model loaded when it starts."""

    def __init__(self, workload: Workload):
        self.evaluator = Evaluator(workload)
        self.evaluator.loaded

    def evaluate(self, cid: int, schedules: list[PruningSchedule]) -> tuple[int, list[Evaluation]]:
        return cid, self.evaluator.evaluate(schedules)

    def call(self, fn, args):
        return fn(self.evaluator, *args)

    def pid(self) -> int:
        return os.getpid()


class RayRunner(Runner):
    """``workers`` actors, each evaluating a whole chunk at a time. ``threads`` per CPU actor
    (default: the cluster's CPUs shared evenly), so two actors on two cores do not fight. Ray
    starts (or is joined) here; the actors start, loading their models, when first needed."""

    def __init__(self, workload: Workload, *, workers: int = 2, address: str | None = None,
                 max_retries: int = 3):  # fmt: skip
        import ray

        self.ray, self.workers, self.max_retries = ray, workers, max_retries
        self.actors: list = []
        self.lost = 0  # chunks whose actor died (each run again)
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
        try:
            self._options, self.workload = self._placement(workload)
        except ValueError:
            self.close()
            raise

    def _placement(self, workload: Workload) -> tuple[dict, Workload]:
        """The actors' resources and workload; an error if ``workers`` of them cannot be placed
        (they would wait for resources forever)."""
        total = self._resources()
        gpus, cpus = int(total.get("GPU", 0)), int(total.get("CPU", 0))
        on_gpu = gpus > 0 and workload.device != "cpu"
        if on_gpu and self.workers > gpus:
            raise ValueError(f"--workers {self.workers}: each Ray worker holds a GPU and the cluster has {gpus}; "
                             f"give --workers {gpus} or fewer (or --device cpu)")  # fmt: skip
        if self.workers > cpus:
            raise ValueError(f"--workers {self.workers}: each Ray worker takes a CPU and the cluster has {cpus}; "
                             f"give --workers {cpus} or fewer")  # fmt: skip
        if not workload.threads and not on_gpu:
            workload = Workload(**{**workload.__dict__, "threads": max(1, cpus // self.workers)})
        options = {"max_restarts": 0, "max_task_retries": 0, "num_cpus": 1, **({"num_gpus": 1} if on_gpu else {})}
        return options, workload

    def _resources(self, patience: float = 30.0) -> dict:
        """The cluster's resources. Right after ``ray.init`` starts a cluster, its node may not
        have reported them yet (an empty dict, seen on a loaded machine): wait for them."""
        deadline = time.monotonic() + patience
        while not (total := self.ray.cluster_resources()).get("CPU") and time.monotonic() < deadline:
            time.sleep(0.1)
        return total

    def _live(self) -> list:
        """The actors that still answer, topped up with new ones to ``workers``."""
        from ray.exceptions import RayActorError

        alive = []
        for actor in self.actors:
            try:
                self.ray.get(actor.pid.remote())
                alive.append(actor)
            except RayActorError:
                pass
        cls = self.ray.remote(_Actor).options(**self._options)
        self.actors = alive + [cls.remote(self.workload) for _ in range(self.workers - len(alive))]
        return self.actors

    def run(self, chunks):
        from ray.exceptions import RayActorError
        from ray.util import ActorPool

        todo, tries, died = dict(chunks), {cid: 0 for cid, _ in chunks}, None
        while todo:
            pool = ActorPool(self._live())
            for cid in todo:
                tries[cid] += 1
                if tries[cid] > 1 + self.max_retries:
                    raise RuntimeError(f"chunk {cid} lost its Ray actor {tries[cid] - 1} times; last: {died}")
                pool.submit(lambda actor, c: actor.evaluate.remote(c, todo[c]), cid)
            while pool.has_next():
                try:
                    cid, evaluations = pool.get_next_unordered()
                except RayActorError as e:  # its chunk stays in todo: the next pool runs it
                    died, self.lost = str(e).splitlines()[0], self.lost + 1
                    continue
                del todo[cid]
                yield cid, evaluations

    def call(self, fn, *args):
        """``fn(evaluator, *args)`` on one actor (on a GPU when the actors have one)."""
        from ray.exceptions import RayActorError

        for _ in range(1 + self.max_retries):
            try:
                return self.ray.get(self._live()[0].call.remote(fn, args))
            except RayActorError as e:
                died = str(e).splitlines()[0]
        raise RuntimeError(f"{getattr(fn, '__name__', fn)} lost its Ray actor {1 + self.max_retries} times; "
                           f"last: {died}")  # fmt: skip

    def pids(self) -> list[int]:
        return self.ray.get([a.pid.remote() for a in self._live()])

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        self.actors = []
        if self._started:
            self.ray.shutdown()
            self._started = False
