"""Leaderboard figures, saved as PNG and SVG (the qualitative one as PNG) with deterministic bytes.

* ``dice_vs_labels``: Dice against the number of labeled cases, one line per method, band = ±1 std
  over seeds; the fully-supervised and zero-shot bounds as dashed horizontal lines.  Above
  :data:`MAX_CURVES_PER_PANEL` methods the curves are split by family, one panel each.  With a single
  label budget there is no curve to draw: the figure becomes a ranked dot plot (one row per method,
  best on top, mean ± std over seeds with each seed as a dot; the bounds ranked among them).
* ``per_class_dice``: a heat map of Dice per class (columns, grouped by label budget) and method
  (rows: bounds first, then the methods ranked by their mean Dice), the value printed in each cell;
  it reads the same with 3 methods or 30, where grouped bars became a strip of slivers.
* ``spread``: one box per table row (label budget x method) of the per-case Dice averaged over seeds,
  the cases as dots and each seed's mean as a black diamond: case spread and seed spread side by side.
* ``cost``: mean Dice against training cost (log axis) with the Pareto front (no other method both
  cheaper and better).  The cost is the seconds per training step (the training loop's time, its
  validations included, over the iterations; both in every summary) where every run records them:
  unlike wall time it leaves out test evaluation and data preparation and compares runs of different
  iteration counts.  Older runs without it fall back to wall time per run.  The figure names the
  machines the seconds were measured on and whether a run had every core: runs on different machines
  (a CPU, a GPU, two CPU models or torch thread counts; the summaries' ``hardware``) get their own
  marker fill and their own front.
* ``qualitative_<labels>``: :mod:`bench.leaderboard.qualitative`.

Every Dice axis spans exactly [0, 100] % (:data:`figure_style.DICE_LIMITS`), and every method keeps one
colour and marker in all figures of a table (:func:`figure_style.method_styles`).  Figures are drawn on
``matplotlib.figure.Figure`` objects (no pyplot state, no GUI backend) inside an ``rc_context`` with the
seaborn style, a fixed ``svg.hashsalt``, no date and no software version in the file metadata, so
rebuilding from the same runs writes the same bytes.  ``draw_*`` return the figure (tests inspect it),
:func:`make_figures` saves them.
"""
from __future__ import annotations

import re
import textwrap
import warnings
from pathlib import Path
from typing import Callable, Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator, ScalarFormatter

from bench.leaderboard.figure_style import (
    DICE_LIMITS,
    DICE_TICKS,
    MethodStyle,
    dice_axis,
    legend_order,
    method_styles,
    save_figure,
    style,
)
from bench.leaderboard.qualitative import plot_qualitative
from bench.leaderboard.tables import GroupTables, machine

__all__ = ["draw_cost", "draw_dice_vs_labels", "draw_per_class_dice", "draw_spread", "make_figures", "pareto_front",
           "plot_qualitative", "save_figure", "style"]

STRIP_JITTER = 0.16
"""Half-height of the band the per-case dots spread over, in box rows."""
MAX_CURVES_PER_PANEL = 8
"""Above this many methods the curves are split by family (classic / SAM-based), one panel each:
twenty overlapping error bands in one axes hide every line."""
FAMILY_PANELS = (
    ("Classic methods", lambda family: family != "sam"),
    ("SAM-based methods", lambda family: family == "sam"),
)
ROW_SEPARATOR = "  ·  "
"""Between a row's method and its label budget where one axis lists rows of several budgets."""


def make_figures(
    tables: GroupTables, folder: Path, data_roots: Mapping[str, Path] | None = None
) -> tuple[list[Path], list[str]]:
    """All figures of one table; returns the files written and messages about figures left out."""
    paths: list[Path] = []
    messages: list[str] = []
    with matplotlib.rc_context(style()):
        drawers: list[tuple[str, Callable[[GroupTables], Figure | None]]] = [
            ("dice_vs_labels", draw_dice_vs_labels), ("per_class_dice", draw_per_class_dice),
            ("spread", draw_spread), ("cost", draw_cost)]
        for name, draw in drawers:
            figure = draw(tables)
            if figure is not None:
                paths += save_figure(figure, folder / name)
        qualitative, notes = plot_qualitative(tables, folder, data_roots)
        paths += qualitative
        messages += notes
    return paths, messages


