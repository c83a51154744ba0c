"""The evaluation report: REPORT_DIR/report.html (self-contained: every picture embedded, opens
offline), the pictures as PNGs beside it, and report.json with every number for scripts.

A report holds one or more settings side by side (the demo compares training without and with
the culture loss), each evaluated once or once per seed: per setting a grid of the inputs, every
seed's outputs and the cycle reconstructions, a 4x view with unsmoothed pixels, the verdicts,
the metric table (mean and standard deviation over seeds), and, when the checkpoints are culturegan
runs, every seed's training curves overlaid (culturegan.training.curves, as `culturegan plot` draws
them) and the first seed's configuration; above them, bars of the feature-group distances.
"""

from __future__ import annotations

import base64
import html
import json
import os
import statistics
from pathlib import Path

import torch
from matplotlib.figure import Figure

from culturegan._files import write_text
from culturegan.culture import GROUPS
from culturegan.evaluation.evaluate import Evaluation
from culturegan.evaluation.verdicts import collapse_ratio, judged_as_target, summarise
from culturegan.metrics import JUDGE_GROUPS
from culturegan.training.curves import plot_curves, save_figure
from culturegan.training.history import read_history, run_folder
from culturegan.training.samples import save_grid

GRID_ROWS = 8
CURVE_COLUMNS = 2  # training-curve panels a row: the report shows settings side by side
ZOOM, ZOOM_ROWS, ZOOM_CROP = 4, 3, 64  # the 4x view: 3 images, their central 64 px
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-weight: 600; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; } td, th { padding: .3em .8em; border-bottom: 1px solid #eee; }
th { text-align: left; background: #f6f6f6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.runs { display: flex; gap: 2em; flex-wrap: wrap; } .run { flex: 1; min-width: 420px; }
img { max-width: 100%; border: 1px solid #ddd; image-rendering: pixelated; } .note { color: #666; font-size: .9em; }
img.wide { width: 100%; } p.missed { color: #c0392b; font-weight: 600; }
ul.warnings { background: #fff3f0; border-left: 4px solid #c0392b; padding: .6em 1em .6em 2em; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: .8em; }
"""


def _value(values: list[float], form: str) -> str:
    """One number over seeds: the mean, and its sample standard deviation when there are several."""
    text = format(statistics.fmean(values), form)
    return text if len(values) == 1 else f"{text} ± {format(statistics.stdev(values), form.lstrip('+'))}"


def _metric_rows(runs: list[dict]) -> list[tuple[str, str, str]]:
    """(metric, value over seeds, what it means) rows of one setting's per-seed results, the
    measures a collapsed or hiding model cannot pass first."""
    first, target = runs[0], runs[0]["target"]
    retrieval, distance = first["content"]["retrieval"], first["distance"]
    judge, culture = (first["recognisability"][kind] for kind in ("judge", "culture"))
    rows = [("content retrieval: own input ranked first by structure", lambda r: r["content"]["retrieval"]["top1"],
             ".0%", f"chance {retrieval['chance_top1']:.0%}; identity 100%"),
            ("content retrieval: mean reciprocal rank", lambda r: r["content"]["retrieval"]["mrr"], ".2f",
             f"chance {retrieval['chance_mrr']:.2f}"),
            ("collapse ratio (the smallest of the three below)", collapse_ratio, ".2f",
             "spread of outputs / spread of their inputs; 1 = as varied"),
            *((f"collapse ratio in {space}", lambda r, key=key: r["content"]["collapse_ratio"][key], ".2f", "")
              for space, key in (("structure", "structure"), ("culture features", "culture"),
                                 ("judge features", "judge"))),
            ("outputs nearer another output than their own input", lambda r: r["content"]["closer_to_another_output"],
             ".0%", "by structure; seed 1: " + (", ".join(f"#{i + 1}" for i in first["content"]["flagged"])
                                                or "none")),
            (f"classified as {target}, judge features (never seen by the loss)",
             lambda r: r["recognisability"]["judge"]["outputs"]["target_rate"], ".0%",
             f"{_judged_counts(runs)}; classifier on real images: {judge['real_accuracy']:.0%}"),
            (f"KID to real {target}, judge features", lambda r: r["distance"]["judge"]["kid_outputs"], ".3g",
             f"inputs: {distance['judge']['kid_inputs']:.3g}; lower is closer"),
            ("margin source to target, judge features", lambda r: r["recognisability"]["judge"]["outputs"]["margin"],
             "+.3f", f"inputs: {judge['inputs']['margin']:+.3f}; > 0 is closer to the target"),
            (f"periodic artifacts, relative to real {target}", lambda r: r["periodic_artifacts"]["ratio"], ".2f",
             f"spectral peak share of outputs over real images' ({first['periodic_artifacts']['real']:.3f}); "
             "1 = as periodic"),
            (f"classified as {target}, culture features (optimised by the loss)",
             lambda r: r["recognisability"]["culture"]["outputs"]["target_rate"], ".0%",
             f"inputs: {culture['inputs']['target_rate']:.0%}; classifier on real images: "
             f"{culture['real_accuracy']:.0%}"),
            (f"KID to real {target}, culture features", lambda r: r["distance"]["culture"]["kid_outputs"], ".3g",
             f"inputs: {distance['culture']['kid_inputs']:.3g}; lower is closer"),
            ("SSIM of low-pass luminance to the input", lambda r: r["content"]["ssim_lowpass"], ".3f",
             "1 = same layout"),
            ("edge F1 to the input", lambda r: r["content"]["edge_f1"], ".3f", "1 = same edges (2-pixel tolerance)")]
    # rows of measures only some evaluations have are shown when every seed has them
    if all(r.get("cycle") is not None for r in runs):
        rows += [("cycle error", lambda r: r["cycle"]["clean"], ".3f", "mean |G_back(G(x)) - x|, pixels in [0, 1]"),
                 ("cycle error after an invisible perturbation (worst)",
                  lambda r: max(r["cycle"]["perturbed"].values()), ".3f", ", ".join(first["cycle"]["perturbed"])),
                 ("hidden-signal amplification", lambda r: r["cycle"]["amplification"], ".2f",
                  "error rise / the perturbation's own size; far above 1 = hidden signal")]
    if all("projection" in r for r in runs):
        base = f"{first['projection']['space']}, {first['projection']['steps']} steps"
        rows += [("projections: own photo ranked first by structure", lambda r: r["projection"]["retrieval_top1"],
                  ".0%", f"the photos' codes rendered by the base model ({base}): the outputs' ceiling"),
                 ("projections: PSNR to the photos", lambda r: r["projection"]["psnr_db"], ".1f",
                  f"dB; lowest (seed 1) {first['projection']['psnr_db_min']:.1f}")]
    rows.append(("diversity", lambda r: r["diversity"], ".2f",
                 "spread of outputs / spread of real target images (culture features)"))
    if all("deception" in r for r in runs):
        rows.append(("deception rate", lambda r: r["deception"]["outputs"], ".0%",
                     f"real {target} images: {first['deception']['real']:.0%}"))
    return [(label, _value([read(r) for r in runs], form), note) for label, read, form, note in rows]


def _judged_counts(runs: list[dict]) -> str:
    """The judge's counts behind its rate: per seed, outputs classified as the target and the
    one-sided Fisher p against the inputs (a rate of 4% is one image of 24, no evidence)."""
    counts = [judged_as_target(r) for r in runs]
    (_, images), (inputs, input_images), _ = counts[0]
    seeds = ", ".join(f"{hits} (p = {p:.2g})" for (hits, _), _, p in counts)
    return f"of {images} a seed: {seeds}; inputs: {inputs} of {input_images}"


def _distance_chart(settings: dict[str, list[dict]], path: Path) -> Path:
    """Bars of KID per feature group (mean over seeds): the inputs and each setting's outputs,
    against real target images."""
    groups = [*GROUPS, *JUDGE_GROUPS]
    first = next(iter(settings.values()))[0]
    series = {"inputs": [first["distance"][g]["kid_inputs"] for g in groups]}
    series.update({name: [statistics.fmean(r["distance"][g]["kid_outputs"] for r in runs) for g in groups]
                   for name, runs in settings.items()})
    figure = Figure(figsize=(8, 3.2), layout="tight")
    axes = figure.subplots()
    width = 0.8 / len(series)
    for i, (name, values) in enumerate(series.items()):
        axes.bar([x + i * width for x in range(len(groups))], values, width, label=name)
    axes.set_xticks([x + width * (len(series) - 1) / 2 for x in range(len(groups))],
                    [f"{g}\n({'loss' if g in GROUPS else 'judge'})" for g in groups])
    axes.set_ylabel("KID to the target culture")
    axes.set_yscale("symlog", linthresh=1.0)  # KIDs span orders of magnitude and may be slightly negative
    axes.legend(frameon=False)
    axes.spines[["top", "right"]].set_visible(False)
    return save_figure(figure, path)


def _curves_chart(evaluations: list[Evaluation], path: Path) -> Path | None:
    """Every seed's training curves, overlaid, when its checkpoint is a culturegan run with
    records; None when none is."""
    folders = {f"seed {index + 1}": run_folder(e.results["checkpoint"]) for index, e in enumerate(evaluations)
               if "checkpoint" in e.results}
    histories = {seed: read_history(folder) for seed, folder in folders.items() if folder is not None}
    histories = {seed: h for seed, h in histories.items() if h.training or h.evaluations}
    return plot_curves(histories, path, columns=CURVE_COLUMNS) if histories else None


def _embedded(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _image(path: Path, alt: str, wide: bool = False) -> str:
    """An embedded PNG; `wide` stretches it to the column's width (pixels stay sharp)."""
    return f'<img src="{_embedded(path)}" alt="{html.escape(alt)}"' + (' class=wide>' if wide else '>')


def _zoomed(images: torch.Tensor) -> list[torch.Tensor]:
    """The central ZOOM_CROP pixels of each (3, H, W) image, enlarged ZOOM times without smoothing,
    so that grids and dot patterns show as they are."""
    height, width = images.shape[-2:]
    crop = min(ZOOM_CROP, height, width)
    top, left = (height - crop) // 2, (width - crop) // 2
    region = images[..., top:top + crop, left:left + crop]
    return list(region.repeat_interleave(ZOOM, -2).repeat_interleave(ZOOM, -1))


def _setting_section(name: str, evaluations: list[Evaluation], out: Path, slug: str) -> str:
    """One setting's grid (inputs, each seed's outputs, the first seed's cycle reconstructions or
    projections), a 4x zoom, its warnings, its metric table over seeds, and the first seed's
    curves and config."""
    first = evaluations[0]
    columns = [first.inputs[:GRID_ROWS], *(e.outputs[:GRID_ROWS] for e in evaluations)]
    # the first seed's images that explain its outputs: the way back, or where they came from
    explaining = {"cycle reconstruction": first.reconstructions, "projection into the base model": first.projections}
    explaining = {label: images for label, images in explaining.items() if images is not None}
    columns += [images[:GRID_ROWS] for images in explaining.values()]
    grid = out / f"{slug}_grid.png"
    save_grid([list(row) for row in zip(*columns)], grid)
    zoom = out / f"{slug}_zoom.png"
    save_grid([list(row) for row in zip(_zoomed(first.inputs[:ZOOM_ROWS]), _zoomed(first.outputs[:ZOOM_ROWS]))],
              zoom)
    results = [e.results for e in evaluations]
    seeds = f"{len(evaluations)} seed{'s' if len(evaluations) > 1 else ''}"
    warnings = {}
    for run in results:
        for kind, warning in run["verdicts"].items():
            warnings.setdefault(kind, []).append(warning)
    warning_items = "".join(f"<li>{html.escape(found[0])}" + (f" (in {len(found)} of {len(results)} seeds)"
                                                               if len(results) > 1 else "") + "</li>"
                            for found in warnings.values())
    table = "".join(f"<tr><td>{html.escape(m)}</td><td class=num>{html.escape(v)}</td>"
                    f"<td class=note>{html.escape(n)}</td></tr>" for m, v, n in _metric_rows(results))
    parts = [f"<div class=run><h2>{html.escape(name)}</h2>",
             f"<p class=note>{html.escape(first.results.get('model', ''))}; {first.results['images']} "
             f"{html.escape(first.results['source'])} images at {first.results['size']} px; {seeds}"
             + (" (values: mean ± standard deviation over seeds)" if len(results) > 1 else "") + "</p>",
             _image(grid, f"{name}: input, outputs, reconstruction", wide=True),
             "<p class=note>columns: input, " + ", ".join(f"output (seed {i + 1})" for i in range(len(evaluations)))
             + "".join(f", {label} (seed 1)" for label in explaining) + "</p>",
             _image(zoom, f"{name}: input and output at {ZOOM}x"),
             f"<p class=note>input and output (seed 1) at {ZOOM}x, pixels unsmoothed</p>",
             f"<ul class=warnings>{warning_items}</ul>" if warning_items else "",
             f"<table><tr><th>metric</th><th>value</th><th></th></tr>{table}</table>"]
    curves = _curves_chart(evaluations, out / f"{slug}_curves.png")
    if curves is not None:
        parts.append("<h3>training curves</h3>" + _image(curves, f"{name}: training curves"))
    folder = run_folder(first.results["checkpoint"]) if "checkpoint" in first.results else None
    if folder is not None and (folder / "config.json").is_file():
        parts.append("<details><summary>training configuration (seed 1)</summary><pre>"
                     + html.escape((folder / "config.json").read_text()) + "</pre></details>")
    return "\n".join(parts) + "</div>"


def write_report(settings: dict[str, list[Evaluation]], out: str | os.PathLike, title: str = "culturegan evaluation",
                 notes: list[str] = ()) -> Path:
    """report.html, report.json and the PNGs for the named settings, each evaluated once or once
    per seed (a list of evaluations); several settings are shown side by side."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    empty = [name for name, evaluations in settings.items() if not evaluations]
    if not settings or empty:
        raise ValueError(f"a report needs at least one evaluation per setting; none for {empty or 'any setting'}")
    results = {name: [e.results for e in evaluations] for name, evaluations in settings.items()}
    sections = [_setting_section(name, evaluations, out, f"run{index}")
                for index, (name, evaluations) in enumerate(settings.items())]
    chart = _distance_chart(results, out / "distances.png")
    first = next(iter(results.values()))[0]
    notes_html = "".join(f"<p class='note{' missed' if note.startswith('MISSED') else ''}'>{html.escape(note)}</p>"
                         for note in notes)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(first['source'])} &rarr; {html.escape(first['target'])}, judged against the cultures
{html.escape(', '.join(first['cultures']))} of {html.escape(first.get('reference', ''))}.
First: does each output still show its own input (content retrieval by structure that ignores colour and
texture, and how varied the outputs are against their inputs), and is the culture there by judge features
(hue histogram; local ternary patterns and grey-level co-occurrence of the image seen twice as far away)
that the culture loss never sees. Then the culture features the loss optimises, the spectral peaks of
periodic artifacts, and the cycle's reliance on hidden signal.</p>
{notes_html}
<h2>distance to the target culture per feature group</h2>
{_image(chart, "KID per feature group")}
<div class=runs>
{''.join(sections)}
</div>
</body></html>
"""
    summary = {name: {"seeds": runs, "summary": summarise(runs)} for name, runs in results.items()}
    write_text(out / "report.json", json.dumps(summary, indent=2) + "\n")
    return write_text(out / "report.html", page)

