"""``autopeft export RUN_DIR``: the Pareto-optimal adapters as PEFT folders, plus pareto.json and trials.csv.

Layout of the export folder (default ``RUN_DIR/export``), written to a temporary folder and
moved into place at the end, so an interrupted export never leaves a half-written one::

    pareto.json                 the front: values (± std over seeds), test metrics, points
    trials.csv                  every trial of every stage
    01-final-3/                 one folder per Pareto point, best task metric first
        README.md               the model card (autopeft.export.card): Hub front matter (library_name: peft,
                                base_model as a portable id, tags), the task and its labels, the metrics
                                (mean ± std over the seeds), the parameter count, the point, how the search found
                                it, and the exact code that loads it; in every folder, also one without an adapter
        adapter_config.json     the PEFT adapter (when trained at full fidelity in the final stage):
        adapter_model.safetensors   peft.PeftModel.from_pretrained(base_model, folder) loads it; plain PEFT for
                                LoRA / IA3 / LN tuning points (and LoRA or IA3 + LN tuning, rewritten by
                                autopeft.export.plain), after `import autopeft` for autopeft's own methods
                                (AUTOPEFT mixes, BITFIT, BOTTLENECK, ...: the card says so).
                                base_model_name_or_path is the portable id, never a local path
        point.yaml              the point in the search space's vocabulary (PeftPoint.to_dict())
        metrics.json            the point's summary (as in pareto.json), with loads_with: peft | autopeft
        merged/                 with --merged: the base model with the adapter folded in (LoRA, IA3,
                                LoFiT offsets into the output projection's bias, ...), plain transformers,
                                its config naming the task's labels (id2label / label2id). A point that cannot
                                be folded (bottleneck adapters, prefixes) has none: metrics.json's merged_note
                                and a console line (export_run's ``notify``) say why
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import yaml

from autopeft.atomic import check_output_folder, write_dir
from autopeft.errors import AutopeftError
from autopeft.search import records as R
from autopeft.search.records import TrialRecord
from autopeft.search.results import RunResults, load_results

TRIAL_COLUMNS = ("stage", "number", "state", "origin", "description", "adapter_params", "status", "reason",
                 "duplicate_of", "suggest_seconds", "train_seconds", "wall_seconds", "peak_memory_mb", "point_key")


def validation_metrics(record: TrialRecord) -> dict[str, float]:
    """A search trial's metrics, or the mean over the successful seeds of a final-stage trial."""
    seeds = [s for s in record.attrs.get(R.SEEDS, []) if s.get("status") == "ok"]
    if not seeds:
        return record.attrs.get(R.RESULT, {}).get("metrics", {})
    names = set.intersection(*(set(s["metrics"]) for s in seeds))
    return {name: sum(s["metrics"][name] for s in seeds) / len(seeds) for name in sorted(names)}


def validation_metrics_std(record: TrialRecord) -> dict[str, float]:
    """The spread (population std, as for the values) of a final-stage trial's validation metrics over its seeds."""
    import statistics

    seeds = [s for s in record.attrs.get(R.SEEDS, []) if s.get("status") == "ok"]
    if len(seeds) < 2:
        return {}
    names = set.intersection(*(set(s["metrics"]) for s in seeds))
    return {name: statistics.pstdev(s["metrics"][name] for s in seeds) for name in sorted(names)}


def point_summary(record: TrialRecord, results: RunResults) -> dict:
    result = record.attrs.get(R.RESULT, {})
    seeds = [s for s in record.attrs.get(R.SEEDS, []) if s.get("status") == "ok"]
    return {
        "trial": record.label,
        "values": record.values,
        "values_std": record.attrs.get(R.VALUES_STD),
        "test_metrics": record.attrs.get(R.TEST_METRICS) or result.get("test_metrics") or {},
        "test_metrics_std": record.attrs.get(R.TEST_METRICS_STD),
        "validation_metrics": validation_metrics(record),
        "validation_metrics_std": validation_metrics_std(record) or None,
        "adapter_params": record.attrs.get(R.ADAPTER_PARAMS),
        "trainable_params": (seeds[0] if seeds else result).get("trainable_params"),
        "description": record.attrs.get(R.DESCRIPTION),
        "point": record.attrs.get(R.POINT),
        "params": record.params,
        "seeds": len(record.attrs.get(R.SEEDS, [])) or 1,
        "selected_on": "validation",
        "stage": record.stage,
        "origin": record.attrs.get(R.ORIGIN),
    }