def table_styles(tables: GroupTables) -> dict[str, MethodStyle]:
    """Colour and marker of every row name of the table, from the families its runs recorded."""
    families = {str(method): str(family) if isinstance(family, str) else ""
                for method, family in zip(tables.runs["method"], tables.runs["family"])}
    return method_styles(families)


def _trained_texts(tables: GroupTables) -> list[str]:
    return [setting.text for setting in tables.settings if setting.rank == 2]


def _legend_outside(figure: Figure, handles, labels, title: str = "Method") -> None:
    figure.legend(handles, labels, title=title, loc="outside right center")


# -- Dice vs labeled cases ------------------------------------------------------------------------

def draw_dice_vs_labels(tables: GroupTables) -> Figure:
    """Curves over the label budgets; with one label budget (or none), a ranked dot plot."""
    with matplotlib.rc_context(style()):
        if len(_trained_texts(tables)) <= 1:
            return _ranked_dots(tables)
        return _curves(tables)


def _curves(tables: GroupTables) -> Figure:
    styles = table_styles(tables)
    trained = set(_trained_texts(tables))
    summary = tables.summary
    curves = summary[summary["labels"].isin(trained)]
    bounds = summary[~summary["labels"].isin(trained)]
    panels = [("", curves)]
    if curves["method"].nunique() > MAX_CURVES_PER_PANEL:
        families = curves["method"].map(lambda name: styles[name].family)
        panels = [(title, curves[families.map(keep)]) for title, keep in FAMILY_PANELS]
        panels = [(title, panel) for title, panel in panels if not panel.empty]
    figure = Figure(figsize=(3.4 + 4.2 * len(panels), 4.2), layout="constrained")
    grid = figure.subplots(1, len(panels), sharey=True, squeeze=False).flat
    handles: dict[str, object] = {}
    counts = sorted(curves["num_labeled_cases"].unique())
    for axes, (title, panel) in zip(grid, panels):
        for method in legend_order(styles, list(panel["method"])):
            rows = panel[panel["method"] == method].sort_values("num_labeled_cases")
            x = rows["num_labeled_cases"].to_numpy(dtype=float)
            mean = rows["dice_mean"].to_numpy(dtype=float) * 100.0
            std = np.nan_to_num(rows["dice_std"].to_numpy(dtype=float) * 100.0)
            look = styles[method]
            axes.fill_between(x, mean - std, mean + std, color=look.colour, alpha=0.12, linewidth=0)
            handles[method] = axes.plot(x, mean, marker=look.marker, color=look.colour, markersize=6.5,
                                        linewidth=1.6, markeredgecolor="white", markeredgewidth=0.6)[0]
        for _, bound in bounds.iterrows():
            label = f"{bound['method']} ({bound['labels']})"
            handles[label] = axes.axhline(bound["dice_mean"] * 100.0, linestyle="--", linewidth=1.2,
                                          color=styles[bound["method"]].colour)
        if counts and counts[0] > 0 and counts[-1] / counts[0] >= 8:
            axes.set_xscale("log")
        axes.xaxis.set_major_locator(FixedLocator(counts))
        axes.xaxis.set_minor_locator(NullLocator())
        axes.xaxis.set_major_formatter(ScalarFormatter())
        dice_axis(axes)
        axes.set_xlabel(f"Labeled cases (of {tables.settings[-1].num_train})")
        axes.set_ylabel("Dice (%)")
        if title:
            axes.set_title(title)
    curve_names = legend_order(styles, list(curves["method"]))
    bound_names = [name for name in handles if name not in curve_names]
    names = curve_names + bound_names
    figure.suptitle(f"{tables.key.dataset}: Dice vs labeled cases (mean ± std over seeds)", fontweight="bold")
    _legend_outside(figure, [handles[name] for name in names], names)
    return figure


