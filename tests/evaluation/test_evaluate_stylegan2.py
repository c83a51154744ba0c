"""`culturegan evaluate` of StyleGAN2 runs (issue 19): photos projected into the base model and
rendered by the evaluated one (culturegan.transfer.latent_transfer), measured like every other
mode, with the projections and their own measures in the report; several checkpoints as seeds."""

import importlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from nvlabs_snapshots import write_snapshot

from culturegan import cli
from culturegan.datasets import write_dataset
from culturegan.evaluation import evaluate, judge_batches, write_report
from culturegan.evaluation.evaluate import _logits
from culturegan.models import checkpoints
from culturegan.models.loading import CARD_FORMAT, embedded_card, load_generator, load_run
from culturegan.training import TrainConfig, Trainer
from culturegan.transfer.blend import blend_files
from culturegan.transfer.latent_transfer import LatentTransfer, default_base

SIZE = 32  # the culture features, in the projection's distance, need 16 px or more
NETWORK = dict(z_dim=8, w_dim=8, mapping_layers=2, channel_base=64, channel_max=8)
STEPS = {"steps": 3}  # projection steps: the path, not the projections' quality (tests/transfer/test_project.py)


def _train(root, name: str, culture: str, resume: bool = False, **changes) -> None:
    settings = dict(mode="stylegan2", data_root=str(root / "train"), target=culture, resolution=SIZE, batch_size=2,
                    workers=0, profile_size=SIZE, steps=2, checkpoint_every=2, sample_every=0, log_every=1,
                    device="cpu", output=str(root / name), progress=False)
    Trainer(TrainConfig(**{**settings, **changes}), resume=resume).fit()


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
    evaluation = evaluate(runs / "base", runs / "test", "kente", "photo", reference=runs / "train", count=2,
                          projection=STEPS, progress=False)
    assert evaluation.results["projection"]["base"] == str(runs / "base")
    torch.testing.assert_close(evaluation.outputs, evaluation.projections)
    assert 0 <= evaluation.results["deception"]["outputs"] <= 1
    # its discriminator judges its own culture only
    assert load_run(runs / "base").discriminator_name("photo") == "D"
    assert load_run(runs / "base").discriminator_name("ukiyoe") is None


def test_a_run_s_networks_are_rebuilt_as_it_built_them(runs):
    """Its keys do not show D's minibatch-std groups (gcd(4, batch 2) = 2 here; a D read off its
    keys groups 4), conv_clamp or the float16 blocks: the run records each StyleGAN2 network's
    constructor arguments, and its deception rate is judged by the D it trained."""
    run = load_run(runs / "base")
    discriminator, _ = run.discriminator_for("photo")
    assert discriminator.b4.mbstd.group_size == 2
    assert discriminator.init_kwargs == run.meta["architectures"]["D"]["init_kwargs"]
    generator, card = load_generator(runs / "base", "G_ema")
    assert generator.init_kwargs == card["architecture"]["init_kwargs"] == run.meta["architectures"]["G_ema"][
        "init_kwargs"]


def test_an_nvlabs_snapshot_is_judged_by_its_own_discriminator(runs, tmp_path):
    """The same networks as a run and as an NVlabs snapshot (G, D, G_ema): the same projections,
    outputs and deception rates."""
    generator, _ = load_generator(runs / "base", "G_ema")
    discriminator, _ = load_run(runs / "base").discriminator_for("photo")
    snapshot = write_snapshot(tmp_path / "network-snapshot.pkl", {"G": generator, "D": discriminator,
                                                                  "G_ema": generator}, tmp_path / "executed")
    settings = dict(reference=runs / "train", count=2, projection=STEPS, progress=False)
    from_snapshot = evaluate(snapshot, runs / "test", "kente", "photo", **settings)
    from_run = evaluate(runs / "base", runs / "test", "kente", "photo", **settings)
    torch.testing.assert_close(from_snapshot.outputs, from_run.outputs)
    assert from_snapshot.results["deception"] == from_run.results["deception"]
    assert not (tmp_path / "executed").exists()


