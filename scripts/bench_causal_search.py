"""A search on a causal LM, as a user runs it: `autopeft search --model smollm2-135m --dataset sst2 --task causal_lm`.

SmolLM2-135M-Instruct on SST-2 as verbalised classification (the label's word as the answer, no new head) and on
Code Alpaca as instruction SFT (validation loss on the responses): LoRA r8 (query/value, the product's rate for rank 8)
trained with 3 seeds; then the default search (default space, `--fidelity auto`, default sampler) whose full fidelity
is that same training and whose `--max-params` is LoRA r8's count, with `--final-seeds` final trainings (so the
export holds adapters); the best exported Pareto point within that budget retrained with the same 3 seeds (validation
and the reported test split). The exported adapter is loaded with `PeftModel` and asked to generate. Cost: the
search's wall time over one LoRA r8 training's, in the same run.

    python scripts/bench_causal_search.py --size quick|medium|toy [--out DIR] [overrides]
    -> benchmarks/causal_search.{json,md}
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_common as C  # noqa: E402

LM = dict(lm_train_examples=400, lm_eval_examples=64, lm_max_length=256)  # SFT: long examples, so fewer
PRESETS = {
    "toy": dict(model="smollm2-135m", tasks="sst2", train_examples=16, eval_examples=16, seeds=1, trials=2,
                batch_size=8, final_seeds=0, lm_train_examples=8, lm_eval_examples=4, lm_max_length=64),
    "quick": dict(model="smollm2-135m", tasks="sst2,code_alpaca_2k", train_examples=1000, eval_examples=300, seeds=2,
                  trials=8, batch_size=16, final_seeds=1, **LM),
    "medium": dict(model="smollm2-135m", tasks="sst2,code_alpaca_2k", train_examples=2000, eval_examples=500, seeds=3,
                   trials=12, batch_size=16, final_seeds=1, **LM),
}


def fidelity_of(args, spec):
    from autopeft.trial import Fidelity

    if not spec.is_verbalized:  # instruction SFT: the loss on the responses
        return Fidelity(train_examples=args.lm_train_examples, epochs=1.0, max_length=args.lm_max_length,
                        eval_examples=args.lm_eval_examples, batch_size=8, eval_batch_size=8)
    return Fidelity(train_examples=args.train_examples, epochs=1.0, max_length=64, eval_examples=args.eval_examples,
                    batch_size=args.batch_size, eval_batch_size=32)


def metric_of(spec) -> str:
    return "accuracy" if spec.is_verbalized else "eval_loss"


def dataset_of(task: str) -> str:
    """An alias as given (aliases carry label words), else the dataset's folder under ../shared/datasets."""
    from autopeft.data.aliases import resolve_dataset_alias

    return task if resolve_dataset_alias(task) is not None else str(C.DATASETS / task)


def search(args, task: str, budget: int, spec) -> dict:
    import shutil

    from autopeft.search import records as R
    from autopeft.search.results import load_results
    from autopeft.search.run import run_search
    from autopeft.search.settings import SearchSettings

    run_dir = C.runs_dir(args, "causal_search") / f"{task}-default"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    fidelity = fidelity_of(args, spec)
    started = time.perf_counter()
    run_search(SearchSettings.model_validate(dict(
        model=args.model, dataset=dataset_of(task), task="causal_lm", final_seeds=args.final_seeds, max_params=budget,
        trials=args.trials,
        train_examples=fidelity.train_examples, epochs=fidelity.epochs, max_length=fidelity.max_length,
        eval_examples=fidelity.eval_examples, batch_size=fidelity.batch_size, bf16=True, out=str(run_dir))))
    seconds = time.perf_counter() - started
    results = load_results(run_dir)
    trained = [r for r in results.all_records if r.trained and R.RESULT in r.attrs]
    return {"run": str(run_dir), "budget": budget, "seconds": round(seconds, 1), "commit": C.COMMIT,
            "final_seeds": args.final_seeds, "new_configurations": args.trials,
            "trained": len(trained), "trivial_trials": sum(1 for r in trained if r.trivial),
            "trained_per_stage": {stage: sum(1 for r in records if r.trained)
                                  for stage, records in results.stages.items()},
            "front_size": len(results.front), "trivial_on_front": sum(1 for r in results.front if r.trivial),
            "trials": [{"trial": r.label, "description": r.attrs.get("description", ""),
                        "metric": r.attrs[R.RESULT]["metrics"].get(metric_of(spec)),
                        "params": r.attrs[R.RESULT].get("adapter_params"), "trivial": r.trivial}
                       for r in trained]}


