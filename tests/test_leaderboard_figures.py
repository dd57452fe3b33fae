"""Leaderboard figures a paper can use: no text runs into other text at any number of methods, one label
budget gives a ranked dot plot, Dice axes span exactly [0, 100] %, every method keeps one distinct
colour and marker, and the cost figure says what its seconds measured."""
from __future__ import annotations

import json
import re
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

from bench.leaderboard import collect_runs
from bench.leaderboard.figure_style import FAMILY_COLOURS, method_styles
from bench.leaderboard.plots import draw_cost, draw_dice_vs_labels, draw_per_class_dice, draw_spread
from bench.leaderboard.qualitative import MAX_COLUMNS, qualitative_figures
from bench.leaderboard.tables import build_group_tables
from bench.registry import DATASETS
from test_leaderboard import TOY_CASES, ToyDataset, toy_volume, write_run

# The 19 rows of the published synthetic leaderboard at one label budget: long flags included.
NINETEEN = [
    ("bcp", "baseline", ()), ("cps", "baseline", ()), ("fixmatch", "baseline", ()),
    ("mc-net-plus", "baseline", ()), ("mean-teacher", "baseline", ()), ("supervised", "baseline", ()),
    ("ua-mt", "baseline", ()), ("unimatch", "baseline", ()), ("urpc", "baseline", ()),
    ("unimatch-tuned-long-name", "baseline", ("confidence_threshold=0.9", "tuned: 40 trials")),
    ("cpc-sam", "sam", ("random-init-sam",)), ("interactmatch", "sam", ("random-init-sam",)),
    ("knowsam", "sam", ("random-init-sam",)), ("samed", "sam", ("random-init-sam",)),
    ("semisam", "sam", ("random-init-sam",)), ("synfoc", "sam", ("random-init-sam",)),
    ("synfoc-unet", "sam", ("random-init-sam",)),
    ("sam-point", "sam", ("ground-truth-prompts", "point-prompts-untrained", "random-init-sam")),
    ("sam-box", "sam", ("ground-truth-prompts", "random-init-sam")),
]


def edit_summary(directory: Path, **fields) -> None:
    summary = json.loads((directory / "summary.json").read_text())
    summary.update(fields)
    (directory / "summary.json").write_text(json.dumps(summary))


def group_tables(runs: Path):
    records, skipped = collect_runs([runs])
    assert records and not skipped
    return build_group_tables(records[0].group, records)


def overlapping_texts(figure: Figure) -> list[tuple[str, str]]:
    """Pairs of visible, non-empty texts whose drawn bounding boxes intersect (by more than half a pixel)."""
    FigureCanvasAgg(figure)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    texts = [text for text in figure.findobj(Text) if text.get_visible() and text.get_text().strip()]
    boxes = [(text.get_text(), text.get_window_extent(renderer)) for text in texts]
    pairs = []
    for (first, a), (second, b) in combinations(boxes, 2):
        width = min(a.x1, b.x1) - max(a.x0, b.x0)
        height = min(a.y1, b.y1) - max(a.y0, b.y0)
        if width > 0.5 and height > 0.5:
            pairs.append((first, second))
    return pairs


def test_qualitative_figure_with_19_methods_has_no_overlapping_text(tmp_path, monkeypatch):
    monkeypatch.setitem(DATASETS._entries, ToyDataset.name, ToyDataset)
    truths = {f"toy{i:02d}": toy_volume(i)[1] for i in range(TOY_CASES)}
    for index, (method, family, flags) in enumerate(NINETEEN):
        predictions = {case: np.roll(truth, index % 5, axis=2) for case, truth in truths.items()}
        run = write_run(tmp_path / "runs", [0.2 + 0.03 * index] * TOY_CASES, method=method, dataset=ToyDataset.name,
                        num_train=20, case_prefix="toy", flags=flags, predictions=predictions)
        edit_summary(run, family=family)
    tables = group_tables(tmp_path / "runs")
    ((setting, pages, messages),) = list(qualitative_figures(tables))
    assert not messages
    assert len(pages) == 4  # 19 methods, 6 per page (8 columns with image and ground truth): 5 + 5 + 5 + 4
    shown = []
    for page in pages:
        columns = [axes for axes in page.axes if axes.get_subplotspec().rowspan.start == 0]
        assert len(columns) <= MAX_COLUMNS == 8
        shown += [axes.get_title().replace("\n", "") for axes in columns[2:]]  # lines break after - or ,
        assert overlapping_texts(page) == []
    # every method once, in rank order (best first), its flags in its header
    assert [title.split("[")[0] for title in shown] == [method for method, _, _ in reversed(NINETEEN)]
    assert "[ground-truth-prompts,point-prompts-untrained,random-init-sam]" in shown[1]


