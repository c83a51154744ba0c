"""StyleGAN2-ADA's training parts (NVlabs/stylegan2-ada-pytorch, training/loss.py and
training_loop.py) for mode "stylegan2" (culturegan.training.objectives.StyleGAN2Objective):

- the networks G, D and G_ema, from scratch or from an imported network (init_from), with Freeze-D;
- AdaptiveAugment: the 'bgc' AugmentPipe of every discriminator input and the AdaController that
  tunes its p, as one module whose buffers hold p and the controller's counts;
- PathLengthPenalty: the path-length regulariser, its running mean a buffer;
- mixed_ws (style mixing) and update_ema (G_ema's exponential moving average, with NVlabs' ramp).

Being modules of the trainer's models, the ADA and path-length state travel with every checkpoint
and come back on resume. NVlabs' constants: the path-length mean decays by PL_DECAY, its batch is
PL_BATCH_SHRINK times smaller, the minibatch-std groups hold MBSTD_GROUP images.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
from torch import nn

from culturegan.models import stylegan2
from culturegan.models.loading import STYLEGAN2_GENERATOR, read_model
from culturegan.models.nvlabs_pickle import file_kind, read_snapshot
from culturegan.models.weights import load_weights
from culturegan.training import distributed
from culturegan.training.ada import AdaController, make_augment_pipe
from culturegan.training.config import TrainConfig

PL_DECAY = 0.01
PL_BATCH_SHRINK = 2
MBSTD_GROUP = 4
SNAPSHOT_NETWORKS = ("G", "G_ema", "D")


# ----------------------------------------------------------------------------- networks

def read_import(path: str) -> dict[str, tuple[dict[str, torch.Tensor], dict]]:
    """{network: (state_dict, constructor arguments)} of init_from: G, G_ema and D of an NVlabs
    snapshot, or the one generator of a converted StyleGAN2 file or stylegan2 run (as G and G_ema)."""
    source = Path(path)
    if not source.exists():
        raise FileNotFoundError(f"init_from: {source} does not exist")
    if source.is_file() and file_kind(source) == "pickle":
        networks = read_snapshot(source)
        missing = [name for name in SNAPSHOT_NETWORKS if name not in networks]
        if missing:
            raise ValueError(f"init_from: {source} lacks {', '.join(missing)}; it holds {', '.join(networks)}")
        return {name: (networks[name].state_dict, networks[name].init_kwargs) for name in SNAPSHOT_NETWORKS}
    state, card = read_model(source)
    architecture = card["architecture"]
    if architecture["kind"] != STYLEGAN2_GENERATOR:
        raise ValueError(f"init_from: {source} holds a {card['description']}, not a StyleGAN2 generator")
    return {"G": (state, architecture["init_kwargs"]), "G_ema": (state, architecture["init_kwargs"])}


def build_networks(config: TrainConfig, imported: dict | None) -> dict[str, nn.Module]:
    """G, G_ema and D (untrained) of config's size, or of the imported networks' (their weights are
    loaded by load_imported); D's first freeze_d layers from the image side are frozen (Freeze-D)."""
    if imported is None:
        generator_kwargs = dict(z_dim=config.z_dim, c_dim=0, w_dim=config.w_dim, img_resolution=config.resolution,
                                img_channels=3, mapping_kwargs={"num_layers": config.mapping_layers},
                                synthesis_kwargs={"channel_base": config.channel_base,
                                                  "channel_max": config.channel_max})
        discriminator_kwargs = dict(c_dim=0, img_resolution=config.resolution, img_channels=3,
                                    channel_base=config.channel_base, channel_max=config.channel_max,
                                    epilogue_kwargs={"mbstd_group_size": math.gcd(MBSTD_GROUP, config.batch_size)})
    else:
        generator_kwargs = imported["G"][1]
        if generator_kwargs["img_resolution"] != config.resolution:
            raise ValueError(f"resolution={config.resolution}, but init_from's generator makes "
                             f"{generator_kwargs['img_resolution']}x{generator_kwargs['img_resolution']} images")
        discriminator_kwargs = imported["D"][1] if "D" in imported else _discriminator_like(generator_kwargs,
                                                                                           config.batch_size)
    discriminator_kwargs = copy.deepcopy(discriminator_kwargs)
    discriminator_kwargs.setdefault("block_kwargs", {})["freeze_layers"] = config.freeze_d
    discriminator = stylegan2.Discriminator(**discriminator_kwargs)
    depth = sum(getattr(discriminator, f"b{r}").num_layers for r in discriminator.block_resolutions)
    if config.freeze_d > depth:
        raise ValueError(f"freeze_d={config.freeze_d} is beyond the discriminator's depth: it has {depth} layers "
                         f"above its 4x4 epilogue (which is never frozen)")
    generator = stylegan2.Generator(**generator_kwargs)
    average = copy.deepcopy(generator).eval().requires_grad_(False)  # G_ema starts as G (NVlabs)
    return {"G": generator, "G_ema": average, "D": discriminator}


