"""Leaderboard figures (seaborn), saved as PNG and SVG (the qualitative one as PNG) with deterministic bytes.

* ``dice_vs_labels``: Dice against the number of labeled cases, one line per method, band = ±1 std
  over seeds; the fully-supervised and zero-shot bounds as dashed horizontal lines.
* ``per_class_dice``: Dice per class and method, one panel per label budget, bars = mean over seeds,
  whiskers = ±1 std over seeds.
* ``spread``: one box per table row (label budget x method) of the per-case Dice averaged over seeds,
  the cases as dots and each seed's mean as a black diamond: case spread and seed spread side by side.
* ``cost``: mean Dice against mean wall time per run (log axis), with the Pareto front (no other
  method both cheaper and better).  Runs on different machines (a CPU, a GPU, two CPU models or torch
  thread counts; the summaries' ``hardware``) get their own marker and their own front: their seconds
  measure different machines, not different methods.
* ``qualitative_<labels>`` (PNG only: its panels are raster images): the same test slices for every
  method: the image, the ground truth and each method's prediction as coloured overlays.  It needs
  each run's ``predictions.npz`` and the dataset's test cases; without them it is skipped with a
  message.  Slices: the cases at the 10th, 50th and 90th percentile of per-case Dice averaged over
  the methods (hard, typical, easy), each at its slice with the most ground-truth foreground;
  predictions come from each method's lowest seed.

Figures are drawn on ``matplotlib.figure.Figure`` objects (no pyplot state, no GUI backend) inside an
``rc_context`` with the seaborn style, a fixed ``svg.hashsalt``, no date and no software version in the
file metadata, so rebuilding from the same runs writes the same bytes.
"""
from __future__ import annotations

import os
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Callable, Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator, ScalarFormatter

from bench.leaderboard.collect import RunRecord, Setting
from bench.leaderboard.tables import GroupTables
from bench.runs import PREDICTIONS_FILE

FIGURE_FORMATS = ("png", "svg")
PNG_DPI = 200
SAVE_METADATA = {"png": {"Software": None}, "svg": {"Date": None, "Creator": None}}
QUALITATIVE_QUANTILES = (0.1, 0.5, 0.9)
OVERLAY_ALPHA = 0.5
STRIP_JITTER = 0.16
"""Half-height of the band the per-case dots spread over, in box rows."""
IMAGE_PERCENTILES = (1, 99)
"""Display window of the grey image, robust to a few bright voxels."""


def style() -> dict:
    rc = dict(sns.axes_style("whitegrid"))
    rc.update(sns.plotting_context("paper", font_scale=1.0))
    rc.update({"svg.hashsalt": "bench-leaderboard", "svg.fonttype": "path", "font.family": "DejaVu Sans",
               "axes.titleweight": "bold", "legend.frameon": False})
    return rc


def save_figure(figure: Figure, stem: Path, formats: Sequence[str] = FIGURE_FORMATS) -> list[Path]:
    """Each file is drawn beside its target and renamed, so an interrupted rebuild never leaves a
    truncated figure next to tables that claim it is current."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as stream:
                figure.savefig(stream, format=fmt, dpi=PNG_DPI, metadata=SAVE_METADATA[fmt], bbox_inches="tight")
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        paths.append(path)
    return paths


def method_palette(methods: Sequence[str]) -> dict[str, tuple]:
    """One colour per method, the same in every figure of a table (sorted names -> colorblind palette)."""
    names = sorted(set(methods))
    colours = sns.color_palette("colorblind", len(names)) if len(names) <= 10 else sns.color_palette("husl", len(names))
    return dict(zip(names, colours))


def make_figures(
    tables: GroupTables, folder: Path, data_roots: Mapping[str, Path] | None = None
) -> tuple[list[Path], list[str]]:
    """All figures of one table; returns the files written and messages about figures left out."""
    paths: list[Path] = []
    messages: list[str] = []
    with matplotlib.rc_context(style()):
        plotters: list[Callable[[GroupTables, Path], list[Path]]] = [
            plot_dice_vs_labels, plot_per_class_dice, plot_spread, plot_cost]
        for plotter in plotters:
            paths += plotter(tables, folder)
        qualitative, notes = plot_qualitative(tables, folder, data_roots)
        paths += qualitative
        messages += notes
    return paths, messages


def _trained_settings(tables: GroupTables) -> list[Setting]:
    trained = [s for s in tables.settings if s.rank == 2]
    return trained or tables.settings


def _percent(series: pd.Series) -> pd.Series:
    return series * 100.0


def _move_legend_entries(axes, handles: list, labels: list) -> None:
    """Collect a panel's legend entries (once each) for one legend outside the panels."""
    for handle, label in zip(*axes.get_legend_handles_labels()):
        if label not in labels:
            handles.append(handle)
            labels.append(label)
    if axes.get_legend() is not None:
        axes.get_legend().remove()


