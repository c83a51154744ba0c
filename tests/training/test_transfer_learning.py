"""Transfer learning: --init-from a generator file or a run, frozen parts, a lower learning rate
for pretrained layers, fresh discriminators; and the errors for what does not fit."""

import pytest
import torch

from culturegan import cli
from culturegan.training import Trainer
from test_training import dataset, parameters, tiny  # noqa: F401  (the fixture and helpers)


@pytest.fixture(scope="module")
def pretrained_run(dataset, tmp_path_factory):  # noqa: F811
    output = tmp_path_factory.mktemp("pretrained")
    trainer = Trainer(tiny(dataset, output, n_blocks=2, steps=2, decay_steps=0))
    trainer.fit()
    return output, trainer


def _generator_file(trainer, path, wrap: bool):
    """G_AB's weights as a training script saves them: under DataParallel ('module.'), with the
    InstanceNorm running statistics old CycleGAN checkpoints carry."""
    state = dict(trainer.models["G_AB"].state_dict())
    if wrap:
        state = {f"module.{k}": v for k, v in state.items()}
        state["module.model.2.running_mean"] = torch.zeros(4)
    torch.save(state, path)
    return path


def test_init_from_a_generator_file_freezes_parts_and_lowers_their_lr(pretrained_run, dataset, tmp_path):  # noqa: F811
    run, source = pretrained_run
    weights = _generator_file(source, tmp_path / "latest_net_G_A.pth", wrap=True)
    trainer = Trainer(tiny(dataset, tmp_path / "tuned", n_blocks=2, steps=2, decay_steps=0, init_from=str(weights),
                           freeze="encoder,blocks:1", pretrained_lr=0.1))
    start = parameters(trainer)
    for key, value in source.models["G_AB"].state_dict().items():
        torch.testing.assert_close(start[f"G_AB.{key}"], value, rtol=0, atol=0)
    assert not torch.equal(start["D_A.model.0.weight"], parameters(source)["D_A.model.0.weight"])  # D is fresh
    parts = trainer.models["G_AB"].parts()
    frozen = {f"{g}.{name}" for g in ("G_AB", "G_BA") for part in ("encoder", "block0") for name in parts[part]}
    assert trainer.frozen == sum(start[k].numel() for k in frozen)
    lrs = sorted(group["lr"] for group in trainer.optimizers["optim_G"].param_groups)
    assert lrs == pytest.approx([2e-5, 2e-4])  # G_AB pretrained at 0.1x, G_BA fresh
    trainer.fit()
    end = parameters(trainer)
    for key in frozen:
        assert torch.equal(end[key], start[key]), f"{key} was frozen but changed"
    trained = [k for k in start if k.startswith("G_AB.") and k not in frozen]
    assert all(not torch.equal(end[k], start[k]) for k in trained if k.endswith("weight"))


def test_init_from_a_run_takes_both_generators_and_optionally_the_discriminators(pretrained_run, dataset,  # noqa: F811
                                                                                tmp_path):
    run, source = pretrained_run
    trainer = Trainer(tiny(dataset, tmp_path / "again", n_blocks=2, init_from=str(run), init_discriminators=True))
    for key, value in parameters(source).items():
        torch.testing.assert_close(parameters(trainer)[key], value, rtol=0, atol=0)
    assert trainer.step == 0  # weights only: a new run, not a resume
    assert {g["lr"] for g in trainer.optimizers["optim_G"].param_groups} == {2e-4}


def test_cli_init_from_and_freeze(pretrained_run, dataset, tmp_path, capsys):  # noqa: F811
    _, source = pretrained_run
    weights = tmp_path / "g.safetensors"
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in source.models["G_AB"].state_dict().items()}, str(weights))
    overrides = [f"data_root={dataset}", "source=ink_wash", "target=kente", "load_size=36", "crop_size=32",
                 "workers=0", "ngf=4", "n_blocks=2", "ndf=4", "profile_size=32", "steps=1", "decay_steps=0",
                 "device=cpu", f"output={tmp_path / 'cli'}", "progress=false"]
    argv = ["train", *[a for o in overrides for a in ("--set", o)], "--init-from", str(weights), "--freeze", "encoder"]
    assert cli.main(argv) == 0
    assert '"freeze": "encoder"' in (tmp_path / "cli" / "config.json").read_text()


@pytest.mark.parametrize("changes, message", [
    (dict(freeze="wings"), "unknown generator part 'wings'"),
    (dict(freeze="blocks:x"), "unknown generator part 'blocks:x'"),
    (dict(freeze="blocks:5"), "has no part 'blocks:5'.*2 blocks"),
    (dict(freeze="style"), "has no part 'style'"),
    (dict(freeze="encoder,blocks,decoder"), "nothing to train"),
    (dict(init_from="missing.pth"), "does not exist"),
    (dict(init_discriminators=True), "invalid setting.*init_discriminators"),
])
def test_bad_transfer_settings_are_reported(dataset, tmp_path, changes, message):  # noqa: F811
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        Trainer(tiny(dataset, tmp_path / "bad", n_blocks=2, **changes))


def test_weights_that_do_not_fit_are_refused_with_the_keys(pretrained_run, dataset, tmp_path):  # noqa: F811
    _, source = pretrained_run
    weights = _generator_file(source, tmp_path / "g.pth", wrap=False)
    with pytest.raises(ValueError, match=r"do not fit ResnetGenerator.*6 missing.*10 unexpected.*model\.11\.conv_block"):
        Trainer(tiny(dataset, tmp_path / "small", n_blocks=1, init_from=str(weights)))
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a readable weights file"):
        Trainer(tiny(dataset, tmp_path / "small", init_from=str(corrupt)))
    pickled_code = tmp_path / "code.pth"
    torch.save({"model": torch.nn.Linear(2, 2)}, pickled_code)  # a pickled module, not a state_dict
    with pytest.raises(ValueError, match="not a readable weights file"):
        Trainer(tiny(dataset, tmp_path / "small", init_from=str(pickled_code)))
