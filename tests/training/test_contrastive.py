"""mode "contrastive" (CUT / FastCUT): its settings and their errors, the PatchNCE loss with its
sampled patches and flip equivariance, training, exact resume (also after SIGKILL), and
transfer and evaluation of the run."""

import json
import random
import signal
import subprocess
import sys

import pytest
import torch

from culturegan import cli
from culturegan.evaluation import evaluate
from culturegan.losses import CultureLoss, PatchNCELoss
from culturegan.models import checkpoints, layer_features
from culturegan.models.loading import load_run
from culturegan.training import TrainConfig, Trainer, load_config
from culturegan.training.objectives import ContrastiveObjective
from culturegan.transfer import Stylizer
from test_interruption import _toml, _wait_for
from test_training import assert_every_generator_loss_reaches, dataset, parameters, tiny  # noqa: F401

BASE = ["data_root=data", "source=a", "target=b", "load_size=36", "crop_size=32"]


def contrastive(dataset, output, **changes) -> TrainConfig:  # noqa: F811
    """tiny() in mode contrastive: 16 patches fit every default layer of a 32-pixel crop."""
    return tiny(dataset, output, **{"mode": "contrastive", "nce_patches": 16, "pool_size": 0, **changes})


# ------------------------------------------------------------------------------ settings

@pytest.mark.parametrize("overrides, message", [
    (["mode=cut"], "invalid setting.*mode='cut'"),
    (["mode=contrastive", "preset=slowcut"], "unknown preset 'slowcut'; expected one of cut, fastcut"),
    (["lambda_nce=1"], "lambda_nce: only for mode 'contrastive', this run's mode is 'pair'"),
    (["preset=cut"], "preset: only for mode 'contrastive'"),
    (["mode=multi", "nce_layers=0,4"], "nce_layers: only for mode 'contrastive', this run's mode is 'multi'"),
    (["mode=contrastive", "nce_temperature=0"], "nce_temperature must be a finite number > 0, got 0.0"),
    (["mode=contrastive", "nce_temperature=-0.1"], "nce_temperature must be a finite number > 0"),
    (["mode=contrastive", "lambda_nce=-1"], "lambda_nce must be a finite number >= 0"),
    (["mode=contrastive", "nce_layers=0,4,4"], r"nce_layers must be distinct indices >= 0.*\(0, 4, 4\)"),
    (["mode=contrastive", "nce_layers=-1,4"], r"nce_layers must be distinct indices >= 0.*\(-1, 4\)"),
    (["mode=contrastive", "nce_patches=0"], "nce_patches must be >= 1, got 0"),
    (["mode=contrastive", "nce_idt=maybe"], "'nce_idt' takes a bool, got 'maybe'"),
    (["mode=contrastive", "target=a"], "same culture 'a'"),
    # keys of the other modes, refused by name rather than ignored
    (["mode=contrastive", "lambda_cycle=5"], "lambda_cycle: only for modes 'pair', 'multi', this run's mode is "
                                             "'contrastive'"),
    (["mode=contrastive", "lambda_identity=1"], "lambda_identity: only for modes 'pair', 'multi'"),
    (["mode=contrastive", "style_dim=8"], "style_dim: only for mode 'multi', this run's mode is 'contrastive'"),
    (["mode=contrastive", "lambda_class=3"], "lambda_class: only for mode 'multi'"),
    (["lambda_reference=0"], "lambda_reference: only for mode 'multi'"),
    (["mode=foo", "preset=cut"], "invalid setting.*mode='foo'"),  # the unknown mode first, not the preset
])
def test_bad_settings_name_their_key(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, BASE + overrides)


