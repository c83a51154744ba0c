"""Small real generators for the transfer tests: a CycleGAN generator file and a one-step
two-culture run (photo -> ukiyoe, and back with its reverse generator)."""

import numpy as np
import pytest
import torch
from PIL import Image

from culturegan.models import ResnetGenerator
from culturegan.training import TrainConfig, Trainer


@pytest.fixture(scope="module")
def generator_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "latest_net_G.pth"
    torch.save(ResnetGenerator(ngf=4, n_blocks=1).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def two_culture_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for culture, colour in (("photo", (120, 120, 120)), ("ukiyoe", (200, 60, 40))):
        (root / culture).mkdir()
        for i in range(3):
            pixels = np.clip(rng.normal(0, 30, (36, 36, 3)) + np.array(colour), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / culture / f"{i}.png")
    output = tmp_path_factory.mktemp("run")
    config = TrainConfig(data_root=str(root), source="photo", target="ukiyoe", load_size=36, crop_size=32, workers=0,
                         ngf=4, n_blocks=1, ndf=4, profile_size=32, steps=1, decay_steps=0, device="cpu",
                         output=str(output), progress=False, sample_every=0)
    Trainer(config).fit()
    return output
