"""``autopeft report RUN_DIR``: plots and a markdown summary of a search.

Writes (default ``RUN_DIR/report``): ``pareto.png`` and ``pareto.html`` (interactive, plotly: every trial, the
front as its attainment staircase with labelled points, the trivial score dashed), ``hypervolume.png`` (hypervolume
of the rung-0 trials against the trial count, each trial marked by its origin), ``heatmap.png`` (each front point's
module sizes per layer) and ``summary.md``; a plot with nothing to draw is not written, and summary.md links
only the plots that were. The folder is written beside the target and renamed into place at the end.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np

from autopeft._imports import optional_dependency
from autopeft.atomic import check_output_folder, write_dir
from autopeft.export import common_reasons, nothing_finished, reason_text
from autopeft.modules import MODULE_TYPES, get_module_type
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


def entry_stage(results: RunResults) -> str:
    """The rung where the search's new configurations were trained: rung-0, unless ``--fidelity auto`` raised the
    lowest rung early (then most new configurations start at rung 1 or above, and rung 0 holds a few baselines)."""
    counts = {stage: sum(1 for r in records if r.trained and R.origin_group(r.origin) != "promoted")
              for stage, records in results.stages.items() if stage.startswith("rung-")}
    return max(counts, key=lambda stage: (counts[stage], -int(stage.split("-")[1])), default="rung-0")


def hypervolume_history(records: list[TrialRecord], objectives) -> list[tuple[int, float]]:
    """(trial number, hypervolume of the distinct complete trials so far); objectives in the loss space
    (params on a log scale), scaled to [0, 1] over the run so runs and objectives compare. Trivial trials (no
    better than the majority class) are left out: they are never a result, so they add no hypervolume."""
    done = distinct_complete(sorted((r for r in records if not r.trivial), key=lambda r: r.number))
    if not done:
        return []
    losses = np.array([r.losses(objectives) for r in done])
    low, span = losses.min(axis=0), np.ptp(losses, axis=0)
    normalised = (losses - low) / np.where(span > 0, span, 1.0)  # each objective in [0, 1] over this run
    reference = np.full(losses.shape[1], 1.1)
    return [(record.number, hypervolume(normalised[: i + 1], reference)) for i, record in enumerate(done)]


def origin_markers(records: list[TrialRecord],
                   history: list[tuple[int, float]]) -> dict[str, list[tuple[int, float]]]:
    """origin group (:func:`autopeft.search.records.origin_group`) -> (trial number + 1, hypervolume after it) of
    each trial of ``history``, in ``ORIGIN_GROUPS`` order: where the hypervolume plot marks the baselines, ..."""
    origins = {r.number: r.origin for r in records}
    markers: dict[str, list[tuple[int, float]]] = {}
    for number, value in history:
        markers.setdefault(R.origin_group(origins.get(number, "")), []).append((number + 1, value))
    return {group: markers[group] for group in R.ORIGIN_GROUPS if group in markers}


def attainment_staircase(points: list[tuple[float, float]], x_minimize: bool = True, y_maximize: bool = True,
                         x_edge: float | None = None, y_edge: float | None = None) -> tuple[list[float], list[float]]:
    """The attainment curve of 2-D points: the boundary of the region they dominate, as a polyline of steps.

    Only the points non-dominated in these two objectives shape it. It runs from the point best in x to the one best
    in y, one step per point: along y up to a point, then along x to the next one. ``y_edge`` (the plot's worst y)
    starts it below/above the first point and ``x_edge`` (the plot's worst x) carries it on past the last, as
    attainment curves are drawn to the edge of the plot."""
    if not points:
        return [], []
    x_sign, y_sign = (1 if x_minimize else -1), (-1 if y_maximize else 1)   # smaller is better after the sign
    kept: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (x_sign * p[0], y_sign * p[1])):
        if not kept or y_sign * y < y_sign * kept[-1][1]:
            kept.append((x, y))
    xs, ys = ([kept[0][0]], [y_edge]) if y_edge is not None else ([], [])
    for i, (x, y) in enumerate(kept):
        xs.append(x)
        ys.append(y)
        following = kept[i + 1][0] if i + 1 < len(kept) else x_edge
        if following is not None:
            xs.append(following)
            ys.append(y)
    return xs, ys


def _module_sizes(spec: dict) -> dict[int, float]:
    """layer -> size of one module of a point's dict (``PeftPoint.to_dict``; a stored point's keys are strings),
    without the layers at size 0 (a per-layer grid's "not in this layer")."""
    size = spec.get("size", 1)
    sizes = ({int(layer): float(value) for layer, value in size.items()} if isinstance(size, dict)
             else {int(layer): float(size) for layer in spec.get("layers", [])})
    return {layer: value for layer, value in sizes.items() if value > 0}


def layer_sizes(front: list[TrialRecord], num_layers: int) -> tuple[list[str], np.ndarray]:
    """(row labels "<trial> <module>", sizes[row, layer]): one row per module of each front point, in the front's
    order, holding the module's size in each layer (rank, bottleneck width, prefix tokens, ...; 1 for an unsized
    module) and NaN where the point leaves that layer without it."""
    labels, rows = [], []
    for record in front:
        for name, spec in ((record.attrs.get(R.POINT) or {}).get("modules") or {}).items():
            row = np.full(num_layers, np.nan)
            for layer, size in _module_sizes(spec).items():
                if 0 <= layer < num_layers:
                    row[layer] = size
            if not np.isnan(row).all():
                labels.append(f"{record.label} {name}")
                rows.append(row)
    return labels, np.array(rows).reshape(len(rows), num_layers)


_SHORT_NAMES = {"lora": "LoRA", "serial_adapter": "SA", "parallel_adapter": "PA", "prefix": "PT", "ia3": "IA3",
                "bitfit": "BitFit", "ln_tuning": "LN", "lofit": "LoFiT", "sparse": "sparse"}


def short_description(record: TrialRecord, num_layers: int) -> str:
    """A point in a few characters for a plot label, e.g. "LoRA 8 + PA 24" or "LoRA 2-32 x5L" (sizes, and the
    layer count where a module is not in every layer: once at the end when every module is in the same layers)."""
    modules = {name: _module_sizes(spec)
               for name, spec in ((record.attrs.get(R.POINT) or {}).get("modules") or {}).items()}
    shared = len({tuple(sorted(sizes)) for sizes in modules.values()}) == 1
    parts = []
    for name, sizes in modules.items():
        low, high = (min(sizes.values()), max(sizes.values())) if sizes else (1.0, 1.0)
        text = _SHORT_NAMES.get(name, name)
        if name not in MODULE_TYPES or get_module_type(name).size is not None:
            text += f" {low:g}" if low == high else f" {low:g}-{high:g}"
        if len(sizes) < num_layers and not shared:
            text += f" x{len(sizes)}L"
        parts.append(text)
    layers = len(next(iter(modules.values()))) if modules else num_layers
    return " + ".join(parts) + (f" x{layers}L" if shared and layers < num_layers else "") or "head only"


def trivial_score(results: RunResults) -> float | None:
    """What ignoring the input scores (the majority class), as the trials recorded it; the front stage's first."""
    stages = [results.front_stage, *results.stages] if results.front_stage else list(results.stages)
    for stage in stages:
        for record in results.stages.get(stage, []):
            if record.trivial_metric is not None:
                return float(record.trivial_metric)
    return None


def _plotted(results: RunResults) -> list[TrialRecord]:
    """The trials the Pareto plots draw as points: the distinct finished ones of every rung."""
    return [r for stage, records in results.stages.items() if stage != "final" for r in distinct_complete(records)]


def _log_x_formatters(ax, values: list[float]) -> None:
    """Engineering labels on a log params axis: the decades, and the minor ticks only where the axis spans too few
    decades for the decades alone (all of them under 0.6 decades, 2 and 5 under 2.5), so they never overlap."""
    from matplotlib.ticker import EngFormatter, FuncFormatter, NullFormatter

    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    positive = [v for v in values if v > 0]
    decades = np.log10(max(positive) / min(positive)) if positive else 99.0
    if decades >= 2.5:
        ax.xaxis.set_minor_formatter(NullFormatter())
        return
    engineering = EngFormatter(sep="")

    def minor(value: float, _position) -> str:
        if value <= 0:
            return ""
        mantissa = round(value / 10 ** np.floor(np.log10(value) + 1e-9), 6)
        return engineering(value) if decades < 0.6 or mantissa in (2, 5) else ""

    ax.xaxis.set_minor_formatter(FuncFormatter(minor))


def _label_points(ax, points: list[tuple[float, float]], texts: list[str], x_minimize: bool,
                  y_maximize: bool) -> None:
    """Small labels beside the front's points: each at the first of a few spots around its point (the better corner
    first, where no trial lies, then farther out and the other sides) where it stays inside the axes and overlaps
    neither an earlier label nor a front point; where none is free, at the least bad one."""
    from matplotlib.transforms import Bbox

    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    pixels = ax.transData.transform(points) if points else []
    markers = [Bbox.from_extents(px - 5, py - 5, px + 5, py + 5) for px, py in pixels]
    sx, sy = (-1 if x_minimize else 1), (1 if y_maximize else -1)   # towards the better corner
    spots = [(sx * d, sy * d) for d in (5, 14)] + [(sx * 6, 0), (-sx * 6, sy * 6), (sx * 5, sy * 26),
                                                      (-sx * 6, 0), (-sx * 6, -sy * 8), (sx * 6, -sy * 8),
                                                      (sx * 5, sy * 40), (0, sy * 26), (-sx * 6, sy * 22)]
    placed = []
    for index, ((x, y), text) in enumerate(zip(points, texts)):
        label = ax.annotate(text, (x, y), xytext=spots[0], textcoords="offset points", fontsize=7, color="darkred",
                            zorder=5, bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.75},
                            arrowprops={"arrowstyle": "-", "color": "grey", "lw": 0.5, "shrinkA": 0, "shrinkB": 3})
        obstacles = placed + markers[:index] + markers[index + 1:]
        costs = []
        for spot in spots:
            costs.append(_move_label(label, spot, renderer, frame, obstacles))
            if costs[-1] == 0:
                break
        else:   # no free spot: the least bad one
            _move_label(label, spots[int(np.argmin(costs))], renderer, frame, obstacles)
        placed.append(label.get_window_extent(renderer))


def _move_label(label, spot: tuple[float, float], renderer, frame, obstacles) -> float:
    """Put an annotation at ``spot`` (offset points); how bad it is there (0: inside ``frame``, overlapping none of
    ``obstacles``; leaving the frame costs ten times overlapping)."""
    from matplotlib.transforms import Bbox

    label.xyann = spot
    label.set_horizontalalignment("right" if spot[0] < 0 else "left" if spot[0] > 0 else "center")
    label.set_verticalalignment("bottom" if spot[1] > 0 else "top" if spot[1] < 0 else "center")
    box = label.get_window_extent(renderer)
    outside = _area(box) - _area(Bbox.intersection(box, frame))
    return 10 * outside + sum(_area(Bbox.intersection(box, other)) for other in obstacles)


def _area(box) -> float:
    return 0.0 if box is None else box.width * box.height


def _pareto_png(results: RunResults, path: Path) -> None:
    plt = _pyplot()
    x_obj, y_obj = _axes(results)
    fig, ax = plt.subplots(figsize=(7.5, 5))
    plotted = _plotted(results)
    if x_obj.log_scale:
        positive = all(r.values[x_obj.name] > 0 for r in [*plotted, *results.front])
        ax.set_xscale("log" if positive else "symlog", **({} if positive else {"linthresh": 1}))
        _log_x_formatters(ax, [r.values[x_obj.name] for r in [*plotted, *results.front]])
        ax.tick_params(axis="x", which="both", labelsize=8)
    for stage, records in results.stages.items():
        done = distinct_complete(records)
        if stage != "final" and done:   # faint: most are dominated; the front is drawn over them
            ax.scatter([r.values[x_obj.name] for r in done], [r.values[y_obj.name] for r in done],
                       s=14, alpha=0.4, label=f"{stage} trials")
    front = sorted(results.front, key=lambda r: r.values[x_obj.name])
    points = [(r.values[x_obj.name], r.values[y_obj.name]) for r in front]
    std = [(r.attrs.get(R.VALUES_STD) or {}).get(y_obj.name, 0.0) for r in front]
    ax.errorbar([x for x, _ in points], [y for _, y in points], yerr=std, fmt="o", color="crimson", ms=5,
                capsize=3, zorder=4, label=f"Pareto front ({results.front_stage} trials #)")
    trivial = trivial_score(results)
    if trivial is not None:
        ax.axhline(trivial, ls="--", lw=1, color="dimgrey", label=f"trivial score ({_format(trivial)})")
    ax.margins(x=0.08, y=0.1)
    xlim, ylim = ax.get_xlim(), ax.get_ylim()
    x_edge, y_edge = xlim[0 if x_obj.maximize else 1], ylim[1 if not y_obj.maximize else 0]
    xs, ys = attainment_staircase(points, not x_obj.maximize, y_obj.maximize, x_edge, y_edge)
    ax.plot(xs, ys, color="crimson", lw=1.3, zorder=3, label="front's attainment curve")
    ax.fill_between(xs, ys, y_edge, color="crimson", alpha=0.06, lw=0)
    ax.set_xlim(xlim)
    ax.set_ylim(ylim)
    ax.set_xlabel(f"{x_obj.name} ({x_obj.direction}{', log scale' if x_obj.log_scale else ''})")
    ax.set_ylabel(f"{y_obj.name} ({y_obj.direction})")
    ax.set_title(f"{results.info.study_name}: Pareto front", fontsize=10)
    ax.grid(alpha=0.2, which="major")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)   # the plot keeps its labels
    fig.tight_layout()
    many = len(front) > 12   # the trial numbers alone; summary.md describes each point
    _label_points(ax, points, [f"#{r.number}" + ("" if many else f" {short_description(r, results.info.num_layers)}")
                               for r in front], not x_obj.maximize, y_obj.maximize)
    fig.savefig(path, dpi=120, bbox_inches="tight")
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
            name=f"{stage} trials", opacity=0.4,
            text=[f"{r.label}: {r.attrs.get(R.DESCRIPTION, '')}" for r in done], hoverinfo="text+x+y"))
    front = sorted(results.front, key=lambda r: r.values[x_obj.name])
    points = [(r.values[x_obj.name], r.values[y_obj.name]) for r in front]
    log_x = x_obj.log_scale and all(r.values[x_obj.name] > 0 for r in [*_plotted(results), *front])
    trivial = trivial_score(results)
    xs_all = [r.values[x_obj.name] for r in [*_plotted(results), *front]]
    ys_all = [r.values[y_obj.name] for r in [*_plotted(results), *front]] + ([trivial] if trivial is not None else [])
    x_edge = _beyond(xs_all, not x_obj.maximize, log_x)
    y_edge = _beyond(ys_all, not y_obj.maximize, False)
    xs, ys = attainment_staircase(points, not x_obj.maximize, y_obj.maximize, x_edge, y_edge)
    figure.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="front's attainment curve", hoverinfo="skip",
                                line={"color": "crimson", "width": 1.5}))
    figure.add_trace(go.Scatter(
        x=[x for x, _ in points], y=[y for _, y in points], mode="markers+text", marker={"color": "crimson", "size": 8},
        name=f"Pareto front ({results.front_stage} trials #)",
        error_y={"type": "data", "array": [(r.attrs.get(R.VALUES_STD) or {}).get(y_obj.name, 0.0) for r in front]},
        texttemplate=[f"#{r.number} {short_description(r, results.info.num_layers)}" for r in front],
        textfont={"size": 10, "color": "darkred"},
        textposition=f"{'top' if y_obj.maximize else 'bottom'} {'left' if not x_obj.maximize else 'right'}",
        text=[f"{r.label}: {r.attrs.get(R.DESCRIPTION, '')}" for r in front], hoverinfo="text+x+y"))
    if trivial is not None:
        figure.add_hline(y=trivial, line_dash="dash", line_color="dimgrey", annotation_text="trivial score",
                         annotation_position="bottom right")
    figure.update_layout(title=results.info.study_name, xaxis_title=f"{x_obj.name} ({x_obj.direction})",
                         yaxis_title=f"{y_obj.name} ({y_obj.direction})", xaxis_type="log" if log_x else None)
    figure.write_html(str(path), include_plotlyjs=True, full_html=True)


