"""Local backend vs Ray backend on the same MiniLM trials.

Three runs of one search (random sampler, fixed seed, no baselines: the same points in each run),
each in a fresh process:
  local         the local backend, trials one after another with all CPUs (torch threads = CPUs)
  ray-1x2cpu    Ray (started in-process), one trial at a time with all CPUs: Ray's overhead
  ray-2x1cpu    Ray, two trials at once with one CPU each: concurrency vs threads
Wall time includes everything the user waits for (Ray start, workers loading the model).

    python scripts/bench_ray.py --size quick|toy [--out DIR] [--trials 6] [--train-examples 3000]
    -> benchmarks/ray.json and benchmarks/ray.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_common as C  # noqa: E402

PRESETS = {
    "toy": dict(trials=2, train_examples=16, eval_examples=16, configs="local"),
    "quick": dict(trials=6, train_examples=3000, eval_examples=500, configs="local,ray-1x2cpu,ray-2x1cpu"),
}
CONFIGS = {
    "local": {"backend": "local"},
    "ray-1x2cpu": {"backend": "ray", "cpus_per_trial": 2, "max_concurrent": 1},
    "ray-2x1cpu": {"backend": "ray", "cpus_per_trial": 1, "max_concurrent": 2},
}


def run_one(name: str, args, out: Path) -> dict:
    """In this (fresh) process: one search, timed."""
    import optuna

    from autopeft.search import records as R
    from autopeft.search.run import read_run_info, run_search
    from autopeft.search.settings import merge_settings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cpus = os.cpu_count() or 1
    settings = merge_settings({}, dict(
        model="minilm", dataset=C.dataset_path("sst2"), space=C.space_path("lora"), trials=args.trials,
        sampler="random", baselines=False, quasi_random=0, final_seeds=0, train_examples=args.train_examples,
        eval_examples=args.eval_examples, max_length=64, lr=3e-3, seed=0, out=str(out / name),
        ray_address="local", **CONFIGS[name]))
    start, started = time.perf_counter(), time.time()
    run_search(settings)
    wall = time.perf_counter() - start
    info = read_run_info(out / name)
    records = R.load_records(info.open_storage(), info.study_name, info.objectives)["rung-0"]
    results = sorted((r.attrs[R.RESULT] for r in records if R.RESULT in r.attrs), key=lambda r: r["started_at"])
    ends = [r["started_at"] + r["wall_seconds"] for r in results]
    return {
        "config": name, "cpus": cpus, **CONFIGS[name], "wall_seconds": round(wall, 1), "trials": len(results),
        "points": sorted(r.key for r in records if R.RESULT in r.attrs),
        "trial_seconds_sum": round(sum(r["wall_seconds"] for r in results), 1),
        "seconds_to_first_trial": round(results[0]["started_at"] - started, 1),  # Ray start, workers, model load
        "seconds_after_last_trial": round(started + wall - max(ends), 1),
        "train_examples_per_second": round(sum(r["train_examples_per_second"] for r in results)
                                           / max(len(results), 1), 1),
        "accuracy": [round(r.values["accuracy"], 4) for r in records if r.values],
    }


def markdown(rows: list[dict], args) -> list[str]:
    by = {r["config"]: r for r in rows}
    lines = [
        "# Local vs Ray backend (MiniLM, SST-2)", "",
        f"{args.trials} trials of `search_spaces/lora.yaml` (random sampler, seed 0: the same points in every run), "
        f"{args.train_examples} training / {args.eval_examples} dev examples, max length 64, batch 32, "
        f"{by['local']['cpus']} CPUs, {platform.processor() or platform.machine()}. Wall time includes starting Ray "
        "and loading the model in each worker.", "",
        "| run | trials at once × CPUs | wall (s) | × local | until 1st trial starts (s) | Σ trial wall (s) "
        "| train ex/s per trial |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    local = by["local"]["wall_seconds"]
    for row in rows:
        shape = "1 × all" if row["config"] == "local" else f"{row['max_concurrent']} × {row['cpus_per_trial']}"
        lines.append(f"| {row['config']} | {shape} | {row['wall_seconds']} | {row['wall_seconds'] / local:.2f} | "
                     f"{row['seconds_to_first_trial']} | {row['trial_seconds_sum']} | "
                     f"{row['train_examples_per_second']} |")
    same = len({tuple(r["points"]) for r in rows}) == 1
    lines += ["", f"Same points in every run: {'yes' if same else 'NO'}.",
              "Target: Ray (one trial at a time) ≤ 1.15 × local."]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int)
    parser.add_argument("--train-examples", type=int)
    parser.add_argument("--eval-examples", type=int)
    parser.add_argument("--configs", help=f"comma-separated: {', '.join(CONFIGS)}")
    parser.add_argument("--one", help=argparse.SUPPRESS)        # internal: run one config, print its JSON
    parser.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)
    args = C.parse_args(parser, PRESETS, argv, "ray")
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one, args, args.run_dir)))
        return
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in C.csv(args.configs):
            command = [sys.executable, __file__, "--one", name, "--run-dir", folder, "--size", args.size,
                       "--out", str(args.out), "--trials", str(args.trials),
                       "--train-examples", str(args.train_examples), "--eval-examples", str(args.eval_examples)]
            done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            line = next((text for text in done.stdout.splitlines() if text.startswith("RESULT ")), None)
            if line is None:
                raise SystemExit(f"{name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
            rows.append(json.loads(line.removeprefix("RESULT ")))
            print(f"{name}: {rows[-1]['wall_seconds']} s", flush=True)
    C.write(args, {"runs": rows}, markdown(rows, args), started)


if __name__ == "__main__":
    main()