def _legend_outside(figure: Figure, handles, labels, title: str = "Method") -> None:
    figure.legend(handles, labels, title=title, loc="outside right center")


MAX_CURVES_PER_PANEL = 8
"""Above this many methods the curves are split by family (classic / SAM-based), one panel each:
twenty overlapping error bands in one axes hide every line."""
FAMILY_PANELS = (
    ("Classic methods", lambda family: family != "sam"),
    ("SAM-based methods", lambda family: family == "sam"),
)


def plot_dice_vs_labels(tables: GroupTables, folder: Path) -> list[Path]:
    runs = tables.runs.assign(dice_percent=_percent(tables.runs["dice"]))
    trained_texts = {s.text for s in tables.settings if s.rank == 2}
    curves = runs[runs["labels"].isin(trained_texts)]
    bounds = tables.summary[~tables.summary["labels"].isin(trained_texts)]
    palette = method_palette(tables.summary["method"])
    panels = [("", curves)]
    if curves["method"].nunique() > MAX_CURVES_PER_PANEL:
        families = curves["family"].fillna("")
        panels = [(title, curves[families.map(keep)]) for title, keep in FAMILY_PANELS]
        panels = [(title, panel) for title, panel in panels if not panel.empty]
    figure = Figure(figsize=(3.4 + 4.2 * len(panels), 4.2), layout="constrained")
    grid = figure.subplots(1, len(panels), sharey=True, squeeze=False).flat
    handles, labels = [], []
    for axes, (title, panel) in zip(grid, panels):
        if not panel.empty:
            order = sorted(panel["method"].unique())
            sns.lineplot(data=panel, x="num_labeled_cases", y="dice_percent", hue="method", hue_order=order,
                         style="method", style_order=order, markers=True, dashes=False, palette=palette,
                         errorbar="sd", err_kws={"alpha": 0.12}, markersize=7, linewidth=1.6, ax=axes, legend=True)
            counts = sorted(panel["num_labeled_cases"].unique())
            if counts[0] > 0 and counts[-1] / counts[0] >= 8:
                axes.set_xscale("log")
            axes.xaxis.set_major_locator(FixedLocator(counts))
            axes.xaxis.set_minor_locator(NullLocator())
            axes.xaxis.set_major_formatter(ScalarFormatter())
        for _, bound in bounds.iterrows():
            axes.axhline(bound["dice_mean"] * 100.0, linestyle="--", linewidth=1.2, color=palette[bound["method"]],
                         label=f"{bound['method']} ({bound['labels']})")
        axes.set_xlabel(f"Labeled cases (of {tables.settings[-1].num_train})")
        axes.set_ylabel("Dice (%)")
        if title:
            axes.set_title(title)
        _move_legend_entries(axes, handles, labels)
    figure.suptitle(f"{tables.key.dataset}: Dice vs labeled cases (mean ± std over seeds)", fontweight="bold")
    _legend_outside(figure, handles, labels)
    return save_figure(figure, folder / "dice_vs_labels")