def generates(run_dir: str, model: str, prompt: str, max_new_tokens: int) -> dict:
    """The exported best point loaded with PEFT on the base causal LM, greedy-generating after ``prompt``."""
    from peft import PeftModel

    from autopeft.export import export_run
    from autopeft.models import get_base_model

    export, _ = export_run(Path(run_dir))
    folders = sorted(p for p in export.iterdir() if (p / "adapter_config.json").is_file())
    if not folders:  # a search without a final stage keeps no trained adapter: its export holds the points only
        return {"folder": None, "prompt": prompt, "generated": None}
    folder = folders[0]
    base = get_base_model(model, "causal_lm")
    peft_model = PeftModel.from_pretrained(base.fresh_copy(0), str(folder)).eval()
    inputs = base.tokenizer(prompt, return_tensors="pt")
    output = peft_model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=base.tokenizer.pad_token_id)
    text = base.tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    return {"folder": folder.name, "prompt": prompt, "generated": text}


def run(args) -> dict:
    from bench_quality import autopeft_points, hand_made

    from autopeft.builders import BuildContext
    from autopeft.data import load_task
    from autopeft.data.tokenize import format_prompt, verbalized_prompt
    from autopeft.models import get_base_model
    from autopeft.search import RunnerEvaluator, builders_adapter_builder
    from autopeft.space import count_model_params, count_trainable_params
    from autopeft.trial import TrainingConfig, TrialRunner

    rows, searches, picks, generated = [], [], [], []
    for task in C.csv(args.tasks):
        data = load_task(dataset_of(task), task="causal_lm")
        fidelity, metric = fidelity_of(args, data.spec), metric_of(data.spec)
        base = get_base_model(args.model, "causal_lm")
        model_params = count_model_params(base.config)
        lora = hand_made(base.config)["lora"][1]
        budget = count_trainable_params(lora, base.config)
        evaluator = RunnerEvaluator(TrialRunner(base, data), builders_adapter_builder(base.config, "causal_lm",
                                                                                       BuildContext()),
                                    TrainingConfig(bf16=True), learning_rate=None)

        def train(label: str, point, seed: int, task=task, evaluator=evaluator, fidelity=fidelity,
                  metric=metric) -> dict:
            result = evaluator(point, fidelity, seed, evaluate_test=True)
            row = {"task": task, "method": label, "configuration": point.describe(), "seed": seed, "metric": metric,
                   "status": result.status, "reason": result.reason, "validation": result.metrics.get(metric),
                   "test": result.test_metrics.get(metric), "trivial": result.trivial,
                   "adapter_params": result.adapter_params, "wall_s": round(result.wall_seconds, 1)}
            print(json.dumps(row), flush=True)
            return row

        rows += [train("lora-r8", lora, seed) for seed in range(args.seeds)]
        found = search(args, task, budget, data.spec)
        lora_wall = statistics.mean(r["wall_s"] for r in rows if r["method"] == "lora-r8" and r["task"] == task)
        found["cost_vs_lora_r8"] = round(found["seconds"] / lora_wall, 2)
        searches.append({"task": task, **found})
        print(json.dumps({k: v for k, v in found.items() if k != "trials"}), flush=True)
        (pick,) = autopeft_points([Path(found["run"])], [100 * budget / model_params], model_params)
        point = pick.pop("peft_point")
        picks.append({"task": task, **pick})
        if point is not None:
            rows += [train("autopeft ≤ LoRA r8's parameters", point, seed) for seed in range(args.seeds)]
            example = data.test[0]
            if data.spec.is_verbalized:
                prompt, new_tokens = verbalized_prompt(data.spec, example[data.spec.text_column]), 3
            else:
                prompt, new_tokens = format_prompt(data.spec, example), 48
            generated.append({"task": task, **generates(found["run"], args.model, prompt, new_tokens)})
    return {"rows": rows, "searches": searches, "picks": picks, "generated": generated}


