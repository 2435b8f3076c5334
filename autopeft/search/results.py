"""The results of a run as export and report see them: every trial, and the Pareto front.

The front is the final stage's (full fidelity, mean of several seeds, selected on validation)
for the points on the current search front; without a final stage it is the front of the
highest fidelity rung that has results.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from autopeft.search import records as R
from autopeft.search.records import TrialRecord
from autopeft.search.run import RunInfo, read_run_info


@dataclass
class RunResults:
    info: RunInfo
    stages: dict[str, list[TrialRecord]]
    search_stage: str | None          # the rung whose front was (or would be) re-trained
    front: list[TrialRecord]
    front_stage: str | None           # "final" or a rung

    @property
    def all_records(self) -> list[TrialRecord]:
        return [r for records in self.stages.values() for r in records]


def load_results(run_dir: str | Path, storage: str | None = None) -> RunResults:
    info = read_run_info(run_dir)
    stages = R.load_records(info.open_storage(storage), info.study_name, info.objectives)
    if not stages:
        from autopeft.errors import AutopeftError

        raise AutopeftError(f"study '{info.study_name}' has no trials in this storage")
    search_stage, search_front = R.search_front(stages, info.objectives)
    keys = {r.key for r in search_front}
    final = [r for r in stages.get("final", []) if r.key in keys]
    final_front = R.pareto_records(final, info.objectives)
    if final_front:
        return RunResults(info, stages, search_stage, final_front, "final")
    return RunResults(info, stages, search_stage, search_front, search_stage)
