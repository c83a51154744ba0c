"""The held-out evaluation during training (eval_every): records at the right steps with finite
values, the same training with and without it, the same records after a resume, its settings
checked by name, and two data-parallel processes (rank 0 evaluates, the other waits)."""

import json
import math
import os
import shutil

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

from culturegan.metrics import HEADLINE
from culturegan.training import Trainer, load_config
from culturegan.training.history import read_history
import test_training
from test_distributed import _free_port
from test_training import parameters, tiny

dataset = test_training.dataset  # the training data fixture, shared

STEPS, EVAL_EVERY = 5, 2
EVAL_STEPS = [2, 4, 5]  # every EVAL_EVERY steps, and after the last


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    """Three cultures of images the runs never train on (the classifiers see every culture)."""
    root = tmp_path_factory.mktemp("held_out")
    rng = np.random.default_rng(1)
    for culture, colour in (("ink_wash", (40, 40, 40)), ("kente", (220, 160, 20)), ("ukiyoe", (30, 60, 160))):
        (root / culture).mkdir()
        for i in range(3):
            array = np.clip(rng.normal(128, 40, (40, 40, 3)) * 0.3 + np.array(colour) * 0.7, 0, 255).astype(np.uint8)
            Image.fromarray(array).save(root / culture / f"{i}.png")
    return root


def evaluated(dataset, held_out, output, **changes):
    return tiny(dataset, output, **{"steps": STEPS, "decay_steps": 2, "eval_every": EVAL_EVERY,
                                    "eval_data": str(held_out), **changes})


@pytest.fixture(scope="module")
def straight(dataset, held_out, tmp_path_factory):
    output = tmp_path_factory.mktemp("straight")
    trainer = Trainer(evaluated(dataset, held_out, output))
    trainer.fit()
    return trainer, read_history(output)


def test_evaluation_records_at_their_steps_with_finite_headline_values(straight):
    _, history = straight
    assert [r["step"] for r in history.evaluations] == EVAL_STEPS
    assert [r["step"] for r in history.training] == list(range(1, STEPS + 1))
    for record in history.evaluations:
        assert list(record["eval"]) == list(HEADLINE)
        assert all(math.isfinite(value) for value in record["eval"].values())
        assert 0 <= record["eval"]["content.retrieval.top1"] <= 1


def test_evaluating_leaves_the_training_unchanged(dataset, straight, tmp_path):
    plain = Trainer(tiny(dataset, tmp_path / "plain", steps=STEPS, decay_steps=2))
    plain.fit()
    want, got = parameters(plain), parameters(straight[0])
    for key in want:
        assert torch.equal(got[key], want[key]), key


def test_a_resumed_run_keeps_the_evaluation_records(dataset, held_out, straight, tmp_path):
    output = tmp_path / "resumed"
    Trainer(evaluated(dataset, held_out, output)).fit(until=3)
    shutil.rmtree(output / "checkpoints" / "step-00000003")  # as if killed after step 3: resume from step 2
    resumed = Trainer(evaluated(dataset, held_out, output), resume=True)
    assert resumed.step == 2
    resumed.fit()
    lines = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "eval" not in r] == [1, 2, 3, 3, 4, 5]  # step 3 again after the resume
    history = read_history(output)
    assert [r["step"] for r in history.training] == list(range(1, STEPS + 1))
    assert [r["step"] for r in history.evaluations] == EVAL_STEPS
    for got, want in zip(history.evaluations, straight[1].evaluations):
        assert got["eval"] == pytest.approx(want["eval"], rel=1e-4)


@pytest.mark.parametrize("override, message", [
    ("eval_every=-1", "eval_every must be >= 0"),
    ("eval_every=10", "eval_every=10 needs eval_data"),
    ("eval_count=1", "eval_count must be >= 2"),
    ("eval_count=many", "'eval_count' takes a int"),
])
def test_bad_evaluation_settings_name_their_key(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, ["data_root=data", "source=a", "target=b", "load_size=36", "crop_size=32", override])


def test_the_multi_culture_mode_needs_the_direction_to_evaluate():
    with pytest.raises(ValueError, match="eval_every in mode 'multi' needs source and target"):
        load_config(None, ["data_root=data", "mode=multi", "eval_every=5", "eval_data=held"])


def test_a_held_out_folder_without_the_cultures_is_refused(dataset, held_out, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(held_out / "ink_wash", partial / "ink_wash")
    with pytest.raises(ValueError, match=r"eval_data .*partial has no folder for \['kente'\]"):
        Trainer(evaluated(dataset, partial, tmp_path / "run"))
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        Trainer(evaluated(dataset, tmp_path / "nowhere", tmp_path / "run"))


def test_the_multi_culture_mode_evaluates_its_target(dataset, held_out, tmp_path):
    trainer = Trainer(evaluated(dataset, held_out, tmp_path / "multi", mode="multi", steps=2, decay_steps=0,
                                style_dim=8))
    trainer.fit()
    assert [r["step"] for r in read_history(tmp_path / "multi").evaluations] == [2]
    with pytest.raises(ValueError, match=r"the run trains on \['ink_wash', 'kente'\], not on \['ukiyoe'\]"):
        Trainer(evaluated(dataset, held_out, tmp_path / "other", mode="multi", target="ukiyoe"))


def _worker(rank: int, world: int, port: int, root: str, held: str, output: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    try:
        Trainer(tiny(root, output, batch_size=1, pool_size=0, steps=4, decay_steps=0, eval_every=2,
                     eval_data=held)).fit()
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_processes_finish_with_rank_0_evaluating(dataset, held_out, tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(dataset), str(held_out), str(tmp_path / "ddp")), nprocs=2,
             join=True)
    assert [r["step"] for r in read_history(tmp_path / "ddp").evaluations] == [2, 4]