def test_presets_fill_what_is_not_given_and_explicit_keys_win():
    cut = load_config(None, BASE + ["mode=contrastive"])
    assert (cut.preset, cut.lambda_nce, cut.nce_idt, cut.flip_equivariance) == ("cut", 1.0, True, False)
    assert (cut.nce_layers, cut.nce_patches, cut.nce_temperature, cut.pool_size) == ((0, 4, 7, 10, 14), 256, 0.07, 0)
    fast = load_config(None, BASE + ["mode=contrastive", "preset=fastcut"])
    assert (fast.lambda_nce, fast.nce_idt, fast.flip_equivariance) == (10.0, False, True)
    mixed = load_config(None, BASE + ["mode=contrastive", "preset=fastcut", "lambda_nce=2", "nce_idt=true",
                                      "pool_size=5"])
    assert (mixed.lambda_nce, mixed.nce_idt, mixed.flip_equivariance, mixed.pool_size) == (2.0, True, True, 5)
    # CUT's layers past the residual blocks are left out of the default
    assert [load_config(None, BASE + ["mode=contrastive", f"n_blocks={n}"]).nce_layers for n in (0, 1, 4, 5)] == \
        [(0, 4, 7), (0, 4, 7, 10), (0, 4, 7, 10), (0, 4, 7, 10, 14)]
    pair = load_config(None, BASE)  # the other modes keep their behaviour: no contrastive keys, a pool of 50
    assert (pair.pool_size, pair.preset, pair.lambda_nce, pair.nce_layers) == (50, None, None, None)
    assert cut.validate() == cut  # validating a resolved config again changes nothing


@pytest.mark.parametrize("changes, message", [
    (dict(nce_layers=(0, 4, 22)), r"nce_layers: the generator has layers 0..19, not \[22\]"),
    (dict(nce_patches=65), r"nce_patches=65 is more than the positions of layer 7: 8x8, layer 10: 8x8 at crop_size 32"),
    # layer 0 is the input as the fused G passes it on, unpadded (the unfused G's pad gives 38x38)
    (dict(nce_layers=(0,), nce_patches=1025), r"nce_patches=1025 is more than the positions of layer 0: 32x32"),
])
def test_layers_and_patches_the_generator_lacks_are_refused_at_start(changes, message):
    """Refused when the objective is made, before the trainer fits the culture profiles (minutes
    on a real dataset)."""
    config = TrainConfig(data_root="unused", source="a", target="b", mode="contrastive", load_size=36, crop_size=32,
                         ngf=4, n_blocks=1, ndf=4, **changes).validate()
    with pytest.raises(ValueError, match=message):
        ContrastiveObjective(config, CultureLoss(), random.Random(0))


# ------------------------------------------------------------------------------ PatchNCE

def _shuffled(features: torch.Tensor) -> torch.Tensor:
    n, c, h, w = features.shape
    return features.flatten(2)[:, :, torch.randperm(h * w)].view(n, c, h, w)


def _unchanged(patches):
    return patches


def test_patch_nce_prefers_the_patch_at_the_same_place():
    torch.manual_seed(0)
    features = torch.randn(2, 16, 8, 8)
    loss = PatchNCELoss(patches=32, temperature=0.07)
    encode = lambda images: [images]  # noqa: E731  (the features are the images themselves)
    aligned = loss(encode, _unchanged, features, features)
    shuffled = loss(encode, _unchanged, features, _shuffled(features))
    assert aligned < 0.1 < shuffled  # (log 32 = 3.5 for no information)
    weighted = PatchNCELoss(patches=32, temperature=0.07, weight=10.0)
    torch.manual_seed(1)
    want = loss(encode, _unchanged, features, _shuffled(features))
    torch.manual_seed(1)
    torch.testing.assert_close(weighted(encode, _unchanged, features, _shuffled(features)), 10 * want)


def test_flip_equivariance_compares_each_query_with_the_key_at_its_mirrored_place():
    torch.manual_seed(0)
    features = torch.randn(2, 16, 8, 8)
    loss = PatchNCELoss(patches=32, temperature=0.07)
    encode = lambda images: [images]  # noqa: E731  (flip-equivariant: features of flip(x) are flip(x))
    mirrored = features.flip(3)  # an output made from the flipped input
    assert loss(encode, _unchanged, features, mirrored, flipped=True) < 0.1
    assert loss(encode, _unchanged, features, mirrored, flipped=False) > 1.0
    assert loss(encode, _unchanged, features, features, flipped=True) > 1.0