def test_a_snapshot_whose_discriminator_cannot_be_built_stops_before_the_projection(runs, tmp_path, monkeypatch):
    generator, _ = load_generator(runs / "base", "G_ema")
    discriminator, _ = load_run(runs / "base").discriminator_for("photo")
    discriminator.init_kwargs = {**discriminator.init_kwargs, "future_kwarg": 1}  # a newer NVlabs' argument
    snapshot = write_snapshot(tmp_path / "network-snapshot.pkl", {"G": generator, "D": discriminator,
                                                                  "G_ema": generator}, tmp_path / "executed")

    def projected(*_):
        raise AssertionError("the photos were projected before the discriminator was built")

    # (the package's `evaluate` is the function: the module from importlib)
    monkeypatch.setattr(importlib.import_module("culturegan.evaluation.evaluate"), "_through_latent_space", projected)
    with pytest.raises(ValueError, match="future_kwarg.* do not fit its constructor"):
        evaluate(snapshot, runs / "test", "kente", "photo", reference=runs / "train", projection=STEPS,
                 progress=False)


def test_the_base_of_a_run_tuned_from_a_relative_path_is_found_elsewhere_and_after_a_move(runs, tmp_path,
                                                                                            monkeypatch):
    project = tmp_path / "project"
    for folder in ("train", "base"):
        shutil.copytree(runs / folder, project / folder)
    monkeypatch.chdir(project)
    _train(Path("."), "tuned", "ukiyoe", init_from="base")
    monkeypatch.chdir(tmp_path)  # another working directory: where it trained from
    assert default_base(project / "tuned") == project / "base"
    _train(project, "tuned", "ukiyoe", resume=True, init_from="base", steps=4)  # resumed from here: kept
    assert default_base(project / "tuned") == project / "base"
    moved = tmp_path / "moved"
    shutil.move(project, moved)
    monkeypatch.chdir(moved)  # the project moved: its config's relative path, from its root
    assert default_base(Path("tuned")) == Path("base")


def test_a_blend_transfers_through_its_photo_model_and_says_when_that_is_gone(runs, tmp_path, capsys):
    """A blend of a photo model and its ukiyoe fine-tune renders one's layout in the other's
    manner: photos are projected into the photo model (the checkpoint blended), whichever role it
    plays (projected into the blend itself, a photo would come back as its own reconstruction),
    and the blend is evaluated as making either culture."""
    photo_model = tmp_path / "photo_model"
    shutil.copytree(runs / "base", photo_model)
    blend, _ = blend_files(photo_model, runs / "tuned", 16, tmp_path / "blend.safetensors", grid_seeds=[0],
                           device="cpu")
    reverse, _ = blend_files(runs / "tuned", photo_model, 16, tmp_path / "reverse.safetensors", grid_seeds=[0],
                             device="cpu")
    photo_checkpoint = checkpoints.checkpoint_directory(photo_model).resolve()
    assert default_base(blend, "photo") == default_base(reverse, "photo") == photo_checkpoint
    assert default_base(reverse) == checkpoints.checkpoint_directory(runs / "tuned").resolve()  # no culture given
    evaluation = evaluate(blend, runs / "test", "photo", "ukiyoe", reference=runs / "train", count=2,
                          projection=STEPS, progress=False)
    assert evaluation.results["projection"]["base"] == str(photo_checkpoint)
    assert not torch.allclose(evaluation.outputs, evaluation.projections)  # rendered by the blend
    with pytest.raises(ValueError, match="makes 'photo' or 'ukiyoe' images"):
        evaluate(blend, runs / "test", "photo", "kente", reference=runs / "train", projection=STEPS, progress=False)
    # another model where the photo model was (the same checkpoint name, other weights)
    shutil.rmtree(photo_model)
    shutil.copytree(runs / "tuned", photo_model)
    with pytest.raises(FileNotFoundError, match="its structure model .* is no longer it"):
        default_base(blend, "photo")
    shutil.rmtree(photo_model)
    arguments = ["evaluate", "--checkpoint", str(reverse), "--data", str(runs / "test"), "--reference",
                 str(runs / "train"), "--source", "photo", "--target", "ukiyoe", "--out", str(tmp_path / "report"),
                 "--projection-steps", "1"]
    with pytest.raises(SystemExit) as stopped:  # checked before any work, for --source's photos
        cli.main(arguments)
    assert stopped.value.code == 2 and "its rendering model" in capsys.readouterr().err
    assert not (tmp_path / "report").exists()
    # a blend written before blend recorded its models' places and cultures
    card = embedded_card(blend)
    for role in ("structure", "rendering"):
        del card["blend"][role]["path"], card["blend"][role]["cultures"]
    old = tmp_path / "old.safetensors"
    save_file(load_file(blend), old, metadata={CARD_FORMAT: json.dumps(card)})
    with pytest.raises(FileNotFoundError, match="does not record; give that model as the base"):
        default_base(old, "photo")
    converted = tmp_path / "converted.safetensors"  # (its card's source_file: the run it came from)
    cli.main(["convert", str(runs / "base"), str(converted)])
    assert default_base(converted, "photo") == converted  # any other file is its own base
    of_files, _ = blend_files(converted, runs / "tuned", 16, tmp_path / "files.safetensors", grid_seeds=[0],
                              device="cpu")
    assert default_base(of_files, "photo") == converted.resolve()


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


