"""Peak memory of one trial: CUDA's allocator counter, or the process RSS sampled on CPU."""

from __future__ import annotations

import threading

import psutil
import torch


class PeakMemory:
    """Context manager; ``peak_mb`` is the trial's high-water mark.

    On CPU the kernel's ru_maxrss never resets, so a daemon thread samples RSS every 20 ms
    (cost: one syscall per sample, negligible next to a training step).
    """

    def __init__(self, device: torch.device, interval: float = 0.02):
        self.device = device
        self.interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            process = psutil.Process()
            self.peak_mb = process.memory_info().rss / 2**20

            def sample():
                while not self._stop.wait(self.interval):
                    self.peak_mb = max(self.peak_mb, process.memory_info().rss / 2**20)

            self._thread = threading.Thread(target=sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(self.peak_mb, psutil.Process().memory_info().rss / 2**20)
