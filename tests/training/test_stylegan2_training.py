"""mode "stylegan2" (StyleGAN2-ADA on one culture): its settings and their errors, training with
lazy regularisation, G_ema, Freeze-D and ADA, fine-tuning an imported network, the sample grid,
and exact resume (also after SIGKILL). Tiny networks at 16 px keep it CPU-quick."""

import json
import math
import os
import random
import signal
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from nvlabs_snapshots import write_snapshot

from culturegan.losses import CultureLoss
from culturegan.models import checkpoints
from culturegan.models.loading import (STYLEGAN2_GENERATOR, StyleGAN2Architecture, load_generator, new_card,
                                      save_model)
from culturegan.models.stylegan2 import Discriminator, Generator
from culturegan.training import TrainConfig, Trainer, load_config
from culturegan.training.objectives import StyleGAN2Objective
from culturegan.training import stylegan2
from culturegan.training.stylegan2 import AdaptiveAugment
from test_distributed import _free_port
from test_interruption import _toml, _wait_for
from test_training import dataset, parameters  # noqa: F401  (the fixture and helpers)

BASE = ["data_root=data", "mode=stylegan2", "target=kente", "resolution=64", "batch_size=4"]
SIZES = dict(z_dim=8, w_dim=8, mapping_layers=2, channel_base=32, channel_max=8)
STEPS = 6


def tiny(dataset, output, **changes) -> TrainConfig:  # noqa: F811
    """16-px networks of 2-8 channels; every regulariser and ADA update within a few steps."""
    settings = dict(mode="stylegan2", data_root=str(dataset), target="kente", resolution=16, **SIZES, batch_size=2,
                    workers=0, profile_size=32, steps=STEPS, checkpoint_every=2, log_every=1, sample_every=0,
                    device="cpu", output=str(output), progress=False, r1_interval=2, pl_interval=3, ada_interval=2,
                    ada_kimg=0.04)
    return TrainConfig(**{**settings, **changes})


def _records(output) -> list[dict]:
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------ settings

def test_defaults_are_nvlabs():
    scratch = load_config(None, BASE)
    assert (scratch.lr, scratch.beta1, scratch.beta2, scratch.decay_steps, scratch.pool_size) == (0.0025, 0, 0.99, 0, 0)
    assert (scratch.r1_gamma, scratch.r1_interval, scratch.pl_weight, scratch.pl_interval) == (0.2048, 16, 2.0, 4)
    assert (scratch.style_mixing, scratch.ema_kimg, scratch.ema_rampup, scratch.freeze_d) == (0.9, 1.25, 0.05, 0)
    assert (scratch.augment, scratch.augment_p, scratch.ada_target, scratch.ada_interval, scratch.ada_kimg) == \
        ("bgc", None, 0.6, 4, 500)
    assert (scratch.z_dim, scratch.w_dim, scratch.mapping_layers, scratch.channel_base, scratch.channel_max) == \
        (512, 512, 8, 16384, 512)
    large = load_config(None, ["data_root=data", "mode=stylegan2", "target=kente", "resolution=1024", "batch_size=4"])
    assert (large.lr, large.channel_base) == (0.002, 32768)  # --cfg=auto from 1024 px (and 512 px for the base)
    tuned = load_config(None, BASE + ["init_from=ffhq.pkl"])  # fine-tuning: NVlabs' --resume settings
    assert (tuned.ada_kimg, tuned.ema_rampup, tuned.z_dim, tuned.channel_base) == (100, 0, None, None)
    fixed = load_config(None, BASE + ["augment_p=0.2"])
    assert (fixed.augment_p, fixed.ada_target, fixed.ada_kimg) == (0.2, None, None)
    pair = load_config(None, ["data_root=data", "source=a", "target=b"])  # the other modes keep CycleGAN's
    assert (pair.lr, pair.beta1, pair.decay_steps, pair.r1_gamma, pair.resolution, pair.augment) == \
        (2e-4, 0.5, 5000, 0.0, None, None)
    assert scratch.validate() == scratch


