"""Shared pieces of the benchmark scripts (``scripts/bench_<name>.py``).

Every script has a ``main(argv=None)`` (the CI test calls it in-process), imports autopeft lazily,
takes ``--size`` (a preset of its options, from its ``PRESETS``: toy, quick and, where a larger run
exists, full; any option given on the command line overrides the preset) and ``--out FOLDER``, and
writes ``FOLDER/<name>.json`` (settings, machine, seconds, data) and ``FOLDER/<name>.md`` through
:func:`write`. quick reproduces the committed figures; quick and full default to ``benchmarks/``;
toy (what the CI test runs) must be given its own ``--out`` so it never overwrites committed results.
medium (issue 17's evidence: hours here in all) writes to ``benchmarks/medium/`` and runs per task
(``--tasks sst2``): a run's tasks replace the same tasks in the JSON already there and keep the others
(:func:`merge_tasks`), so the medium figures can be made in parts.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
SPACES = ROOT / "search_spaces"
if str(ROOT) not in sys.path:  # benchmark this checkout's autopeft, whichever copy is installed
    sys.path.insert(0, str(ROOT))

# short task name -> (dataset folder under DATASETS, max length for full-fidelity training)
TASKS = {"sst2": ("glue_sst2", 64), "rte": ("glue_rte", 128), "trec": ("trec", 64)}


def dataset_path(task: str) -> str:
    if task not in TASKS:
        raise SystemExit(f"unknown task '{task}' (choose from: {', '.join(TASKS)})")
    return str(DATASETS / TASKS[task][0])


def space_path(space: str) -> str:
    path = Path(space) if space.endswith((".yaml", ".yml")) else SPACES / f"{space}.yaml"
    if not path.is_file():
        raise SystemExit(f"search space '{space}' not found ({path})")
    return str(path)


def csv(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def ints(text: str | None) -> list[int]:
    return [int(part) for part in csv(text)]


def per_task(text: str | None, tasks: list[str]) -> dict[str, int | None]:
    """``"2000"`` (every task) or ``"sst2=20000,rte=all"``: training examples per task (None = whole split)."""
    values: dict[str, int | None] = dict.fromkeys(tasks)
    for part in csv(text):
        name, _, value = part.rpartition("=")
        number = None if value == "all" else int(float(value))
        for task in ([name] if name else tasks):
            if task in values:
                values[task] = number
    return values


def parse_args(parser: argparse.ArgumentParser, presets: dict[str, dict], argv: list[str] | None,
               name: str) -> argparse.Namespace:
    """Options left unset (None) take the ``--size`` preset's value."""
    parser.add_argument("--size", choices=list(presets), default="quick",
                        help="preset of the options above (default quick)")
    parser.add_argument("--out", type=Path, help="folder for the JSON + markdown (default benchmarks/; toy needs one)")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    for key, value in presets[args.size].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.out is None:
        if args.size == "toy":
            parser.error("--size toy needs --out (toy results must not replace the committed ones)")
        args.out = ROOT / "benchmarks" / ("medium" if args.size == "medium" else "")
    args.name = args.script = name   # the outputs' name (a preset may rename them) and the script's
    return args


def runs_dir(args, kind: str) -> Path:
    """Where search runs go: ``--runs``, else OUT/runs for toy, else runs/bench-<size> (git-ignored)."""
    if getattr(args, "runs", None):
        return Path(args.runs)
    return args.out / "runs" / kind if args.size == "toy" else ROOT / "runs" / f"bench-{args.size}" / kind


def quiet() -> None:
    import optuna
    import transformers

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    transformers.logging.set_verbosity_error()
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)


def load(task: str, tokenize_length: int | None = None):
    """(task data, base model) of a task for MiniLM; both are cached process-wide by autopeft, and so is the
    tokenised data when ``tokenize_length`` is given (else the first trial tokenises, inside its wall time)."""
    from autopeft.data import load_task, tokenize_task
    from autopeft.models import get_base_model

    data = load_task(dataset_path(task))
    base = get_base_model("minilm", data.spec.kind, num_labels=max(data.spec.num_labels, 1))
    if tokenize_length is not None:
        tokenize_task(data, base.tokenizer, tokenize_length)
    return data, base


