"""One-shot screening: does a super-adapter's score rank stand-alone trainings, and at what cost?

Per task (MiniLM): one super-adapter of the space (``autopeft.priors.oneshot``) is trained with a configuration
drawn per step (the largest and the smallest a quarter of the steps each, uniform draws of the space otherwise),
continued through ``--super-fractions`` of its steps; after each length every point is scored one-shot (its slice
of the super-adapter, no training) on the validation examples a trial is scored on. Each point is also trained
stand-alone at full fidelity (builders + TrialRunner, each module type's default rate, seed ``--seed``), as the
search's full fidelity does. The points: the named baselines the space expresses (LoRA r8 on query/value, Pfeiffer,
parallel adapter), then distinct points drawn uniformly from the space (``SearchSpace.sample``, seeded), its
training dimensions (``lr_scale``) left at their default, since a one-shot score cannot tell rates apart.

Reported: Spearman ρ and Kendall τ between one-shot and stand-alone validation metric (and with the one-shot eval
loss, negated), per super-adapter length; ρ of the parameter count alone against stand-alone (the ranking a
"bigger is better" guess gives, which a one-shot score has to beat to be worth anything); the spread of the
stand-alone metrics beside the evaluation's standard error (a ranking of points that differ by less than the
noise means nothing); costs as ratios measured in the same run: super-adapter training / one stand-alone LoRA r8
training, one one-shot score / the mean stand-alone training.

``--compare-search`` runs whole searches instead (the default one vs the screened ones, costs in the same run);
``--subset-agreement`` asks how the screen's ranking changes when each score uses fewer validation examples.

    python scripts/bench_oneshot.py --size toy|quick|medium [--tasks sst2] [--out DIR] [overrides]
    -> benchmarks/oneshot.json and benchmarks/oneshot.md (medium: benchmarks/medium/, tasks merged)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_common as C  # noqa: E402

PRESETS = {
    "toy": dict(tasks="rte", space="default", points=4, train_examples="32", epochs=1.0, max_length=16,
                eval_examples=16, batch_size=8, super_epochs=1.0, super_fractions="0.5,1"),
    "quick": dict(tasks="sst2", space="default", points=30, train_examples="2000", epochs=1.0, max_length=0,
                  eval_examples=500, batch_size=16, super_epochs=2.0, super_fractions="0.25,0.5,1"),
    # bench_quality's / bench_fidelity's medium full fidelity
    "medium": dict(tasks="sst2,rte,trec", space="default", points=30, train_examples="sst2=3000,rte=all,trec=3000",
                   epochs=2.0, max_length=0, eval_examples=500, batch_size=16, super_epochs=2.0,
                   super_fractions="0.25,0.5,1"),
}


def points_of(space, count: int, seed: int, screened) -> list[tuple[str, object]]:
    """(origin, point): the baselines the space expresses, then distinct uniform draws; training dims dropped and
    module types the super-adapter leaves out switched off (``screened``), so both sides score the same point."""
    import numpy as np

    from autopeft.search.engine import point_key
    from autopeft.search.initial_design import BASELINES, baseline_params
    from autopeft.space.point import PeftPoint

    chosen, seen = [], set()

    def add(origin, point):
        point = PeftPoint(screened(point).modules)   # the types' default rates: a one-shot score cannot rank rates
        if not point.is_empty and point_key(point) not in seen and len(chosen) < count:
            seen.add(point_key(point))
            chosen.append((origin, point))

    for baseline in BASELINES:
        params, _ = baseline_params(space, baseline)
        if params is not None:
            add(baseline.name, space.decode(params))
    rng = np.random.default_rng(seed)
    for _ in range(1000 * count):
        if len(chosen) == count:
            break
        add("drawn", space.decode(space.sample(rng)))
    return chosen


def correlations(xs: list[float], ys: list[float]) -> dict:
    from scipy.stats import kendalltau, spearmanr

    if len(xs) < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return {"n": len(xs), "spearman": None, "spearman_p": None, "kendall": None}
    rho, tau = spearmanr(xs, ys), kendalltau(xs, ys)
    return {"n": len(xs), "spearman": float(rho.statistic), "spearman_p": float(rho.pvalue),
            "kendall": float(tau.statistic)}


def run_task(args, task: str) -> dict:
    import statistics

    from autopeft.priors.oneshot import SuperAdapter, train_super_adapter
    from autopeft.space import SearchSpace, count_trainable_params
    from autopeft.trial import TrainingConfig

    started = time.perf_counter()
    data, base, full = _load_task(args, task)
    space = SearchSpace.from_file(C.space_path(args.space), base.config)
    metric = data.spec.metric
    points = points_of(space, args.points, args.seed, SuperAdapter(space, base.kind).screened)

    # the super-adapter, continued through its lengths, every point scored one-shot after each
    evaluator = C.runner_evaluator(base, data, None)
    runner = evaluator.runner
    super_full = replace(full, epochs=full.epochs * args.super_epochs)
    fractions = [float(f) for f in C.csv(args.super_fractions)]
    lengths = []
    with tempfile.TemporaryDirectory() as scratch:
        previous = None
        for level, fraction in enumerate(fractions):
            fidelity = super_full if fraction >= 1 else replace(super_full, step_fraction=fraction)
            checkpoint = str(Path(scratch) / f"super-{level}")
            start = time.perf_counter()
            oneshot = train_super_adapter(runner, space, fidelity, TrainingConfig(), args.seed,
                                          resume_from=previous, checkpoint_to=checkpoint)
            trained = time.perf_counter() - start
            previous = checkpoint
            scores, seconds = [], []
            for _, point in points:
                start = time.perf_counter()
                scores.append(oneshot.score(point, full))
                seconds.append(time.perf_counter() - start)
            lengths.append({"fraction": fraction, "steps": oneshot.meta["steps"], "train_s": round(trained, 2),
                            "largest_metric": oneshot.meta["largest_metrics"].get(metric),
                            "scores": [{"metric": s.get(metric), "eval_loss": s["eval_loss"]} for s in scores],
                            "score_s_mean": statistics.mean(seconds)})
            print(json.dumps({k: v for k, v in lengths[-1].items() if k != "scores"}), flush=True)
            if level < len(fractions) - 1:
                del oneshot   # the longest-trained one is kept: --inherit starts trainings from its slices

    # every point stand-alone at full fidelity
    rows = []
    for index, (origin, point) in enumerate(points):
        result = evaluator(point, full, args.seed)
        rows.append({"point": index, "origin": origin, "description": point.describe(), "spec": point.to_dict(),
                     "params": count_trainable_params(point, base.config), "metric": result.metrics.get(metric),
                     "status": result.status, "reason": result.reason, "trivial": result.trivial,
                     "trivial_metric": result.trivial_metric, "stderr": result.metric_stderr,
                     "steps": result.steps, "wall_s": round(result.wall_seconds, 2)})
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "spec"}), flush=True)

    if args.inherit:   # the same trainings, started from the point's slice of the super-adapter (issue 18, item 3)
        from autopeft.builders import parameter_groups_for

        for row, (_, point) in zip(rows, points):
            result = runner.run(lambda model, p=point: oneshot.super_adapter.extract(p, model), full, args.seed,
                                TrainingConfig(), parameter_groups=parameter_groups_for(point))
            row["inherited_metric"] = result.metrics.get(metric) if result.ok else None
            print(json.dumps({"point": row["point"], "inherited": row["inherited_metric"]}), flush=True)

    ok = [i for i, r in enumerate(rows) if r["metric"] is not None and math.isfinite(r["metric"])]
    truth = [rows[i]["metric"] for i in ok]
    for length in lengths:
        length["vs_standalone"] = correlations([length["scores"][i]["metric"] for i in ok], truth)
        length["loss_vs_standalone"] = correlations([-length["scores"][i]["eval_loss"] for i in ok], truth)
        length["super_cost_ratio"] = None
    lora = next((r for r in rows if r["origin"] == "lora" and r["metric"] is not None), None)
    if lora is None:   # a space without LoRA r8: the cost reference is trained here, once
        import bench_quality as Q

        lora = {"wall_s": evaluator(Q.hand_made(base.config)["lora"][1], full, args.seed).wall_seconds}
    walls = [r["wall_s"] for r in rows if r["metric"] is not None]
    cumulative = 0.0
    for length in lengths:
        cumulative += length["train_s"]
        length["train_s_total"] = round(cumulative, 2)
        length["super_cost_ratio"] = cumulative / lora["wall_s"] if lora else None
        length["score_share_of_trial"] = length["score_s_mean"] / statistics.mean(walls) if walls else None
    inherited = [(r["inherited_metric"], r["metric"]) for r in rows
                 if r.get("inherited_metric") is not None and r["metric"] is not None]
    inherit = None
    if inherited:
        gains = [a - b for a, b in inherited]
        inherit = {"n": len(gains), "mean_gain": statistics.mean(gains),
                   "std_gain": statistics.stdev(gains) if len(gains) > 1 else 0.0,
                   "better": sum(1 for g in gains if g > 0), "worse": sum(1 for g in gains if g < 0)}
    return {"task": task, "commit": C.COMMIT, "metric": metric, "full": full.to_dict(), "inherit": inherit,
            "super": super_full.to_dict(), "points": rows, "lengths": lengths,
            "params_vs_standalone": correlations([rows[i]["params"] for i in ok], truth),
            "standalone_spread": statistics.stdev(truth) if len(truth) > 1 else None,
            "stderr": rows[ok[0]]["stderr"] if ok else None,
            "trivial_metric": rows[ok[0]]["trivial_metric"] if ok else None,
            "trivial_share": sum(1 for i in ok if rows[i]["trivial"]) / len(ok) if ok else None,
            "lora_r8_wall_s": lora["wall_s"] if lora else None,
            "standalone_wall_s_mean": statistics.mean(walls) if walls else None,
            "command": C.command_line(args), "seconds": round(time.perf_counter() - started, 1)}


ARMS = {
    "default": {},
    "oneshot": {"prior": ["oneshot"]},
    "oneshot-inherit": {"prior": ["oneshot"], "inherit_weights": True},
}
"""The searches ``--compare-search`` runs: the default one, the one started by one-shot screening, and that one with
every trial started from its slice of the super-adapter (``--inherit-weights``)."""


def run_search_comparison(args, task: str) -> dict:
    """The searches of ``--arms`` (:data:`ARMS`), each ``--search-repeats`` times with search seeds ``--seed``,
    ``--seed`` + 1, ...: the default one with ``--default-trials``, the screened ones with ``--oneshot-trials`` (fewer,
    so that they cost about the same), all at LoRA r8's parameter count, no final stage. Every front point retrained
    with ``--search-seeds`` seeds (test split; the inheriting search's from its slices, as its final stage would);
    costs as ratios to one LoRA r8 training here. Each search has an empty prior cache: it pays for its own
    super-adapter, as a first search does."""
    import statistics

    import bench_quality as Q
    import numpy as np

    from autopeft.builders import BuildContext
    from autopeft.priors.oneshot import SliceWeights
    from autopeft.search import builders_adapter_builder
    from autopeft.search import records as R
    from autopeft.search.pareto import hypervolume, reference_point
    from autopeft.search.priors.oneshot import ORIGIN as SCREENED
    from autopeft.search.results import load_results
    from autopeft.search.run import read_run_info
    from autopeft.space import PeftPoint, count_trainable_params

    started = time.perf_counter()
    arms = C.csv(args.arms)
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise SystemExit(f"error: --arms: unknown {unknown[0]!r} (known: {', '.join(ARMS)})")
    data, base, full = _load_task(args, task)
    budget = count_trainable_params(Q.hand_made(base.config)["lora"][1], base.config)
    evaluator = C.runner_evaluator(base, data, None)
    args.lr = None
    space = {"space": C.space_path(args.space)}
    searches = []
    for repeat in range(args.search_repeats):
        for arm in arms:
            os.environ["AUTOPEFT_CACHE"] = tempfile.mkdtemp(prefix="bench-oneshot-cache-")
            args.search_trials = args.default_trials if arm == "default" else args.oneshot_trials
            screen = {} if arm == "default" else dict(screen_evaluations=args.screen_evaluations,
                                                       screen_candidates=args.screen_candidates,
                                                       screen_epochs=args.screen_epochs)
            if arm != "default" and args.screen_examples:
                screen["screen_examples"] = args.screen_examples
            search = Q.default_search(args, task, full, budget, f"oneshot-cmp-{arm}-{repeat}", **space,
                                      seed=args.seed + repeat, **ARMS[arm], **screen)
            search.update(arm=arm, repeat=repeat, search_seed=args.seed + repeat)
            searches.append(search)
            print(json.dumps({k: search[k] for k in ("label", "seconds", "trained_per_stage")}), flush=True)
    lora_walls, fronts = [], []
    for seed in range(args.search_seeds):
        lora_walls.append(evaluator(Q.hand_made(base.config)["lora"][1], full, seed).wall_seconds)
    for search in searches:
        results = load_results(search["run"])
        retrain = evaluator
        if ARMS[search["arm"]].get("inherit_weights"):   # from the super-adapter this search trained (run.json)
            weights = read_run_info(search["run"]).settings["super_adapter"]
            context = BuildContext(initial_weights=SliceWeights(weights))
            retrain = replace(evaluator, adapter_builder=builders_adapter_builder(base.config, data.spec.kind,
                                                                                  context))
        origins = first_origins(results)
        front = []
        for record in results.front:
            point = PeftPoint.from_dict(record.attrs[R.POINT])
            tests = [retrain(point, full, seed, evaluate_test=True).test_metrics.get(data.spec.metric)
                     for seed in range(args.search_seeds)]
            front.append({"description": point.describe(), "params": count_trainable_params(point, base.config),
                          "search_metric": record.values[data.spec.metric], "origin": origins.get(record.key, "?"),
                          "test": C.mean_std(tests), "tests": tests})
            print(json.dumps({"search": search["label"], **front[-1]}), flush=True)
        fronts.append(front)
        search["cost_vs_lora_r8"] = search["seconds"] / statistics.mean(lora_walls)
        search["origins_on_front"] = sorted({f["origin"] for f in front})
    losses = [np.array([[-f["test"][0], math.log10(f["params"] + 1.0)] for f in front if f["test"][0] is not None])
              for front in fronts]
    filled = [x for x in losses if len(x)]
    reference = reference_point(np.vstack(filled)) if filled else None   # no front at all: every trial trivial
    for search, front, loss in zip(searches, fronts, losses):
        search["front"] = front
        search["retrained_hypervolume"] = hypervolume(loss, reference) if len(loss) else 0.0
        search["pick"] = max(front, key=lambda f: f["search_metric"]) if front else None
    summary = []
    for arm in arms:
        mine = [s for s in searches if s["arm"] == arm]
        picks = [s["pick"]["test"][0] for s in mine if s["pick"] and s["pick"]["test"][0] is not None]
        summary.append({"arm": arm, "searches": len(mine),
                        "cost": C.mean_std([s["cost_vs_lora_r8"] for s in mine]),
                        "hypervolume": C.mean_std([s["retrained_hypervolume"] for s in mine]),
                        "pick_test": C.mean_std(picks),
                        "screened_on_front": sum(1 for s in mine for f in s["front"] if f["origin"] == SCREENED),
                        "front_points": sum(len(s["front"]) for s in mine)})
    return {"task": task, "commit": C.COMMIT, "metric": data.spec.metric, "budget": budget,
            "lora_r8_wall_s": statistics.mean(lora_walls), "searches": searches, "summary": summary,
            "command": C.command_line(args), "seconds": round(time.perf_counter() - started, 1)}


def run_subset_agreement(args, task: str) -> dict:
    """Does the screen rank on a few validation examples as it does on all of them? One super-adapter trained as a
    search's screen trains it (the full fidelity × ``--screen-epochs``, seed ``--seed``); ``--points`` points (the
    baselines, then uniform draws) each scored one-shot on every size of ``--subset-sizes`` (the first n of the fixed
    order trials are scored in, so each subset holds the smaller ones) and on all ``--eval-examples``. Reported per
    size: Spearman / Kendall of the screen's ranking (its one-shot loss) against the ranking on all examples, how many
    of the ``--screen-candidates`` best by loss stay the best, and the seconds of one score as a share of one LoRA r8
    training at full fidelity (``--search-seeds`` seeds, same run)."""
    import statistics

    import bench_quality as Q

    from autopeft.priors.oneshot import SuperAdapter, load_or_train_super_adapter
    from autopeft.search.priors.oneshot import RANK_BY, super_adapter_fidelity
    from autopeft.space import SearchSpace
    from autopeft.trial import TrainingConfig

    started = time.perf_counter()
    data, base, full = _load_task(args, task)
    space = SearchSpace.from_file(C.space_path(args.space), base.config)
    metric = data.spec.metric
    evaluator = C.runner_evaluator(base, data, None)
    os.environ["AUTOPEFT_CACHE"] = tempfile.mkdtemp(prefix="bench-oneshot-cache-")   # trained here, not read
    screen_fidelity = super_adapter_fidelity(full, args.screen_epochs)
    oneshot = load_or_train_super_adapter(evaluator.runner, space, screen_fidelity, TrainingConfig(), args.seed)
    points = points_of(space, args.points, args.seed, SuperAdapter(space, base.kind).screened)
    available = len(evaluator.runner.eval_subset(len(data.validation), full))
    sizes = sorted({n for n in map(int, C.csv(args.subset_sizes)) if n < available}) + [available]
    scores = {n: [] for n in sizes}
    seconds = {n: [] for n in sizes}
    for _, point in points:
        for n in sizes:
            begin = time.perf_counter()
            scores[n].append(oneshot.score(point, replace(full, eval_examples=n)))
            seconds[n].append(time.perf_counter() - begin)
    lora_walls = [evaluator(Q.hand_made(base.config)["lora"][1], full, seed).wall_seconds
                  for seed in range(args.search_seeds)]
    trial = statistics.mean(lora_walls)
    reference = [s[RANK_BY] for s in scores[available]]
    best = set(_lowest(reference, args.screen_candidates))
    rows = []
    for n in sizes:
        losses = [s[RANK_BY] for s in scores[n]]
        top = set(_lowest(losses, args.screen_candidates))
        rows.append({"examples": n, "loss_vs_all": correlations(losses, reference),
                     "metric_vs_all": correlations([s[metric] for s in scores[n]],
                                                   [s[metric] for s in scores[available]]),
                     "top_kept": len(top & best), "score_s": statistics.mean(seconds[n]),
                     "score_share_of_trial": statistics.mean(seconds[n]) / trial})
        print(json.dumps(rows[-1]), flush=True)
    return {"task": task, "commit": C.COMMIT, "metric": metric, "full": full.to_dict(),
            "screen": screen_fidelity.to_dict(), "super_steps": oneshot.meta["steps"], "points": len(points),
            "top": args.screen_candidates, "lora_r8_wall_s": trial, "lora_r8_walls": lora_walls, "sizes": rows,
            "scores": {str(n): [{"metric": s[metric], RANK_BY: s[RANK_BY]} for s in scores[n]] for n in sizes},
            "command": C.command_line(args), "seconds": round(time.perf_counter() - started, 1)}


def _worst_pick_rank(t: dict, examples: int) -> int:
    """Where the worst of the best ``top`` by loss on ``examples`` examples ranks by loss on all of them (1: best)."""
    from autopeft.search.priors.oneshot import RANK_BY

    every = [s[RANK_BY] for s in t["scores"][str(t["sizes"][-1]["examples"])]]
    subset = [s[RANK_BY] for s in t["scores"][str(examples)]]
    rank = {point: place + 1 for place, point in enumerate(_lowest(every, len(every)))}
    return max(rank[point] for point in _lowest(subset, t["top"]))


def _lowest(values: list[float], count: int) -> list[int]:
    """Positions of the ``count`` lowest values, lowest first (the best by loss)."""
    return sorted(range(len(values)), key=values.__getitem__)[:count]


def markdown_subsets(data: dict) -> list[str]:
    entries = data.get("subset_agreement", [])
    if not entries:
        return []
    lines = ["", "## How many validation examples a one-shot score needs", "",
             "One super-adapter per task trained as a search's screen trains it; the same points scored one-shot on "
             "the first n of the validation examples trials are scored on, and on all of them. ρ / τ: Spearman / "
             "Kendall of the ranking by one-shot loss (what the screen ranks by) against the ranking on all "
             "examples; kept: of the best by loss on all examples, how many are also the best on n (the screen's "
             "candidates); worst pick's rank: where the worst of the best on n ranks on all examples; one score: its "
             "seconds and their share of one LoRA r8 training at full fidelity (same run).", ""]
    rows = []
    for t in entries:
        for r in t["sizes"]:
            rows.append([t["task"], r["examples"], t["points"], C.fmt(r["loss_vs_all"]["spearman"], 2),
                         C.fmt(r["loss_vs_all"]["kendall"], 2), C.fmt(r["metric_vs_all"]["spearman"], 2),
                         f"{r['top_kept']} of {t['top']}", _worst_pick_rank(t, r["examples"]),
                         f"{C.fmt(r['score_s'], 2)} s ({100 * r['score_share_of_trial']:.2f} %)"])
    lines += C.table(["task", "examples", "points", "ρ loss", "τ loss", "ρ metric", "best kept",
                      "worst pick's rank on all", "one score (% of a LoRA r8 trial)"], rows)
    def detail(t):
        return (f"{t['seconds']:.0f} s; super-adapter {t['super_steps']} steps, LoRA r8 {t['lora_r8_wall_s']:.1f} s, "
                f"commit {t['commit']}")
    return lines + ["", _made_line(entries, detail)]


def _made_line(entries: list[dict], detail) -> str:
    """Which command made each task's rows: once when one command made them all, else per task (tasks run one at a
    time and merged by ``C.merge_tasks``)."""
    commands = {t["command"] for t in entries}
    if len(commands) == 1:
        return (f"Made on 2 CPU cores by `{commands.pop()}`: "
                + "; ".join(f"{t['task']} ({detail(t)})" for t in entries) + ".")
    return "Made per task on 2 CPU cores: " + "; ".join(f"{t['task']} `{t['command']}` ({detail(t)})"
                                                        for t in entries) + "."


def first_origins(results) -> dict:
    """Point key -> where the point entered the search (baseline, quasi-random, prior, sampler): its origin at the
    first stage it appears in, not the "promoted from" of the rungs above."""
    from autopeft.search import records as R

    origins = {}
    for records in results.stages.values():   # lowest rung first
        for record in records:
            origin = record.attrs.get(R.ORIGIN)
            if record.key is not None and origin and not str(origin).startswith("promoted"):
                origins.setdefault(record.key, origin)
    return origins


def _load_task(args, task: str):
    """The task's data and model, its full fidelity, and the data tokenised at that fidelity's length."""
    data, base = C.load(task)
    full = _full_fidelity(args, task)
    C.load(task, tokenize_length=full.max_length)
    return data, base, full


def _full_fidelity(args, task: str):
    from autopeft.trial import Fidelity

    return Fidelity(train_examples=C.per_task(args.train_examples, [task])[task], epochs=args.epochs,
                    max_length=args.max_length or C.TASKS[task][1], eval_examples=args.eval_examples or None,
                    batch_size=args.batch_size)


def markdown_search(data: dict) -> list[str]:
    lines = ["", "## Search efficiency: the default search vs the same search started by one-shot screening", "",
             "All at LoRA r8's parameter count (`--max-params`), the space above, `--fidelity auto`, no final stage; "
             "the screened ones with the trial count above, their super-adapter's training and the screen counted in "
             "their cost; "
             "`oneshot-inherit` also starts every trial from its slice of the super-adapter (`--inherit-weights`). "
             f"Every front point retrained with {_retrain_seeds(data)} seed(s) (test split; the inheriting search's "
             "from its slices); "
             "hypervolume of (test, log10 params) against one reference point for all searches of a task. Pick: the "
             "front point with the best search metric. Origins: where the front's points entered the search (a "
             "`prior:oneshot` one came from the screen).", ""]
    rows, summary = [], []
    for t in data.get("search_comparison", []):
        for s in t["searches"]:
            pick = s.get("pick") or {}
            arm = s.get("arm", s["label"].removeprefix("oneshot-cmp-"))
            rows.append([t["task"], arm, s.get("search_seed", "–"), C.fmt(s["cost_vs_lora_r8"], 2),
                         sum(s["trained_per_stage"].values()), len(s["front"]),
                         C.fmt(s["retrained_hypervolume"], 4),
                         f"{pick.get('description', '–')} ({C.fmt(pick.get('params'))})",
                         C.cell(tuple(pick["test"]) if pick else None, len(pick.get("tests", [0, 0]))),
                         ", ".join(map(str, s["origins_on_front"])),
                         t["commit"]])
        for arm in t.get("summary", []):
            n = arm["searches"]
            summary.append([t["task"], arm["arm"], n, C.cell(tuple(arm["cost"]), n, 2),
                            C.cell(tuple(arm["hypervolume"]), n, 4), C.cell(tuple(arm["pick_test"]), n),
                            f"{arm['screened_on_front']} of {arm['front_points']}"])
    if summary:
        lines += C.table(["task", "search", "searches", "cost (× LoRA r8)", "retrained HV", "pick test",
                          "front points from the screen"], summary)
        lines += ["", "Mean ± std over the searches (search seeds) of each kind; each pick's test score is itself "
                      "the mean of its retraining seeds. Per search:", ""]
    lines += C.table(["task", "search", "seed", "cost (× LoRA r8)", "trained", "front", "retrained HV",
                      "pick (params)", "pick test", "origins on front", "commit"], rows)
    made = [t for t in data.get("search_comparison", []) if t.get("command")]
    if made:
        lines += ["", _made_line(made, lambda t: f"{t['seconds']:.0f} s")]
    return lines


def _retrain_seeds(data: dict) -> str:
    counts = {len(f["tests"]) for t in data.get("search_comparison", []) for s in t["searches"]
              for f in s.get("front", []) if "tests" in f}
    return "/".join(map(str, sorted(counts))) or "the `--search-seeds`"


def _noise_verdict(t: dict) -> list[str]:
    """Whether the stand-alone points differ by more than one evaluation's standard error at their own level (not at
    the trivial score's): below it, no score can rank them and ρ measures noise."""
    import statistics

    from autopeft.data.metrics import metric_stderr

    metrics = [r["metric"] for r in t["points"] if r["metric"] is not None]
    if len(metrics) < 2 or t["standalone_spread"] is None:
        return []
    stderr = metric_stderr(t["metric"], statistics.mean(metrics), t["full"]["eval_examples"] or 10**9)
    spread = t["standalone_spread"]
    if spread < stderr:
        return [f"**The stand-alone points differ by less than one evaluation's standard error** (spread {spread:.3f} "
                f"< {stderr:.3f} at their mean): no score can rank them on this task at this fidelity, and ρ here "
                "measures noise.", ""]
    return [f"The stand-alone points' spread is {spread / stderr:.1f} standard errors of one evaluation ({spread:.3f} "
            f"vs {stderr:.3f} at their mean): a ranking is measurable, if noisily.", ""]


