"""``autopeft report RUN_DIR``: plots and a markdown summary of a search.

Writes (default ``RUN_DIR/report``): ``pareto.png`` and ``pareto.html`` (interactive, plotly),
``hypervolume.png`` (hypervolume of the rung-0 trials against the trial count), ``heatmap.png``
(how many Pareto points place each module type in each layer) and ``summary.md``; a plot with nothing
to draw is not written, and summary.md links only the plots that were. The folder is written beside the
target and renamed into place at the end.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np

from autopeft._imports import optional_dependency
from autopeft.atomic import check_output_folder, write_dir
from autopeft.export import common_reasons, nothing_finished, reason_text
from autopeft.modules import MODULE_TYPES
from autopeft.search import records as R
from autopeft.search.pareto import hypervolume
from autopeft.search.records import TrialRecord, distinct_complete
from autopeft.search.results import RunResults, load_results


def _pyplot():
    with optional_dependency("matplotlib", "`autopeft report`"):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    return plt


def _plotly():
    with optional_dependency("plotly", "`autopeft report`"):
        import plotly.graph_objects as go
    return go


def hypervolume_history(records: list[TrialRecord], objectives) -> list[tuple[int, float]]:
    """(trial number, hypervolume of the distinct complete trials so far); objectives in the loss space
    (params on a log scale), scaled to [0, 1] over the run so runs and objectives compare."""
    done = distinct_complete(sorted(records, key=lambda r: r.number))
    if not done:
        return []
    losses = np.array([r.losses(objectives) for r in done])
    low, span = losses.min(axis=0), np.ptp(losses, axis=0)
    normalised = (losses - low) / np.where(span > 0, span, 1.0)  # each objective in [0, 1] over this run
    reference = np.full(losses.shape[1], 1.1)
    return [(record.number, hypervolume(normalised[: i + 1], reference)) for i, record in enumerate(done)]


def layer_usage(front: list[TrialRecord], num_layers: int) -> tuple[list[str], np.ndarray]:
    """(module types used, counts[type, layer]) over the front's points."""
    names = list(MODULE_TYPES)
    counts = np.zeros((len(names), num_layers))
    for record in front:
        for name, module in (record.attrs.get(R.POINT) or {}).get("modules", {}).items():
            for layer in module.get("layers", []):
                if 0 <= int(layer) < num_layers:
                    counts[names.index(name), int(layer)] += 1
    used = [i for i in range(len(names)) if counts[i].any()]
    return [names[i] for i in used], counts[used]


