"""A progress line on stderr for sweeps that take more than a moment."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any

DELAY = 0.5  # seconds before a progress line appears at all


class SweepProgress:
    """Counts audited checkpoints; draws a transient rich progress line on a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.count = 0
        self.failed = 0
        self.start = time.perf_counter()
        self._progress: Any = None
        self._task: Any = None

    @staticmethod
    def wanted(json_out: bool) -> bool:
        """On when stderr is a terminal, and off when JSON goes to that same terminal."""
        if not sys.stderr.isatty():
            return False
        return not (json_out and sys.stdout.isatty())

    def __enter__(self) -> SweepProgress:
        return self

    def advance(self, status: str) -> None:
        self.count += 1
        self.failed += status == "fail"
        if not self.enabled:
            return
        if self._progress is None:
            if time.perf_counter() - self.start < DELAY:
                return
            from rich.console import Console
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn(
                    "auditing: {task.completed:,} checkpoints, {task.fields[failed]} failing"
                ),
                TextColumn("({task.fields[rate]:,.0f}/s)"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task("scan", total=None, failed=0, rate=0.0)
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        self._progress.update(
            self._task, completed=self.count, failed=self.failed, rate=self.count / elapsed
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
