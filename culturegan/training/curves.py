"""Training curves (`culturegan plot`, and the evaluation report's): from runs' histories
(culturegan.training.history), one PNG with a panel per loss, the learning rate and the
throughput, and below them a panel per held-out measure when the runs logged evaluations
(eval_every); several runs overlaid, one colour each, named in a legend.

Drawn with matplotlib's object API (matplotlib.figure.Figure), never pyplot or matplotlib.use:
importing this module or drawing leaves the process's backend as it was (a notebook keeps its
inline plots), and a figure is never registered with pyplot, so nothing has to close it.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from culturegan._files import atomic_path
from culturegan.training.history import METRICS_FILE, History, read_history

DEFAULT_SMOOTH = 10  # records in the trailing mean of the loss curves
COLUMNS = 4  # panels per row
PANEL_SIZE = (3.2, 2.4)  # inches per panel, titles and ticks included
HEADER = 0.4  # inches above the panels, for the legend
DPI = 100
# the training record's numbers that are not losses, in the order drawn after the losses
RATES = {"lr": "learning rate", "images_per_s": "images/s", "augment_p": "ADA p"}


def smoothed(values, window: int) -> np.ndarray:
    """The trailing mean of the last `window` values at each position (fewer at the start, where
    fewer exist); non-finite values are left out of every mean."""
    window = _checked_window(window)
    values = np.asarray(values, dtype=np.float64)
    values = np.where(np.isfinite(values), values, np.nan)
    padded = np.concatenate([np.full(window - 1, np.nan), values])
    with warnings.catch_warnings():  # a window of only non-finite values is NaN, as it should be
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.lib.stride_tricks.sliding_window_view(padded, window), axis=1)


def plot_runs(folders: list[str | os.PathLike], path: str | os.PathLike, smooth: int = DEFAULT_SMOOTH) -> Path:
    """plot_curves of the runs in `folders`, each named by its folder (by the path as given when
    two folders share a name); returns the PNG's path."""
    if not folders:
        raise ValueError("no run folders to plot")
    folders = [Path(folder) for folder in folders]
    names = [folder.name for folder in folders]
    labels = [str(folder) if names.count(folder.name) > 1 else folder.name for folder in folders]
    if len(set(labels)) < len(labels):
        raise ValueError(f"a run folder is named twice: {', '.join(map(str, folders))}")
    return plot_curves({label: read_history(folder) for label, folder in zip(labels, folders)}, path, smooth)


def plot_curves(histories: dict[str, History], path: str | os.PathLike, smooth: int = DEFAULT_SMOOTH,
                columns: int = COLUMNS) -> Path:
    """Writes the curves of the named runs' histories to `path` (PNG, atomically): the losses as
    trailing means of `smooth` records over the raw values (faint), the learning rate and
    images/s as logged, and each held-out measure at the steps it was taken."""
    _checked_window(smooth)
    if Path(path).suffix.lower() != ".png":
        raise ValueError(f"training curves are written as PNG: {path} does not end in .png")
    if not histories:
        raise ValueError("no runs to plot")
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    empty = [str(h.folder / METRICS_FILE) for h in histories.values() if not h.training and not h.evaluations]
    if empty:
        raise ValueError(f"no records to plot in {', '.join(empty)}")
    return save_figure(_curves_figure(histories, smooth, columns), path)


def save_figure(figure: Figure, path: str | os.PathLike) -> Path:
    """Writes a figure to `path` as PNG, atomically; returns the path."""
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=DPI)
    return Path(path)


def _checked_window(window: int) -> int:
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"smooth must be a whole number of records >= 1 (1: no smoothing), got {window!r}")
    return window


def _curves_figure(histories: dict[str, History], smooth: int, columns: int) -> Figure:
    """The training section (losses, then the rates) and, when any run has them, the held-out
    evaluation section, each a grid of `columns` panels a row."""
    colours = {name: f"C{index % 10}" for index, name in enumerate(histories)}
    sections = [(title, panels) for title, panels in (
        ("training", _training_panels(histories, smooth)), ("held-out evaluation", _evaluation_panels(histories)))
        if panels]
    columns = min(columns, max(len(panels) for _, panels in sections))
    rows = [math.ceil(len(panels) / columns) for _, panels in sections]
    width, height = PANEL_SIZE
    figure = Figure(figsize=(columns * width, sum(rows) * height + HEADER), dpi=DPI, layout="constrained")
    parts = figure.subfigures(len(sections), 1, height_ratios=rows, squeeze=False)[:, 0]
    for part, (title, panels), count in zip(parts, sections, rows):
        part.suptitle(title, fontsize=10, fontweight="bold")
        grid = part.subplots(count, columns, squeeze=False).ravel()
        for axes, (label, draw) in zip(grid, panels):
            _style(axes, label)
            for name, history in histories.items():
                draw(axes, history, colours[name])
        for unused in grid[len(panels):]:
            unused.set_visible(False)
    figure.legend([Line2D([], [], color=colour, linewidth=2) for colour in colours.values()], list(colours),
                  loc="outside upper center", ncols=min(len(colours), 6), frameon=False, fontsize=9)
    return figure


def _style(axes, title: str) -> None:
    axes.set_title(title, fontsize=9)
    axes.tick_params(labelsize=7)
    axes.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))  # a learning rate: 2e-4, not 0.000200
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps
    axes.spines[["top", "right"]].set_visible(False)


def _training_panels(histories: dict[str, History], smooth: int) -> list:
    """(title, draw(axes, history, colour)) per loss, in the order the runs logged them, then the
    learning rate and images/s."""
    keys = _keys(record for h in histories.values() for record in h.training)
    panels = [(key, lambda axes, h, colour, key=key: _loss_curve(axes, h.training, key, colour, smooth))
              for key in keys if key not in RATES]
    panels += [(label, lambda axes, h, colour, key=key: _curve(axes, h.training, key, colour))
               for key, label in RATES.items() if key in keys]
    return panels


def _evaluation_panels(histories: dict[str, History]) -> list:
    """(title, draw) per held-out measure, in the order the runs logged them."""
    measures = _keys(record["eval"] for h in histories.values() for record in h.evaluations)
    return [(key, lambda axes, h, colour, key=key: _curve(axes, [{"step": r["step"], **r["eval"]}
                                                                for r in h.evaluations], key, colour, marker="o"))
            for key in measures]


def _keys(records) -> list[str]:
    """The numeric fields of the records but the step, each once, in first-seen order."""
    keys: dict[str, None] = {}
    for record in records:
        keys.update((key, None) for key, value in record.items()
                    if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool))
    return list(keys)


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of the records that have `key`."""
    present = [record for record in records if isinstance(record.get(key), (int, float))]
    return [record["step"] for record in present], [float(record[key]) for record in present]


def _curve(axes, records: list[dict], key: str, colour: str, **style) -> None:
    steps, values = _series(records, key)
    axes.plot(steps, values, color=colour, linewidth=1.2, markersize=3, **style)


def _loss_curve(axes, records: list[dict], key: str, colour: str, smooth: int) -> None:
    """The trailing mean (when smooth > 1) over the raw values, drawn faint."""
    steps, values = _series(records, key)
    if not steps:  # this run does not log `key` (runs of other modes or weights, overlaid)
        return
    if smooth > 1:
        axes.plot(steps, values, color=colour, linewidth=0.8, alpha=0.25)
        values = smoothed(values, smooth)
    axes.plot(steps, values, color=colour, linewidth=1.4)
