"""`culturegan plot` and the run history it reads: several runs overlaid in one PNG of the
expected size, smoothing, the reader's handling of resumed runs and torn lines, bad input (an
error, no file), and matplotlib used without touching the process's backend."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from culturegan import cli
from culturegan.training.curves import plot_runs, smoothed
from culturegan.training.history import append_record, evaluation_record, read_history, run_folder


def _write_run(folder, records):
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    return folder


def _fake_run(folder, offset: float, steps: int = 40, eval_every: int = 10):
    """A run's records as the trainer writes them: losses, images/s and lr every step, a held-out
    evaluation every `eval_every` steps."""
    rng = np.random.default_rng(int(offset * 10))
    records = []
    for step in range(1, steps + 1):
        records.append({"step": step, "G_adv": offset + rng.random(), "cycle": 5 * np.exp(-step / 10) + offset,
                        "D": 0.5 + 0.1 * rng.random(), "images_per_s": 10.0 + offset, "lr": 2e-4 * (1 - step / steps)})
        if step % eval_every == 0:
            records.append(evaluation_record(step, {"content.retrieval.top1": 0.5 + step / 100 - offset / 10,
                                                    "distance.judge.kid_outputs": 1.0 / step + offset}))
    return _write_run(folder, records)


def test_two_runs_overlaid_in_one_png_of_the_expected_size(tmp_path):
    runs = [_fake_run(tmp_path / "baseline", 0.0), _fake_run(tmp_path / "culture", 1.0)]
    path = plot_runs(runs, tmp_path / "curves.png", smooth=5)
    image = np.asarray(Image.open(path).convert("RGB"))
    # 5 training panels (G_adv, cycle, D, learning rate, images/s) in rows of 4, 2 evaluation
    # panels: 4 columns of 3.2 in, 3 rows of 2.4 in and the 0.4 in legend header, at 100 dpi
    assert image.shape == (760, 1280, 3)
    blue, orange = np.array([31, 119, 180]), np.array([255, 127, 14])  # matplotlib's C0 and C1: one per run
    for colour in (blue, orange):
        assert (np.abs(image.astype(int) - colour).sum(-1) < 30).sum() > 500
    assert (image.min(-1) < 128).mean() > 0.01  # drawn, not a blank canvas
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_a_run_without_evaluations_has_no_evaluation_panels(tmp_path):
    run = _write_run(tmp_path / "run", [{"step": s, "G": 1.0 / s, "lr": 1e-4} for s in range(1, 4)])
    image = Image.open(plot_runs([run], tmp_path / "one.png", smooth=1))
    assert image.size == (640, 280)  # the G and lr panels, one row


def test_runs_that_log_different_losses_overlay(tmp_path):
    # e.g. CycleGAN's cycle loss against CUT's nce: each panel draws the runs that log it
    pair = _write_run(tmp_path / "pair", [{"step": s, "G": 1.0 / s, "cycle": 2.0 / s} for s in range(1, 13)])
    cut = _write_run(tmp_path / "cut", [{"step": s, "G": 1.5 / s, "nce": 3.0 / s} for s in range(1, 13)])
    image = Image.open(plot_runs([pair, cut], tmp_path / "both.png", smooth=10))
    assert image.size == (960, 280)  # G, cycle, nce: one row of three panels


def test_smoothing_is_the_trailing_mean():
    np.testing.assert_allclose(smoothed([1, 2, 3, 4, 5, 6], 3), [1, 1.5, 2, 3, 4, 5])
    np.testing.assert_allclose(smoothed([4, 8, 0], 1), [4, 8, 0])
    np.testing.assert_allclose(smoothed([2, float("nan"), 4, 6], 2), [2, 2, 4, 5])  # non-finite values left out
    np.testing.assert_allclose(smoothed([1, 3], 10), [1, 2])  # a window longer than the series


def test_the_history_keeps_the_latest_attempt_of_a_resumed_run_and_a_torn_line_loses_one_record(tmp_path):
    folder = tmp_path / "run"
    lines = [{"step": 1, "G": 9}, {"step": 2, "G": 8}, evaluation_record(2, {"m": 0.1}), {"step": 3, "G": 7},
             {"step": 4, "G": 6},  # killed after step 4; the last checkpoint was step 2
             {"step": 3, "G": 5}, {"step": 4, "G": 4}, evaluation_record(4, {"m": 0.2})]
    folder.mkdir()
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines[:5]) + '{"step": 5, "G')
    for record in lines[5:]:  # the resumed run's, as the trainer appends them: the torn line is ended first
        append_record(folder, record)
    with pytest.warns(RuntimeWarning, match=r"skipped line\(s\) 6"):
        history = read_history(folder)
    assert [(r["step"], r["G"]) for r in history.training] == [(1, 9), (2, 8), (3, 5), (4, 4)]
    assert [(r["step"], r["eval"]["m"]) for r in history.evaluations] == [(2, 0.1), (4, 0.2)]
    assert run_folder(folder / "checkpoints" / "step-00000002") == folder and run_folder(tmp_path) is None


def test_evaluations_by_an_earlier_judge_are_read_without_their_judge_measures(tmp_path):
    """Runs before 2026-12-02 logged judge measures under the same names by a judge that read
    sharpness: on one curve with today's they would look like a change in training."""
    measures = {"content.retrieval.top1": 0.9, "distance.judge.kid_outputs": 5.0,
                "recognisability.judge.outputs.target_rate": 0.5, "content.collapse_ratio.judge": 0.8}
    folder = _write_run(tmp_path / "run", [{"step": 10, "eval": measures}, evaluation_record(20, measures)])
    with pytest.warns(RuntimeWarning, match=r"step\(s\) 10 were judged by an earlier version of the judge"):
        history = read_history(folder)
    assert history.evaluations[0]["eval"] == {"content.retrieval.top1": 0.9}
    assert history.evaluations[1]["eval"] == measures