def _discriminator_like(generator_kwargs: dict, batch_size: int) -> dict:
    """A fresh discriminator for an imported generator alone: its resolution and channel widths."""
    synthesis = generator_kwargs.get("synthesis_kwargs") or {}
    widths = {key: synthesis[key] for key in ("channel_base", "channel_max") if key in synthesis}
    return dict(c_dim=0, img_resolution=generator_kwargs["img_resolution"],
                img_channels=generator_kwargs["img_channels"], **widths,
                epilogue_kwargs={"mbstd_group_size": math.gcd(MBSTD_GROUP, batch_size)})


def load_imported(models: dict[str, nn.Module], imported: dict, source: str) -> None:
    """The imported weights into G, G_ema and, when init_from has one, D (else D stays fresh)."""
    for name, (state, _) in imported.items():
        load_weights(models[name], state, f"{source} ({name})")


# ----------------------------------------------------------------------------- ADA

class AdaptiveAugment(nn.Module):
    """Every discriminator input's augmentation (culturegan.training.ada) and, when `target` is
    given, the AdaController that tunes its probability p; augment "none" passes images through.

    p is the pipe's buffer (NVlabs' augment_pipe.p). The controller's step count and the signs of
    D(real) it has counted since its last update are copied into the buffer `counts` at the end
    of every step (step()), and handed back to it when a state_dict is loaded, so a checkpoint
    saved between two of its updates resumes exactly. Under torchrun the buffer holds the counts
    summed over the processes (one small all-reduce a step): rank 0 saves them and takes them
    back on resume, the other processes start their share from zero, and the next update sums
    to what it would have been without the interruption."""

    def __init__(self, preset: str, p: float = 0.0, target: float | None = None, interval: int = 4,
                 kimg: float = 500.0):
        super().__init__()
        self.pipe = None if preset == "none" else make_augment_pipe(preset, p=p)
        self.controller = None if self.pipe is None or target is None else AdaController(self.pipe, target, kimg,
                                                                                         interval)
        self.register_buffer("counts", torch.zeros(3, dtype=torch.float64))  # steps, sign sum, sign count
        self.register_load_state_dict_post_hook(_restore_controller)

    @property
    def p(self) -> float:
        return 0.0 if self.pipe is None else float(self.pipe.p)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # each process its own draws (under torchrun the processes share one seeded stream, and
        # would otherwise augment their different images by the same transforms)
        return images if self.pipe is None else self.pipe(images, distributed.own_generator(images.device))

    def observe(self, real_logits: torch.Tensor) -> None:
        if self.controller is not None:
            self.controller.observe(real_logits)

    def step(self, batch_images: int) -> None:
        """Ends a training step of `batch_images` images (over all processes)."""
        if self.controller is None:
            return
        self.controller.step(batch_images)
        state = self.controller.state_dict()  # (one device sync a step: the counts come to the CPU)
        counts = torch.tensor([state["steps"], state["sign_sum"], state["sign_count"]], dtype=torch.float64,
                              device=self.counts.device)  # (the buffer's device: the process group's backend's)
        counts[1:] = distributed.summed(counts[1:])
        self.counts.copy_(counts)