def trials_csv(results: RunResults) -> str:
    objective_names = [o.name for o in results.info.objectives]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*TRIAL_COLUMNS, *objective_names, "params_json"])
    for record in results.all_records:
        result = record.attrs.get(R.RESULT, {})
        row = {
            "stage": record.stage, "number": record.number, "state": record.state,
            "origin": record.attrs.get(R.ORIGIN, ""), "description": record.attrs.get(R.DESCRIPTION, ""),
            "adapter_params": record.attrs.get(R.ADAPTER_PARAMS, ""), "status": record.attrs.get(R.STATUS, ""),
            "reason": record.attrs.get(R.REASON, ""), "duplicate_of": record.attrs.get(R.DUPLICATE_OF, ""),
            "suggest_seconds": record.attrs.get(R.SUGGEST_SECONDS, ""),
            "train_seconds": result.get("train_seconds", ""),
            "wall_seconds": result.get("wall_seconds", ""), "peak_memory_mb": result.get("peak_memory_mb", ""),
            "point_key": record.key or "",
        }
        values = [record.values[n] if record.values else "" for n in objective_names]
        writer.writerow([*(row[c] for c in TRIAL_COLUMNS), *values, json.dumps(record.params, sort_keys=True)])
    return buffer.getvalue()


def reason_text(record: TrialRecord) -> str:
    reason = str(record.attrs.get(R.REASON) or record.attrs.get(R.STATUS) or record.state)
    first = (reason.strip().splitlines() or [record.state])[0]
    return first if len(first) <= 160 else first[:157] + "..."


def unfinished_records(results: RunResults) -> list[TrialRecord]:
    """Trials that did not finish (failed, rejected before training, still running or interrupted),
    without the duplicates that only copy another trial's outcome."""
    return [r for r in results.all_records if (not r.complete or r.infeasible) and R.DUPLICATE_OF not in r.attrs]


def common_reasons(records: list[TrialRecord], top: int = 3) -> list[tuple[int, str]]:
    """(count, an example reason), most common first; reasons that differ only in numbers count together."""
    groups: Counter[str] = Counter()
    example: dict[str, str] = {}
    for record in records:
        text = reason_text(record)
        key = re.sub(r"\d[\d,.]*", "#", text)
        groups[key] += 1
        example.setdefault(key, text)
    return [(count, example[key]) for key, count in groups.most_common(top)]


def nothing_finished(results: RunResults) -> str:
    """Why a run has no result: how many trials it has and their most common reasons, on one line."""
    total = len(results.all_records)
    reasons = "; ".join(f"{count}x {text}" for count, text in common_reasons(unfinished_records(results)))
    return (f"no trial of study '{results.info.study_name}' finished ({total} trial{'s' if total != 1 else ''}"
            + (f"; most common reasons: {reasons}" if reasons else "") + ")")


def _task(results: RunResults):
    """(the task as the cards name it, its TaskSpec or None): the spec is read back from the data (label names live
    there, not in run.json); a task that cannot be read any more still gets cards, saying so."""
    from autopeft.export.card import TaskInfo

    settings = results.info.settings
    name = str(settings.get("dataset") or "the task")
    if Path(name).expanduser().exists() or name.startswith((".", "/", "~", "\\")):  # a local path: its name only
        name = Path(name).name
    try:
        parsed = results.info.search_settings()
        data = parsed.task.load(parsed.seed)
    except Exception as exc:  # moved or unreadable data, an old run.json: the cards say what is unknown
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        return TaskInfo(name, settings.get("task"), results.info.metric,
                        note=f"its data could not be read back at export: {text}"), None
    spec = data.spec
    return TaskInfo(data.name, spec.kind, spec.metric, tuple(str(n) for n in spec.label_names),
                    verbalizer=spec.verbalizer), spec


def _merged_writer(results: RunResults, spec):
    """folder -> writes folder/merged (the base model with the adapter folded in), or returns why not."""
    from peft import PeftModel

    base, spec = results.info.base_model(spec)

    def write(folder: Path) -> str | None:
        model = PeftModel.from_pretrained(base.fresh_copy(0), str(folder))
        if model.peft_config[model.active_adapter].is_prompt_learning:
            return "not mergeable: prompt learning (prefix tuning) adds virtual tokens, not weights to fold in"
        try:
            merged = model.merge_and_unload()
        except AutopeftError as exc:  # autopeft's tuners that cannot fold (bottleneck, composite parts) say why
            return f"not mergeable: {(str(exc).strip().splitlines() or [type(exc).__name__])[0]}"
        if spec.kind == "classification" and spec.label_names:
            merged.config.id2label = {i: str(name) for i, name in enumerate(spec.label_names)}
            merged.config.label2id = {str(name): i for i, name in enumerate(spec.label_names)}
        merged.save_pretrained(folder / "merged")
        base.tokenizer.save_pretrained(folder / "merged")
        return None

    return write


