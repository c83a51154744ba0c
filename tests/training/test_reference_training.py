"""Mode "multi" trains the generator's reference projection (culture features -> style code),
so that `culturegan transfer --reference` steers the generators culturegan trains; runs with
lambda_reference=0 (and multi runs from before) have none and refuse references by name."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from culturegan import cli
from culturegan.culture import REFERENCE_SIDE, CultureFeatureExtractor, reference_features
from culturegan.data.folders import load_images
from culturegan.models import MultiCultureGenerator
from culturegan.models.loading import load_run
from culturegan.training import Trainer, load_config
from culturegan.training.objectives import MultiCultureObjective
from culturegan.transfer import Stylizer
import test_multi_culture
import test_training
from test_multi_culture import multi
from test_training import parameters

# the fixtures this module's tests take (and three_cultures takes dataset)
dataset, three_cultures = test_training.dataset, test_multi_culture.three_cultures


def projection(state):
    return {k: v for k, v in state.items() if k.startswith("G.reference_projection.")}


def statistics(generator):
    return generator.reference_mean.clone(), generator.reference_scale.clone()


def training_features(root, cultures):
    """(images, feature_dim): every training image's reference features, computed here."""
    extractor = CultureFeatureExtractor()
    return torch.cat([reference_features(load_images(root, culture, REFERENCE_SIDE), extractor)
                      for culture in cultures])


def expected_statistics(root, cultures):
    """The mean and the (floored) standard deviation of every training image's reference features."""
    features = training_features(root, cultures).double()
    std = features.std(0)
    return features.mean(0).float(), std.clamp_min(1e-3 * std.max()).float()


def assert_statistics(got, want):
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)


def transfer(run, source, output, *options):
    return cli.main(["transfer", "--checkpoint", str(run), "--input", str(source), "--output", str(output),
                     "--device", "cpu", *options])


def test_a_multi_run_trains_its_reference_projection_and_transfer_takes_references(three_cultures, tmp_path):
    trainer = Trainer(multi(three_cultures, tmp_path / "run", steps=3, checkpoint_every=3))
    before = projection(parameters(trainer))
    assert len(before) == 4  # two linear layers' weights and biases
    trainer.fit()
    after = projection(parameters(trainer))
    assert all(not torch.equal(before[k], after[k]) for k in before)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["reference"] >= 0 for r in records) and any(r["reference"] > 0 for r in records)
    generator, _ = load_run(tmp_path / "run").generator()
    saved = {f"G.{k}": v for k, v in generator.state_dict().items() if k.startswith("reference_projection.")}
    assert saved.keys() == after.keys() and all(torch.equal(saved[k], after[k]) for k in saved)
    fitted = statistics(trainer.models["G"])
    assert_statistics(fitted, expected_statistics(three_cultures, trainer.objective.cultures))
    assert all(torch.equal(s, f) for s, f in zip(statistics(generator), fitted))  # the saved run keeps them
    reference = three_cultures / "ukiyoe"
    assert transfer(tmp_path / "run", three_cultures / "kente", tmp_path / "out", "--reference", str(reference)) == 0
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == sorted(p.name for p in (three_cultures / "kente").iterdir())
    expected = Stylizer(tmp_path / "run", device="cpu", reference=reference).image(
        Image.open(three_cultures / "kente" / written[0]))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / written[0])), np.asarray(expected))
    by_culture = Stylizer(tmp_path / "run", "ukiyoe", device="cpu").image(
        Image.open(three_cultures / "kente" / written[0]))
    assert not np.array_equal(np.asarray(by_culture), np.asarray(expected))  # the reference's code, not the culture's


def hand_built_codes(trainer, constant):
    """The trainer's generator with a projection that maps every feature vector to `constant`."""
    generator = trainer.models["G"]
    with torch.no_grad():
        last = generator.reference_projection[2]
        last.weight.zero_()
        last.bias.copy_(constant)
    return generator