def test_too_many_patches_for_a_layer_name_nce_patches():
    with pytest.raises(ValueError, match="nce_patches=65 is more than the 64 positions of a 8x8 feature layer"):
        PatchNCELoss(patches=65)(lambda x: [x], _unchanged, torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8))


def test_the_generator_and_its_heads_learn_from_patch_nce(dataset, tmp_path):  # noqa: F811
    trainer = Trainer(contrastive(dataset, tmp_path / "run"))
    objective, m = trainer.objective, trainer.models
    optimised = {id(p) for group in trainer.optimizers["optim_G"].param_groups for p in group["params"]}
    assert all(id(p) in optimised for p in m["F"].parameters())
    assert all(id(p) in optimised for p in m["G"].parameters())
    assert not any(id(p) in optimised for p in m["D"].parameters())
    images = next(trainer._batches())["A"]["image"]
    encode = lambda x: layer_features(m["G"], x, trainer.config.nce_layers)  # noqa: E731
    objective.nce(encode, m["F"], images, m["G"](images)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m["F"].parameters())
    assert m["G"].model[1].weight.grad.abs().sum() > 0  # the stem: encoder features on both sides
    assert all(p.grad is None for p in m["D"].parameters())


# ------------------------------------------------------------------------------ training

@pytest.mark.parametrize("preset, seed, flipped", [("cut", 0, False), ("fastcut", 0, True), ("fastcut", 1, False)])
def test_the_nce_term_sees_what_the_preset_asks(dataset, tmp_path, preset, seed, flipped):  # noqa: F811
    """What generator_losses hands PatchNCE: CUT's sources are the source and the target images
    (the identity term), FastCUT's the source images alone; FastCUT's coin (torch.rand(()) < 0.5:
    0.496 under seed 0, 0.758 under seed 1) flips G's input, and the keys still come from the
    unflipped sources, the queries from G's output of the flipped input."""
    trainer = Trainer(contrastive(dataset, tmp_path / "nce", preset=preset, batch_size=2))
    calls = []
    trainer.objective.nce = lambda encode, heads, sources, outputs, flip: calls.append((sources, outputs, flip)) or \
        outputs.sum() * 0
    batch = next(trainer._batches())
    real_a, real_b = batch["A"]["image"], batch["B"]["image"]
    torch.manual_seed(seed)
    trainer.objective.generator_losses(trainer.forward, batch)
    ((sources, outputs, flip),) = calls
    expected_sources = torch.cat([real_a, real_b]) if preset == "cut" else real_a
    assert flip is flipped and torch.equal(sources, expected_sources)
    with torch.no_grad():
        expected_outputs = trainer.models["G"](expected_sources.flip(3) if flipped else expected_sources)
    torch.testing.assert_close(outputs.detach(), expected_outputs)


