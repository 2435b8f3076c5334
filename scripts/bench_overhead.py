"""Overheads of a search: per-trial wall vs pure compute, suggestion time vs trial count, memory.

1. A real search (``run_search``, local backend, MiniLM, low fidelity): for every trained trial the
   engine's trial wall (Optuna ask -> tell: suggestion, adapter build, training, evaluation, storage)
   against the pure compute (``TrialResult.train_seconds + eval_seconds``), and the whole search's wall
   against the sum of compute.
2. Suggestion time of each sampler against the number of trials already in the study, without
   training (a synthetic objective of the exact parameter count; baselines off, 2 Sobol points, so
   the sampler proposes from trial 3 on), until the study holds ``--suggest-trials`` trials
   (repeated suggestions, told from the cache, count: they are trials the sampler fits on):
   median ``suggest_seconds`` over windows of 10 trials.
3. Memory: resident set size after imports, after loading model + task, the trials' peaks
   (``TrialResult.peak_memory_mb``) and the process peak.

    python scripts/bench_overhead.py --size quick|full|toy [--out DIR] [overrides]
    -> benchmarks/overhead.json and benchmarks/overhead.md
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_common as C  # noqa: E402

from autopeft.backends.base import FINISHED  # noqa: E402
from autopeft.backends.local import LocalBackend  # noqa: E402

PRESETS = {  # the search trials use bench_search's low fidelity of the same size
    "toy": dict(task="rte", space="autopeft", sampler="random", trials=2, train_examples=16, max_length=16,
                eval_examples=16, batch_size=8, suggest_samplers="random", suggest_spaces="autopeft", suggest_trials=6,
                window=3),
    "quick": dict(task="sst2", space="autopeft", sampler="auto", trials=10, train_examples=256, max_length=32,
                  eval_examples=256, batch_size=8, suggest_samplers="botorch,gp,tpe", suggest_spaces="autopeft",
                  suggest_trials=100, window=10),  # nsga2 / random cost only Optuna's bookkeeping: full size
    "full": dict(task="sst2", space="autopeft", sampler="auto", trials=30, train_examples=500, max_length=64,
                 eval_examples=500, batch_size=16, suggest_samplers="botorch,gp,tpe,nsga2,random",
                 suggest_spaces="autopeft,unified", suggest_trials=100, window=10),
}


def search_overhead(args) -> dict:
    """Trials of a real search: engine wall vs compute."""
    from autopeft.search import records as R
    from autopeft.search.run import run_search
    from autopeft.search.settings import SearchSettings

    rss_before_load = C.rss_mb()
    start = time.perf_counter()
    C.load(args.task, tokenize_length=args.max_length)  # into autopeft's process caches, which run_search reuses
    load_seconds = time.perf_counter() - start
    rss_loaded = C.rss_mb()
    with tempfile.TemporaryDirectory() as folder:
        settings = SearchSettings(
            model="minilm", dataset=C.dataset_path(args.task), space=C.space_path(args.space), sampler=args.sampler,
            trials=args.trials, final_seeds=0, train_examples=args.train_examples, max_length=args.max_length,
            eval_examples=args.eval_examples, batch_size=args.batch_size, lr=3e-3, out=folder,
            prior=["heads"] if C.space_has(args.space, "lofit") else [])
        start = time.perf_counter()
        outcome, info = run_search(settings)
        search_wall = time.perf_counter() - start
        records = R.load_records(info.open_storage(), info.study_name, info.objectives)["rung-0"]
    trials = []
    for record in sorted(records, key=lambda r: r.number):
        if not record.trained:
            continue
        result = record.attrs[R.RESULT]
        compute = result["train_seconds"] + result["eval_seconds"]
        trials.append({
            "trial": record.number, "origin": record.attrs.get(R.ORIGIN), "status": result["status"],
            "suggest_s": record.attrs.get(R.SUGGEST_SECONDS), "setup_s": result["setup_seconds"],
            "train_s": result["train_seconds"], "eval_s": result["eval_seconds"], "compute_s": compute,
            "runner_wall_s": result["wall_seconds"], "engine_wall_s": record.duration_seconds,
            "engine_over_compute": record.duration_seconds / compute if compute > 0 else None,
            "peak_memory_mb": result["peak_memory_mb"]})
    ok = [t for t in trials if t["status"] == "ok"]
    compute_total = sum(t["compute_s"] for t in trials)
    return {
        "trials": trials,
        "search_wall_s": search_wall,
        "compute_total_s": compute_total,
        "search_over_compute": search_wall / compute_total if compute_total else None,
        "median_engine_over_compute": statistics.median(t["engine_over_compute"] for t in ok) if ok else None,
        "model_task_tokenise_s": load_seconds,
        "memory": {"rss_after_imports_mb": rss_before_load, "rss_after_model_and_task_mb": rss_loaded,
                   "max_trial_peak_mb": max((t["peak_memory_mb"] for t in trials), default=None)},
    }


def minilm_config():
    from autopeft.models import load_model_config

    return load_model_config("minilm")


class UntilStudySize(LocalBackend):
    """The local backend, stopping once the study holds ``size`` trials (trained or told from the cache)."""

    def __init__(self, evaluator, size: int):
        super().__init__(evaluator)
        self.size = size

    def drive(self, source) -> None:
        while len(source.studies[0].get_trials(deepcopy=False)) < self.size:
            job = source.next_job()
            if job is FINISHED:
                return
            source.finish_job(job.id, self._run(job, None))


def suggestion_times(sampler: str, space_name: str, trials: int, window: int) -> dict:
    """Suggestion seconds per trial of a search whose evaluator returns at once (synthetic accuracy), until the
    study holds ``trials`` trials."""
    from autopeft.search import SearchEngine, SearchPlan, open_storage, parse_objectives
    from autopeft.search import records as R
    from autopeft.space import SearchSpace, count_trainable_params
    from autopeft.trial.fidelity import Fidelity
    from autopeft.trial.result import TrialResult

    config = minilm_config()
    space = SearchSpace.from_file(C.space_path(space_name), config)

    def synthetic(point, fidelity, seed, *, evaluate_test=False, save_dir=None):
        size = count_trainable_params(point, config)
        return TrialResult(metrics={"accuracy": 0.5 + 0.4 * (1 - math.exp(-size / 2e5)) + 0.01 * math.sin(size)},
                           wall_seconds=1.0)

    objectives = parse_objectives(["metric", "params"], "accuracy", True)
    with tempfile.TemporaryDirectory() as folder:
        storage = open_storage(f"sqlite:///{folder}/study.db")
        plan = SearchPlan(objectives=objectives, rungs=[Fidelity()], trials=trials, sampler=sampler, final_seeds=0,
                          baselines=False, quasi_random=2)
        start = time.perf_counter()
        backend = UntilStudySize(synthetic, trials)
        SearchEngine(space, None, plan, storage, "bench", Path(folder), backend=backend).run()
        total = time.perf_counter() - start
        records = R.load_records(storage, "bench", objectives)["rung-0"]
    records = [r for r in records if r.number < trials]  # the engine may overshoot by a run of repeats
    new_points = sum(1 for r in records if r.trained)
    by_count = [(r.number + 1, r.attrs[R.SUGGEST_SECONDS]) for r in records
                if str(r.attrs.get(R.ORIGIN, "")).startswith("sampler:")]
    windows = {}  # by the trial's number in the study: rejected and duplicate suggestions count too
    last = max((n for n, _ in by_count), default=0)
    for end in range(window, last + window, window):
        inside = [s for n, s in by_count if end - window < n <= end]
        windows[str(end)] = statistics.median(inside) if inside else None
    seconds = [s for _, s in by_count]
    return {"sampler": sampler, "space": space_name, "trials": len(records), "new_points": new_points, "total_s": total,
            "median_s": statistics.median(seconds) if seconds else None, "max_s": max(seconds, default=None),
            "median_by_trial_count": windows}


def markdown(args, data: dict) -> list[str]:
    search = data["search"]
    lines = ["# Search overheads (MiniLM)", "",
             f"## Per trial: engine wall vs pure compute ({args.task}, space `{args.space}`, sampler {args.sampler}, "
             f"{args.trials} trials of {args.train_examples} examples, length {args.max_length}, "
             f"batch {args.batch_size}, "
             f"{args.eval_examples} eval examples)", "",
             "Engine wall = Optuna ask -> tell of the trial (suggestion, adapter build, training, evaluation, "
             "storage); compute = train + eval seconds of the `TrialResult`.", ""]
    lines += C.table(
        ["trial", "origin", "suggest s", "setup s", "train s", "eval s", "runner wall s", "engine wall s",
         "engine / compute", "peak MB"],
        [[t["trial"], t["origin"], C.fmt(t["suggest_s"], 2), C.fmt(t["setup_s"], 2), C.fmt(t["train_s"], 2),
          C.fmt(t["eval_s"], 2), C.fmt(t["runner_wall_s"], 2), C.fmt(t["engine_wall_s"], 2),
          C.fmt(t["engine_over_compute"], 3), C.fmt(t["peak_memory_mb"], 0)] for t in search["trials"]])
    lines += ["",
              f"- median engine wall / compute: **{C.fmt(search['median_engine_over_compute'])}**",
              f"- once per process, before the search: loading MiniLM + the task and tokenising it, "
              f"{search['model_task_tokenise_s']:.1f} s",
              f"- whole search: {search['search_wall_s']:.1f} s wall for {search['compute_total_s']:.1f} s of compute "
              f"(ratio {C.fmt(search['search_over_compute'])}; includes loading the task, the initial design and "
              "writing run.json)",
              "", "## Suggestion time vs trials in the study (synthetic objective, no training; median s per "
              f"window of {args.window} trials)", ""]
    counts = sorted({c for r in data["suggestion"] for c in r["median_by_trial_count"]}, key=int)
    lines += C.table(["sampler", "space", *[f"≤{c}" for c in counts], "median s", "max s", "total s",
                      "new points"],
                     [[r["sampler"], r["space"], *[C.fmt(r["median_by_trial_count"].get(c)) for c in counts],
                       C.fmt(r["median_s"]), C.fmt(r["max_s"]), C.fmt(r["total_s"], 1), r["new_points"]]
                      for r in data["suggestion"]])
    lines += ["", "New points: trials that trained (the synthetic objective); the rest of the study's trials were "
              "suggestions of an already evaluated point, told from the cache (after 5 in a row the engine queues "
              "a random point)."]
    memory = data["memory"]
    lines += ["", "## Memory (resident set size)", "",
              f"- after imports: {memory['rss_after_imports_mb']:.0f} MB; after loading MiniLM + the task: "
              f"{memory['rss_after_model_and_task_mb']:.0f} MB",
              f"- largest trial peak (`TrialResult.peak_memory_mb`): {C.fmt(memory['max_trial_peak_mb'], 0)} MB",
              f"- process peak after the search: {memory['peak_search_mb']:.0f} MB; after the suggestion runs: "
              f"{memory['peak_process_mb']:.0f} MB"]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", help=f"one of {', '.join(C.TASKS)}")
    parser.add_argument("--space")
    parser.add_argument("--sampler")
    parser.add_argument("--trials", type=int)
    parser.add_argument("--train-examples", type=int)
    parser.add_argument("--max-length", type=int)
    parser.add_argument("--eval-examples", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--suggest-samplers")
    parser.add_argument("--suggest-spaces")
    parser.add_argument("--suggest-trials", type=int)
    parser.add_argument("--window", type=int)
    args = C.parse_args(parser, PRESETS, argv, "overhead")
    started = time.perf_counter()
    C.quiet()
    search = search_overhead(args)
    memory = {**search.pop("memory"), "peak_search_mb": C.peak_rss_mb()}
    suggestion = []
    for space in C.csv(args.suggest_spaces):
        for sampler in C.csv(args.suggest_samplers):
            suggestion.append(suggestion_times(sampler, space, args.suggest_trials, args.window))
            print(suggestion[-1], flush=True)
    memory["peak_process_mb"] = C.peak_rss_mb()
    data = {"search": search, "suggestion": suggestion, "memory": memory}
    C.write(args, data, markdown(args, data), started)


if __name__ == "__main__":
    main()