def test_references_steer_half_the_codes_and_align_with_their_culture(three_cultures, tmp_path):
    trainer = Trainer(multi(three_cultures, tmp_path / "codes", batch_size=3))
    constant = torch.linspace(-1, 1, 8)
    generator = hand_built_codes(trainer, constant)
    real = torch.rand(3, 3, 32, 32) * 2 - 1
    # image 1's target culture is image 2's; images 0 and 2 have no image of theirs in the batch
    sources, targets = torch.tensor([0, 0, 1]), torch.tensor([2, 1, 2])
    torch.manual_seed(11)
    assert (torch.rand(3) < 0.5).tolist() == [True, True, False]  # the draw _style_codes makes first: 0, 1 steered
    torch.manual_seed(11)
    target_codes, source_codes, alignment = trainer.objective._style_codes(generator, real, sources, targets)
    embeddings = generator.culture_embedding.weight
    torch.testing.assert_close(source_codes, torch.stack([constant, constant, embeddings[1]]))
    torch.testing.assert_close(target_codes, torch.stack([embeddings[2], constant, embeddings[2]]))
    # every projected image's code (the two steered, and image 2 as image 1's reference) to its
    # own culture's embedding
    want = (constant - embeddings[sources]).square().mean()
    torch.testing.assert_close(alignment, want)
    # it trains the projection, never the embedding it pulls toward
    grads = torch.autograd.grad(alignment, [generator.reference_projection[2].bias, embeddings], allow_unused=True)
    assert grads[0].abs().sum() > 0 and grads[1] is None


def test_a_run_without_references_keeps_its_form_and_transfer_refuses_references(three_cultures, tmp_path, capsys):
    trainer = Trainer(multi(three_cultures, tmp_path / "plain", steps=2, checkpoint_every=2, lambda_reference=0))
    assert trainer.models["G"].reference_projection is None
    losses, _ = trainer.objective.generator_losses(trainer.forward, next(trainer._batches()))
    assert "reference" not in losses
    trainer.fit()
    state = tmp_path / "plain" / "checkpoints" / "step-00000002" / "state.safetensors"
    with safe_open(str(state), "pt") as file:  # the checkpoint of a multi run from before references
        keys = list(file.keys())
    assert not [k for k in keys if "reference_projection" in k] and "G.culture_embedding.weight" in keys
    assert Stylizer(tmp_path / "plain", "kente", device="cpu")(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)
    message = r"built without a reference projection \(feature_dim\), so no reference can steer it.*lambda_reference=0"
    with pytest.raises(ValueError, match=message):
        Stylizer(tmp_path / "plain", device="cpu", reference=three_cultures / "ukiyoe")
    with pytest.raises(SystemExit) as error:
        transfer(tmp_path / "plain", three_cultures / "kente", tmp_path / "out", "--reference",
                 str(three_cultures / "ukiyoe"))
    assert error.value.code == 2 and "so no reference can steer it" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_run_without_a_projection_resumes_only_without_one_and_initialises_one_that_trains_it(three_cultures,
                                                                                                  tmp_path):
    Trainer(multi(three_cultures, tmp_path / "plain", steps=2, checkpoint_every=2, lambda_reference=0)).fit()
    with pytest.raises(ValueError, match=r"has no reference projection .* resume it with lambda_reference = 0"):
        Trainer(multi(three_cultures, tmp_path / "plain", steps=4, checkpoint_every=2), resume=True)
    Trainer(multi(three_cultures, tmp_path / "plain", steps=4, checkpoint_every=2, lambda_reference=0),
            resume=True).fit()
    pretrained = {k: v for k, v in load_run(tmp_path / "plain").generator()[0].state_dict().items()}
    tuned = Trainer(multi(three_cultures, tmp_path / "tuned", steps=2, init_from=str(tmp_path / "plain")))
    started = {k[2:]: v for k, v in parameters(tuned).items() if k.startswith("G.")}
    assert pretrained.keys() < started.keys() and len(projection(parameters(tuned))) == 4
    # its fresh projection standardises with this run's statistics
    assert_statistics(statistics(tuned.models["G"]), expected_statistics(three_cultures, tuned.objective.cultures))
    assert all(torch.equal(started[k], v) for k, v in pretrained.items())  # the rest is the pretrained generator
    before = projection(parameters(tuned))
    tuned.fit()
    assert all(not torch.equal(before[k], v) for k, v in projection(parameters(tuned)).items())