@pytest.mark.parametrize("mode", ["pair", "contrastive"])
def test_a_culture_aware_discriminator_trains_and_judges_culture_features(dataset, tmp_path, mode):  # noqa: F811
    """discriminator_features: D adds a projection of the judged image's culture features to its
    patch logits, trained (its projection learns from D's loss and R1), and the adversarial term
    reaches G through those features too. Evaluation then has no discriminator to rebuild."""
    changes = {"mode": mode, "discriminator_features": True, "r1_gamma": 1.0, "steps": 2, "decay_steps": 0}
    config = contrastive(dataset, tmp_path / "run", **changes) if mode == "contrastive" else \
        tiny(dataset, tmp_path / "run", **changes)
    trainer = Trainer(config)
    names = ("D",) if mode == "contrastive" else ("D_A", "D_B")
    assert all(trainer.models[name].feature_projection is not None for name in names)
    projection = {name: trainer.models[name].feature_projection.weight.detach().clone() for name in names}
    batch = next(trainer._batches())
    losses, _ = trainer.objective.generator_losses(trainer.forward, batch)
    generator = trainer.models["G" if mode == "contrastive" else "G_AB"]
    fake = trainer.objective.transfer(trainer.forward, batch["A"]["image"]).detach().requires_grad_()
    judged = trainer.objective._discriminator_call(trainer.forward, names[-1])(fake)
    (through_features,) = torch.autograd.grad(judged.sum(), fake)
    assert through_features.abs().sum() > 0 and torch.isfinite(losses["G_adv"])
    (to_generator,) = torch.autograd.grad(losses["G_adv"], [dict(generator.named_parameters())["model.1.weight"]])
    assert to_generator.abs().sum() > 0
    trainer.fit()
    assert all(not torch.equal(trainer.models[name].feature_projection.weight, projection[name]) for name in names)
    assert load_run(tmp_path / "run").discriminator_for(config.target) is None
    evaluation = evaluate(tmp_path / "run", dataset, config.source, config.target, size=32, device="cpu")
    assert "deception" not in evaluation.results and evaluation.results["content"]["retrieval"]["top1"] >= 0


@pytest.mark.parametrize("preset", ["cut", "fastcut"])
def test_every_contrastive_generator_loss_reaches_the_generator(dataset, tmp_path, preset):  # noqa: F811
    trainer = Trainer(contrastive(dataset, tmp_path / "grad", preset=preset))
    assert_every_generator_loss_reaches(trainer, ("G",), {"G_adv", "nce", "culture", "structure"})



@pytest.mark.parametrize("preset", ["cut", "fastcut"])
def test_training_logs_finite_losses_and_checkpoints_every_network(dataset, tmp_path, preset):  # noqa: F811
    trainer = Trainer(contrastive(dataset, tmp_path / "run", preset=preset, sample_every=2))
    before = parameters(trainer)
    trainer.fit()
    after = parameters(trainer)
    assert set(trainer.models) == {"G", "F", "D"}
    for prefix in ("G.", "F.", "D."):
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix)), prefix
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for record in records:
        assert {"G_adv", "nce", "culture", "structure", "G", "D"} <= set(record) and "cycle" not in record
        assert all(torch.isfinite(torch.tensor(record[k])) for k in ("nce", "G", "D")) and record["nce"] > 0
    tensors, meta = checkpoints.load_checkpoint(tmp_path / "run" / "checkpoints" / "step-00000004")
    assert {key.split(".")[0] for key in tensors} >= {"G", "F", "D", "optim_G", "optim_D"}
    assert meta["config"]["mode"] == "contrastive" and meta["config"]["preset"] == preset
    assert (tmp_path / "run" / "samples" / "step-00000004.png").is_file()


@pytest.mark.parametrize("preset", ["cut", "fastcut"])
def test_bf16_autocast_trains(dataset, tmp_path, preset):  # noqa: F811
    trainer = Trainer(contrastive(dataset, tmp_path / "run", preset=preset, amp="bf16", steps=2, decay_steps=0))
    trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(torch.isfinite(torch.tensor(r["G"])) and r["nce"] > 0 for r in records)


@pytest.mark.slow
def test_a_compiled_run_trains_like_the_eager_one(dataset, tmp_path):  # noqa: F811
    """torch.compile of G, F and D (the PatchNCE encoder pass runs G's layers one by one)."""
    eager = Trainer(contrastive(dataset, tmp_path / "eager", steps=2, decay_steps=0))
    eager.fit()
    compiled = Trainer(contrastive(dataset, tmp_path / "compiled", steps=2, decay_steps=0, compile=True))
    compiled.fit()
    want, got = parameters(eager), parameters(compiled)
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-5, msg=lambda m: f"{key}: {m}")