def test_under_torchrun_the_defaults_follow_the_global_batch(monkeypatch):
    """NVlabs' --batch is over all processes: R1's gamma and G_ema's half-life follow it, not one
    process's share (4 processes of 4 images: NVlabs' batch 16)."""
    monkeypatch.setenv("WORLD_SIZE", "4")
    shared = load_config(None, BASE)
    assert (shared.r1_gamma, shared.ema_kimg) == (0.0002 * 64**2 / 16, 10 * 16 / 32)
    assert shared.batch_size == 4  # each process's
    given = load_config(None, BASE + ["r1_gamma=1", "ema_kimg=2"])  # given values stay
    assert (given.r1_gamma, given.ema_kimg) == (1.0, 2.0)


@pytest.mark.parametrize("value, message", [("two", "WORLD_SIZE must be a whole number of processes, got 'two'"),
                                            ("0", "WORLD_SIZE must be >= 1, got 0")])
def test_a_bad_world_size_is_named(monkeypatch, value, message):
    monkeypatch.setenv("WORLD_SIZE", value)
    with pytest.raises(ValueError, match=message):
        load_config(None, BASE)


@pytest.mark.parametrize("overrides, message", [
    (["ada_target=-0.1"], r"ada_target must be in \(0, 1\), the wanted mean sign of D\(real\), got -0.1"),
    (["ada_target=1.5"], r"ada_target must be in \(0, 1\)"),
    (["freeze_d=-1"], "freeze_d must be a finite number >= 0, got -1"),
    (["resolution=48"], "needs resolution, the images' side: a power of 2 >= 4, got 48"),
    (["resolution=2"], "a power of 2 >= 4, got 2"),
    (["style_mixing=1.5"], r"style_mixing must be a finite number in \[0, 1\], got 1.5"),
    (["ema_kimg=0"], "ema_kimg must be a finite number > 0"),
    (["r1_interval=0"], "r1_interval must be a finite number >= 1"),
    (["augment=bgcfnc"], "augment 'bgcfnc' is not one of none, blit, geom, color, bg, bgc"),
    (["augment_p=0.2", "ada_target=0.5"], "ada_target: ADA tunes p, but augment_p fixes it"),
    (["augment=none", "ada_kimg=100"], "ada_kimg: ADA tunes p, but augment is 'none'"),
    (["augment_p=1.2"], r"augment_p must be in \[0, 1\]"),
    (["init_from=ffhq.pkl", "channel_base=64"], "channel_base: with init_from the network's size is the imported"),
    (["source=photo"], "mode 'stylegan2' learns one culture, `target`"),
    (["freeze=encoder"], "freeze: not for mode 'stylegan2'"),
    (["eval_every=10", "eval_data=held"], "eval_every: not for mode 'stylegan2'"),
    (["compile=true", "r1_gamma=0", "pl_weight=0"], "compile=true: not for mode 'stylegan2' .its generator runs by "
                                                    "parts"),
])
def test_bad_settings_name_their_key(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, BASE + overrides)


def test_other_modes_compile_unless_r1_takes_gradients_of_gradients():
    """torch.compile has no double backward: R1 would fail at its first step."""
    pair = ["data_root=data", "source=a", "target=b", "compile=true"]
    assert load_config(None, pair).compile
    with pytest.raises(ValueError, match=r"compile=true with r1_gamma=1.0: .* set compile=false, or r1_gamma=0$"):
        load_config(None, pair + ["r1_gamma=1"])


@pytest.mark.parametrize("override", ["lambda_structure=5", "structure_scales=1,2", "lambda_cycle=5",
                                      "lambda_identity=1", "style_dim=8", "discriminator_features=true"])
