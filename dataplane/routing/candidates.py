"""Small facts about a candidate list that several policies share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dataplane.workers import Worker

__all__ = ["least_loaded", "worker_id"]


def worker_id(worker: Worker) -> str:
    """The id a policy keys its state on: the worker's url, stable across registry snapshots."""
    return worker.url.url


def least_loaded(workers: Sequence[Worker], picked: Mapping[str, int] | None = None) -> Worker:
    """The worker with the fewest requests in flight; ties go to the one picked least often, then the first.

    The pick count breaks ties the way SMG's processed counter does: with index-only ties, short
    requests that finish before the next arrives would all land on the first worker.
    """
    best = workers[0]
    best_key = (best.load, picked.get(worker_id(best), 0) if picked else 0)
    for w in workers[1:]:
        key = (w.load, picked.get(worker_id(w), 0) if picked else 0)
        if key < best_key:
            best, best_key = w, key
    return best