def markdown(args, data: dict) -> list[str]:
    lines = ["# A search on a causal LM: SmolLM2-135M, verbalised classification and instruction SFT", "",
             f"`autopeft search --model {args.model} --dataset TASK --task causal_lm` with the default space, "
             f"`--fidelity auto`, the default sampler, `--trials` and `--final-seeds` as in the search table, "
             f"`--max-params` = LoRA r8's count (with no final-stage seed the export keeps no adapter). Full "
             f"fidelity: verbalised classification {args.train_examples} training examples × 1 "
             f"epoch, length 64, batch {args.batch_size}, {args.eval_examples} validation and test examples; "
             f"instruction SFT (Code Alpaca, response loss) {args.lm_train_examples} examples × 1 epoch, length "
             f"{args.lm_max_length}, batch 8, {args.lm_eval_examples} validation and test examples (the same for every "
             f"trial); bf16 autocast. LoRA r8 (query/value, "
             f"alpha 16) at the product's rate for rank 8 (1.4e-3). The best exported Pareto point within LoRA r8's "
             f"parameters and LoRA r8 each retrained with seeds 0..{args.seeds - 1}; test = the reported split (GLUE "
             "dev; carved from the single file for Code Alpaca). Accuracy = the likeliest label word after the prompt "
             "(higher is better); eval_loss = mean token loss on the responses (lower is better). std over seeds "
             "(population).", "",
             "| task | method | configuration | params | metric | validation | test | trivial seeds |",
             "|---|---|---|---:|---|---|---|---:|"]
    groups: dict[tuple, list[dict]] = {}
    for row in data["rows"]:
        groups.setdefault((row["task"], row["method"]), []).append(row)
    for (task, method), rows in groups.items():
        ok = [r for r in rows if r["status"] == "ok"]
        cells = []
        for key in ("validation", "test"):
            values = [r[key] for r in ok if r[key] is not None]
            cells.append(f"{statistics.mean(values):.4f} ± {statistics.pstdev(values):.4f}" if values else "–")
        failed = len(rows) - len(ok)
        lines.append(f"| {task} | {method}{f' ({failed} failed)' if failed else ''} | {rows[0]['configuration']} | "
                     f"{rows[0]['adapter_params']:,} | {rows[0].get('metric', 'accuracy')} | {' | '.join(cells)} | "
                     f"{sum(bool(r['trivial']) for r in ok)}"
                     f"/{len(ok)} |")
    lines += ["", "| task | trials | final seeds | search wall time | × one LoRA r8 training | trained | trivial | "
              "front | trivial on front | trained per stage |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for s in data["searches"]:
        lines.append(f"| {s['task']} | {s.get('new_configurations', '–')} | {s.get('final_seeds', 0)} | "
                     f"{s['seconds']:.0f} s | {s['cost_vs_lora_r8']} | "
                     f"{s['trained']} | "
                     f"{s['trivial_trials']} | {s['front_size']} | {s['trivial_on_front']} | "
                     f"{s['trained_per_stage']} |")
    lines += ["", "Trials of the search (the task's metric on the validation subset, parameters):", ""]
    for s in data["searches"]:
        for t in s["trials"]:
            metric = "–" if t["metric"] is None else f"{t['metric']:.4f}"
            lines.append(f"- {s['task']} {t['trial']}: {t['description'] or '(point)'} → {metric}, "
                         f"{t['params']:,} params{' (trivial)' if t['trivial'] else ''}")
    lines += ["", "Picked within the budget: " + "; ".join(
        f"{p['task']}: {p.get('description')} ({p.get('params', 0):,} params, from {p.get('from')})"
        for p in data["picks"])]
    for g in data["generated"]:
        if g["folder"] is None:
            lines += ["", f"{g['task']}: the export holds no adapter to generate with (a search without a final "
                          "stage keeps none), so generation with `PeftModel` was not checked here."]
            continue
        lines += ["", f"The exported `{g['folder']}` loaded with `PeftModel` on the base causal LM, greedy generation "
                      f"after a test prompt of {g['task']}: {json.dumps(g['prompt'])} → {json.dumps(g['generated'])}"]
    if data.get("reading"):  # what the figures say, written after the run (kept in the JSON so a re-render keeps it)
        lines += ["", "## Reading the tables", "", *data["reading"]]
    if data.get("parts"):  # tasks run separately and merged (merge_tasks): each part's own command and time
        lines += ["", "Made in parts on 2 CPU cores: " + "; ".join(
            f"{task} `{part['command']}` ({part['seconds']:.0f} s)" for task, part in data["parts"].items()) + "."]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a causal LM (alias, folder or Hub id)")
    parser.add_argument("--tasks", help="comma-separated datasets: labelled ones are verbalised (aliases keep "
                                        "their label words), instruction ones (code_alpaca_2k) are SFT")
    parser.add_argument("--train-examples", type=int)
    parser.add_argument("--eval-examples", type=int)
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--trials", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--final-seeds", type=int, help="the search's final-stage seeds (0: none, no adapter exported)")
    parser.add_argument("--lm-train-examples", type=int, help="instruction SFT tasks: training examples")
    parser.add_argument("--lm-eval-examples", type=int, help="instruction SFT tasks: validation and test examples")
    parser.add_argument("--lm-max-length", type=int, help="instruction SFT tasks: tokens per example")
    parser.add_argument("--runs", help="where the search runs go (default runs/bench-SIZE)")
    parser.add_argument("--render", type=Path, help="rewrite the markdown of this benchmark JSON only (no run)")
    args = C.parse_args(parser, PRESETS, argv, "causal_search")
    if args.render:
        return C.render(args.render, lambda data, saved: markdown(saved, data))
    if args.size == "medium" and "--out" not in args.argv:  # the committed table is benchmarks/causal_search.md
        args.out = C.ROOT / "benchmarks"
    started = time.perf_counter()
    C.quiet()
    data = run(args)
    if args.size != "toy":  # a per-task run keeps the other tasks' entries (same size) and says which run made which
        earlier = args.out / f"{args.name}.json"
        parts = json.loads(earlier.read_text()).get("parts", {}) if earlier.is_file() else {}
        seconds = round(time.perf_counter() - started, 1)
        data["parts"] = {**parts, **{task: {"command": C.command_line(args), "seconds": seconds}
                                     for task in C.csv(args.tasks)}}
        data = C.merge_tasks(args, data, ("rows", "searches", "picks", "generated"))
    C.write(args, data, markdown(args, data), started)


if __name__ == "__main__":
    main()