def test_stylegan2_refuses_the_keys_of_image_translation_by_name(override):
    """It draws from noise: no input image to keep the lines of, no cycle, no culture codes."""
    with pytest.raises(ValueError, match=f"{override.split('=')[0]}: only for mode.*, this run's mode is "
                                         "'stylegan2'"):
        load_config(None, BASE + [override])


@pytest.mark.parametrize("override", ["pl_weight=2", "freeze_d=4", "augment=bgc", "resolution=64"])
def test_other_modes_refuse_stylegan2_keys_by_name(override):
    with pytest.raises(ValueError, match=f"{override.split('=')[0]}: only for mode 'stylegan2', this run's mode is "
                                         "'pair'"):
        load_config(None, ["data_root=data", "source=a", "target=b", override])


def test_freeze_d_beyond_the_discriminators_depth_is_refused(tmp_path):
    config = tiny("unused", tmp_path, freeze_d=8).validate()  # 16 px: b16 has 4 layers, b8 3
    with pytest.raises(ValueError, match="freeze_d=8 is beyond the discriminator's depth: it has 7 layers"):
        StyleGAN2Objective(config, CultureLoss(), random.Random(0)).build_models()


def test_an_empty_culture_folder_is_refused(dataset, tmp_path):  # noqa: F811
    root = tmp_path / "data"
    (root / "kente").mkdir(parents=True)
    (root / "ink_wash").mkdir()
    with pytest.raises(ValueError, match=r"culture folder\(s\) kente in .* hold no usable image"):
        Trainer(tiny(root, tmp_path / "run"))


# ------------------------------------------------------------------------------ ADA

def test_p_rises_when_d_is_over_confident_and_comes_back_with_the_state():
    augment = AdaptiveAugment("bgc", target=0.6, interval=4, kimg=0.1)
    for _ in range(3):
        augment.observe(torch.ones(2, 1))  # D sure every real is real: r_t = 1 > 0.6
        augment.step(2)
    state = {k: v.clone() for k, v in augment.state_dict().items()}  # mid-interval: 3 steps of counts
    assert augment.p == 0 and state["counts"].tolist() == [3, 6, 6]
    augment.observe(torch.ones(2, 1))
    augment.step(2)
    assert augment.p == pytest.approx(2 * 4 / 100)  # batch * interval / (ada_kimg * 1000)
    restored = AdaptiveAugment("bgc", target=0.6, interval=4, kimg=0.1)
    restored.load_state_dict(state)
    restored.observe(torch.ones(2, 1))
    restored.step(2)
    assert restored.p == augment.p and torch.equal(restored.counts, augment.counts)
    for _ in range(4):  # now unsure: r_t = 0 < 0.6, p falls back
        augment.observe(torch.tensor([[1.0], [-1.0]]))
        augment.step(2)
    assert augment.p == 0


def test_augmentations_repeat_with_the_seed_and_advance_the_shared_stream():
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    augment = AdaptiveAugment("bgc", p=1.0)
    outputs, states = [], []
    for _ in range(2):
        torch.manual_seed(3)
        outputs.append(augment(images))
        states.append(torch.get_rng_state())
    assert torch.equal(*outputs) and torch.equal(*states)
    assert not torch.equal(outputs[0], images)  # p = 1: every sample drew transforms
    torch.manual_seed(3)
    assert not torch.equal(states[0], torch.get_rng_state())  # the seed came from the shared stream


