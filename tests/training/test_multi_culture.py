"""Multi-culture mode: one AdaIN generator for K cultures and one culture-aware discriminator;
sample grids and TensorBoard logs (both modes share them)."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from culturegan.training import Trainer
from test_training import assert_every_generator_loss_reaches, dataset, parameters, tiny  # noqa: F401


@pytest.fixture(scope="module")
def three_cultures(dataset, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("three") / "data"
    shutil.copytree(dataset, root)
    (root / "ukiyoe").mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):
        stripes = np.repeat((np.arange(40) // 5 % 2)[:, None] * 200, 40, axis=1)
        image = np.stack([stripes, 60 + rng.integers(0, 40, (40, 40)), 255 - stripes], axis=2).astype(np.uint8)
        Image.fromarray(image).save(root / "ukiyoe" / f"{i}.png")
    return root


def multi(root, output, **changes):
    return tiny(root, output, **{"mode": "multi", "source": "", "target": "", "batch_size": 2, "steps": 3,
                                 "decay_steps": 0, "style_dim": 8, **changes})


def test_a_multi_culture_run_learns_and_writes_samples(three_cultures, tmp_path):
    trainer = Trainer(multi(three_cultures, tmp_path / "run", sample_every=2, sample_count=4))
    assert trainer.objective.cultures == ["ink_wash", "kente", "ukiyoe"]
    assert set(trainer.models) == {"G", "D"} and trainer.models["D"].feature_projection is not None
    before = parameters(trainer)
    trainer.fit()
    after = parameters(trainer)
    assert all(not torch.equal(before[k], after[k]) for k in ("G.culture_embedding.weight", "D.classifier.weight"))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(r["G_class"] > 0 and r["culture"] > 0 and np.isfinite(r["D"]) for r in records)
    samples = sorted(p.name for p in (tmp_path / "run" / "samples").iterdir())
    assert samples == ["step-00000002.png", "step-00000003.png"]
    # batch 2: two rows of (input, output, reconstruction), 32-pixel tiles, 2-pixel gaps
    assert Image.open(tmp_path / "run" / "samples" / samples[0]).size == (3 * 34 - 2, 2 * 34 - 2)


def test_every_multi_culture_generator_loss_reaches_the_generator(three_cultures, tmp_path):
    trainer = Trainer(multi(three_cultures, tmp_path / "grad", lambda_identity=0.5))
    assert_every_generator_loss_reaches(trainer, ("G",), {"G_adv", "G_class", "cycle", "identity", "reference",
                                                          "culture", "structure"})


def test_a_multi_culture_run_resumes_exactly(three_cultures, tmp_path):
    straight = Trainer(multi(three_cultures, tmp_path / "straight", steps=4, checkpoint_every=2))
    straight.fit()
    interrupted = Trainer(multi(three_cultures, tmp_path / "resumed", steps=4, checkpoint_every=2))
    interrupted.fit(until=2)
    resumed = Trainer(multi(three_cultures, tmp_path / "resumed", steps=4, checkpoint_every=2), resume=True)
    # the reference projection and its feature statistics come back with the checkpoint exactly
    # (a resumed run fits no statistics)
    saved, restored = ({k: v for k, v in parameters(t).items() if k.startswith("G.reference_")}
                       for t in (interrupted, resumed))
    assert len(saved) == 6  # the projection's two linear layers' weights and biases, mean and scale
    assert resumed.objective.reference_sample is None and saved["G.reference_mean"].abs().sum() > 0
    torch.testing.assert_close(restored, saved, rtol=0, atol=0)
    resumed.fit()
    want, got = parameters(straight), parameters(resumed)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-6, msg=lambda m: f"{key}: {m}")
    with pytest.raises(ValueError, match="trained on cultures.*ink_wash.*kente.*ukiyoe"):
        Trainer(multi(three_cultures, tmp_path / "resumed", steps=4, cultures="ink_wash,kente"), resume=True)


def test_multi_culture_settings_are_checked(three_cultures, dataset, tmp_path):  # noqa: F811
    with pytest.raises(ValueError, match="unknown culture.*maya"):
        Trainer(multi(three_cultures, tmp_path / "x", cultures="ink_wash,maya"))
    with pytest.raises(ValueError, match="at least 2 cultures"):
        Trainer(multi(three_cultures, tmp_path / "x", cultures="kente"))
    with pytest.raises(ValueError, match="invalid setting.*mode='star'"):
        Trainer(multi(three_cultures, tmp_path / "x", mode="star"))
    with pytest.raises(ValueError, match="invalid setting.*init_from_reverse"):
        Trainer(multi(three_cultures, tmp_path / "x", init_from="a.pth", init_from_reverse="b.pth"))


def test_tensorboard_logs_scalars_and_samples(dataset, tmp_path):  # noqa: F811
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    Trainer(tiny(dataset, tmp_path / "tb", steps=2, decay_steps=0, sample_every=2, tensorboard=True)).fit()
    events = EventAccumulator(str(tmp_path / "tb" / "tensorboard"))
    events.Reload()
    assert {"train/G", "train/D", "train/culture", "train/images_per_s"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("train/G")] == [1, 2]
    assert events.Tags()["images"] == ["samples"]
