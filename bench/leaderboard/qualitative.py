"""The qualitative figure: the same test slices for every method, as coloured overlays.

``qualitative_<labels>`` (PNG only: its panels are raster images) shows the image, the ground truth and
each method's prediction.  It needs each run's ``predictions.npz`` and the dataset's test cases; without
them it is skipped with a message.  Slices: the cases at the 10th, 50th and 90th percentile of per-case
Dice averaged over the methods (hard, typical, easy), each at its slice with the most ground-truth
foreground; predictions come from each method's lowest seed.

A page holds at most :data:`MAX_COLUMNS` columns (image, ground truth and up to six methods, in the
table's rank order); more methods make ``qualitative_<labels>_page<k>.png`` pages of balanced widths.
Column headers are wrapped to the column's width (the method on one line, its flags and
hyper-parameters below), so no header runs into its neighbour at any number of methods.
"""
from __future__ import annotations

import os
import textwrap
import zipfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from bench.leaderboard.collect import RunRecord, Setting
from bench.leaderboard.figure_style import save_figure
from bench.leaderboard.tables import GroupTables
from bench.runs import PREDICTIONS_FILE

QUALITATIVE_QUANTILES = (0.1, 0.5, 0.9)
OVERLAY_ALPHA = 0.5
IMAGE_PERCENTILES = (1, 99)
"""Display window of the grey image, robust to a few bright voxels."""
MAX_COLUMNS = 8
"""Image + ground truth + 6 methods: 14 inches wide, the width of a landscape page at readable size."""
FIXED_COLUMNS = ("Image", "Ground truth")
COLUMN_WIDTH = 1.75
"""Inches per panel."""
HEADER_FONT_SIZE = 8.0
CHAR_WIDTH = 0.68
"""DejaVu Sans bold: lowercase letters, digits and punctuation advance about 0.6-0.7 em (m and w wider,
rare in method names); headers wrap at the characters this many ems fit in a column."""


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


def pages(methods: Sequence[str], max_columns: int = MAX_COLUMNS) -> list[list[str]]:
    """``methods`` in order, cut into the fewest pages of at most ``max_columns`` columns (the image and
    ground-truth columns repeat on every page), the pages as even as possible."""
    per_page = max_columns - len(FIXED_COLUMNS)
    count = max(1, -(-len(methods) // per_page))
    size, extra = divmod(len(methods), count)
    cut, start = [], 0
    for page in range(count):
        end = start + size + (1 if page < extra else 0)
        cut.append(list(methods[start:end]))
        start = end
    return cut


def header(name: str, width_inches: float = COLUMN_WIDTH, font_size: float = HEADER_FONT_SIZE) -> str:
    """A column header that fits its column: the method on its first line(s), each of its bracketed
    flags/hyper-parameters on the following ones, every line cut to the column's width."""
    width = max(8, int(width_inches * 72 / (font_size * CHAR_WIDTH)))
    method, bracket, rest = name.partition(" [")
    lines = textwrap.wrap(method, width, break_long_words=True, break_on_hyphens=True) or [method]
    if bracket:
        labels = [label.strip() for label in rest.rstrip("]").split(", ")]
        items = [f"[{label}" if index == 0 else label for index, label in enumerate(labels)]
        items = [item + ("]" if index == len(items) - 1 else ",") for index, item in enumerate(items)]
        for item in items:
            lines += textwrap.wrap(item, width, break_long_words=True, break_on_hyphens=True)
    return "\n".join(lines)


def plot_qualitative(
    tables: GroupTables, folder: Path, data_roots: Mapping[str, Path] | None = None
) -> tuple[list[Path], list[str]]:
    paths: list[Path] = []
    messages: list[str] = []
    for setting, figures, notes in qualitative_figures(tables, data_roots):
        messages += notes
        slug = "".join(char if char.isalnum() else "-" for char in setting.text)
        for number, figure in enumerate(figures, start=1):
            stem = f"qualitative_{slug}" if len(figures) == 1 else f"qualitative_{slug}_page{number}"
            # PNG only: the panels are raster images, which an SVG would only wrap (at four times the bytes).
            paths += save_figure(figure, folder / stem, formats=("png",))
    return paths, messages


def qualitative_figures(tables: GroupTables, data_roots: Mapping[str, Path] | None = None):
    """Per label budget: (setting, the figure's pages, messages about what was left out)."""
    colours = sns.color_palette("bright", max(1, len(tables.class_names)))
    adapters: dict = {}
    for setting in tables.settings:
        messages: list[str] = []
        methods = list(tables.summary.loc[tables.summary["labels"] == setting.text, "method"])
        lowest_seed = {}
        for record in sorted(tables.records, key=lambda r: r.seed):
            if record.setting == setting:
                lowest_seed.setdefault(record.variant, record)
        with_predictions = [m for m in methods if (lowest_seed[m].directory / PREDICTIONS_FILE).exists()]
        where = f"{tables.key.title}, #Lab {setting.text}"
        if not with_predictions:
            yield setting, [], [f"qualitative figure skipped for {where}: no run has {PREDICTIONS_FILE}"]
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
            yield setting, [], messages
            continue
        if set(cases) != set(case_ids):
            messages.append(f"qualitative figure skipped for {where}: test cases {sorted(set(case_ids) - set(cases))} "
                            f"not found in the dataset")
            yield setting, [], messages
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
                yield setting, [], messages
                continue
        split = pages(with_predictions)
        figures = [_draw_page(tables, setting, cases, case_ids, page, predictions, lowest_seed, colours,
                              (number, len(split)))
                   for number, page in enumerate(split, start=1)]
        yield setting, figures, messages


def _draw_page(tables, setting, cases, case_ids, methods, predictions, lowest_seed, colours, page) -> Figure:
    columns = list(FIXED_COLUMNS) + list(methods)
    width = COLUMN_WIDTH * len(columns)
    figure = Figure(figsize=(width, 1.85 * len(case_ids) + 0.6), layout="constrained")
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
            if row == 0:
                axes.set_title(header(columns[column]), fontsize=HEADER_FONT_SIZE)
            if column == 0:
                axes.set_ylabel(f"{case_id}\nslice {slice_index}", fontsize=7)
            if column >= len(FIXED_COLUMNS):
                method = columns[column]
                per_case = lowest_seed[method].per_case.set_index("case_id")
                axes.text(0.03, 0.04, f"Dice {per_case.loc[case_id, 'dice'] * 100:.1f}", transform=axes.transAxes,
                          fontsize=6.5, color="white", bbox={"facecolor": "black", "alpha": 0.55, "pad": 1.5,
                                                            "linewidth": 0})
    legend = [Patch(facecolor=colour, label=name) for name, colour in zip(tables.class_names, colours)]
    figure.legend(handles=legend, loc="outside lower center", ncols=max(1, len(legend)), fontsize=8)
    number, count = page
    title = (f"{tables.key.dataset}, #Lab {setting.text}"
             + (f", page {number} of {count} (methods in rank order)" if count > 1 else "")
             + ": hard, typical and easy test cases, top to bottom (case Dice of the lowest seed)")
    figure.suptitle(textwrap.fill(title, max(30, int(width * 72 / (9 * 0.58)))), fontsize=9)
    return figure