def _ranked_dots(tables: GroupTables) -> Figure:
    """One row per table row, best on top: the mean (marker) ± std over seeds (bar), each seed a dot.
    Bounds (fully supervised, zero-shot) are ranked among the methods, with open markers and their
    label budget in the row name."""
    styles = table_styles(tables)
    trained = set(_trained_texts(tables))
    summary = tables.summary.sort_values(["dice_mean", "method"], ascending=[False, True], na_position="last")
    rows = list(summary.itertuples(index=False))
    names = [row.method if row.labels in trained else f"{row.method}{ROW_SEPARATOR}{row.labels}" for row in rows]
    figure = Figure(figsize=(7.2, 0.3 * len(rows) + 1.5), layout="constrained")
    axes = figure.subplots()
    for position, row in enumerate(rows):
        look = styles[row.method]
        seeds = tables.runs[(tables.runs["labels"] == row.labels) & (tables.runs["method"] == row.method)]
        axes.scatter(seeds["dice"] * 100.0, [position] * len(seeds), marker="o", s=14, color=look.colour,
                     alpha=0.45, linewidth=0, zorder=2)
        if not np.isfinite(row.dice_mean):
            continue
        std = row.dice_std * 100.0 if np.isfinite(row.dice_std) else None
        container = axes.errorbar(row.dice_mean * 100.0, position, xerr=std, fmt=look.marker, color=look.colour,
                                  markersize=7.5, capsize=0, linewidth=1.3, zorder=3,
                                  markerfacecolor=look.colour if row.labels in trained else "white")
        container.lines[0].set_clip_on(False)  # a mean at 0 or 100 % stays whole on the frame
    axes.set_yticks(range(len(rows)), names)
    axes.set_ylim(len(rows) - 0.5, -0.5)
    axes.yaxis.grid(False)
    dice_axis(axes, "x")
    axes.set_xlabel("Dice (%)")
    budget = next(iter(trained), None)
    where = f"#Lab {budget}" if budget else "no trained label budget"
    axes.set_title(f"{tables.key.dataset}, {where}: methods ranked by Dice\n"
                   "(marker: mean over seeds, bar: ± std, dots: each seed; open marker: a bound)", loc="left")
    return figure


# -- per-class Dice -------------------------------------------------------------------------------

def _row_order(tables: GroupTables) -> list[str]:
    """Bounds first (in the tables' order), then the methods ranked by their Dice averaged over the
    label budgets they ran at."""
    summary = tables.summary
    trained = set(_trained_texts(tables))
    bounds = list(dict.fromkeys(summary.loc[~summary["labels"].isin(trained), "method"]))
    means = summary[summary["labels"].isin(trained)].groupby("method", sort=True)["dice_mean"].mean()
    ranked = sorted(means.index, key=lambda name: (-means[name] if np.isfinite(means[name]) else np.inf, name))
    return bounds + [name for name in ranked if name not in bounds]


def draw_per_class_dice(tables: GroupTables) -> Figure | None:
    if not tables.class_names:
        return None
    with matplotlib.rc_context(style()):
        settings = tables.settings
        classes = list(tables.class_names)
        rows = _row_order(tables)
        columns = [(setting.text, name) for setting in settings for name in classes]
        indexed = tables.summary.set_index(["labels", "method"])
        values = np.full((len(rows), len(columns)), np.nan)
        for r, method in enumerate(rows):
            for c, (labels, name) in enumerate(columns):
                if (labels, method) in indexed.index:
                    values[r, c] = float(indexed.loc[(labels, method), f"dice_{name}_mean"]) * 100.0
        figure = Figure(figsize=(3.2 + 0.5 * len(columns), 1.6 + 0.27 * len(rows)), layout="constrained")
        axes = figure.subplots()
        colours = matplotlib.colormaps["viridis"].with_extremes(bad="0.95")
        image = axes.imshow(np.ma.masked_invalid(values), cmap=colours, vmin=DICE_LIMITS[0], vmax=DICE_LIMITS[1],
                            aspect="auto", interpolation="nearest")
        for (r, c), value in np.ndenumerate(values):
            if np.isfinite(value):
                axes.text(c, r, f"{value:.1f}", ha="center", va="center", fontsize=6.5,
                          color="white" if value < 60 else "black")
        rotate = max(len(name) for name in classes) > 5
        axes.set_xticks(range(len(columns)), [name for _, name in columns], rotation=90 if rotate else 0, fontsize=7)
        axes.set_yticks(range(len(rows)), rows, fontsize=7.5)
        axes.tick_params(length=0)
        axes.grid(False)
        for boundary in range(len(classes), len(columns), len(classes)):
            axes.axvline(boundary - 0.5, color="white", linewidth=3)
        top = axes.secondary_xaxis("top")
        top.set_xticks([index * len(classes) + (len(classes) - 1) / 2 for index in range(len(settings))],
                       [f"#Lab {setting.text}" for setting in settings], fontsize=7.5)
        top.tick_params(length=0)
        colourbar = figure.colorbar(image, ax=axes, shrink=min(1.0, 4.0 / (1.6 + 0.27 * len(rows))), pad=0.02)
        colourbar.set_label("Dice (%)")
        colourbar.set_ticks(DICE_TICKS)
        axes.set_title(f"{tables.key.dataset}: Dice per class (%, mean over seeds; ± std in leaderboard.md)",
                       loc="left")
        return figure


