"""`culturegan evaluate` on a tiny trained run, the self-contained report, and the demo."""

import json
import re
from html.parser import HTMLParser

import pytest

from culturegan import cli, demo, metrics
from culturegan.datasets import write_dataset
from culturegan.evaluation import evaluate, write_report
from culturegan.models import checkpoints
from culturegan.models.checkpoints import load_checkpoint
from culturegan.training import TrainConfig, Trainer

SIZE = 32


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    write_dataset(root / "train", count=6, size=SIZE, cultures=["ukiyoe", "kente"])
    write_dataset(root / "test", count=4, size=SIZE, seed=1, cultures=["ukiyoe", "kente"])
    config = TrainConfig(data_root=str(root / "train"), source="photo", target="ukiyoe", load_size=SIZE,
                         crop_size=SIZE, workers=0, ngf=4, n_blocks=1, ndf=4, profile_size=SIZE, steps=2,
                         decay_steps=0, device="cpu", output=str(root / "run"), progress=False, sample_every=0,
                         log_every=1)
    Trainer(config).fit()
    return root


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources = []

    def handle_starttag(self, tag, attributes):
        if tag == "img":
            self.sources.append(dict(attributes)["src"])


def test_evaluate_measures_everything_and_the_report_is_self_contained(run, tmp_path, monkeypatch):
    reads = []
    monkeypatch.setattr(checkpoints, "load_checkpoint", lambda path: reads.append(path) or load_checkpoint(path))
    evaluation = evaluate(run / "run", run / "test", "photo", "ukiyoe", reference=run / "train", size=SIZE)
    assert len(reads) == 1  # both generators and the discriminator from one read of the checkpoint
    results = evaluation.results
    assert results["cultures"] == ["kente", "photo", "ukiyoe"] and results["images"] == 4
    for kind in ("culture", "judge"):
        assert 0 <= results["recognisability"][kind]["outputs"]["target_rate"] <= 1
    assert set(results["distance"]) == {"colour", "texture", "line", "culture", "hue", "ltp", "glcm", "judge"}
    assert 0 < results["content"]["ssim_lowpass"] <= 1 and results["cycle"]["clean"] >= 0
    assert set(results["cycle"]["perturbed"]) == set(results["cycle"]["change"]) == set(metrics.PERTURBATIONS)
    assert 0 <= results["content"]["retrieval"]["top1"] <= 1 and results["content"]["retrieval"]["chance_top1"] == 0.25
    assert set(results["content"]["collapse_ratio"]) == {"structure", "culture", "judge"}
    assert results["periodic_artifacts"]["ratio"] > 0 and len(results["periodic_artifacts"]["per_image"]) == 4
    assert isinstance(results["verdicts"], dict)
    assert 0 <= results["deception"]["outputs"] <= 1
    report = write_report({"tiny": [evaluation], "again": [evaluation, evaluation]}, tmp_path / "report",
                          notes=["a note"])
    page = report.read_text()
    parser = _Images()
    parser.feed(page)
    assert len(parser.sources) >= 5 and all(s.startswith("data:image/png;base64,") for s in parser.sources)
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing fetched from elsewhere
    assert "a note" in page and "training curves" in page and "judge features" in page
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert saved["tiny"]["seeds"][0]["target"] == "ukiyoe" and len(saved["again"]["seeds"]) == 2
    assert saved["again"]["summary"]["content"]["ssim_lowpass"]["std"] == 0.0  # the same run twice
    assert "± 0.000" in page  # two seeds: mean ± standard deviation
    for name in ("distances.png", "run0_grid.png", "run0_zoom.png", "run1_grid.png"):
        assert (tmp_path / "report" / name).is_file()


def test_cli_evaluate_and_its_errors(run, tmp_path, capsys):
    argv = ["evaluate", "--checkpoint", str(run / "run"), "--data", str(run / "test"), "--source", "photo",
            "--target", "ukiyoe", "--out", str(tmp_path / "r"), "--size", str(SIZE), "--count", "2"]
    assert cli.main(argv) == 0
    assert "report:" in capsys.readouterr().out
    with pytest.raises(SystemExit) as error:
        cli.main(argv[:-4] + ["--target", "maya"] + argv[-4:])
    assert error.value.code == 2


@pytest.mark.parametrize("cores, device, runs, expected", [
    (2, "cpu", 6, (2, 1)),  # the 2-core CI machine: two runs side by side, one thread each
    (3, "cpu", 6, (3, 1)),
    (16, "cpu", 6, (6, 2)),  # no more workers than runs; the cores shared among them
    (16, "cpu", 1, (1, 16)),
    (16, "cuda", 6, (1, 16)),  # one GPU: one run at a time
])
def test_demo_runs_side_by_side_on_a_cpu(monkeypatch, cores, device, runs, expected):
    monkeypatch.setattr(demo.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert demo._parallel_runs(demo.DemoSettings(device=device), runs) == expected


def test_demo_end_to_end_at_toy_scale(tmp_path):
    settings = demo.DemoSettings(size=SIZE, train_images=4, test_images=3, steps=2, ngf=4, n_blocks=1, ndf=4,
                                 device="cpu")
    report, met = demo.run(tmp_path / "demo", settings, seeds=2)
    assert report.is_file() and "without culture loss" in report.read_text()
    assert sorted(p.name for p in (tmp_path / "demo" / "runs" / "lambda_culture_1").iterdir()) == ["seed_0", "seed_1"]
    # on a CPU the runs trained in worker processes, each logging to its own folder
    assert all("step 2" in (folder / "train.log").read_text() for folder in (tmp_path / "demo" / "runs").glob("*/*"))
    targets = json.loads((tmp_path / "demo" / "report" / "targets.json").read_text())
    assert len(targets) == 6 and all(isinstance(t["met"], bool) for t in targets)
    assert met == all(t["met"] for t in targets)
    saved = json.loads((tmp_path / "demo" / "report" / "report.json").read_text())
    assert all(len(setting["seeds"]) == 2 for setting in saved.values())
