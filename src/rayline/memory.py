"""Peak memory of a Ray job on this machine: the driver plus every Ray worker process.

Summing RSS over processes counts shared pages (Ray's object store is shared memory mapped
into every worker) once per process; PSS (proportional set size, from
``/proc/<pid>/smaps_rollup``) splits each shared page among the processes that map it, so
the sum is the real footprint. Linux only; elsewhere the figures read 0.
"""

from __future__ import annotations

import os
import threading


def _pss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def ray_worker_pids() -> list[int]:
    """PIDs of this machine's Ray worker processes (their command line starts ``ray::``)."""
    pids = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return pids
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if f.read(5) == b"ray::":
                    pids.append(int(name))
        except OSError:
            continue
    return pids


def footprint() -> dict[str, int]:
    """Current PSS of this process (``driver``) and of all Ray workers together (``workers``)."""
    return {
        "driver": _pss_bytes(os.getpid()),
        "workers": sum(_pss_bytes(p) for p in ray_worker_pids()),
    }


class PeakMemory:
    """Context manager sampling :func:`footprint` in a thread; keeps the peaks.

    ``peak_total`` is the largest driver + workers sum seen in one sample; ``peak_driver``
    and ``peak_workers`` are each part's own peak.
    """

    def __init__(self, interval: float = 0.25):
        self.interval = interval
        self.peak_total = self.peak_driver = self.peak_workers = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = footprint()
            self.peak_driver = max(self.peak_driver, now["driver"])
            self.peak_workers = max(self.peak_workers, now["workers"])
            self.peak_total = max(self.peak_total, now["driver"] + now["workers"])
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary_mb(self) -> dict[str, int]:
        """The peaks in MiB."""
        return {
            "peak_total_mb": round(self.peak_total / 2**20),
            "peak_driver_mb": round(self.peak_driver / 2**20),
            "peak_workers_mb": round(self.peak_workers / 2**20),
        }