# -- spread ---------------------------------------------------------------------------------------

def draw_spread(tables: GroupTables) -> Figure:
    """One panel, one box per table row (label budget x method), rows grouped as in the table."""
    with matplotlib.rc_context(style()):
        summary = tables.summary
        settings = {s.text: s for s in tables.settings}
        palette = {name: look.colour for name, look in table_styles(tables).items()}
        row_names = [f"{method}{ROW_SEPARATOR}{labels}" for labels, method in zip(summary["labels"], summary["method"])]
        cases = pd.concat([
            pd.DataFrame({"row": name, "method": method,
                          "dice": tables.case_dice[(settings[labels], method)].to_numpy() * 100.0})
            for name, labels, method in zip(row_names, summary["labels"], summary["method"])
        ], ignore_index=True)
        figure = Figure(figsize=(7.2, 0.34 * len(row_names) + 1.3), layout="constrained")
        axes = figure.subplots()
        with warnings.catch_warnings():
            # seaborn 0.13 still passes matplotlib's deprecated ``vert`` to ``bxp``; nothing to act on here.
            warnings.simplefilter("ignore", matplotlib.MatplotlibDeprecationWarning)
            sns.boxplot(data=cases, x="dice", y="row", order=row_names, hue="method", palette=palette, legend=False,
                        showfliers=False, width=0.62, boxprops={"alpha": 0.6}, dodge=False, ax=axes)
        # Dots jittered by a seeded generator (seaborn's stripplot draws from numpy's global one).
        jitter = np.random.default_rng(0).uniform(-STRIP_JITTER, STRIP_JITTER, len(cases))
        axes.scatter(cases["dice"], cases["row"].map({name: index for index, name in enumerate(row_names)}) + jitter,
                     s=5, color="0.3", alpha=0.55, linewidth=0, zorder=4)
        positions = {row: index for index, row in enumerate(zip(summary["labels"], summary["method"]))}
        seed_rows = [positions[(labels, method)] for labels, method in zip(tables.runs["labels"], tables.runs["method"])]
        axes.scatter(tables.runs["dice"] * 100.0, seed_rows, marker="D", s=22, color="black", edgecolor="white",
                     linewidth=0.6, zorder=5)
        labels = list(summary["labels"])
        for boundary in [index for index in range(1, len(labels)) if labels[index] != labels[index - 1]]:
            axes.axhline(boundary - 0.5, color="0.55", linewidth=0.8)
        axes.set_ylim(len(row_names) - 0.5, -0.5)
        dice_axis(axes, "x")
        axes.set_xlabel("Dice (%)")
        axes.set_ylabel("")
        axes.set_title(f"{tables.key.dataset}: per-case Dice\n"
                       f"(box and dots: cases averaged over seeds; ◆ = one seed's mean)", loc="left")
        return figure


# -- cost -----------------------------------------------------------------------------------------