def _restore_controller(module: AdaptiveAugment, incompatible_keys) -> None:
    if module.controller is not None:
        steps, sign_sum, sign_count = module.counts.tolist()
        if distributed.rank_and_world()[0] != 0:  # rank 0 carries every process's counts
            sign_sum = sign_count = 0.0
        module.controller.load_state_dict({"p": module.p, "steps": int(steps), "sign_sum": sign_sum,
                                           "sign_count": sign_count})


# ----------------------------------------------------------------------------- regularisers

class PathLengthPenalty(nn.Module):
    """StyleGAN2's path-length regulariser: weight * (|J_w^T y| - a)^2 for images made from ws,
    y Gaussian noise / sqrt(H W), a the running mean of the lengths (buffer pl_mean, decay
    PL_DECAY). Under torch.distributed the stored mean is the processes' average, so every process
    keeps the same one (NVlabs lets each keep its own)."""

    def __init__(self, weight: float, decay: float = PL_DECAY):
        super().__init__()
        self.weight, self.decay = weight, decay
        self.register_buffer("pl_mean", torch.zeros([]))

    def forward(self, images: torch.Tensor, ws: torch.Tensor) -> torch.Tensor:
        # each process its own noise, from the stream they share
        noise = distributed.own_draws(lambda n: torch.randn((n, *images.shape[1:]), device=images.device,
                                                            dtype=images.dtype), images.shape[0])
        noise = noise / math.sqrt(images.shape[2] * images.shape[3])
        (gradient,) = torch.autograd.grad((images * noise).sum(), ws, create_graph=True)
        lengths = gradient.square().sum(2).mean(1).sqrt()
        mean = self.pl_mean.lerp(lengths.mean(), self.decay)  # (NVlabs differentiates through the new mean too)
        shared = distributed.averaged(mean.detach())
        # a non-finite step is skipped by the trainer: it must not poison the mean for good
        self.pl_mean.copy_(torch.where(torch.isfinite(shared), shared, self.pl_mean))
        return self.weight * (lengths - mean).square().mean()


def latents(count: int, z_dim: int, device: torch.device) -> torch.Tensor:
    """This process's share of world * count latents, drawn from the global CPU RNG (the same
    stream on every process and checkpointed; each process takes other latents)."""
    return distributed.own_draws(lambda n: torch.randn(n, z_dim), count).to(device)


def mixed_ws(generator: stylegan2.Generator, z: torch.Tensor, probability: float) -> torch.Tensor:
    """G.mapping(z), whose ws from a random cutoff in [1, num_ws) come, with `probability`, from
    other latents (one cutoff for the batch, as NVlabs; the second mapping leaves w_avg alone)."""
    ws = generator.mapping(z, None)
    if probability <= 0:
        return ws
    cutoff = int(torch.randint(1, ws.shape[1], ()))
    if not bool(torch.rand(()) < probability):
        return ws
    other = generator.mapping(latents(len(z), z.shape[1], z.device), None, skip_w_avg_update=True)
    return torch.cat([ws[:, :cutoff], other[:, cutoff:]], dim=1)


@torch.no_grad()
def update_ema(average: nn.Module, model: nn.Module, images_seen: int, batch_images: int, ema_kimg: float,
               rampup: float) -> None:
    """average's parameters move towards model's with a half-life of ema_kimg thousand images (at
    most rampup times the images seen, when rampup > 0); its buffers (w_avg, noise) are copied."""
    half_life = ema_kimg * 1000
    if rampup > 0:
        half_life = min(half_life, images_seen * rampup)
    beta = 0.5 ** (batch_images / max(half_life, 1e-8))
    for kept, current in zip(average.parameters(), model.parameters()):
        kept.copy_(current.lerp(kept, beta))
    for kept, current in zip(average.buffers(), model.buffers()):
        kept.copy_(current)