def _augment_worker(rank: int, world: int, port: int, output: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank))
    torch.distributed.init_process_group("gloo")
    try:
        torch.manual_seed(0)  # as the trainer seeds every process
        images = torch.linspace(-1, 1, 2 * 3 * 16 * 16).view(2, 3, 16, 16)  # the same images in both
        augmented = AdaptiveAugment("bgc", p=1.0)(images)
        torch.save({"augmented": augmented, "rng": torch.get_rng_state()}, os.path.join(output, f"rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_each_process_augments_with_its_own_draws_from_the_shared_stream(tmp_path):
    """Under torchrun every process seeds one stream alike: drawn from it directly, the processes
    would augment their images by the same transforms. Each draws its own, and the stream they
    share (what a checkpoint saves) stays in step."""
    mp.spawn(_augment_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    first, second = (torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1))
    assert not torch.equal(first["augmented"], second["augmented"])
    assert torch.equal(first["rng"], second["rng"])


def _observed_steps(augment: AdaptiveAugment, rank: int, steps: range) -> None:
    for _ in steps:  # rank 0's D sure of every real, rank 1's of none: r_t = 0 over both
        augment.observe(torch.full((2, 1), 1.0 if rank == 0 else -1.0))
        augment.step(4)


def _ada_resume_worker(rank: int, world: int, port: int, output: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank))
    torch.distributed.init_process_group("gloo")
    try:
        def controlled() -> AdaptiveAugment:
            return AdaptiveAugment("bgc", p=0.5, target=0.6, interval=4, kimg=0.1)

        straight, interrupted = controlled(), controlled()
        _observed_steps(straight, rank, range(8))
        _observed_steps(interrupted, rank, range(3))  # a checkpoint mid-interval: rank 0's is saved
        saved = [interrupted.state_dict() if rank == 0 else None]
        torch.distributed.broadcast_object_list(saved, src=0)
        resumed = controlled()
        resumed.load_state_dict(saved[0])  # every process loads rank 0's checkpoint
        _observed_steps(resumed, rank, range(3, 8))
        torch.save({"straight": straight.state_dict(), "resumed": resumed.state_dict()},
                   os.path.join(output, f"rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_under_torchrun_ada_resumes_exactly_from_any_step(tmp_path):
    """The counts a checkpoint saves mid-interval are every process's: p after the resumed run's
    updates is the uninterrupted run's (before, rank 0's own counts were saved, and the other
    processes' signs of those steps were lost: every process resumed with rank 0's, r_t came to
    0.75 and p rose where it falls)."""
    mp.spawn(_ada_resume_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        runs = torch.load(tmp_path / f"rank{rank}.pt")
        assert runs["straight"]["pipe.p"] == pytest.approx(0.5 - 2 * 4 * 4 / 100)  # two updates down
        for key, value in runs["straight"].items():
            assert torch.equal(runs["resumed"][key], value), (rank, key)


# ------------------------------------------------------------------------------ training

def test_training_regularises_on_its_intervals_and_g_ema_follows_g(dataset, tmp_path):  # noqa: F811
    trainer = Trainer(tiny(dataset, tmp_path / "run", steps=4, freeze_d=4, sample_every=4, sample_count=2))
    models = trainer.models
    assert set(models) == {"G", "G_ema", "D", "augment", "path_length"}
    # lazy regularisation every k steps: lr * k / (k + 1), betas ** (k / (k + 1)) (pl_interval 3, r1_interval 2)
    for name, ratio in (("optim_G", 3 / 4), ("optim_D", 2 / 3)):
        group = trainer.optimizers[name].param_groups[0]
        assert group["lr"] == pytest.approx(0.0025 * ratio) and group["betas"] == (0.0, pytest.approx(0.99 ** ratio))
    before = parameters(trainer)
    trainer.fit()
    after = parameters(trainer)
    records = _records(tmp_path / "run")
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert [r["step"] for r in records if "R1" in r] == [1, 3]  # steps 0 and 2 of r1_interval 2
    assert [r["step"] for r in records if "path_length" in r] == [1, 4]  # steps 0 and 3 of pl_interval 3
    assert all(math.isfinite(r[k]) for r in records for k in ("G_adv", "culture", "G", "D"))
    assert float(models["path_length"].pl_mean) > 0
    assert models["augment"].counts.tolist() == [4, 0, 0]  # 4 controller steps, its counts spent on step 4
    for prefix in ("G.", "D.b8.", "D.b4."):
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix)), prefix
    frozen = [k for k in before if k.startswith("D.b16.")]  # Freeze-D 4: the 16-px block's 4 layers
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert not any(name.startswith("b16.") for name, _ in models["D"].named_parameters())
    # G_ema: between its start and G, nearer G (the ramp's short half-life early on)
    moved = [k[2:] for k in before if k.startswith("G.") and not torch.equal(before[k], after[k])]
    for key in moved[:5]:
        start, g, ema = before[f"G.{key}"], after[f"G.{key}"], after[f"G_ema.{key}"]
        assert not torch.equal(ema, g) and (ema - g).norm() < (start - g).norm(), key
    tensors, meta = checkpoints.load_checkpoint(tmp_path / "run" / "checkpoints" / "step-00000004")
    assert {"augment.pipe.p", "augment.counts", "path_length.pl_mean", "G_ema.mapping.w_avg"} <= set(tensors)
    assert meta["cultures"] == ["kente"]
    assert (tmp_path / "run" / "samples" / "step-00000004.png").is_file()
    generator, card = load_generator(tmp_path / "run")  # G_ema, for generate, project and blend
    assert card["cultures"] == {"target": "kente"} and card["trained_steps"] == 4
    for key, value in models["G_ema"].state_dict().items():
        assert torch.equal(generator.state_dict()[key], value), key


def test_every_discriminator_input_is_augmented(dataset, tmp_path, monkeypatch):  # noqa: F811
    """ADA augments what D sees everywhere (NVlabs): G's fakes, D's reals and fakes, and R1's reals
    (step 0 is an R1 step); a D input that skipped the augmentation lets D overfit the few reals."""
    trainer = _started(Trainer(tiny(dataset, tmp_path / "run", steps=1)))
    augment, discriminator = trainer.models["augment"], trainer.models["D"]
    augmented, judged = [], []
    augment_forward, discriminator_forward = augment.forward, discriminator.forward

    def augment_spy(images, *args, **kwargs):
        augmented.append(augment_forward(images, *args, **kwargs))
        return augmented[-1]

    def discriminator_spy(images, *args, **kwargs):
        judged.append(images)
        return discriminator_forward(images, *args, **kwargs)

    monkeypatch.setattr(augment, "forward", augment_spy)
    monkeypatch.setattr(discriminator, "forward", discriminator_spy)
    trainer.fit()
    assert len(judged) == 4
    assert all(any(image is output for output in augmented) for image in judged)


def test_the_losses_are_the_non_saturating_logistic_ones(dataset, tmp_path):  # noqa: F811
    """NVlabs' StyleGAN2Loss: G minimises softplus(-D(G(z))), D softplus(D(G(z))) + softplus(-D(x)),
    each on augmented images (a stand-in D whose logits are recorded, and no augmentation)."""
    trainer = Trainer(tiny(dataset, tmp_path / "run", lambda_culture=0.0))
    logits = []

    class Identity(torch.nn.Module):
        def forward(self, images):
            return images

        def observe(self, real_logits):
            pass

    def discriminator(images, c):
        logits.append(images.flatten(1).mean(1, keepdim=True) * 3)
        return logits[-1]

    models = {**trainer.models, "D": discriminator, "augment": Identity()}
    batch = next(trainer._batches())
    losses, _ = trainer.objective.generator_losses(models, batch)
    torch.testing.assert_close(losses["G_adv"], F.softplus(-logits[0]).mean())
    d_loss = trainer.objective.discriminator_loss(models, batch, None)
    real, fake = logits[1], logits[2]  # (the reals first: ADA observes their logits)
    torch.testing.assert_close(d_loss, F.softplus(fake).mean() + F.softplus(-real).mean())


def test_style_mixing_takes_the_later_ws_from_other_latents(dataset, tmp_path, monkeypatch):  # noqa: F811
    generator = _generator()
    z = torch.randn(3, generator.z_dim)
    plain = generator.mapping(z, None, skip_w_avg_update=True)
    assert torch.equal(stylegan2.mixed_ws(generator, z, 0.0), plain)
    mixed = stylegan2.mixed_ws(generator, z, 1.0)
    kept = (mixed == plain).all(-1).all(0)  # per w index: every image's w unchanged
    cutoff = int(kept.logical_not().nonzero()[0])
    assert 1 <= cutoff and kept[:cutoff].all() and not (mixed[:, cutoff:] == plain[:, cutoff:]).any()
    assert torch.equal(mixed[:, cutoff:], mixed[:, -1:].expand_as(mixed[:, cutoff:]))  # one other w per image
    # training mixes with the configured probability, in G's losses and D's fakes alike
    probabilities, mixing = [], stylegan2.mixed_ws
    monkeypatch.setattr(stylegan2, "mixed_ws", lambda g, z, p: probabilities.append(p) or mixing(g, z, p))
    Trainer(tiny(dataset, tmp_path / "run", steps=1, style_mixing=0.5)).fit()
    assert probabilities == [0.5] * 3  # G's loss, the path length's fakes (step 0 is one) and D's fakes


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_autocast_trains(dataset, tmp_path, amp):  # noqa: F811
    """(fp16: the gradient scaler steps each optimiser twice on the lazy regularisers' steps)"""
    trainer = Trainer(tiny(dataset, tmp_path / "run", amp=amp, steps=2))
    trainer.fit()
    records = _records(tmp_path / "run")
    assert [r["step"] for r in records] == [1, 2] and "R1" in records[0] and "path_length" in records[0]
    assert all(math.isfinite(r[k]) for r in records for k in ("G", "D", "R1") if k in r)


def test_samples_are_g_ema_at_fixed_latents(dataset, tmp_path):  # noqa: F811
    trainer = Trainer(tiny(dataset, tmp_path / "run"))
    batch = next(trainer._batches())
    state = torch.get_rng_state()
    rows = trainer.objective.samples(trainer.models, batch, 2)
    assert torch.equal(torch.get_rng_state(), state)  # no global draw: samples leave training as it is
    z = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = trainer.models["G_ema"](z, None, noise_mode="const")
    assert len(rows) == 2 and all(len(row) == 2 for row in rows)
    torch.testing.assert_close(torch.stack([image for row in rows for image in row]), want, rtol=0, atol=0)


def _generator() -> Generator:
    return Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, mapping_kwargs={"num_layers": 2},
                     synthesis_kwargs={"channel_base": 32, "channel_max": 8})


def test_fine_tuning_starts_from_an_nvlabs_snapshot(dataset, tmp_path):  # noqa: F811
    networks = {"G": _generator(), "G_ema": _generator(),
                "D": Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=32, channel_max=8,
                                   epilogue_kwargs={"mbstd_group_size": 2})}
    snapshot = write_snapshot(tmp_path / "network-snapshot.pkl", networks, tmp_path / "executed")
    sizes = dict.fromkeys(SIZES)
    trainer = Trainer(tiny(dataset, tmp_path / "run", init_from=str(snapshot), freeze_d=4, steps=1, **sizes))
    for name, network in networks.items():
        for key, value in network.state_dict().items():
            assert torch.equal(trainer.models[name].state_dict()[key], value), f"{name}.{key}"
    trainer.fit()
    assert not (tmp_path / "executed").exists()
    with pytest.raises(ValueError, match="resolution=32, but init_from's generator makes 16x16 images"):
        Trainer(tiny(dataset, tmp_path / "other", init_from=str(snapshot), resolution=32, **sizes))


