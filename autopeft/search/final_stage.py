"""The final stage: the search's Pareto front re-trained at full fidelity with several seeds.

Each seed is kept as soon as it is trained (a user attribute of the final trial, its adapter under
``adapters/.seeds``), so an interrupted final stage resumes with the seeds still missing. The seed the
search trained with continues the point's latest search checkpoint (:mod:`autopeft.search.checkpoints`):
from the top rung it only evaluates (validation, test) and saves the adapter, instead of re-training
what the search trained already. A point
another live worker is re-training is waited for, not trained twice. A final trial's values are the
mean over its seeds, ``values_std`` their spread; the adapter of the first seed that trained becomes
``adapters/final-<n>``.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.exceptions import UpdateFinishedTrialError

from autopeft.atomic import replace_dir
from autopeft.backends.base import Backend, TrialJob
from autopeft.search.checkpoints import PointCheckpoints
from autopeft.search.records import TrialRecord, pareto_records
from autopeft.search.store import PROCESS_ENDED, SEARCH_STOPPED, StudyStore
from autopeft.space import SearchSpace, count_trainable_params
from autopeft.trial.fidelity import Fidelity
from autopeft.trial.result import ERROR, TrialResult

PEER_POLL_SECONDS = 2.0   # waiting for a point another process is training


@dataclass
class FinalStage:
    """The final stage of one search: its trials in the store's final study, its seeds on the backend."""

    store: StudyStore
    space: SearchSpace
    backend: Backend
    run_dir: Path
    fidelity: Fidelity               # the full fidelity
    seeds: list[int]
    note: Callable[[str], None]
    checkpoints: PointCheckpoints | None = None   # the search's training checkpoints (its seed continues them)
    # told final trial, its seeds' results (with their loss curves where trained now) and the seeds -> a tracker
    track: Callable[[TrialRecord, list[TrialResult], list[int]], None] | None = None
    on_seed: Callable[[int, int], None] | None = None   # (seeds trained, seeds to train) as the stage goes on
    _trained: dict[tuple[int, int], TrialResult] = field(default_factory=dict, init=False, repr=False)

    def run(self, stage: str, front: list[TrialRecord]) -> tuple[str, list[TrialRecord]]:
        """The final front of the search front ``front`` (of rung ``stage``)."""
        study = self.store.open_final()
        self._recover_abandoned(study)
        self.note(f"final stage: {len(front)} Pareto point(s) of {stage}, {len(self.seeds)} seed(s) each "
                  "at full fidelity")
        finished = self.store.final_records(study)
        todo = [r for r in front if r.key not in finished]
        while todo:
            peers = self.store.final_running(study)
            mine = [r for r in todo if r.key not in peers]
            if mine:
                self._train(study, mine)
            finished = self.store.final_records(study)
            todo = [r for r in todo if r.key not in finished]
            if todo:  # another worker is re-training these right now
                time.sleep(PEER_POLL_SECONDS)
                self._recover_abandoned(study)
        return "final", pareto_records([finished[r.key] for r in front if r.key in finished], self.store.objectives)

    def _recover_abandoned(self, study: optuna.Study) -> None:
        for trial in self.store.abandoned_trials(study):
            if self.store.interrupt(study, trial._trial_id, PROCESS_ENDED):
                self.note(f"final trial #{trial.number} was interrupted; "
                          f"{self.store.kept_seed_count(trial)} finished seed(s) kept")

    def _kept_seeds(self, study: optuna.Study, key: str) -> dict[int, dict[str, Any]]:
        """Seeds of ``key`` that interrupted final trials finished (with their adapter still on disk)."""
        kept: dict[int, dict[str, Any]] = {}
        for entry in self.store.seeds_of_failed(study, key):
            if entry.get("adapter") is None or (self.run_dir / entry["adapter"]).is_dir():
                kept.setdefault(int(entry["seed"]), entry)
        return kept

    def _search_checkpoint(self, key: str, seed: int) -> tuple[int, Path] | None:
        """The point's latest search checkpoint (rung, folder) when ``seed`` is the one the search trained with."""
        if (self.checkpoints is None or seed != self.checkpoints.seed
                or self.fidelity != self.checkpoints.rungs[-1]):
            return None
        latest = self.checkpoints.latest(key)
        return latest if latest is not None and self.checkpoints.keeps(latest[0]) else None

    def _train(self, study: optuna.Study, records: list[TrialRecord]) -> None:
        seeds_root = self.run_dir / "adapters" / ".seeds"
        pending: list[tuple[optuna.Trial, int]] = []
        jobs: list[TrialJob] = []
        owner: dict[str, tuple[optuna.Trial, int]] = {}
        for record in records:
            self.store.queue(study, record.params, f"front of {record.label}", record.key)
        for _ in records:
            trial = self.store.ask(study)  # the oldest queued trial: ours, or one a peer queued (a peer may pop ours)
            _, key = self.store.queued_as(trial)
            if key is None:  # the queue was empty (peers took the rest): a sampled point is no front point
                self.store.prune(trial, "no queued front point left (other workers took them; not trained)")
                break
            point = self.space.decode(self.space.suggest(trial))
            adapter_params = count_trainable_params(point, self.space.model_config)
            self.store.describe(trial, point, adapter_params)
            earlier = self.store.final_running(study, before=self.store.asked_at(trial)).get(key)
            if earlier is None and key in self.store.final_records(study):  # a peer finished it since we looked
                earlier = self.store.final_records(study)[key].number
            if earlier is not None:  # a peer asked for the same point first: it trains it
                self.store.prune(trial, f"the same point is being trained as final trial #{earlier} (not trained)",
                                 duplicate_of=earlier)
                continue
            kept = self._kept_seeds(study, key)
            for seed in self.seeds:
                if seed in kept:
                    self.store.keep_seed(trial, seed, kept[seed])
                else:
                    resume = self._search_checkpoint(key, seed)
                    job = TrialJob(f"final-{trial.number}-seed-{seed}", point, self.fidelity, seed,
                                   evaluate_test=True, save_adapter=True,
                                   resume_from=str(resume[1]) if resume else None)
                    if resume is not None:
                        self.note(f"final trial #{trial.number}: seed {seed} continues the search's rung-{resume[0]} "
                                  "training of the point" + (" (evaluated, not re-trained)"
                                                             if resume[0] == len(self.checkpoints.rungs) - 1 else ""))
                    jobs.append(job)
                    owner[job.id] = (trial, seed)
            if kept:
                self.note(f"final trial #{trial.number}: {len(set(kept) & set(self.seeds))} seed(s) kept from an "
                          "interrupted final stage")
            pending.append((trial, adapter_params))

        done = 0

        def keep(job: TrialJob, result: TrialResult) -> None:  # each seed is stored the moment it is trained
            nonlocal done
            trial, seed = owner[job.id]
            done += 1
            if self.on_seed is not None:
                self.on_seed(done, len(jobs))
            adapter = seeds_root / job.id
            self._trained[(trial.number, seed)] = result
            self.store.keep_seed(trial, seed, {
                "seed": seed, "result": result.to_dict(),
                "adapter": str(adapter.relative_to(self.run_dir)) if adapter.is_dir() else None})

        if self.on_seed is not None and jobs:
            self.on_seed(0, len(jobs))
        try:
            self.backend.run_all(jobs, seeds_root, on_result=keep)
        except BaseException:
            for trial, _ in pending:
                self.store.interrupt(study, trial._trial_id, SEARCH_STOPPED)
            raise
        for trial, adapter_params in pending:
            try:
                self._tell(trial, adapter_params)
            except UpdateFinishedTrialError:
                self.note(f"final trial #{trial.number} was taken over by another worker (its lease lapsed)")
                continue
            if self.track is not None:
                entries = self.store.seed_entries(trial, self.seeds)
                seeds = [int(entry["seed"]) for entry in entries]
                results = [self._trained.get((trial.number, seed)) or TrialResult(**entry["result"])
                           for seed, entry in zip(seeds, entries)]
                self.track(self.store.record(trial, "final"), results, seeds)

    def _tell(self, trial: optuna.Trial, adapter_params: int) -> None:
        """Mean and spread over the seeds; the adapter of the first seed that trained becomes final-<n>."""
        entries = self.store.seed_entries(trial, self.seeds)
        seed_results = [TrialResult(**entry["result"]) for entry in entries]
        self.store.record_seeds(trial, seed_results)
        ok = [(entry, r) for entry, r in zip(entries, seed_results) if r.ok]
        if not ok:
            self.store.fail(trial, seed_results[0].status if seed_results else ERROR,
                            "; ".join(sorted({r.reason or r.status for r in seed_results})) or "no seed ran")
            return
        objectives = self.store.objectives
        try:
            per_seed = np.array([[o.value(r, adapter_params) for o in objectives] for _, r in ok])
        except KeyError as exc:
            self.store.fail(trial, ERROR, f"error: {exc.args[0]}")
            return
        test_names = sorted(set.intersection(*(set(r.test_metrics) for _, r in ok)))
        saved = next((self.run_dir / e["adapter"] for e, _ in ok if e.get("adapter")
                      and (self.run_dir / e["adapter"]).is_dir()), None)
        adapter_dir = None
        if saved is not None:
            final_dir = self.run_dir / "adapters" / f"final-{trial.number}"
            replace_dir(saved, final_dir)
            adapter_dir = str(final_dir.relative_to(self.run_dir))
        for entry in entries:  # the other seeds' adapters are not exported
            if entry.get("adapter"):
                shutil.rmtree(self.run_dir / entry["adapter"], ignore_errors=True)
        self.store.tell_final(
            trial, per_seed.mean(axis=0).tolist(),
            values_std=dict(zip([o.name for o in objectives], per_seed.std(axis=0).tolist())),
            test_metrics={m: float(np.mean([r.test_metrics[m] for _, r in ok])) for m in test_names},
            test_metrics_std={m: float(np.std([r.test_metrics[m] for _, r in ok])) for m in test_names},
            adapter_dir=adapter_dir)
