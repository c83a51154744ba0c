"""The evaluation report: REPORT_DIR/report.html (self-contained: every picture embedded, opens
offline), the pictures as PNGs beside it, and report.json with every number for scripts.

A report holds one or more evaluated runs side by side (the demo compares a run without and a
run with the culture loss): per run an input / output / reconstruction grid, the metric table,
bars of the feature-group distances, and its training curves and configuration when the
checkpoint is a culturegan run.
"""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from culturegan.culture import GROUPS  # noqa: E402
from culturegan.evaluation.evaluate import Evaluation  # noqa: E402
from culturegan.metrics import JUDGE_GROUPS  # noqa: E402
from culturegan.training.samples import save_grid  # noqa: E402

GRID_ROWS = 8
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-weight: 600; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; } td, th { padding: .3em .8em; border-bottom: 1px solid #eee; }
th { text-align: left; background: #f6f6f6; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.runs { display: flex; gap: 2em; flex-wrap: wrap; } .run { flex: 1; min-width: 420px; }
img { max-width: 100%; border: 1px solid #ddd; } .note { color: #666; font-size: .9em; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: .8em; }
"""


def _run_folder(checkpoint: str) -> Path | None:
    """The training run a checkpoint belongs to (the folder holding metrics.jsonl), if any."""
    path = Path(checkpoint)
    for folder in (path, *path.parents):
        if (folder / "metrics.jsonl").is_file():
            return folder
    return None


def _metric_rows(results: dict) -> list[tuple[str, str, str]]:
    """(metric, value, what it means) rows of one run's results."""
    rows = []
    for kind, label in (("culture", "culture features (optimised by the loss)"),
                        ("judge", "judge features (never seen by the loss)")):
        r = results["recognisability"][kind]
        rows += [(f"classified as {results['target']}, {label}", f"{r['outputs']['target_rate']:.0%}",
                  f"inputs: {r['inputs']['target_rate']:.0%}; classifier on real images: {r['real_accuracy']:.0%}"),
                 (f"margin source to target, {label}", f"{r['outputs']['margin']:+.3f}",
                  f"inputs: {r['inputs']['margin']:+.3f}; > 0 is closer to the target")]
    for group in ("culture", "judge"):
        d = results["distance"][group]
        rows.append((f"KID to real {results['target']}, {group} features", f"{d['kid_outputs']:.3f}",
                     f"inputs: {d['kid_inputs']:.3f}; lower is closer"))
    content = results["content"]
    rows += [("SSIM of low-pass luminance to the input", f"{content['ssim_lowpass']:.3f}", "1 = same layout"),
             ("edge F1 to the input", f"{content['edge_f1']:.3f}", "1 = same edges (2-pixel tolerance)")]
    if results.get("cycle_error") is not None:
        rows.append(("cycle error", f"{results['cycle_error']:.3f}", "mean |G_back(G(x)) - x|, pixels in [0, 1]"))
    rows.append(("diversity", f"{results['diversity']:.2f}", "spread of outputs / spread of real target images"))
    if "deception" in results:
        rows.append(("deception rate", f"{results['deception']['outputs']:.0%}",
                     f"real {results['target']} images: {results['deception']['real']:.0%}"))
    return rows


def _distance_chart(runs: dict[str, dict], path: Path) -> Path:
    """Bars of KID per feature group: the inputs and each run's outputs, against real target images."""
    groups = [*GROUPS, *JUDGE_GROUPS]
    series = {"inputs": [next(iter(runs.values()))["distance"][g]["kid_inputs"] for g in groups]}
    series.update({name: [r["distance"][g]["kid_outputs"] for g in groups] for name, r in runs.items()})
    figure, axes = plt.subplots(figsize=(8, 3.2))
    width = 0.8 / len(series)
    for i, (name, values) in enumerate(series.items()):
        axes.bar([x + i * width for x in range(len(groups))], values, width, label=name)
    axes.set_xticks([x + width * (len(series) - 1) / 2 for x in range(len(groups))],
                    [f"{g}\n({'loss' if g in GROUPS else 'judge'})" for g in groups])
    axes.set_ylabel("KID to the target culture")
    axes.legend(frameon=False)
    axes.spines[["top", "right"]].set_visible(False)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _curves_chart(folder: Path, path: Path) -> Path | None:
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    if not records:
        return None
    keys = [k for k in ("G_adv", "cycle", "identity", "culture", "D") if k in records[0]]
    figure, axes = plt.subplots(1, len(keys), figsize=(2.6 * len(keys), 2.4))
    for axis, key in zip(axes if len(keys) > 1 else [axes], keys):
        axis.plot([r["step"] for r in records], [r[key] for r in records], linewidth=1)
        axis.set_title(key, fontsize=9)
        axis.tick_params(labelsize=7)
        axis.spines[["top", "right"]].set_visible(False)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _embedded(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _image(path: Path, alt: str) -> str:
    return f'<img src="{_embedded(path)}" alt="{html.escape(alt)}">'


def write_report(evaluations: dict[str, Evaluation], out: str | os.PathLike, title: str = "culturegan evaluation",
                 notes: list[str] = ()) -> Path:
    """report.html, report.json and the PNGs for the named evaluations (one or several runs)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = {name: e.results for name, e in evaluations.items()}
    sections = []
    for index, (name, evaluation) in enumerate(evaluations.items()):
        slug = f"run{index}"
        rows = [list(images) for images in zip(evaluation.inputs[:GRID_ROWS], evaluation.outputs[:GRID_ROWS],
                                               *([evaluation.reconstructions[:GRID_ROWS]]
                                                 if evaluation.reconstructions is not None else []))]
        grid = out / f"{slug}_grid.png"
        save_grid(rows, grid)
        table = "".join(f"<tr><td>{html.escape(m)}</td><td class=num>{html.escape(v)}</td>"
                        f"<td class=note>{html.escape(n)}</td></tr>" for m, v, n in _metric_rows(evaluation.results))
        parts = [f"<div class=run><h2>{html.escape(name)}</h2>",
                 f"<p class=note>{html.escape(evaluation.results['model'])}; {evaluation.results['images']} "
                 f"{html.escape(evaluation.results['source'])} images at {evaluation.results['size']} px</p>",
                 _image(grid, f"{name}: input, output, reconstruction"),
                 "<p class=note>columns: input, output"
                 + (", cycle reconstruction" if evaluation.reconstructions is not None else "") + "</p>",
                 f"<table><tr><th>metric</th><th>value</th><th></th></tr>{table}</table>"]
        folder = _run_folder(evaluation.results["checkpoint"])
        if folder is not None:
            curves = _curves_chart(folder, out / f"{slug}_curves.png")
            if curves is not None:
                parts.append("<h3>training curves</h3>" + _image(curves, f"{name}: training curves"))
            if (folder / "config.json").is_file():
                parts.append("<details><summary>training configuration</summary><pre>"
                             + html.escape((folder / "config.json").read_text()) + "</pre></details>")
        sections.append("\n".join(parts) + "</div>")
    chart = _distance_chart(runs, out / "distances.png")
    first = next(iter(runs.values()))
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(first['source'])} &rarr; {html.escape(first['target'])}, judged against the cultures
{html.escape(', '.join(first['cultures']))} of {html.escape(first['reference'])}.
Recognisability and distances are given twice: with the culture features the culture loss optimises,
and with judge features (hue histogram, local binary patterns, grey-level co-occurrence) it never sees.</p>
{''.join(f'<p class=note>{html.escape(n)}</p>' for n in notes)}
<h2>distance to the target culture per feature group</h2>
{_image(chart, "KID per feature group")}
<div class=runs>
{''.join(sections)}
</div>
</body></html>
"""
    (out / "report.json").write_text(json.dumps(runs, indent=2) + "\n")
    path = out / "report.html"
    temporary = out / ".report.html.tmp"
    temporary.write_text(page)
    os.replace(temporary, path)
    return path