def runner_evaluator(base, task, learning_rate: float | None, heads_max_length: int | None = None):
    """The search's evaluator (builders + TrialRunner) over an already loaded base model. LoFiT points need a
    head ranking: pass ``heads_max_length`` to learn one (cached on disk, as ``--prior heads`` does).
    ``learning_rate`` is one rate for every parameter, as ``--lr``; None: each module type's own rate."""
    from autopeft.builders import BuildContext
    from autopeft.search import RunnerEvaluator, builders_adapter_builder
    from autopeft.trial import TrainingConfig, TrialRunner

    ranking = None
    if heads_max_length is not None:
        from autopeft.priors.heads import load_or_select_heads

        ranking = load_or_select_heads(base, task, max_length=heads_max_length, seed=0)[0]
    context = BuildContext(head_ranking=ranking)
    training = TrainingConfig() if learning_rate is None else TrainingConfig(learning_rate=learning_rate)
    return RunnerEvaluator(TrialRunner(base, task), builders_adapter_builder(base.config, task.spec.kind, context),
                           training, learning_rate=learning_rate)


def space_has(space: str, module: str) -> bool:
    from autopeft.space import read_space_file

    return module in read_space_file(space_path(space)).modules


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None, None
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def cell(mean_std: tuple | None, count: int, digits: int = 3) -> str:
    """A (mean, std) pair over ``count`` seeds: '0.812 ± 0.010', or '0.812' for one seed, '–' when missing."""
    if mean_std is None or mean_std[0] is None:
        return "–"
    return f"{mean_std[0]:.{digits}f}" if count <= 1 else f"{mean_std[0]:.{digits}f} ± {mean_std[1]:.{digits}f}"


def table(headers: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def machine() -> dict:
    import torch

    return {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "processor": platform.processor() or platform.machine(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None, "commit": COMMIT}


def git_commit() -> str | None:
    """The checkout's commit (``+dirty`` when tracked files differ from it): which code a benchmark's figures are of."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


COMMIT = git_commit()   # read when the benchmark starts: the code it runs, even if the checkout changes meanwhile


def command_line(args) -> str:
    return " ".join(["python", f"scripts/bench_{getattr(args, 'script', args.name)}.py", *args.argv])


def merge_tasks(args, data: dict, lists: tuple[str, ...]) -> dict:
    """``data`` plus, from ``OUT/<name>.json`` of an earlier run of the same size, the entries of each list in
    ``lists`` whose ``task`` this run did not do (a per-task run of a medium benchmark keeps the other tasks)."""
    path = args.out / f"{args.name}.json"
    if not path.is_file():
        return data
    earlier = json.loads(path.read_text())
    if earlier.get("size") != args.size:
        return data
    done = set(csv(args.tasks))
    merged = dict(data)
    for key in lists:
        kept = [entry for entry in earlier.get(key, []) if entry.get("task") not in done]
        merged[key] = kept + list(data.get(key, []))
    merged["merged_tasks"] = sorted({e.get("task") for key in lists for e in merged[key] if e.get("task")})
    return merged


def render(path: Path, markdown: Callable[[dict, argparse.Namespace], list[str]]) -> None:
    """Rewrite the markdown beside a benchmark's JSON from the JSON alone (after a change to the tables' layout,
    or when a per-task run left only its own command in the footer); nothing is re-run."""
    payload = json.loads(path.read_text())
    args = argparse.Namespace(**{"size": payload.get("size"), **payload["settings"]})
    args.out = path.parent
    footer = ["", f"Size `{args.size}`; {payload['seconds']:.0f} s on {payload['machine']['cpu_count']} CPU core(s), "
              f"torch {payload['machine']['torch']}. Reproduce: `{command_line(args)}` (settings in "
              f"[{path.name}]({path.name}))."]
    text = "\n".join(markdown(payload, args) + footer) + "\n"
    path.with_suffix(".md").write_text(text)
    print(text)


def write(args, data: dict, markdown_lines: list[str], started: float) -> None:
    """OUT/<name>.json (settings, machine, data) and OUT/<name>.md; prints the markdown."""
    settings = dict(vars(args))
    payload = {"benchmark": args.name, "size": args.size, "settings": settings, "machine": machine(),
               "seconds": round(time.perf_counter() - started, 1), **data}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(payload, indent=2, allow_nan=False, default=str) + "\n")
    footer = ["", f"Size `{args.size}`; {payload['seconds']:.0f} s on {payload['machine']['cpu_count']} CPU core(s), "
              f"torch {payload['machine']['torch']}. Reproduce: `{command_line(args)}` (settings in "
              f"[{args.name}.json]({args.name}.json))."]
    text = "\n".join(markdown_lines + footer) + "\n"
    (args.out / f"{args.name}.md").write_text(text)
    print(text)