def _beyond(values: list[float], larger: bool, log: bool) -> float:
    """A little past the largest (``larger``) or smallest of ``values``: where the attainment curve meets the plot's
    edge in the interactive plot, whose axes range over the data."""
    if log:
        low, high = np.log10(min(values)), np.log10(max(values))
        margin = 0.05 * (high - low) or 0.1
        return float(10 ** (high + margin if larger else low - margin))
    low, high = min(values), max(values)
    margin = 0.05 * (high - low) or 0.05 * abs(high) or 0.1
    return high + margin if larger else low - margin


_ORIGIN_STYLE = {"baseline": ("tab:red", "s"), "prior": ("tab:purple", "D"), "quasi-random": ("tab:orange", "^"),
                 "sampler": ("tab:blue", "o"), "random": ("tab:cyan", "P"), "retry": ("tab:grey", "x"),
                 "promoted": ("tab:green", "v"), "final": ("tab:brown", "*")}
_ORIGIN_NAMES = {"baseline": "baselines", "prior": "prior starting points", "quasi-random": "quasi-random (Sobol)",
                 "sampler": "sampler", "random": "random (sampler repeating itself)", "retry": "retries",
                 "promoted": "promoted", "final": "final stage"}


def _hypervolume_png(history: list[tuple[int, float]], markers: dict[str, list[tuple[int, float]]],
                     path: Path, stage: str = "rung-0") -> None:
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4))
    if history:
        ax.step([n + 1 for n, _ in history], [hv for _, hv in history], where="post", color="0.35", lw=1.2,
                zorder=2, label="hypervolume")
    for group, spots in markers.items():
        colour, marker = _ORIGIN_STYLE.get(group, ("black", "."))
        ax.scatter([n for n, _ in spots], [hv for _, hv in spots], color=colour, marker=marker, s=28, zorder=3,
                   label=f"{_ORIGIN_NAMES.get(group, group)} ({len(spots)})")
    ax.set_xlabel(f"{stage} trials so far (marked: each finished, distinct, non-trivial one)")
    ax.set_ylabel("hypervolume\n(objectives scaled to [0, 1], ref. 1.1)", fontsize=9)
    ax.set_title("hypervolume vs trials, by where each trial came from", fontsize=10)
    ax.grid(alpha=0.2)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=7, loc="best", framealpha=0.85)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _heatmap_png(labels: list[str], sizes: np.ndarray, front_size: int, path: Path) -> None:
    """Rows: the modules of the front's points; columns: layers; colour and number: the module's size there."""
    from matplotlib.colors import LogNorm

    plt = _pyplot()
    rows, layers = sizes.shape
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * layers + 4), max(2.6, 0.32 * rows + 1.6)))
    values = sizes[~np.isnan(sizes)]
    positive = values[values > 0]
    low, high = (float(positive.min()), float(positive.max())) if positive.size else (1.0, 1.0)
    norm = LogNorm(low, high) if high > low else LogNorm(low / 2, high * 2)
    colours = plt.get_cmap("viridis").with_extremes(bad="whitesmoke")   # bad: the module is not in that layer
    image = ax.imshow(np.ma.masked_invalid(np.where(sizes > 0, sizes, np.nan)), aspect="auto", cmap=colours,
                      norm=norm, interpolation="nearest")
    bar = fig.colorbar(image, ax=ax, label="module size in the layer (log colour)", pad=0.02)
    distinct = np.unique(positive)
    if distinct.size <= 8:   # the sizes themselves, not 10^x: they are few (size grids are short)
        bar.set_ticks(distinct, labels=[f"{v:g}" for v in distinct])
        bar.minorticks_off()
    ax.set_yticks(range(rows), [_row_label(label) for label in labels], fontsize=7 if rows > 12 else 8)
    middle = np.sqrt(norm.vmin * norm.vmax)
    for (row, column), value in np.ndenumerate(sizes):
        if not np.isnan(value):
            ax.text(column, row, f"{value:.3g}", ha="center", va="center", fontsize=6 if layers > 16 else 7,
                    color="white" if value < middle else "black")
    points = [label.rsplit(" ", 1)[0] for label in labels]
    for row in range(1, rows):   # a line between two points' modules
        if points[row] != points[row - 1]:
            ax.axhline(row - 0.5, color="white", lw=2)
    ax.set_xticks(range(layers))
    ax.tick_params(axis="x", labelsize=7 if layers > 16 else 8)
    ax.set_xlabel("layer (blank: the module is not in that layer)")
    ax.set_title(f"PEFT modules of the {front_size} Pareto point(s): size per layer", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _row_label(label: str) -> str:
    """A heatmap row's label with what its module's size means, e.g. "final#0 lora (rank)"."""
    name = label.rsplit(" ", 1)[-1]
    meaning = get_module_type(name).size if name in MODULE_TYPES else None
    return f"{label} ({meaning})" if meaning else label


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


def _sampler_text(info) -> str:
    """``botorch (auto)``: the sampler that ran, and what was asked for where that differs (run.json keeps both)."""
    requested = str(info.settings.get("sampler"))
    if not info.sampler or info.sampler == requested:
        return requested
    return f"{info.sampler} ({requested})"


_ORIGIN_LABELS = {"baseline": "baselines", "prior": "prior starting points", "quasi-random": "quasi-random (Sobol)",
                  "sampler": "sampler", "random": "random (the sampler repeated itself)",
                  "retry": "retries of interrupted trials", "promoted": "promotions to a higher rung",
                  "final": "final stage (front re-trained)", "other": "other"}


def _origin_lines(results: RunResults) -> list[str]:
    """How many trials each origin gave (trained, and on the front), and a warning when none came from the sampler."""
    counts = R.origin_counts(results.all_records, results.front)
    if not counts:
        return []
    samplers = sorted({r.origin.removeprefix(R.SAMPLER_PREFIX) for r in results.all_records
                       if r.origin.startswith(R.SAMPLER_PREFIX)})
    lines = ["", "## Trials by origin", "", "| origin | trials | trained | on the front |", "|---|---|---|---|"]
    for group, count in counts.items():
        label = _ORIGIN_LABELS[group] + (f": {', '.join(samplers)}" if group == "sampler" and samplers else "")
        # a final-stage trial re-trains a point another origin found: the front counts it there
        on_front = "(counted under its origin)" if group == "final" else count.on_front
        lines.append(f"| {label} | {count.trials} | {count.trained} | {on_front} |")
    if "sampler" not in counts:
        design = sum(c.trials for g, c in counts.items() if g in ("baseline", "prior", "quasi-random"))
        budget = results.info.settings.get("trials")
        lines += ["", f"**Warning:** no trial came from the sampler ({_sampler_text(results.info)}): the initial "
                      f"design ({design} points) used up the budget"
                      + (f" (--trials {budget})" if budget else "")
                      + ". Give more --trials (or --no-baselines, a smaller --quasi-random) to let the sampler propose "
                        "points."]
    return lines


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
              f"- sampler: {_sampler_text(info)}, fidelity rungs: {settings.get('fidelity')}, "
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
        lines.append(f"- final hypervolume ({entry_stage(results)}, non-trivial trials): {history[-1][1]:.4g}")
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
    lines += _origin_lines(results)
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
    stage = entry_stage(results)
    history = hypervolume_history(results.stages.get(stage, []), results.info.objectives)
    rows, sizes = layer_sizes(results.front, results.info.num_layers)

    def write(staging: Path) -> None:
        written = dict.fromkeys(PLOT_FILES, False)
        if results.front:
            _pareto_png(results, staging / "pareto.png")
            _pareto_html(results, staging / "pareto.html")
            written["pareto.png"] = written["pareto.html"] = True
        if history:
            _hypervolume_png(history, origin_markers(results.stages.get(stage, []), history),
                             staging / "hypervolume.png", stage)
            written["hypervolume.png"] = True
        if rows:
            _heatmap_png(rows, sizes, len(results.front), staging / "heatmap.png")
            written["heatmap.png"] = True
        (staging / "summary.md").write_text(summary_markdown(results, history, written))

    return write_dir(out, write), bool(results.front)
