"""A database backend's reachability: its connection errors become ``HistoryUnavailable``, logged once.

An outage fails every request that touches the store, so the log records the transitions (unreachable,
reachable again), not each failed request. The client's error names the backend but not its address.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from dataplane.errors import HistoryUnavailable

logger = logging.getLogger(__name__)


class Connectivity:
    """``with connectivity.guard(): …`` around every call to the server."""

    def __init__(self, backend: str, errors: tuple[type[BaseException], ...]) -> None:
        self.backend = backend
        self._errors = errors
        self.reachable = True

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        try:
            yield
        except self._errors as exc:
            if self.reachable:
                self.reachable = False
                logger.warning("%s history backend unreachable: %s", self.backend, exc or type(exc).__name__)
            raise HistoryUnavailable(f"the {self.backend} history backend is unavailable") from exc
        if not self.reachable:
            self.reachable = True
            logger.warning("%s history backend reachable again", self.backend)