@pytest.mark.parametrize("changes", [dict(preset="cut"), dict(preset="fastcut", nce_idt=True)])
def test_resume_reaches_the_uninterrupted_parameters(dataset, tmp_path, changes):  # noqa: F811
    straight = Trainer(contrastive(dataset, tmp_path / "straight", **changes))
    straight.fit()
    Trainer(contrastive(dataset, tmp_path / "resumed", **changes)).fit(until=2)
    with pytest.raises(ValueError, match=r"nce_layers: this run trained on layers \(0, 4, 7, 10\), this resume asks "
                                         r"for \(0, 4\); resume with nce_layers=0,4,7,10"):
        Trainer(contrastive(dataset, tmp_path / "resumed", **changes, nce_layers=(0, 4)), resume=True)
    resumed = Trainer(contrastive(dataset, tmp_path / "resumed", **changes), resume=True)
    assert resumed.step == 2
    resumed.fit()
    want, got = parameters(straight), parameters(resumed)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-6, msg=lambda m: f"{key}: {m}")


@pytest.mark.slow
def test_sigkill_then_resume_matches_the_uninterrupted_run(dataset, tmp_path):  # noqa: F811
    settings = dict(preset="fastcut", steps=30, decay_steps=10, checkpoint_every=5)
    straight = Trainer(contrastive(dataset, tmp_path / "straight", **settings))
    straight.fit()
    output = tmp_path / "run"
    output.mkdir()
    (output / "run.toml").write_text(_toml(contrastive(dataset, output, **settings)))
    process = subprocess.Popen([sys.executable, "-m", "culturegan", "train", "--config", str(output / "run.toml")],
                               cwd=output, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (output / "checkpoints" / "step-00000010").is_dir(), process, "the step-10 checkpoint")
    process.kill()
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    resumed = Trainer(contrastive(dataset, output, **settings), resume=True)
    assert 0 < resumed.step < 30
    resumed.fit()
    want, got = parameters(straight), parameters(resumed)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-6, msg=lambda m: f"{key}: {m}")


# ------------------------------------------------------------------------------ using the run

@pytest.fixture(scope="module")
def contrastive_run(dataset, tmp_path_factory):  # noqa: F811
    output = tmp_path_factory.mktemp("contrastive")
    Trainer(contrastive(dataset, output, steps=2, decay_steps=0, progress=False)).fit()
    return output


def test_a_contrastive_run_transfers_one_way(contrastive_run):
    run = load_run(contrastive_run)
    assert run.directions == {"G": {"source": "ink_wash", "target": "kente"}}
    assert run.generator_for(None) == run.generator_for("kente") == (None, None)
    with pytest.raises(ValueError, match="contrastive .CUT. run: its one generator transfers ink_wash -> kente only; "
                                         "it has no reverse direction to 'ink_wash'"):
        run.generator_for("ink_wash")
    model, card = run.generator()
    assert card["cultures"] == {"source": "ink_wash", "target": "kente"} and card["trained_steps"] == 2
    state = checkpoints.subset(run.tensors, "G")
    assert model.state_dict().keys() == state.keys()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(Stylizer(run, device="cpu")(x), model(x), rtol=1e-5, atol=1e-5)
    discriminator, gan_mode = run.discriminator_for("kente")
    assert gan_mode == "lsgan" and discriminator(x).dim() == 4
    assert run.discriminator_for("ink_wash") is None


def test_convert_a_contrastive_run(contrastive_run, tmp_path, capsys):
    """`culturegan convert` writes its one generator with the run's cultures on the card, and
    refuses a generator name the run does not have."""
    assert cli.main(["convert", str(contrastive_run), str(tmp_path / "cut.safetensors")]) == 0
    card = json.loads((tmp_path / "cut.json").read_text())
    assert card["cultures"] == {"source": "ink_wash", "target": "kente"}
    with pytest.raises(SystemExit) as error:
        cli.main(["convert", str(contrastive_run), str(tmp_path / "reverse.safetensors"), "--generator", "G_BA"])
    assert error.value.code == 2 and "no generator 'G_BA' (this run has G)" in capsys.readouterr().err
    assert not (tmp_path / "reverse.safetensors").exists()


