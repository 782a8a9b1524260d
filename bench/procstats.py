"""CPU time and peak memory of a process tree, read from /proc (Linux only).

CPU is ``utime + stime + cutime + cstime`` summed over the live tree: a child that exits and is reaped
during a window moves its time into its parent's ``cutime``, so the sum stays continuous. Peak memory is
``VmHWM`` (the kernel's resident high-water mark) summed over the tree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces; split after its last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def children_map() -> dict[int, list[int]]:
    """Parent pid → child pids, for every process visible now."""
    tree: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) is not None:
            tree.setdefault(int(fields[1]), []).append(int(entry.name))
    return tree


def process_tree(root: int) -> list[int]:
    """``root`` and all its live descendants."""
    tree = children_map()
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(tree.get(pid, ()))
    return pids


def cpu_seconds(pid: int) -> float:
    """utime+stime+cutime+cstime of one process, in seconds (0 if it is gone)."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # After the command name: state=0, ppid=1, ... utime=11, stime=12, cutime=13, cstime=14.
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / CLOCK_TICKS


def tree_cpu_seconds(roots: list[int]) -> float:
    """CPU seconds of every process tree rooted at ``roots``."""
    return sum(cpu_seconds(pid) for root in roots for pid in process_tree(root))


def status_kib(pid: int, key: str) -> int:
    """A ``kB`` field of /proc/<pid>/status (``VmHWM``, ``VmRSS``), 0 if absent."""
    try:
        for line in (_PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_peak_rss_mib(root: int) -> float:
    """Sum of VmHWM over the live tree of ``root``, in MiB."""
    return sum(status_kib(pid, "VmHWM") for pid in process_tree(root)) / 1024


def tree_threads(root: int) -> int:
    return sum(status_kib(pid, "Threads") for pid in process_tree(root))


@dataclass(frozen=True, slots=True)
class BoxCpu:
    """Busy and total CPU seconds of the whole machine, from the first line of /proc/stat."""

    busy: float
    total: float

    @classmethod
    def read(cls) -> BoxCpu:
        values = [int(v) for v in (_PROC / "stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        total = sum(values[:8])  # guest time is already counted in user
        return cls(busy=(total - idle) / CLOCK_TICKS, total=total / CLOCK_TICKS)