@pytest.mark.parametrize("count, group, batches", [
    (5, 4, [(0, 4), (4, 5)]), (6, 4, [(0, 4), (4, 6)]), (3, 4, [(0, 3)]), (21, 4, [(0, 16), (16, 20), (20, 21)]),
    (32, 4, [(0, 16), (16, 32)]), (7, None, [(0, 7)]), (17, 3, [(0, 15), (15, 17)]),
    (20, 3, [(0, 15), (15, 18), (18, 20)]),
])
def test_discriminators_judge_in_batches_their_minibatch_std_layer_takes(count, group, batches):
    assert judge_batches(count, group) == batches


def test_a_stylegan2_discriminator_judges_any_number_of_images(runs):
    discriminator, gan_mode = load_run(runs / "tuned").discriminator_for("ukiyoe")
    assert gan_mode == "vanilla"  # the logistic loss: real above 0
    logits = _logits(discriminator, torch.rand(5, 3, 40, 40) * 2 - 1)  # 5: no multiple of its groups of 4
    assert logits.shape == (5, 1) and torch.isfinite(logits).all()


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
        meta["config"]["init_from"] = meta["init_from_path"] = str(tmp_path / "gone")
        state.write_text(json.dumps(meta))
    with pytest.raises(FileNotFoundError, match="was fine-tuned from .*gone, which does not exist"):
        default_base(moved)
    with pytest.raises(ValueError, match="makes 'ukiyoe' images: evaluate it with target 'ukiyoe', not 'kente'"):
        evaluate(runs / "tuned", runs / "test", "photo", "kente", projection=STEPS, progress=False)
    with pytest.raises(ValueError, match="size must be an integer >= 32"):
        evaluate(runs / "tuned", runs / "test", "photo", "ukiyoe", size=16, projection=STEPS, progress=False)
    with pytest.raises(ValueError, match="count must be an integer >= 1, got 0"):
        evaluate(runs / "tuned", runs / "test", "photo", "ukiyoe", count=0, projection=STEPS, progress=False)
    argv = ["evaluate", "--data", str(runs / "test"), "--source", "photo", "--target", "ukiyoe",
            "--out", str(tmp_path / "r")]
    for checkpoints, message in (([runs / "tuned", "--base", other / "wide"], "do not share a latent space"),
                                 ([runs / "tuned", tmp_path / "nothing"], "nothing does not exist"),
                                 ([runs / "tuned", two_way], "give StyleGAN2 models or image-to-image generators, "
                                                             "not both")):
        with pytest.raises(SystemExit) as error:
            cli.main([*argv, "--checkpoint", *map(str, checkpoints)])
        assert error.value.code == 2 and message in capsys.readouterr().err
        assert not (tmp_path / "r").exists()  # refused before anything was evaluated or written