def test_fine_tuning_a_converted_generator_trains_a_fresh_discriminator_with_a_fixed_p(dataset, tmp_path):  # noqa: F811
    generator = _generator()
    card = new_card(StyleGAN2Architecture(STYLEGAN2_GENERATOR, generator.init_kwargs), tmp_path, sha256="0" * 64)
    path = save_model(generator, card, tmp_path / "culture.safetensors")
    trainer = Trainer(tiny(dataset, tmp_path / "run", init_from=str(path), augment_p=0.3, ada_interval=None,
                           ada_kimg=None, steps=2, **dict.fromkeys(SIZES)))
    for name in ("G", "G_ema"):
        for key, value in generator.state_dict().items():
            assert torch.equal(trainer.models[name].state_dict()[key], value), f"{name}.{key}"
    assert trainer.models["D"].img_resolution == 16
    trainer.fit()
    assert [r["augment_p"] for r in _records(tmp_path / "run")] == [pytest.approx(0.3)] * 2


def test_a_fine_tune_resumes_without_the_file_it_started_from(dataset, tmp_path):  # noqa: F811
    generator = _generator()
    card = new_card(StyleGAN2Architecture(STYLEGAN2_GENERATOR, generator.init_kwargs), tmp_path, sha256="0" * 64)
    path = save_model(generator, card, tmp_path / "culture.safetensors")
    config = tiny(dataset, tmp_path / "run", init_from=str(path), steps=2, **dict.fromkeys(SIZES))
    Trainer(config).fit()
    path.unlink()  # the checkpoint recorded what init_from gave the networks
    resumed = Trainer(tiny(dataset, tmp_path / "run", init_from=str(path), steps=4, batch_size=4,
                           **dict.fromkeys(SIZES)), resume=True)
    assert resumed.step == 2 and resumed.models["G"].init_kwargs == generator.init_kwargs
    # a fresh D (the file had none) takes its minibatch groups from the batch size, as when the run began
    assert resumed.models["D"].b4.mbstd.group_size == 4
    resumed.fit()
    assert resumed.step == 4


