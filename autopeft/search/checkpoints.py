"""Training checkpoints of a search's points, so that a promotion continues instead of restarting.

A rung whose training is an exact prefix of the full fidelity's (a step rung, ``Fidelity.step_fraction``,
or the full fidelity itself) leaves its trial's training state in
``<run_dir>/checkpoints/<sha1 of the point key>/rung-<k>``. The point's trial at the next rung continues the
latest of them, and the final stage's seed equal to the search seed continues (usually: just evaluates) the
one of the top rung. Only the latest checkpoint of a point is kept. A checkpoint that is missing (deleted, a
search killed before it was written) only means training from scratch. Data and epoch rungs train on other
data or with another schedule than the full fidelity, so they leave none.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from pathlib import Path

from autopeft.atomic import discard_dir
from autopeft.trial.fidelity import Fidelity

CHECKPOINTS_DIR = "checkpoints"
_RUNG_DIR = re.compile(r"^rung-(\d+)$")


def continues_to(rung: Fidelity, full: Fidelity) -> bool:
    """Whether training at ``rung`` is the beginning of training at ``full`` (same data, batches, schedule)."""
    return replace(rung, step_fraction=None) == full


@dataclass(frozen=True)
class PointCheckpoints:
    """The checkpoint folders of one search (``run_dir``, the search ``seed`` every rung trial trains with)."""

    run_dir: Path
    rungs: tuple[Fidelity, ...]
    seed: int

    def folder(self, key: str) -> Path:
        return Path(self.run_dir) / CHECKPOINTS_DIR / hashlib.sha1(key.encode()).hexdigest()

    def keeps(self, rung: int) -> bool:
        """Whether a trial at ``rung`` writes a checkpoint (its training is a prefix of the full one)."""
        return continues_to(self.rungs[rung], self.rungs[-1])

    def latest(self, key: str, below: int | None = None) -> tuple[int, Path] | None:
        """The point's checkpoint of the highest rung (below ``below`` when given), if one is complete on disk."""
        folder = self.folder(key)
        if not folder.is_dir():
            return None
        found = []
        for child in folder.iterdir():
            match = _RUNG_DIR.match(child.name)
            if match and (below is None or int(match.group(1)) < below) and (child / "checkpoint.json").is_file():
                found.append((int(match.group(1)), child))
        return max(found) if found else None

    def for_job(self, key: str, rung: int) -> dict[str, str]:
        """The ``TrialJob`` fields of the point's trial at ``rung``: the checkpoint it continues and writes."""
        if not self.keeps(rung):
            return {}
        fields = {"checkpoint_to": str(self.folder(key) / f"rung-{rung}")}
        earlier = self.latest(key, below=rung)
        if earlier is not None and self.keeps(earlier[0]):
            fields["resume_from"] = str(earlier[1])
        return fields

    def keep_latest(self, key: str) -> None:
        """Delete the point's checkpoints below its latest one (a point is continued from its latest only)."""
        latest = self.latest(key)
        if latest is None:
            return
        for child in self.folder(key).iterdir():
            match = _RUNG_DIR.match(child.name)
            if match and int(match.group(1)) < latest[0]:
                discard_dir(child)