def markdown(args, data: dict) -> list[str]:
    if data.get("subset_agreement") and not data.get("tasks") and not data.get("search_comparison"):
        return ["# One-shot screening: scores on a validation subset (MiniLM)", "",
                f"Space `{args.space}`; full fidelity {args.train_examples} examples × {args.epochs:g} epochs, batch "
                f"{args.batch_size}; the super-adapter trained for {args.screen_epochs:g}× its epochs."] \
            + markdown_subsets(data)
    if not data.get("tasks"):
        return (["# One-shot screening: search efficiency (MiniLM)", "",
                 f"Space `{args.space}`; the default search {args.default_trials} trials, the screened ones "
                 f"{args.oneshot_trials} ({args.screen_evaluations} screen evaluations, {args.screen_candidates} "
                 f"candidates, the super-adapter trained for {args.screen_epochs:g}× the full fidelity's epochs); "
                 f"full fidelity {args.train_examples} examples × {args.epochs:g} epochs, batch {args.batch_size}, "
                 f"{args.eval_examples or 'all'} validation examples."]
                + markdown_search(data))
    lines = ["# One-shot screening: super-adapter score vs stand-alone training (MiniLM)", "",
             f"Space `{args.space}`; {args.points} points per task (the baselines it expresses, then uniform draws; "
             "each module type's default rate). One-shot: the point's slice of one super-adapter, scored on the "
             "validation examples a trial is scored on, no training. Stand-alone: the point trained alone at full "
             f"fidelity (seed {args.seed}). ρ / τ: Spearman / Kendall over the points; `loss` ranks by the one-shot "
             "eval loss instead of the metric; `params` is the parameter count alone (the \"bigger is better\" "
             "guess). Super cost: its training so far / one stand-alone LoRA r8 training (same run); score cost: one "
             "one-shot score / the mean stand-alone training.", ""]
    rows = []
    for t in data.get("tasks", []):
        for length in t["lengths"]:
            c, loss = length["vs_standalone"], length["loss_vs_standalone"]
            rows.append([t["task"], f"{length['fraction']:g} ({length['steps']} steps)", c["n"],
                         C.fmt(c["spearman"], 2), C.fmt(c["kendall"], 2), C.fmt(loss["spearman"], 2),
                         C.fmt(t["params_vs_standalone"]["spearman"], 2), C.fmt(length["super_cost_ratio"], 2),
                         f"{C.fmt(length['score_s_mean'], 2)} s ({100 * length['score_share_of_trial']:.1f} %)"])
    if rows:
        lines += C.table(["task", "super-adapter length (steps)", "points", "ρ", "τ", "ρ loss", "ρ params",
                          "super cost (× LoRA r8)", "one score (% of a trial)"], rows)
    for t in data.get("tasks", []):
        full = t["full"]
        lines += ["", f"## {t['task']}", "",
                  f"Full fidelity: {full['train_examples'] or 'all'} examples × {full['epochs']:g} epochs, batch "
                  f"{full['batch_size']}, length {full['max_length']}; {full['eval_examples'] or 'all'} validation "
                  f"examples (standard error {C.fmt(t['stderr'])}, trivial score {C.fmt(t['trivial_metric'])}). "
                  f"Stand-alone spread (std over the points) {C.fmt(t['standalone_spread'])}; trivial share "
                  f"{C.fmt(t['trivial_share'], 2)}; LoRA r8 stand-alone {C.fmt(t['lora_r8_wall_s'], 1)} s, mean "
                  f"trial {C.fmt(t['standalone_wall_s_mean'], 1)} s. Super-adapter: up to "
                  f"{t['super']['epochs']:g} epochs of the same examples. Commit {t.get('commit') or '?'}.", ""]
        lines += _noise_verdict(t)
        inherit = t.get("inherit")
        if inherit:
            lines += [f"Inherited weights (the same training started from the point's slice of the longest-trained "
                      f"super-adapter): mean gain {inherit['mean_gain']:+.4f} ± {inherit['std_gain']:.4f} over "
                      f"{inherit['n']} points, better on {inherit['better']}, worse on {inherit['worse']}.", ""]
        headers = ["#", "origin", "point", "params", f"stand-alone {t['metric']}"] + [
            f"one-shot @{length['fraction']:g}" for length in t["lengths"]] + (["inherited"] if inherit else [])
        lines += C.table(headers, [[r["point"], r["origin"], r["description"], f"{r['params']:,}",
                                    C.fmt(r["metric"]) + (" (t)" if r["trivial"] else "")]
                                   + [C.fmt(length["scores"][r["point"]]["metric"]) for length in t["lengths"]]
                                   + ([C.fmt(r.get("inherited_metric"))] if inherit else [])
                                   for r in t["points"]])
        failed = [r for r in t["points"] if r["reason"]]
        if failed:
            lines += ["", "Failed: " + "; ".join(f"#{r['point']}: {r['reason']}" for r in failed)]
        lines += ["", "(t): no better than the trivial predictor by one standard error."]
    made = [t for t in data.get("tasks", []) if t.get("command")]
    if made:
        lines += ["", _made_line(made, lambda t: f"{t['seconds']:.0f} s, commit {t.get('commit') or '?'}")]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", help=f"comma-separated: {', '.join(C.TASKS)}")
    parser.add_argument("--space", help="a space of search_spaces/ (default: default)")
    parser.add_argument("--points", type=int, help="points per task")
    parser.add_argument("--train-examples", help="'2000' for every task or 'sst2=3000,rte=all'")
    parser.add_argument("--epochs", type=float, help="stand-alone (full fidelity) epochs")
    parser.add_argument("--max-length", type=int, help="0: per task (sst2 64, rte 128, trec 64)")
    parser.add_argument("--eval-examples", type=int, help="validation examples scored (0: all)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--super-epochs", type=float, help="the super-adapter's training, in multiples of the "
                                                           "stand-alone epochs")
    parser.add_argument("--super-fractions", help="lengths (fractions of its steps) at which the points are scored")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--inherit", action="store_true",
                        help="also train every point from its slice of the super-adapter (inherited weights)")
    parser.add_argument("--compare-search", action="store_true",
                        help="instead of the points: the default search vs the one-shot-screened one")
    parser.add_argument("--default-trials", type=int, default=30, help="--compare-search: the default search's trials")
    parser.add_argument("--oneshot-trials", type=int, default=20, help="--compare-search: the screened search's")
    parser.add_argument("--screen-evaluations", type=int, default=60)
    parser.add_argument("--screen-examples", type=int,
                        help="--compare-search: validation examples per screen score (default: the search's)")
    parser.add_argument("--screen-candidates", type=int, default=6)
    parser.add_argument("--screen-epochs", type=float, default=1.0)
    parser.add_argument("--search-seeds", type=int, default=2, help="--compare-search: seeds of each retraining")
    parser.add_argument("--arms", default="default,oneshot,oneshot-inherit",
                        help=f"--compare-search: the searches, comma-separated ({', '.join(ARMS)})")
    parser.add_argument("--search-repeats", type=int, default=1,
                        help="--compare-search: runs of each search, with search seeds --seed, --seed + 1, ...")
    parser.add_argument("--runs", type=Path, help="--compare-search: folder for the searches")
    parser.add_argument("--subset-agreement", action="store_true",
                        help="instead of the points' trainings: one-shot scores on validation subsets vs on all")
    parser.add_argument("--subset-sizes", default="32,64,128,256",
                        help="--subset-agreement: validation examples per score, comma-separated")
    parser.add_argument("--render", type=Path, help="rewrite the markdown of this benchmark JSON only (no run)")
    args = C.parse_args(parser, PRESETS, argv, "oneshot")
    if args.render:
        return C.render(args.render, lambda data, saved: markdown(saved, data))
    started = time.perf_counter()
    C.quiet()
    if args.compare_search:
        data = {"search_comparison": [run_search_comparison(args, task) for task in C.csv(args.tasks)]}
    elif args.subset_agreement:
        data = {"subset_agreement": [run_subset_agreement(args, task) for task in C.csv(args.tasks)]}
    else:
        data = {"tasks": [run_task(args, task) for task in C.csv(args.tasks)]}
    if args.size == "medium":
        data = C.merge_tasks(args, data, ("tasks", "search_comparison", "subset_agreement"))
    C.write(args, data, markdown(args, data), started)


if __name__ == "__main__":
    main()