# ------------------------------------------------------------------------------ resume

def _started(trainer: Trainer) -> Trainer:
    """p at 0.5 from the start, so every D input is augmented (a fresh D rarely makes ADA raise p)."""
    trainer.models["augment"].pipe.p.fill_(0.5)
    return trainer


@pytest.fixture(scope="module")
def straight(dataset, tmp_path_factory):  # noqa: F811
    trainer = _started(Trainer(tiny(dataset, tmp_path_factory.mktemp("straight"))))
    trainer.fit()
    assert float(trainer.models["augment"].pipe.p) != 0.5  # ADA moved p
    return parameters(trainer)


def _assert_same(trainer: Trainer, straight: dict) -> None:
    got = parameters(trainer)
    assert got.keys() == straight.keys()
    for key in straight:
        assert torch.equal(got[key], straight[key]), key


def test_resume_is_exact(dataset, tmp_path, straight):  # noqa: F811
    _started(Trainer(tiny(dataset, tmp_path / "run"))).fit(until=3)  # mid ADA and path-length intervals
    resumed = Trainer(tiny(dataset, tmp_path / "run", checkpoint_every=3), resume=True)
    assert resumed.step == 3
    resumed.fit()
    _assert_same(resumed, straight)


@pytest.mark.slow
def test_sigkill_then_resume_is_exact(dataset, tmp_path, straight):  # noqa: F811
    output = tmp_path / "run"
    output.mkdir()
    # the first 2 steps with p at 0.5, as _started's, in this process; the killed run resumes them
    _started(Trainer(tiny(dataset, output))).fit(until=2)
    (output / "run.toml").write_text(_toml(tiny(dataset, output)))
    process = subprocess.Popen([sys.executable, "-m", "culturegan", "train", "--config", str(output / "run.toml"),
                                "--resume"], cwd=output, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (output / "checkpoints" / "step-00000004").is_dir(), process, "the step-4 checkpoint")
    process.kill()
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    resumed = Trainer(tiny(dataset, output), resume=True)
    assert 2 < resumed.step < STEPS
    resumed.fit()
    _assert_same(resumed, straight)


