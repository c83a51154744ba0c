"""culturegan.training: configuration, a tiny training run, exact resume, divergence, the CLI."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from culturegan import cli
from culturegan.training import TrainConfig, Trainer, TrainingDiverged, load_config


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("cultures")
    rng = np.random.default_rng(0)
    for culture, colour in (("ink_wash", (40, 40, 40)), ("kente", (220, 160, 20))):
        (root / culture).mkdir()
        for i in range(4):
            array = np.clip(rng.normal(128, 40, (40, 40, 3)) * 0.3 + np.array(colour) * 0.7, 0, 255).astype(np.uint8)
            Image.fromarray(array).save(root / culture / f"{i}.png")
    return root


def tiny(dataset, output, **changes) -> TrainConfig:
    settings = dict(data_root=str(dataset), source="ink_wash", target="kente", load_size=36, crop_size=32,
                    workers=0, ngf=4, n_blocks=1, ndf=4, profile_size=32, steps=4, decay_steps=2, checkpoint_every=2,
                    log_every=1, device="cpu", output=str(output), pool_size=2)
    return TrainConfig(**{**settings, **changes})


def parameters(trainer):
    return {f"{n}.{k}": v.detach().clone() for n, m in trainer.models.items() for k, v in m.state_dict().items()}


def assert_every_generator_loss_reaches(trainer, generators, terms):
    """The generator's loss has exactly these terms, and each has a nonzero gradient in the
    trainable parameters of the named networks."""
    losses, _ = trainer.objective.generator_losses(trainer.forward, next(trainer._batches()))
    assert set(losses) == terms
    trainable = [p for name in generators for p in trainer.models[name].parameters() if p.requires_grad]
    for name, loss in losses.items():
        grads = torch.autograd.grad(loss, trainable, retain_graph=True, allow_unused=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads), f"{name} does not reach {generators}"


def test_config_file_overrides_and_errors(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('data_root = "data"\nsource = "a"\ntarget = "b"\nsteps = 100\ndecay_steps = 50\nculture_weights = [1.0, 0.5, 0.0]\n')
    config = load_config(path, ["steps=50", "decay_steps=10", "amp=bf16", "channels_last=false"])
    assert (config.steps, config.amp, config.channels_last, config.culture_weights) == (50, "bf16", False,
                                                                                         (1.0, 0.5, 0.0))
    with pytest.raises(ValueError, match="unknown config key.*stepz"):
        load_config(path, ["stepz=3"])
    with pytest.raises(ValueError, match="'steps' takes a int"):
        load_config(path, ["steps=many"])
    with pytest.raises(ValueError, match="invalid setting.*amp='fp8'"):
        load_config(path, ["amp=fp8"])
    with pytest.raises(ValueError, match="same culture"):
        load_config(path, ["target=a"])
    path.write_text("steps = [")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_config(path)


@pytest.mark.parametrize("override, message", [
    ("lambda_culture=-1", "lambda_culture must be a finite number >= 0, got -1.0"),
    ("lambda_structure=nan", "lambda_structure must be a finite number >= 0, got nan"),
    ("lambda_cycle=inf", "lambda_cycle must be a finite number >= 0, got inf"),
    ("r1_gamma=-0.5", "r1_gamma must be a finite number >= 0"),
    ("culture_weights=1,0", "'culture_weights' takes 3 comma-separated float values, got '1,0'"),
    ("culture_weights=1,nan,1", r"culture_weights must be 3 finite numbers >= 0 \(colour, texture, line\)"),
    ("culture_weights=1,-1,1", "culture_weights must be 3 finite numbers >= 0"),
    ("structure_scales=1,2,64", "structure_scales: scale 64 is too large for 32-pixel images"),
    ("structure_scales=1,1.5", "'structure_scales' takes a comma-separated list of int"),
    ("structure_scales=0,2", "structure_scales must be distinct positive integers"),
    ("lr=0", "invalid setting.*lr=0.0"),
    ("upsample=nearest", "invalid setting.*upsample='nearest'"),
    ("d_layers=0", "invalid setting.*d_layers=0"),
])
def test_bad_weights_and_scales_name_their_key(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, ["data_root=data", "source=a", "target=b", "load_size=36", "crop_size=32", override])


@pytest.mark.parametrize("weights", [(1.0, 1.0), (1.0, 1.0, 1.0, 1.0), 1.0, (1.0, "1", 1.0), (True, 1.0, 1.0)], ids=str)
def test_culture_weights_of_the_python_api_are_three_numbers(weights):
    """TrainConfig made in Python, not parsed from text: two weights once left the line weight at
    its default silently."""
    config = TrainConfig(data_root="data", source="a", target="b", load_size=36, crop_size=32, culture_weights=weights)
    with pytest.raises(ValueError, match=r"culture_weights must be 3 finite numbers >= 0 \(colour, texture, line\)"):
        config.validate()


def test_bilinear_upsampling_is_for_the_pair_mode():
    with pytest.raises(ValueError, match="upsample='bilinear' is for mode 'pair'"):
        load_config(None, ["data_root=data", "mode=multi", "upsample=bilinear"])
    assert load_config(None, ["data_root=data", "source=a", "target=b", "upsample=bilinear"]).upsample == "bilinear"


def test_structure_scales_from_a_file_and_the_command_line(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('data_root = "data"\nsource = "a"\ntarget = "b"\nstructure_scales = [1, 4]\n')
    assert load_config(path).structure_scales == (1, 4)
    assert load_config(path, ["structure_scales=2"]).structure_scales == (2,)


def test_tiny_run_logs_checkpoints_and_learns(dataset, tmp_path):
    trainer = Trainer(tiny(dataset, tmp_path / "run"))
    before = parameters(trainer)
    trainer.fit()
    after = parameters(trainer)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert all(np.isfinite(r["G"]) and r["culture"] > 0 for r in records)
    assert records[-1]["lr"] == 0.0  # decayed linearly to zero at the last step
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-00000002", "step-00000004"]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["target"] == "kente"


def test_every_pair_generator_loss_reaches_the_generators(dataset, tmp_path):
    trainer = Trainer(tiny(dataset, tmp_path / "grad"))
    assert_every_generator_loss_reaches(trainer, ("G_AB", "G_BA"),
                                        {"G_adv", "cycle", "identity", "culture", "structure"})


def test_resume_reaches_the_uninterrupted_parameters(dataset, tmp_path):
    straight = Trainer(tiny(dataset, tmp_path / "straight"))
    straight.fit()
    interrupted = Trainer(tiny(dataset, tmp_path / "resumed"))
    interrupted.fit(until=2)  # as if killed right after the step-2 checkpoint
    resumed = Trainer(tiny(dataset, tmp_path / "resumed"), resume=True)
    assert resumed.step == 2
    resumed.fit()
    want, got = parameters(straight), parameters(resumed)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-6, msg=lambda m: f"{key}: {m}")


def test_non_finite_losses_are_skipped_then_stop_the_run(dataset, tmp_path, monkeypatch):
    trainer = Trainer(tiny(dataset, tmp_path / "nan", max_bad_steps=2, steps=6, decay_steps=0))
    trainer.fit(until=1)
    monkeypatch.setattr(trainer.culture_loss, "forward", lambda *args: torch.tensor(float("nan")))
    with pytest.warns(RuntimeWarning, match="non-finite loss"), pytest.raises(TrainingDiverged, match="last good"):
        trainer.fit()
    assert (tmp_path / "nan" / "checkpoints" / "step-00000002").is_dir()  # saved when it stopped


def test_a_checkpoint_of_another_architecture_is_refused(dataset, tmp_path):
    Trainer(tiny(dataset, tmp_path / "arch", steps=1, decay_steps=0)).fit()
    with pytest.raises(ValueError, match="do not fit ResnetGenerator.*other shapes"):
        Trainer(tiny(dataset, tmp_path / "arch", steps=1, decay_steps=0, ngf=8), resume=True)


def test_bad_datasets_are_reported(dataset, tmp_path):
    with pytest.raises(ValueError, match="unknown culture"):
        Trainer(tiny(dataset, tmp_path / "x", target="ukiyoe"))


def test_cli_train(dataset, tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text(f'data_root = "{dataset}"\nsource = "kente"\ntarget = "ink_wash"\n')
    overrides = ["load_size=36", "crop_size=32", "workers=0", "ngf=4", "n_blocks=1", "ndf=4", "profile_size=32",
                 "steps=2", "decay_steps=1", "log_every=1", "device=cpu", f"output={tmp_path / 'cli'}"]
    assert cli.main(["train", "--config", str(config), *[a for o in overrides for a in ("--set", o)]]) == 0
    assert "step 2" in capsys.readouterr().err  # logged (culturegan --quiet silences it), not printed
    with pytest.raises(SystemExit) as error:
        cli.main(["train", "--config", str(config), "--set", "bogus=1"])
    assert error.value.code == 2


@pytest.mark.slow
def test_a_compiled_run_trains_like_the_eager_one(dataset, tmp_path):
    eager = Trainer(tiny(dataset, tmp_path / "eager", steps=2, decay_steps=0))
    eager.fit()
    compiled = Trainer(tiny(dataset, tmp_path / "compiled", steps=2, decay_steps=0, compile=True))
    compiled.fit()
    want, got = parameters(eager), parameters(compiled)
    assert got.keys() == want.keys()  # checkpoints keep the plain names (no _orig_mod.)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-5, msg=lambda m: f"{key}: {m}")


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_runs(dataset, tmp_path, amp):
    # fp16's gradient scaler starts at 2^16 and skips the steps whose gradients overflow while
    # it finds its scale: a few steps, with this tiny set's large culture loss
    steps = 2 if amp == "bf16" else 16
    trainer = Trainer(tiny(dataset, tmp_path / amp, steps=steps, decay_steps=0, amp=amp, log_every=steps))
    before = parameters(trainer)
    trainer.fit()
    record = json.loads((tmp_path / amp / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["step"] == steps and np.isfinite(record["G"])
    changed = [k for k, v in parameters(trainer).items() if not torch.equal(before[k], v)]
    assert any(k.startswith("G_AB.") for k in changed) and any(k.startswith("D_A.") for k in changed)
