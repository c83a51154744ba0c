"""`culturegan evaluate` of StyleGAN2 runs (issue 19): photos projected into the base model and
rendered by the evaluated one (culturegan.transfer.latent_transfer), measured like every other
mode, with the projections and their own measures in the report; several checkpoints as seeds."""

import json
import shutil

import pytest
import torch

from culturegan import cli
from culturegan.datasets import write_dataset
from culturegan.evaluation import evaluate, write_report
from culturegan.models.loading import load_run
from culturegan.training import TrainConfig, Trainer
from culturegan.transfer.latent_transfer import LatentTransfer, default_base

SIZE = 32  # the culture features, in the projection's distance, need 16 px or more
NETWORK = dict(z_dim=8, w_dim=8, mapping_layers=2, channel_base=64, channel_max=8)
STEPS = {"steps": 3}  # projection steps: the path, not the projections' quality (tests/transfer/test_project.py)


def _train(root, name: str, culture: str, **changes) -> None:
    config = TrainConfig(mode="stylegan2", data_root=str(root / "train"), target=culture, resolution=SIZE,
                         batch_size=2, workers=0, profile_size=SIZE, steps=2, checkpoint_every=2, sample_every=0,
                         log_every=1, device="cpu", output=str(root / name), progress=False, **changes)
    Trainer(config).fit()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A base StyleGAN2 run on photos (from scratch) and a copy fine-tuned from it on ukiyoe."""
    root = tmp_path_factory.mktemp("stylegan2_eval")
    write_dataset(root / "train", count=4, size=SIZE, cultures=["ukiyoe", "kente"])
    write_dataset(root / "test", count=3, size=SIZE, seed=1, cultures=["ukiyoe", "kente"])
    torch.manual_seed(0)
    _train(root, "base", "photo", **NETWORK)
    _train(root, "tuned", "ukiyoe", init_from=str(root / "base"))
    return root


def test_a_fine_tuned_run_transfers_through_its_base_and_is_measured_like_the_others(runs, tmp_path):
    evaluation = evaluate(runs / "tuned", runs / "test", "photo", "ukiyoe", reference=runs / "train",
                          projection=STEPS, progress=False)
    results = evaluation.results
    assert results["size"] == SIZE and results["images"] == 3  # the models' resolution by default
    assert results["projection"]["base"] == str(runs / "base") and results["projection"]["steps"] == 3
    assert results["projection"]["space"] == "W" and results["projection"]["psnr_db"] > 0
    assert 0 <= results["projection"]["retrieval_top1"] <= 1
    assert results["cycle"] is None  # one way only
    assert 0 <= results["content"]["retrieval"]["top1"] <= 1 and 0 <= results["deception"]["real"] <= 1
    assert evaluation.projections.shape == evaluation.inputs.shape == evaluation.outputs.shape
    # two models of one latent space: the same codes, other pictures
    assert not torch.allclose(evaluation.outputs, evaluation.projections)
    report = write_report({"tuned": [evaluation]}, tmp_path / "report")
    page = report.read_text()
    assert "projection into the base model (seed 1)" in page and "projections: PSNR to the photos" in page
    assert "cycle reconstruction" not in page


def test_a_run_from_scratch_is_its_own_base_so_its_outputs_are_its_projections(runs):
    evaluation = evaluate(runs / "base", runs / "test", "photo", "ukiyoe", reference=runs / "train", count=2,
                          projection=STEPS, progress=False)
    assert evaluation.results["projection"]["base"] == str(runs / "base")
    torch.testing.assert_close(evaluation.outputs, evaluation.projections)
    # its discriminator judges its own culture only (photo), not the target asked for
    assert "deception" not in evaluation.results
    assert load_run(runs / "base").discriminator_name("photo") == "D"


def test_another_evaluation_size_resizes_photos_for_the_search_and_back(runs):
    evaluation = evaluate(runs / "tuned", runs / "test", "photo", "ukiyoe", reference=runs / "train", size=40,
                          count=2, projection=STEPS, progress=False)
    assert evaluation.outputs.shape == evaluation.projections.shape == (2, 3, 40, 40)


def test_several_checkpoints_are_one_settings_seeds(runs, tmp_path, capsys):
    out = tmp_path / "report"
    argv = ["evaluate", "--checkpoint", str(runs / "tuned"), str(runs / "tuned"), "--data", str(runs / "test"),
            "--reference", str(runs / "train"), "--source", "photo", "--target", "ukiyoe", "--out", str(out),
            "--count", "2", "--projection-steps", "2", "--w-plus"]
    assert cli.main(argv) == 0
    assert "report:" in capsys.readouterr().out
    saved = next(iter(json.loads((out / "report.json").read_text()).values()))
    assert len(saved["seeds"]) == 2 and saved["seeds"][0]["projection"]["space"] == "W+"
    assert saved["summary"]["projection"]["psnr_db"]["std"] == pytest.approx(0.0)  # one run twice: same codes


def test_bad_inputs_name_the_problem(runs, tmp_path, capsys):
    two_way = tmp_path / "two_way"
    Trainer(TrainConfig(data_root=str(runs / "train"), source="photo", target="ukiyoe", load_size=SIZE,
                        crop_size=SIZE, workers=0, ngf=4, n_blocks=1, ndf=4, profile_size=SIZE, steps=1,
                        decay_steps=0, device="cpu", output=str(two_way), progress=False, sample_every=0)).fit()
    with pytest.raises(ValueError, match="transfers images itself: projection settings apply to StyleGAN2 models"):
        evaluate(two_way, runs / "test", "photo", "ukiyoe", projection=STEPS, progress=False)
    other = tmp_path / "other"
    shutil.copytree(runs / "train", other / "train")
    _train(other, "wide", "photo", **{**NETWORK, "w_dim": 16})
    with pytest.raises(ValueError, match="do not share a latent space"):
        LatentTransfer(runs / "tuned", base=other / "wide", device="cpu")
    moved = tmp_path / "moved"
    shutil.copytree(runs / "tuned", moved)
    config = moved / "config.json"
    if config.is_file():
        config.unlink()
    for state in moved.glob("checkpoints/*/state.json"):
        meta = json.loads(state.read_text())
        meta["config"]["init_from"] = str(tmp_path / "gone")
        state.write_text(json.dumps(meta))
    with pytest.raises(FileNotFoundError, match="was fine-tuned from .*gone, which does not exist"):
        default_base(moved)
    argv = ["evaluate", "--checkpoint", str(runs / "tuned"), "--data", str(runs / "test"), "--source", "photo",
            "--target", "ukiyoe", "--out", str(tmp_path / "r"), "--base", str(other / "wide")]
    with pytest.raises(SystemExit) as error:
        cli.main(argv)
    assert error.value.code == 2 and "do not share a latent space" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