# ------------------------------------------------------------------------------ data parallel

def _worker(rank: int, world: int, port: int, root: str, output: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    try:
        trainer = _started(Trainer(tiny(root, output, steps=4, lambda_culture=0.0)))
        trainer.fit()
        torch.save(parameters(trainer), os.path.join(output, f"rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_processes_keep_the_same_networks_and_state(dataset, tmp_path):  # noqa: F811
    """Each process its own images and latents; every update (the lazy regularisers' too) averages
    the gradients, ADA sums the signs and the path-length mean is averaged, so the processes keep
    one state. (Not compared with one process: the minibatch-std groups and the augmentations'
    draws depend on the per-process batch.) Only the average w differs: each process tracks its own
    batches', as NVlabs' do, and only truncation reads it."""
    mp.spawn(_worker, args=(2, _free_port(), str(dataset), str(tmp_path)), nprocs=2, join=True)
    first, second = (torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1))
    assert first.keys() == second.keys()
    own = [key for key in first if key.endswith("w_avg")]
    assert own and all(not torch.equal(first[key], second[key]) for key in own)
    for key in first.keys() - set(own):
        assert torch.equal(first[key], second[key]), key
    # p moved on the summed signs (two updates may bring it back to where it started)
    assert any(record["augment_p"] != 0.5 for record in _records(tmp_path) if "augment_p" in record)
    assert float(first["path_length.pl_mean"]) > 0


def test_torchrun_launches_a_run_over_the_global_batch(dataset, tmp_path):  # noqa: F811
    """`torchrun --nproc_per_node 2 -m culturegan train` as a user runs it: the launcher's
    environment, the command line and gloo on CPUs; the automatic settings follow the global
    batch (2 processes of batch 2: NVlabs' --batch 4)."""
    output = tmp_path / "run"
    output.mkdir()
    # the keys given (tiny's config would write its one-process defaults into the file too)
    given = dict(mode="stylegan2", data_root=str(dataset), target="kente", resolution=16, **SIZES, batch_size=2,
                 workers=0, profile_size=32, steps=2, checkpoint_every=2, log_every=1, sample_every=0,
                 device="cpu", output=str(output), progress=False)
    (output / "run.toml").write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in given.items()))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
               "culturegan", "train", "--config", str(output / "run.toml")]
    done = subprocess.run(command, cwd=output, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert [r["step"] for r in _records(output)] == [1, 2]  # rank 0 logs
    meta = checkpoints.read_meta(checkpoints.checkpoint_directory(output))
    assert meta["config"]["ema_kimg"] == pytest.approx(10 * 4 / 32)


def test_g_ema_moves_by_nvlabs_beta_and_copies_buffers():
    """beta = 0.5 ** (batch / half-life images), the half-life min(ema_kimg * 1000, rampup * seen)."""
    average, model = torch.nn.BatchNorm1d(2), torch.nn.BatchNorm1d(2)
    with torch.no_grad():
        average.weight.fill_(1.0)
        model.weight.fill_(3.0)
        model.running_mean.fill_(7.0)
    stylegan2.update_ema(average, model, images_seen=10_000, batch_images=32, ema_kimg=10, rampup=0.05)
    beta = 0.5 ** (32 / (10_000 * 0.05))  # the ramp's half-life, 500 images, is below 10 kimg
    assert torch.allclose(average.weight, torch.full((2,), 3.0 + (1.0 - 3.0) * beta))
    assert torch.equal(average.running_mean, model.running_mean)


def test_path_length_mean_survives_a_non_finite_step():
    penalty = stylegan2.PathLengthPenalty(2.0)
    ws = torch.ones(2, 3, 4, requires_grad=True)
    penalty(ws.sum(2, keepdim=True)[:, :, :, None].expand(2, 3, 4, 4) * 1.0, ws)
    kept = float(penalty.pl_mean)
    assert kept > 0
    penalty((ws * float("nan")).sum(2, keepdim=True)[:, :, :, None].expand(2, 3, 4, 4), ws)
    assert float(penalty.pl_mean) == kept
