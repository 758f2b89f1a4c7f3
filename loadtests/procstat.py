"""What a set of server processes costs, read from /proc: CPU time and memory.

CPU is utime + stime of every process in the set (clock ticks, 10 ms here),
sampled before and after a load run; memory is Rss and Pss from
``/proc/PID/smaps_rollup``. Pss splits every shared page between the processes
that map it, so the Pss of a set adds up to what the set really costs, and a
forked worker that shares the model's pages with its master has a Pss well
below its Rss.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def children_map() -> dict[int, list[int]]:
    """ppid -> child pids, for every process on the machine."""
    out: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out.setdefault(ppid, []).append(int(entry))
    return out


def tree(roots: list[int]) -> list[int]:
    """The roots and all their descendants that are alive now."""
    kids = children_map()
    seen: list[int] = []
    todo = [p for p in roots if Path(f"/proc/{p}").exists()]
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.append(pid)
        todo.extend(kids.get(pid, []))
    return sorted(seen)


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # after the comm: state(0) ppid(1) ... utime(11) stime(12)
    return (int(fields[11]) + int(fields[12])) / _TICK


def cpu_sample(pids: list[int]) -> dict[int, float]:
    return {p: cpu_seconds(p) for p in pids}


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two samples; a process new in `after` counts whole."""
    return sum(t - before.get(p, 0.0) for p, t in after.items())


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (everything but idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / _TICK


@dataclass
class ProcMemory:
    pid: int
    name: str
    role: str
    rss_kib: int
    pss_kib: int


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def memory(pid: int, role: str = "") -> ProcMemory | None:
    """Rss and Pss of one process from smaps_rollup (None when it is gone)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("Rss:", "Pss:"):
            values[parts[0][:-1]] = int(parts[1])
    return ProcMemory(pid, comm(pid), role, values.get("Rss", 0), values.get("Pss", 0))