def _card_facts(folder: Path, record: TrialRecord) -> dict:
    """What the card says of the adapter files: their PEFT type, autopeft's methods in them, the saved values."""
    from autopeft.export.plain import CONFIG_FILE, WEIGHTS_FILE, autopeft_methods, peft_types

    facts: dict = {"seeds": sorted(entry["seed"] for name, entry in record.attrs.items()
                                   if name.startswith(R.SEED_PREFIX) and isinstance(entry, dict)
                                   and entry.get("result", {}).get("status") == "ok" and "seed" in entry)}
    if not (folder / CONFIG_FILE).is_file():
        return facts
    config = json.loads((folder / CONFIG_FILE).read_text())
    facts.update(peft_type=str(config.get("peft_type")), methods=peft_types(config),
                 autopeft_methods=autopeft_methods(config))
    if (folder / WEIGHTS_FILE).is_file():
        from safetensors import safe_open

        with safe_open(folder / WEIGHTS_FILE, "pt") as weights:
            total = 0
            for key in weights.keys():
                count = 1
                for size in weights.get_slice(key).get_shape():
                    count *= size
                total += count
        facts["saved_values"] = total
    return facts


def export_run(run_dir: str | Path, out: str | Path | None = None, storage: str | None = None,
               merged: bool = False, notify: Callable[[str], None] | None = None) -> tuple[Path, RunResults]:
    """Export the run's Pareto front (the layout above). ``notify`` gets one line per point that ``merged`` could
    not fold into its base model, saying which and why."""
    from autopeft.export.card import PointCard, model_card, portable_model_id
    from autopeft.export.plain import make_plain, set_base_model

    results = load_results(run_dir, storage)
    if not results.front:  # before any model loads or anything is written
        raise AutopeftError(f"nothing to export: {nothing_finished(results)}")
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "export"
    check_output_folder(out, lambda folder: (folder / "pareto.json").is_file(), "export")  # never a user's folder
    task, spec = _task(results)
    base_id = portable_model_id(str(results.info.settings.get("model", "")))
    write_merged = _merged_writer(results, spec) if merged else None
    not_merged: list[str] = []

    def write(staging: Path) -> None:
        summaries, cards = [], []
        for rank, record in enumerate(results.front, start=1):
            folder = staging / f"{rank:02d}-{record.label.replace('#', '-')}"
            folder.mkdir()
            summary = point_summary(record, results)
            adapter = record.attrs.get(R.ADAPTER_DIR)
            if adapter and (run_dir / adapter / "adapter_config.json").is_file():
                shutil.copytree(run_dir / adapter, folder, dirs_exist_ok=True)
                summary["adapter"] = folder.name
                plain_note = make_plain(folder)
                if plain_note:
                    summary["plain_peft_note"] = plain_note
                set_base_model(folder, base_id.id)
                if write_merged is not None:
                    why_not = write_merged(folder)
                    summary["merged"] = "merged" if why_not is None else None
                    if why_not:
                        summary["merged_note"] = why_not
                        not_merged.append(f"not merged: {folder.name} ({summary['description']}): {why_not}")
            else:
                summary["adapter"] = None
                summary["note"] = ("no PEFT module in this point (task head only)"
                                   if not record.attrs.get(R.POINT, {}).get("modules")
                                   else "no trained adapter: the final stage did not run for this point "
                                        "(--final-seeds 0)")
                if write_merged is not None:
                    not_merged.append(f"not merged: {folder.name} ({summary['description']}): {summary['note']}")
            facts = _card_facts(folder, record)
            if summary["adapter"] is not None:
                summary["loads_with"] = "autopeft" if facts.get("autopeft_methods") else "peft"
            point_yaml = yaml.safe_dump(record.attrs.get(R.POINT, {}), sort_keys=False)
            (folder / "point.yaml").write_text(point_yaml)
            (folder / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
            summaries.append(summary)
            cards.append((folder, PointCard(folder.name, rank, summary, point_yaml, **facts)))
        for folder, card in cards:
            (folder / "README.md").write_text(model_card(
                card, base_id, task, study=results.info.study_name, front_stage=results.front_stage,
                points=len(cards), objectives=results.info.objectives))
        (staging / "pareto.json").write_text(json.dumps({
            "study": results.info.study_name,
            "front_stage": results.front_stage,
            "objectives": [{"name": o.name, "direction": o.direction} for o in results.info.objectives],
            "points": summaries,
        }, indent=2) + "\n")
        (staging / "trials.csv").write_text(trials_csv(results))

    write_dir(out, write)
    for line in not_merged if notify is not None else ():
        notify(line)
    return out, results