def test_transfer_and_evaluate_a_contrastive_run(contrastive_run, dataset, tmp_path):  # noqa: F811
    code = cli.main(["transfer", "--checkpoint", str(contrastive_run), "--input", str(dataset / "ink_wash"),
                     "--output", str(tmp_path / "out"), "--device", "cpu"])
    assert code == 0 and len(list((tmp_path / "out").iterdir())) == 4
    evaluation = evaluate(contrastive_run, dataset, "ink_wash", "kente", size=32, device="cpu")
    assert evaluation.reconstructions is None  # one way: no cycle to measure
    assert "deception" in evaluation.results


def test_init_from_a_cyclegan_generator_and_freeze(dataset, tmp_path):  # noqa: F811
    pair = Trainer(tiny(dataset, tmp_path / "pair", steps=1, decay_steps=0))
    pair.fit()
    weights = tmp_path / "g_ab.pth"
    torch.save(pair.models["G_AB"].state_dict(), weights)
    trainer = Trainer(contrastive(dataset, tmp_path / "cut", init_from=str(weights), freeze="encoder"))
    for key, value in pair.models["G_AB"].state_dict().items():
        torch.testing.assert_close(trainer.models["G"].state_dict()[key], value)
    frozen = dict(trainer.models["G"].named_parameters())["model.1.weight"]
    assert not frozen.requires_grad
    before = frozen.detach().clone()
    trainer.fit()
    assert torch.equal(frozen, before)
    # a resume says init_from as the start did (the pretrained layers' optimizer groups), by name
    with pytest.raises(ValueError, match=r"init_from: this run started from .*g_ab.pth; resume it with the same"):
        Trainer(contrastive(dataset, tmp_path / "cut", freeze="encoder", steps=6), resume=True)
    with pytest.raises(ValueError, match="init_from=.*: this run started without init_from; resume it without"):
        Trainer(tiny(dataset, tmp_path / "pair", steps=2, decay_steps=0, init_from=str(weights)), resume=True)
    with pytest.raises(ValueError, match=r"optim_G was saved with parameter groups of \[\d+, \d+\] tensors, this run "
                                         r"builds \[\d+, \d+\]: resume with the settings the run started with"):
        Trainer(contrastive(dataset, tmp_path / "cut", init_from=str(weights), steps=6), resume=True)  # no freeze
    resumed = Trainer(contrastive(dataset, tmp_path / "cut", init_from=str(weights), freeze="encoder", steps=6),
                      resume=True)
    resumed.fit()
    assert resumed.step == 6 and torch.equal(dict(resumed.models["G"].named_parameters())["model.1.weight"], before)


@pytest.mark.parametrize("target, generator, discriminator",
                         [("kente", "G_AB", "D_B"), ("ink_wash", "G_BA", "D_A")])
def test_init_from_a_cyclegan_run_takes_the_networks_of_its_direction(dataset, tmp_path, target, generator,  # noqa: F811
                                                                      discriminator):
    """A CycleGAN run (ink_wash <-> kente) starts a CUT run to `target` from the generator that
    transfers to it and the discriminator that judges it."""
    pair = Trainer(tiny(dataset, tmp_path / "pair", steps=1, decay_steps=0, checkpoint_every=1))
    pair.fit()
    source = "kente" if target == "ink_wash" else "ink_wash"
    trainer = Trainer(contrastive(dataset, tmp_path / "cut", source=source, target=target,
                                  init_from=str(tmp_path / "pair"), init_discriminators=True))
    for mine, theirs in (("G", generator), ("D", discriminator)):
        for key, value in pair.models[theirs].state_dict().items():
            torch.testing.assert_close(trainer.models[mine].state_dict()[key], value, msg=f"{mine} from {theirs}")