@pytest.mark.parametrize("value", ["-0.5", "nan", "inf"])
def test_a_bad_lambda_reference_is_refused_by_name(value):
    with pytest.raises(ValueError, match=f"lambda_reference must be a finite number >= 0, got {value}"):
        load_config(None, ["data_root=data", "mode=multi", f"lambda_reference={value}"])


def test_the_projection_takes_the_features_transfer_computes(three_cultures, tmp_path):
    objective = Trainer(multi(three_cultures, tmp_path / "dims")).objective
    assert isinstance(objective, MultiCultureObjective)
    assert objective.reference_dim == CultureFeatureExtractor().feature_dim()


def test_a_pretrained_projection_keeps_its_statistics_and_an_old_one_gets_identity_ones(three_cultures, tmp_path):
    generator = Trainer(multi(three_cultures, tmp_path / "source")).models["G"]
    with torch.no_grad():
        generator.reference_mean.fill_(0.5)
        generator.reference_scale.fill_(2.0)
    state = {k: v.contiguous() for k, v in generator.state_dict().items()}  # (the trainer's are channels_last)
    save_file(state, str(tmp_path / "trained.safetensors"))
    old = {k: v for k, v in state.items() if k not in ("reference_mean", "reference_scale")}
    save_file(old, str(tmp_path / "old.safetensors"))  # a projection trained before the statistics
    for name, mean, scale in (("trained", 0.5, 2.0), ("old", 0.0, 1.0)):
        tuned = Trainer(multi(three_cultures, tmp_path / name, init_from=str(tmp_path / f"{name}.safetensors")))
        got_mean, got_scale = statistics(tuned.models["G"])
        assert torch.equal(got_mean, torch.full((431,), mean)) and torch.equal(got_scale, torch.full((431,), scale))


def nearest_own_culture(standardise, features, cultures, steps=20, seeds=10):
    """The share of images whose code, after `steps` Adam steps (training's lr and betas) of the
    reference alignment alone, is nearest their own culture's embedding, over `seeds` fresh
    projections."""
    hits = 0
    for seed in range(seeds):
        torch.manual_seed(seed)
        generator = MultiCultureGenerator(3, ngf=4, n_blocks=1, style_dim=8, feature_dim=features.shape[1])
        if standardise:
            generator.fit_reference_statistics(features)
        optimizer = torch.optim.Adam(generator.reference_projection.parameters(), lr=2e-4, betas=(0.5, 0.999))
        embeddings = generator.culture_embedding.weight.detach()
        for _ in range(steps):
            loss = torch.nn.functional.mse_loss(generator.style_code(reference_features=features), embeddings[cultures])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            codes = generator.style_code(reference_features=features)
        hits += int((torch.cdist(codes, embeddings).argmin(1) == cultures).sum())
    return hits / (seeds * len(features))


def test_standardised_references_find_their_culture_within_a_few_steps(three_cultures):
    """20 steps from 10 fresh projections: standardised, 0.60 of the references are nearest their
    own culture's embedding; raw, 0.37 (chance: 1/3). A few steps do not make it every
    reference (the codes of a culture's near-alike images move together: 4, 8 or 12 of 12)."""
    names = ["ink_wash", "kente", "ukiyoe"]
    features = training_features(three_cultures, names)
    cultures = torch.arange(3).repeat_interleave(4)
    standardised, raw = nearest_own_culture(True, features, cultures), nearest_own_culture(False, features, cultures)
    assert standardised >= 0.55 and standardised - raw >= 0.15, (standardised, raw)