def pareto_front(costs: Sequence[float], scores: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats on both (lower cost, higher score), by cost."""
    order = sorted(range(len(costs)), key=lambda i: (costs[i], -scores[i]))
    front, best = [], -np.inf
    for index in order:
        if scores[index] > best:
            front.append(index)
            best = scores[index]
    return front


def _log_axis(axes, values: Sequence[float]) -> None:
    """Log x axis with a few plain-number ticks (1, 2, 5 x 10^k) instead of crowded powers."""
    axes.set_xscale("log")
    low, high = min(values), max(values)
    axes.set_xlim(low / 1.6, high * 1.6)
    ticks = [m * 10.0 ** k for k in range(int(np.floor(np.log10(low / 1.6))), int(np.ceil(np.log10(high * 1.6))) + 1)
             for m in (1, 2, 5) if low / 1.6 <= m * 10.0 ** k <= high * 1.6]
    axes.xaxis.set_major_locator(FixedLocator(ticks))
    axes.xaxis.set_minor_locator(NullLocator())
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))


def _time_unit(seconds: float) -> tuple[float, str]:
    if seconds >= 2 * 3600:
        return 3600.0, "h"
    if seconds >= 120:
        return 60.0, "min"
    return 1.0, "s"


MACHINE_FILLS = ("full", "none", "left", "bottom", "right")
MACHINE_FRONT_STYLES = ("--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 3)))
CPU_HARDWARE = re.compile(r"^(?P<model>.+), (?P<cores>\d+) cores, (?P<threads>\d+) torch threads x (?P<processes>\d+) "
                          r"process")
"""``execute.hardware_description`` on a CPU."""


def machine_text(hardware: str) -> tuple[str, bool | None]:
    """A machine as a reader wants it named, and whether a run on it had fewer torch threads than the
    machine has cores (``None``: not a CPU description).  ``bench run --jobs N`` gives each of N
    concurrent runs cores/N threads, so fewer threads than cores means the cores were likely shared."""
    match = CPU_HARDWARE.match(hardware)
    if match is None:
        return hardware, None
    threads, processes, cores = int(match["threads"]), int(match["processes"]), int(match["cores"])
    text = (f"{match['model']}, {cores} cores, {threads} torch thread{'s' if threads != 1 else ''}"
            + (f" x {processes} processes" if processes != 1 else "") + " per run")
    return text, threads * processes < cores


def step_seconds(tables: GroupTables) -> dict[tuple[str, str], float]:
    """(labels, row) -> seconds per training step, mean over the seeds that record it: each run's
    training-loop seconds over its iterations (``summary.json``); NaN where no seed does or the seeds
    ran on different machines (the rules of the table's wall time)."""
    iterations = {record.path: (record.summary.get("budget") or {}).get("iterations") for record in tables.records}
    machines = {record.path: machine(record.summary) for record in tables.records}
    runs = tables.runs.assign(
        per_step=tables.runs["train_seconds"] / pd.to_numeric(tables.runs["run"].map(iterations), errors="coerce"),
        machine=tables.runs["run"].map(machines))
    result = {}
    for (labels, method), group in runs.groupby(["labels", "method"], sort=False):
        values = group["per_step"].to_numpy(dtype=float)
        values = values[np.isfinite(values) & (values > 0)]
        usable = values.size > 0 and group["machine"].nunique() == 1
        result[(labels, method)] = float(np.mean(values)) if usable else float("nan")
    return result


def draw_cost(tables: GroupTables) -> Figure | None:
    with matplotlib.rc_context(style()):
        return _cost(tables)


def _cost(tables: GroupTables) -> Figure | None:
    trained = _trained_texts(tables) or [setting.text for setting in tables.settings]
    summary = tables.summary[tables.summary["labels"].isin(set(trained))].copy()
    per_step = step_seconds(tables)
    summary["step_seconds"] = [per_step.get((labels, method), float("nan"))
                               for labels, method in zip(summary["labels"], summary["method"])]
    walled = np.isfinite(summary["wall_seconds_mean"]) & (summary["wall_seconds_mean"] > 0)
    stepped = np.isfinite(summary["step_seconds"])
    by_step = bool(stepped.any()) and bool((stepped | ~walled).all())
    column = "step_seconds" if by_step else "wall_seconds_mean"
    timed = stepped if by_step else walled
    missing = summary.loc[~timed]
    untimed = [f"{method} ({labels})" for method, labels in zip(missing["method"], missing["labels"])]
    summary = summary[timed]
    if summary.empty:
        return None
    styles = table_styles(tables)
    machines = sorted(set(summary["hardware"]))
    fill = {name: MACHINE_FILLS[i % len(MACHINE_FILLS)] for i, name in enumerate(machines)}
    front_style = {name: MACHINE_FRONT_STYLES[i % len(MACHINE_FRONT_STYLES)] for i, name in enumerate(machines)}
    divisor, unit = (1.0, "s") if by_step else _time_unit(float(summary[column].max()))
    panels = [text for text in trained if text in set(summary["labels"])]
    columns = min(3, len(panels))
    figure = Figure(figsize=(4.6 * columns + 2.6, 3.6 * (-(-len(panels) // 3)) + 0.9), layout="constrained")
    grid = figure.subplots(-(-len(panels) // columns), columns, squeeze=False)
    for axes in grid.flat[len(panels):]:
        axes.set_visible(False)
    handles: dict[str, object] = {}
    for axes, labels in zip(grid.flat, panels):
        panel = summary[summary["labels"] == labels].sort_values("method")
        costs = list(panel[column] / divisor)
        scores = list(panel["dice_mean"] * 100.0)
        for name in machines:
            members = [i for i, row_machine in enumerate(panel["hardware"]) if row_machine == name]
            if not members:
                continue
            front = [members[i] for i in pareto_front([costs[i] for i in members], [scores[i] for i in members])]
            # Open rings mark the front's points, so a front of one point (one method both cheapest and
            # best) is visible too.
            axes.plot([costs[i] for i in front], [scores[i] for i in front], drawstyle="steps-post", color="0.4",
                      linewidth=1.2, linestyle=front_style[name], marker="o", markersize=14, markerfacecolor="none",
                      markeredgewidth=1.1, zorder=1)
        for (_, row), cost, score in zip(panel.iterrows(), costs, scores):
            look = styles[row["method"]]
            std = row["dice_std"] * 100.0 if np.isfinite(row["dice_std"]) else 0.0
            container = axes.errorbar(cost, score, yerr=std, fmt=look.marker, markersize=7, color=look.colour,
                                      fillstyle=fill[row["hardware"]], markeredgewidth=1.3, capsize=3, zorder=3)
            container.lines[0].set_clip_on(False)
            handles.setdefault(row["method"], Line2D([], [], linestyle="", marker=look.marker, color=look.colour,
                                                     markersize=7))
        _log_axis(axes, costs)
        dice_axis(axes)
        axes.set_xlabel("Seconds per training step (log scale)" if by_step else f"Wall time per run ({unit}, log scale)")
        axes.set_ylabel("Dice (%)")
        axes.set_title(f"#Lab {labels}")
    names = legend_order(styles, list(handles))
    entries = [handles[name] for name in names]
    labels_out = list(names)
    for name in machines:
        text, _ = machine_text(name)
        entries.append(Line2D([], [], color="0.35", linestyle=front_style[name], marker="o", markersize=7,
                              fillstyle=fill[name]))
        labels_out.append("Pareto front" if len(machines) == 1 else textwrap.fill(text, 40))
    _legend_outside(figure, entries, labels_out)
    figure.suptitle(f"{tables.key.dataset}: accuracy vs training cost (mean ± std over seeds)")
    figure.supxlabel(cost_caption(machines, by_step, untimed, 4.6 * columns + 2.6), fontsize="small", color="0.3")
    return figure


def cost_caption(machines: Sequence[str], by_step: bool, untimed: Sequence[str], width_inches: float) -> str:
    """What the time axis measured, on which machines, and what makes it approximate."""
    if by_step:
        measure = ("Cost: seconds per training step = each run's training-loop time (validations included) / its "
                   "iterations, from summary.json; test evaluation and data preparation are left out.")
    else:
        measure = ("Cost: wall time per run (training, validations and test evaluation); not every run records its "
                   "training time per step.")
    described = [machine_text(name) for name in machines]
    measured = "Measured on " + "; ".join(text for text, _ in described) + "."
    shared = [text for text, fewer in described if fewer]
    if shared:
        sharing = ("Fewer torch threads than cores: other runs (bench run --jobs) may have shared those cores, so "
                   "these times compare only roughly.")
    elif all(fewer is False for _, fewer in described):
        sharing = "Each run had every core; other processes on the machine are not recorded."
    else:
        sharing = ""
    lines = [measure, measured] + ([sharing] if sharing else [])
    if len(machines) > 1:
        lines.append("Each machine has its own marker fill and Pareto front: seconds of different machines "
                     "are not compared.")
    if untimed:
        lines.append(f"Not shown, no complete time on one machine: {', '.join(untimed)}.")
    width = max(60, int(width_inches * 72 / (7.5 * 0.55)))
    return "\n".join(textwrap.fill(line, width) for line in lines)
