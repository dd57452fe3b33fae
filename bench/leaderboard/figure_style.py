"""What every leaderboard figure shares: the matplotlib style, deterministic files, the Dice axis and
one colour and marker per method.

Methods are coloured by family (``family`` in each run's summary): classic methods in cool hues (blues,
greens, purples), SAM-based methods in warm hues (reds, oranges, pinks, browns), any other family in
neutral ones; inside a family the row names are taken in sorted order, each with its own colour AND its
own marker, so two methods never look alike even in grey print.  The assignment depends only on the
table's row names and families, so a method has the same colour and marker in every figure of a table.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator

from bench.record import atomic_file

FIGURE_FORMATS = ("png", "svg")
PNG_DPI = 200
SAVE_METADATA = {"png": {"Software": None}, "svg": {"Date": None, "Creator": None}}

DICE_LIMITS = (0.0, 100.0)
"""Every Dice axis (and colour scale) spans exactly 0-100 %: error bars below 0 or above 100 are cut at the
frame instead of stretching the axis to impossible values, and figures compare at a glance."""
DICE_TICKS = (0, 20, 40, 60, 80, 100)

FAMILY_COLOURS = {
    "baseline": ("#1f5fa8", "#2ca02c", "#17a3b8", "#7b3294", "#86b4e8", "#0b6e4f", "#9acd32", "#3b3f99",
                 "#66c2a5", "#a48fd9"),
    "sam": ("#d62728", "#ff7f0e", "#8c3b0c", "#e377c2", "#e6ab02", "#9e1f4f", "#f4a582", "#f0027f", "#bc80bd",
            "#7f6000"),
}
"""Cool hues for the classic family, warm ones for the SAM-based family; neighbours in a list differ in
hue and lightness, since neighbours in sorted order are often related methods (ua-mt, unimatch, urpc)."""
OTHER_COLOURS = ("#525252", "#8c6d31", "#969696", "#5b6e3a", "#252525", "#b5a26a", "#737373", "#3f4d63")
"""Plug-in families: greys, olives and browns."""
FAMILY_ORDER = ("baseline", "sam")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "h")
"""Eleven markers against ten colours per family: colour and marker cycle together with coprime
periods, so up to 110 methods of one family keep a distinct (colour, marker) pair."""


@dataclass(frozen=True)
class MethodStyle:
    colour: str
    marker: str
    family: str


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
        with atomic_file(path) as temporary:
            figure.savefig(temporary, format=fmt, dpi=PNG_DPI, metadata=SAVE_METADATA[fmt], bbox_inches="tight")
        paths.append(path)
    return paths


def method_styles(families: Mapping[str, str]) -> dict[str, MethodStyle]:
    """Row name -> colour and marker, from each row's family (``families``: row name -> family)."""
    ordered_families = sorted(set(families.values()),
                              key=lambda f: (FAMILY_ORDER.index(f) if f in FAMILY_ORDER else len(FAMILY_ORDER), f))
    styles: dict[str, MethodStyle] = {}
    others = 0
    for family in ordered_families:
        colours = FAMILY_COLOURS.get(family)
        members = sorted(name for name, member_family in families.items() if member_family == family)
        for index, name in enumerate(members):
            if colours is None:  # every plug-in family draws from the neutral list, continuing its cycle
                colour, marker = OTHER_COLOURS[others % len(OTHER_COLOURS)], MARKERS[others % len(MARKERS)]
                others += 1
            else:
                colour, marker = colours[index % len(colours)], MARKERS[index % len(MARKERS)]
            styles[name] = MethodStyle(colour, marker, family)
    return styles


def legend_order(styles: Mapping[str, MethodStyle], names: Sequence[str]) -> list[str]:
    """``names`` grouped by family in palette order, sorted inside each family."""
    position = {name: index for index, name in enumerate(styles)}
    return sorted(set(names), key=lambda name: position.get(name, len(position)))


def dice_axis(axes, which: str = "y") -> None:
    """Clamp a Dice (%) axis to exactly [0, 100] with ticks every 20."""
    if which == "y":
        axes.set_ylim(*DICE_LIMITS)
        axes.yaxis.set_major_locator(FixedLocator(DICE_TICKS))
    else:
        axes.set_xlim(*DICE_LIMITS)
        axes.xaxis.set_major_locator(FixedLocator(DICE_TICKS))