def _pareto_png(results: RunResults, path: Path) -> None:
    plt = _pyplot()
    x_obj, y_obj = _axes(results)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for stage, records in results.stages.items():
        if stage == "final":
            continue
        done = distinct_complete(records)
        if done:
            ax.scatter([r.values[x_obj.name] for r in done], [r.values[y_obj.name] for r in done],
                       s=14, alpha=0.5, label=f"{stage} trials")
    front = sorted(results.front, key=lambda r: r.values[x_obj.name])
    std = [(r.attrs.get(R.VALUES_STD) or {}).get(y_obj.name, 0.0) for r in front]
    ax.errorbar([r.values[x_obj.name] for r in front], [r.values[y_obj.name] for r in front], yerr=std,
                fmt="o-", color="crimson", capsize=3, label=f"Pareto front ({results.front_stage})")
    if x_obj.log_scale:
        from matplotlib.ticker import EngFormatter

        positive = all(r.values[x_obj.name] > 0
                       for records in results.stages.values() for r in distinct_complete(records))
        ax.set_xscale("log" if positive else "symlog", **({} if positive else {"linthresh": 1}))
        ax.xaxis.set_major_formatter(EngFormatter())
        ax.xaxis.set_minor_formatter(EngFormatter())
    ax.set_xlabel(f"{x_obj.name} ({x_obj.direction})")
    ax.set_ylabel(f"{y_obj.name} ({y_obj.direction})")
    ax.set_title(f"{results.info.study_name}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _axes(results: RunResults):
    metric = results.info.objectives[0]
    other = next((o for o in results.info.objectives[1:] if o.name == "params"), results.info.objectives[1])
    return other, metric


def _pareto_html(results: RunResults, path: Path) -> None:
    go = _plotly()
    x_obj, y_obj = _axes(results)
    figure = go.Figure()
    for stage, records in results.stages.items():
        done = distinct_complete(records)
        if stage == "final" or not done:
            continue
        figure.add_trace(go.Scatter(
            x=[r.values[x_obj.name] for r in done], y=[r.values[y_obj.name] for r in done], mode="markers",
            name=f"{stage} trials", opacity=0.6,
            text=[f"{r.label}: {r.attrs.get(R.DESCRIPTION, '')}" for r in done], hoverinfo="text+x+y"))
    front = sorted(results.front, key=lambda r: r.values[x_obj.name])
    figure.add_trace(go.Scatter(
        x=[r.values[x_obj.name] for r in front], y=[r.values[y_obj.name] for r in front], mode="lines+markers",
        name=f"Pareto front ({results.front_stage})",
        error_y={"type": "data", "array": [(r.attrs.get(R.VALUES_STD) or {}).get(y_obj.name, 0.0) for r in front]},
        text=[f"{r.label}: {r.attrs.get(R.DESCRIPTION, '')}" for r in front], hoverinfo="text+x+y"))
    figure.update_layout(title=results.info.study_name, xaxis_title=x_obj.name, yaxis_title=y_obj.name,
                         xaxis_type="log" if x_obj.log_scale and all(r.values[x_obj.name] > 0 for r in front) else None)
    figure.write_html(str(path), include_plotlyjs=True, full_html=True)


def _hypervolume_png(history: list[tuple[int, float]], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if history:
        ax.step([n + 1 for n, _ in history], [hv for _, hv in history], where="post")
    ax.set_xlabel("rung-0 trials")
    ax.set_ylabel("hypervolume (objectives scaled to [0, 1], ref 1.1)")
    ax.set_title("hypervolume vs trials")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _heatmap_png(names: list[str], counts: np.ndarray, front_size: int, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5, 0.45 * counts.shape[1] + 3), max(2.5, 0.5 * len(names) + 1.5)))
    if names:
        image = ax.imshow(counts, aspect="auto", cmap="viridis", vmin=0, vmax=max(front_size, 1))
        fig.colorbar(image, ax=ax, label="Pareto points")
        ax.set_yticks(range(len(names)), names)
        for (row, column), value in np.ndenumerate(counts):
            ax.text(column, row, f"{value:.0f}", ha="center", va="center", fontsize=8,
                    color="white" if value < max(front_size, 1) / 2 else "black")
    ax.set_xticks(range(counts.shape[1]))
    ax.set_xlabel("layer")
    ax.set_title("module types of the Pareto points, per layer", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _format(value: float, std: float | None = None) -> str:
    text = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return text + (f" ± {std:.2g}" if std else "")


def _baselines(rung0: list[TrialRecord]) -> tuple[list[str], list[str]]:
    """(names of the baselines that finished, "name (reason)" of those that did not)."""
    finished, unfinished = {}, {}
    for record in rung0:
        origin = str(record.attrs.get(R.ORIGIN, ""))
        if not origin.startswith("baseline:"):
            continue
        name = origin.split(":", 1)[1]
        if record.complete:
            finished[name] = None
        else:
            unfinished.setdefault(name, reason_text(record))
    return list(finished), [f"{name} ({why})" for name, why in unfinished.items() if name not in finished]


def summary_markdown(results: RunResults, history: list[tuple[int, float]],
                     plots: dict[str, bool] | None = None) -> str:
    """The report's summary.md; ``plots`` says which of the report's files were written (only those are linked)."""
    plots = {name: True for name in PLOT_FILES} if plots is None else plots
    info, objectives = results.info, results.info.objectives
    rung0 = results.stages.get("rung-0", [])
    trained = [r for r in rung0 if r.trained]
    duplicates = [r for r in rung0 if R.DUPLICATE_OF in r.attrs]
    not_trained = [r for r in rung0 if (r.state == "pruned" or r.infeasible) and R.DUPLICATE_OF not in r.attrs]
    over_budget = [r for r in not_trained if str(r.attrs.get(R.REASON, "")).startswith("over --max-params")]
    failed = [r for records in results.stages.values() for r in records
              if r.state == "fail" and R.DUPLICATE_OF not in r.attrs]
    unfinished = [r for r in results.all_records if r.state in ("running", "waiting")]
    finished = sum(1 for r in results.all_records if r.complete and not r.infeasible)
    lines = [f"# autopeft search: {info.study_name}", ""]
    settings = info.settings
    lines += [f"- model: `{settings.get('model')}`, dataset: `{settings.get('dataset')}`, "
              f"space: `{settings.get('space')}`",
              f"- objectives: {', '.join(f'{o.name} ({o.direction})' for o in objectives)}",
              f"- sampler: {settings.get('sampler')}, fidelity rungs: {settings.get('fidelity')}, "
              f"final seeds: {settings.get('final_seeds')}, max params: {settings.get('max_params') or 'none'}",
              f"- storage: `{info.storage}` (opens in optuna-dashboard), study `{info.study_name}`", ""]
    other_not_trained = len(not_trained) - len(over_budget)
    lines += ["## Trials", "",
              f"- {len(results.all_records)} trials in all, {finished} finished",
              f"- rung 0: {len(trained)} trained ({sum(1 for r in trained if r.complete)} finished), "
              f"{len(over_budget)} rejected before training (over --max-params)"
              + (f", {other_not_trained} not trained for another reason" if other_not_trained else "")
              + f", {len(duplicates)} duplicates (stored result reused)",
              *(f"- {stage}: {len([r for r in records if r.trained])} trained"
                for stage, records in results.stages.items() if stage != "rung-0")]
    lines.append(f"- failed: {len(failed)}"
                 + "".join(f"\n  - {count} x {text}" for count, text in common_reasons(failed, top=5)))
    if other_not_trained:
        others = [r for r in not_trained if r not in over_budget]
        lines.append("- not trained: " + "; ".join(f"{count} x {text}" for count, text in common_reasons(others)))
    if unfinished:
        lines.append(f"- still running or interrupted without a result: {len(unfinished)}")
    suggest = [r.attrs[R.SUGGEST_SECONDS] for r in rung0 if str(r.attrs.get(R.ORIGIN, "")).startswith("sampler:")
               and R.SUGGEST_SECONDS in r.attrs]
    walls = [r.attrs[R.RESULT]["wall_seconds"] for r in trained if "wall_seconds" in r.attrs.get(R.RESULT, {})]
    if suggest and walls:
        share = 100 * statistics.median(suggest) / max(statistics.median(walls), 1e-9)
        lines.append(f"- median suggestion time {statistics.median(suggest):.3f} s = {share:.1f}% of the median "
                     f"trial ({statistics.median(walls):.2f} s)")
    if history:
        lines.append(f"- final hypervolume (rung 0): {history[-1][1]:.4g}")
    trivial = [r for records in results.stages.values() for r in distinct_complete(records)
               if r.trivial and r.stage != "final"]
    if trivial:
        score = next((r.trivial_metric for r in trivial if r.trivial_metric is not None), None)
        stderr = next((r.attrs[R.RESULT].get(R.METRIC_STDERR) for r in trivial if R.RESULT in r.attrs), None)
        at = f" ({_format(score)}" + (f" + {stderr:.2g} standard error" if stderr else "") + ")" \
            if score is not None else ""
        lines.append(f"- trivial: {len(trivial)} trained trials scored at or below the trivial score{at} "
                     "(never promoted, never on a front): "
                     + ", ".join(r.label for r in trivial[:20]) + (" ..." if len(trivial) > 20 else ""))
    evaluated, not_evaluated = _baselines(rung0)
    lines.append(f"- baselines evaluated: {', '.join(evaluated) or 'none'}")
    if not_evaluated:
        lines.append(f"- baselines enqueued but without a result: {', '.join(not_evaluated)}")
    lines += _agreement_lines(results, info.metric)
    if not results.front:
        lines += ["", "## Pareto front", "",
                  f"None: {nothing_finished(results)}. No plot was drawn: there is nothing to plot.", ""]
        return "\n".join(lines)
    lines += ["", f"## Pareto front ({results.front_stage}; selected on validation, test reported separately)", ""]
    header = ["trial", *(f"{o.name} {'↑' if o.maximize else '↓'}" for o in objectives), f"test {info.metric}", "point"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for record in results.front:
        std = record.attrs.get(R.VALUES_STD) or {}
        test = (record.attrs.get(R.TEST_METRICS) or {}).get(info.metric)
        test_std = (record.attrs.get(R.TEST_METRICS_STD) or {}).get(info.metric)
        cells = [record.label, *(_format(record.values[o.name], std.get(o.name) if o.name != "params" else None)
                                 for o in objectives),
                 _format(test, test_std) if test is not None else "-", record.attrs.get(R.DESCRIPTION, "")]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    links = {"pareto.png": "![Pareto front](pareto.png)", "pareto.html": "[interactive Pareto plot](pareto.html)",
             "hypervolume.png": "![hypervolume](hypervolume.png)", "heatmap.png": "![layers](heatmap.png)"}
    for name, link in links.items():
        if plots.get(name):
            lines += [link, ""]
    if not plots.get("heatmap.png"):
        lines += ["(no layer heatmap: the Pareto points place no PEFT module in any layer)", ""]
    return "\n".join(lines)


PLOT_FILES = ("pareto.png", "pareto.html", "hypervolume.png", "heatmap.png")


def _agreement_lines(results: RunResults, metric: str) -> list[str]:
    """Spearman rho of the task metric between consecutive rungs, over the configurations trained at both."""
    agreements = R.rung_agreements(results.stages, metric)
    if not agreements:
        return []
    lines = ["", "## Rung agreement", "",
             f"Spearman rho of {metric} between consecutive rungs, over the configurations trained at both (the "
             "promoted ones: the top of their rung, so a rho near 0 can come from selection alone; `--fidelity auto` "
             "raises its lowest rung only when rho is low beyond doubt):", ""]
    for agreement in agreements:
        warning = (f" — **warning: below {R.LOW_AGREEMENT}: the lower rung ranks configurations unlike the higher "
                   "one**") if agreement.low else ""
        lines.append(f"- {agreement.describe()}{warning}")
    return lines


def write_report(run_dir: str | Path, out: str | Path | None = None, storage: str | None = None) -> tuple[Path, bool]:
    """Plots and summary.md of a run; returns the folder and whether any trial finished. A run where none
    did still gets a summary.md (how many trials failed or were rejected, and why) but no plot: there is
    nothing to draw, and the reasons are what its user needs to see."""
    _pyplot(), _plotly()  # fail before doing any work when an extra is missing
    results = load_results(run_dir, storage)
    out = Path(out) if out is not None else Path(run_dir) / "report"
    check_output_folder(out, lambda folder: (folder / "summary.md").is_file(), "report")  # never a user's folder
    history = hypervolume_history(results.stages.get("rung-0", []), results.info.objectives)
    names, counts = layer_usage(results.front, results.info.num_layers)

    def write(staging: Path) -> None:
        written = dict.fromkeys(PLOT_FILES, False)
        if results.front:
            _pareto_png(results, staging / "pareto.png")
            _pareto_html(results, staging / "pareto.html")
            written["pareto.png"] = written["pareto.html"] = True
        if history:
            _hypervolume_png(history, staging / "hypervolume.png")
            written["hypervolume.png"] = True
        if names:
            _heatmap_png(names, counts, len(results.front), staging / "heatmap.png")
            written["heatmap.png"] = True
        (staging / "summary.md").write_text(summary_markdown(results, history, written))

    return write_dir(out, write), bool(results.front)