def test_one_label_budget_gives_a_ranked_dot_plot(tmp_path):
    """Means computed here from the per-case numbers written: bcp (0.5, 0.7 -> 60 %), unimatch (0.8, 0.6
    -> 70 %), cps 20 %, and the fully-supervised bound 90 %, ranked among them."""
    runs = tmp_path / "runs"
    for seed, (bcp, unimatch) in enumerate(((0.5, 0.8), (0.7, 0.6))):
        write_run(runs, [bcp, bcp], method="bcp", seed=seed)
        write_run(runs, [unimatch, unimatch], method="unimatch", seed=seed)
    write_run(runs, [0.1, 0.3], method="cps")
    write_run(runs, [0.9, 0.9], method="fully-supervised", labels="all")
    figure = draw_dice_vs_labels(group_tables(runs))
    (axes,) = figure.axes
    assert [label.get_text() for label in axes.get_yticklabels()] == [
        "fully-supervised  ·  all", "unimatch", "bcp", "cps"]
    means = [line.get_xdata()[0] for line in axes.get_lines() if len(line.get_xdata()) == 1]
    assert means == pytest.approx([90.0, 70.0, 60.0, 20.0])
    assert axes.get_xlabel() == "Dice (%)"
    assert not [line for line in axes.get_lines() if len(line.get_xdata()) > 1]  # no curve through one x

    for seed, dice in enumerate((0.6, 0.7)):  # a second label budget: curves again
        write_run(runs, [dice, dice], method="bcp", labels="3", seed=seed)
    curves = draw_dice_vs_labels(group_tables(runs)).axes[0]
    assert curves.get_xlabel().startswith("Labeled cases")
    drawn = [line for line in curves.get_lines() if line.get_linestyle() == "-"]  # not the dashed bound
    assert [len(line.get_xdata()) for line in drawn] == [2, 1, 1]  # bcp at 1 and 3 labels; cps, unimatch at 1


def test_every_dice_axis_spans_exactly_0_to_100(tmp_path):
    """Seeds at 1 and 99 % give a ±std band from below 0 to above 100 %: the axes must not follow it."""
    runs = tmp_path / "runs"
    for seed, (low, high) in enumerate(((0.01, 0.99), (0.45, 0.55), (0.01, 0.99))):
        for labels in ("1", "3"):
            write_run(runs, [low, low], method="cps", labels=labels, seed=seed)
            write_run(runs, [high, high], method="bcp", labels=labels, seed=seed)
    tables = group_tables(runs)
    (curves,) = draw_dice_vs_labels(tables).axes[:1]
    assert curves.get_ylim() == (0.0, 100.0)
    spread = draw_spread(tables).axes[0]
    assert spread.get_xlim() == (0.0, 100.0)
    for axes in draw_cost(tables).axes:
        if axes.get_visible():
            assert axes.get_ylim() == (0.0, 100.0)
    heat = draw_per_class_dice(tables).axes[0]
    assert heat.images[0].get_clim() == (0.0, 100.0)

    one_budget = tmp_path / "one"
    for seed, (low, high) in enumerate(((0.01, 0.99), (0.45, 0.55), (0.01, 0.99))):
        write_run(one_budget, [low, low], method="cps", seed=seed)
        write_run(one_budget, [high, high], method="bcp", seed=seed)
    dots = draw_dice_vs_labels(group_tables(one_budget)).axes[0]
    assert dots.get_xlim() == (0.0, 100.0)


def test_methods_get_distinct_colours_and_markers_grouped_by_family():
    families = {name: family for name, family, _ in NINETEEN}
    families.update({f"plugin-{index}": "other" for index in range(12)})
    families.update({f"classic-{index}": "baseline" for index in range(15)})
    styles = method_styles(families)
    pairs = [(style.colour, style.marker) for style in styles.values()]
    assert len(set(pairs)) == len(pairs) == len(families)
    for name, family in families.items():
        if family in FAMILY_COLOURS:
            assert styles[name].colour in FAMILY_COLOURS[family]
    warm, cool = set(FAMILY_COLOURS["sam"]), set(FAMILY_COLOURS["baseline"])
    assert not warm & cool
    # neighbours in sorted order (related methods) never share a colour
    assert len({styles[name].colour for name in ("ua-mt", "unimatch", "urpc")}) == 3
    assert styles["sam-box"].colour != styles["sam-point"].colour


def test_a_method_has_one_colour_in_every_figure(tmp_path):
    runs = tmp_path / "runs"
    for method in ("bcp", "cps", "unimatch"):
        for labels in ("1", "3"):
            write_run(runs, [0.5, 0.6], method=method, labels=labels)
    tables = group_tables(runs)
    line_colours = {text.get_text(): handle.get_color()
                    for handle, text in zip(draw_dice_vs_labels(tables).legends[0].legend_handles,
                                            draw_dice_vs_labels(tables).legends[0].get_texts())}
    cost = draw_cost(tables).legends[0]
    cost_colours = {text.get_text(): handle.get_color() for handle, text in zip(cost.legend_handles, cost.get_texts())
                    if text.get_text() in line_colours}
    assert cost_colours == line_colours and len(set(line_colours.values())) == 3


def test_cost_figure_uses_seconds_per_step_and_names_the_machine(tmp_path):
    """train_seconds (0.9 x wall) / iterations, computed here: bcp 0.9 * 200 / 100 = 1.8 s per step."""
    runs = tmp_path / "runs"
    shared = "AMD EPYC, 2 cores, 1 torch threads x 1 process(es)"
    for method, wall in (("bcp", 200.0), ("cps", 400.0)):
        run = write_run(runs, [0.5, 0.6], method=method, wall_seconds=wall)
        edit_summary(run, hardware=shared, budget={"name": "paper", "iterations": 100})
    figure = draw_cost(group_tables(runs))
    axes = figure.axes[0]
    assert axes.get_xlabel().startswith("Seconds per training step")
    points = sorted(container.lines[0].get_xdata()[0] for container in axes.containers)
    assert points == pytest.approx([1.8, 3.6])
    caption = " ".join(figure._supxlabel.get_text().split())
    assert "AMD EPYC, 2 cores, 1 torch thread per run" in caption
    assert "may have shared those cores" in caption

    for directory in runs.rglob("summary.json"):  # runs that do not record their iterations: wall time
        edit_summary(directory.parent, budget={"name": "paper"})
    fallback = draw_cost(group_tables(runs))
    assert re.match(r"Wall time per run \(min", fallback.axes[0].get_xlabel())
    assert "wall time per run" in fallback._supxlabel.get_text()