def _panel_grid(figure: Figure, count: int, columns: int = 3):
    columns = min(columns, count)
    rows = -(-count // columns)
    grid = figure.subplots(rows, columns, squeeze=False)
    for axes in grid.flat[count:]:
        axes.set_visible(False)
    return grid.flat[:count]


def plot_per_class_dice(tables: GroupTables, folder: Path) -> list[Path]:
    if not tables.class_names:
        return []
    settings = tables.settings
    columns = [f"dice_{name}" for name in tables.class_names]
    long = tables.runs[["labels", "method", "seed", *columns]].melt(
        id_vars=["labels", "method", "seed"], value_vars=columns, var_name="class", value_name="class_dice")
    long["class"] = long["class"].str.slice(len("dice_"))
    long["class_dice"] = _percent(long["class_dice"])
    palette = method_palette(tables.summary["method"])
    width = 1.2 + 0.45 * len(tables.class_names) * max(1, tables.summary.groupby("labels").size().max()) / 2
    figure = Figure(figsize=(min(16, max(4.0, width) * min(3, len(settings))), 3.4 * (-(-len(settings) // 3))),
                    layout="constrained")
    handles, labels = [], []
    for axes, setting in zip(_panel_grid(figure, len(settings)), settings):
        panel = long[long["labels"] == setting.text]
        order = sorted(panel["method"].unique())
        sns.barplot(data=panel, x="class", y="class_dice", hue="method", hue_order=order, palette=palette,
                    order=list(tables.class_names), errorbar="sd", capsize=0.15, err_kws={"linewidth": 1.0},
                    ax=axes)
        axes.set_title(f"#Lab {setting.text}")
        axes.set_xlabel("")
        axes.set_ylabel("Dice (%)")
        axes.set_ylim(0, 105)
        axes.yaxis.set_major_locator(FixedLocator([0, 20, 40, 60, 80, 100]))
        _move_legend_entries(axes, handles, labels)
    _legend_outside(figure, handles, labels)
    return save_figure(figure, folder / "per_class_dice")


def plot_spread(tables: GroupTables, folder: Path) -> list[Path]:
    """One panel, one box per table row (label budget x method), rows grouped as in the table."""
    summary = tables.summary
    settings = {s.text: s for s in tables.settings}
    palette = method_palette(summary["method"])
    row_names = [f"{method}  ·  {labels}" for labels, method in zip(summary["labels"], summary["method"])]
    cases = pd.concat([
        pd.DataFrame({"row": name, "method": method,
                      "dice": _percent(tables.case_dice[(settings[labels], method)]).to_numpy()})
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
    axes.scatter(_percent(tables.runs["dice"]), seed_rows, marker="D", s=22, color="black", edgecolor="white",
                 linewidth=0.6, zorder=5)
    labels = list(summary["labels"])
    boundaries = [index for index in range(1, len(labels)) if labels[index] != labels[index - 1]]
    for boundary in boundaries:
        axes.axhline(boundary - 0.5, color="0.55", linewidth=0.8)
    axes.set_xlabel("Dice (%)")
    axes.set_ylabel("")
    axes.set_title(f"{tables.key.dataset}: per-case Dice\n"
                   f"(box and dots: cases averaged over seeds; ◆ = one seed's mean)", loc="left")
    return save_figure(figure, folder / "spread")


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


MACHINE_MARKERS = ("o", "s", "^", "D", "v")
MACHINE_FRONT_STYLES = ("--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 3)))


def plot_cost(tables: GroupTables, folder: Path) -> list[Path]:
    settings = _trained_settings(tables)
    summary = tables.summary[tables.summary["labels"].isin({s.text for s in settings})]
    timed = np.isfinite(summary["wall_seconds_mean"]) & (summary["wall_seconds_mean"] > 0)
    missing = summary.loc[~timed]
    untimed = [f"{method} ({labels})" for method, labels in zip(missing["method"], missing["labels"])]
    summary = summary[timed]
    if summary.empty:
        return []
    palette = method_palette(tables.summary["method"])
    machines = sorted(set(summary["hardware"]))
    marker = {machine: MACHINE_MARKERS[i % len(MACHINE_MARKERS)] for i, machine in enumerate(machines)}
    front_style = {machine: MACHINE_FRONT_STYLES[i % len(MACHINE_FRONT_STYLES)] for i, machine in enumerate(machines)}
    divisor, unit = _time_unit(float(summary["wall_seconds_mean"].max()))
    figure = Figure(figsize=(min(16, 4.8 * min(3, len(settings))) + 1.6, 3.6 * (-(-len(settings) // 3))),
                    layout="constrained")
    handles: dict[str, object] = {}
    fronts: dict[str, object] = {}
    for axes, setting in zip(_panel_grid(figure, len(settings)), settings):
        panel = summary[summary["labels"] == setting.text].sort_values("method")
        costs = list(panel["wall_seconds_mean"] / divisor)
        scores = list(panel["dice_mean"] * 100.0)
        for machine in machines:
            members = [i for i, row_machine in enumerate(panel["hardware"]) if row_machine == machine]
            if not members:
                continue
            front = [members[i] for i in pareto_front([costs[i] for i in members], [scores[i] for i in members])]
            # Open rings mark the front's points, so a front of one point (one method both cheapest and
            # best) is visible too.
            fronts[machine] = axes.plot(
                [costs[i] for i in front], [scores[i] for i in front], drawstyle="steps-post", color="0.4",
                linewidth=1.2, linestyle=front_style[machine], marker=marker[machine], markersize=13,
                markerfacecolor="none", markeredgewidth=1.2, zorder=1)[0]
        for (_, row), cost, score in zip(panel.iterrows(), costs, scores):
            std = row["dice_std"] * 100.0 if np.isfinite(row["dice_std"]) else 0.0
            container = axes.errorbar(cost, score, yerr=std, fmt=marker[row["hardware"]], markersize=7,
                                      color=palette[row["method"]], capsize=3, zorder=3)
            handles.setdefault(row["method"], container)
        _log_axis(axes, costs)
        axes.set_xlabel(f"Wall time per run ({unit}, log scale)")
        axes.set_ylabel("Dice (%)")
        axes.set_title(f"#Lab {setting.text}")
    ordered = sorted(handles)
    labels = ordered + [f"Pareto front{f' ({machine})' if len(machines) > 1 else ''}" for machine in fronts]
    _legend_outside(figure, [handles[name] for name in ordered] + list(fronts.values()), labels)
    figure.suptitle(f"{tables.key.dataset}: accuracy vs training cost (mean ± std over seeds)")
    if untimed:
        figure.supxlabel(f"Not shown, no complete wall time on one machine: {', '.join(untimed)}",
                         fontsize="small", color="0.3")
    return save_figure(figure, folder / "cost")


# -- qualitative -----------------------------------------------------------------------------------

def dataset_folder(summary: dict, data_roots: Mapping[str, Path] | None) -> Path | None:
    """Where the run's dataset lies now: the folder given for it, else the one the run recorded if it
    still exists, else ``$BENCH_DATA_ROOT/<dataset>`` (the ``bench run`` default); ``None`` for
    generated datasets."""
    name = str(summary["dataset"])
    if data_roots and name in data_roots:
        return Path(data_roots[name])
    recorded = (summary.get("dataset_protocol") or {}).get("data_root")
    if recorded and Path(recorded).exists():
        return Path(recorded)
    if os.environ.get("BENCH_DATA_ROOT") and (Path(os.environ["BENCH_DATA_ROOT"]) / name).exists():
        return Path(os.environ["BENCH_DATA_ROOT"]) / name
    return Path(recorded) if recorded else None


def load_test_cases(record: RunRecord, case_ids: Sequence[str], data_roots: Mapping[str, Path] | None,
                    adapters: dict) -> dict:
    """The named test cases of the run's dataset, rebuilt from what the summary recorded
    (``adapters`` keeps one adapter per dataset configuration across the label budgets)."""
    from bench.registry import DATASETS

    summary = record.summary
    root = dataset_folder(summary, data_roots)
    options = ((summary.get("config") or {}).get("options") or {}).get("dataset_options") or {}
    key = (str(summary["dataset"]), str(root), tuple(sorted(options.items())))
    if key not in adapters:
        adapters[key] = DATASETS.get(key[0])(Path(root) if root else None, **options)
    adapter = adapters[key]
    wanted = set(case_ids)
    return {case.case_id: case for case in adapter.eval_cases("test") if case.case_id in wanted}


def read_predictions(path: Path, case_ids: Sequence[str]) -> dict[str, np.ndarray]:
    """The named cases' label volumes; an unreadable archive gives none (the caller reports it)."""
    try:
        with np.load(path) as archive:
            return {case_id: archive[case_id] for case_id in case_ids if case_id in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return {}


def _pick_cases(tables: GroupTables, setting: Setting, methods: Sequence[str]) -> list[str]:
    difficulty = pd.concat([tables.case_dice[(setting, m)] for m in methods], axis=1).mean(axis=1).dropna()
    ranked = list(difficulty.sort_values(kind="stable").index)
    picked: list[str] = []
    for quantile in QUALITATIVE_QUANTILES:
        case = ranked[min(len(ranked) - 1, int(round(quantile * (len(ranked) - 1))))]
        if case not in picked:
            picked.append(case)
    return picked


def overlay(image: np.ndarray, label: np.ndarray, colours: Sequence[tuple]) -> np.ndarray:
    """RGB image with each foreground class blended in its colour."""
    low, high = np.percentile(image, IMAGE_PERCENTILES)
    grey = np.clip((image - low) / (high - low if high > low else 1.0), 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    for cls, colour in enumerate(colours, start=1):
        mask = label == cls
        rgb[mask] = (1 - OVERLAY_ALPHA) * rgb[mask] + OVERLAY_ALPHA * np.asarray(colour[:3])
    return rgb


def plot_qualitative(
    tables: GroupTables, folder: Path, data_roots: Mapping[str, Path] | None = None
) -> tuple[list[Path], list[str]]:
    paths: list[Path] = []
    messages: list[str] = []
    colours = sns.color_palette("bright", max(1, len(tables.class_names)))
    adapters: dict = {}
    for setting in tables.settings:
        methods = list(tables.summary.loc[tables.summary["labels"] == setting.text, "method"])
        lowest_seed = {}
        for record in sorted(tables.records, key=lambda r: r.seed):
            if record.setting == setting:
                lowest_seed.setdefault(record.variant, record)
        with_predictions = [m for m in methods if (lowest_seed[m].directory / PREDICTIONS_FILE).exists()]
        where = f"{tables.key.title}, #Lab {setting.text}"
        if not with_predictions:
            messages.append(f"qualitative figure skipped for {where}: no run has {PREDICTIONS_FILE}")
            continue
        missing = [m for m in methods if m not in with_predictions]
        if missing:
            messages.append(f"qualitative figure for {where} leaves out {', '.join(missing)}: no {PREDICTIONS_FILE}")
        case_ids = _pick_cases(tables, setting, with_predictions)
        try:
            cases = load_test_cases(lowest_seed[with_predictions[0]], case_ids, data_roots, adapters)
        except Exception as error:  # any adapter failure means "no images here", never a failed leaderboard
            messages.append(f"qualitative figure skipped for {where}: cannot load the test cases "
                            f"({type(error).__name__}: {error}); give the dataset's folder (data_roots)")
            continue
        if set(cases) != set(case_ids):
            messages.append(f"qualitative figure skipped for {where}: test cases {sorted(set(case_ids) - set(cases))} "
                            f"not found in the dataset")
            continue
        predictions = {method: read_predictions(lowest_seed[method].directory / PREDICTIONS_FILE, case_ids)
                       for method in with_predictions}
        bad = [m for m in with_predictions
               if any(case_id not in predictions[m] or predictions[m][case_id].shape != cases[case_id].label.shape
                      for case_id in case_ids)]
        if bad:
            messages.append(f"qualitative figure for {where} leaves out {', '.join(bad)}: {PREDICTIONS_FILE} is "
                            f"unreadable, lacks the cases or their shape differs from the dataset's")
            with_predictions = [m for m in with_predictions if m not in bad]
            if not with_predictions:
                continue
        paths += _draw_qualitative(tables, setting, cases, case_ids, with_predictions, predictions, lowest_seed,
                                   colours, folder)
    return paths, messages


def _draw_qualitative(tables, setting, cases, case_ids, methods, predictions, lowest_seed, colours, folder) -> list[Path]:
    columns = ["Image", "Ground truth"] + methods
    figure = Figure(figsize=(1.75 * len(columns), 1.85 * len(case_ids) + 0.6), layout="constrained")
    grid = figure.subplots(len(case_ids), len(columns), squeeze=False)
    for row, case_id in enumerate(case_ids):
        case = cases[case_id]
        slice_index = int(np.argmax((case.label > 0).reshape(case.label.shape[0], -1).sum(axis=1)))
        image = case.image[slice_index]
        panels = [overlay(image, np.zeros_like(case.label[slice_index]), colours),
                  overlay(image, case.label[slice_index], colours)]
        panels += [overlay(image, predictions[m][case_id][slice_index], colours) for m in methods]
        for column, (axes, panel) in enumerate(zip(grid[row], panels)):
            axes.imshow(panel, interpolation="nearest")
            axes.set_xticks([])
            axes.set_yticks([])
            axes.grid(False)
            if row == 0:  # flags on their own line, so neighbouring titles never overlap
                axes.set_title(columns[column].replace(" [", "\n["), fontsize=8)
            if column == 0:
                axes.set_ylabel(f"{case_id}\nslice {slice_index}", fontsize=7)
            if column >= 2:
                method = columns[column]
                per_case = lowest_seed[method].per_case.set_index("case_id")
                axes.text(0.03, 0.04, f"Dice {per_case.loc[case_id, 'dice'] * 100:.1f}", transform=axes.transAxes,
                          fontsize=6.5, color="white", bbox={"facecolor": "black", "alpha": 0.55, "pad": 1.5,
                                                            "linewidth": 0})
    legend = [Patch(facecolor=colour, label=name) for name, colour in zip(tables.class_names, colours)]
    figure.legend(handles=legend, loc="outside lower center", ncols=max(1, len(legend)), fontsize=8)
    figure.suptitle(f"{tables.key.dataset}, #Lab {setting.text}: hard, typical and easy test cases, top to bottom "
                    f"(case Dice of the lowest seed)", fontsize=9)
    slug = "".join(char if char.isalnum() else "-" for char in setting.text)
    # PNG only: the panels are raster images, which an SVG would only wrap (at four times the bytes).
    return save_figure(figure, folder / f"qualitative_{slug}", formats=("png",))