@pytest.mark.parametrize("case, message", [
    ("missing", "has no metrics.jsonl"),
    ("empty", "no records to plot in .*empty.metrics.jsonl"),
    ("smooth", "smooth must be a whole number of records >= 1"),
    ("suffix", "does not end in .png"),
])
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, capsys, case, message):
    good = _fake_run(tmp_path / "good", 0.0)
    (tmp_path / "missing").mkdir()
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.jsonl").write_text("\n")
    runs = {"missing": [good, tmp_path / "missing"], "empty": [good, tmp_path / "empty"]}.get(case, [good])
    out = tmp_path / ("out.svg" if case == "suffix" else "out.png")
    arguments = ["plot", *map(str, runs), "--out", str(out), *(["--smooth", "0"] if case == "smooth" else [])]
    with pytest.raises(SystemExit) as stopped:
        cli.main(arguments)
    assert stopped.value.code == 2
    assert capsys.readouterr().err.startswith("culturegan plot: ")
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        plot_runs(runs, out, smooth=0 if case == "smooth" else 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "good", "missing"]  # no PNG, no temporary


def test_the_cli_plots_and_names_the_file(tmp_path, capsys):
    run = _fake_run(tmp_path / "run", 0.0)
    assert cli.main(["plot", str(run), "--out", str(tmp_path / "c.png"), "--smooth", "1"]) == 0
    assert capsys.readouterr().out.strip() == f"curves: {tmp_path / 'c.png'}"
    assert Image.open(tmp_path / "c.png").format == "PNG"


def test_plotting_leaves_the_matplotlib_backend_alone(tmp_path):
    run = _fake_run(tmp_path / "run", 0.0)
    script = textwrap.dedent(f"""
        import sys
        import matplotlib
        matplotlib.use("svg")
        import culturegan.evaluation
        from culturegan.culture import GROUPS
        from culturegan.evaluation import report
        from culturegan.metrics import JUDGE_GROUPS
        from culturegan.training.curves import plot_runs
        from pathlib import Path

        plot_runs([{str(run)!r}], {str(tmp_path / "curves.png")!r})
        distances = {{group: {{"kid_inputs": 1.0, "kid_outputs": 0.5}} for group in (*GROUPS, *JUDGE_GROUPS)}}
        report._distance_chart({{"run": [{{"distance": distances}}]}}, Path({str(tmp_path / "distances.png")!r}))
        print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["svg", "False"]
    assert Image.open(tmp_path / "curves.png").size[0] > 0 and Image.open(tmp_path / "distances.png").size[0] > 0
