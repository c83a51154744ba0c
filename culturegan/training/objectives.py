"""What one training step computes, per training mode; the Trainer does the rest (devices,
AMP, optimisers, gradient averaging, checkpoints, logging).

- ``pair`` (CycleObjective): CycleGAN between a source culture A and a target culture B: two
  ResNet generators (A->B, B->A) and two PatchGAN discriminators.
- ``multi`` (MultiCultureObjective): one generator for K cultures, conditioned on the target
  culture by AdaIN, and one culture-aware discriminator (projection head that also receives the
  images' culture features, plus an auxiliary culture classifier), as in StarGAN: each image is
  sent to a random other culture and back. The generator's reference projection (culture
  features -> style code) is trained as StarGAN v2 trains its style encoder, cheaply: half the
  images take their codes from real images' culture features (MultiCultureObjective._style_codes).
- ``contrastive`` (ContrastiveObjective): CUT / FastCUT (Park et al., ECCV 2020), one direction
  source -> target: one ResNet generator and one PatchGAN, no cycle; the PatchNCE loss keeps
  each output patch closer to its input's patch at the same place than to the input's others.

- ``stylegan2`` (StyleGAN2Objective): StyleGAN2-ADA (Karras et al. 2020) learns one culture from
  noise, fine-tuning an imported network or from scratch: G, D, G_ema, the adaptive augmentation of
  every D input and the path-length regulariser's state (culturegan.training.stylegan2).

All add the culture loss of every generated image against its target culture's profile; the
translating modes add the line-structure loss of every generated image against the image it was
made from.
"""

from __future__ import annotations

import functools
import random

import torch
import torch.nn.functional as F

from culturegan.culture import (REFERENCE_SIDE, CultureFeatures, CultureProfile, folder_features,
                                reference_features)
from culturegan.data import Augment, CultureImages
from culturegan.losses import (
    CultureLoss,
    PatchNCELoss,
    StructureLoss,
    cycle_loss,
    discriminator_loss,
    generator_loss,
    identity_loss,
    r1_penalty,
)
from culturegan.models import (CultureDiscriminator, MultiCultureGenerator, NLayerDiscriminator, PatchHeads,
                               ResnetGenerator, layer_features)
from culturegan.models.contrastive import feature_shapes
from culturegan.training import pretrained, stylegan2
from culturegan.training.config import TrainConfig
from culturegan.training.state import ImagePool

Batch = dict[str, dict[str, torch.Tensor]]  # data stream name -> {"image", "culture"}
REFERENCE_SHARE = 0.5  # multi: the probability that an image is steered by references (StarGAN v2's half)


class Objective:
    """Models, data streams and losses of one training mode."""

    generators: tuple[str, ...]
    discriminators: tuple[str, ...]
    pool_names: tuple[str, ...]
    # networks trained with the generators' optimiser that are not generators (never frozen,
    # initialised or sampled as one): the contrastive mode's PatchNCE heads
    heads: tuple[str, ...] = ()
    # lazy regularisation (StyleGAN2, Karras et al. 2020 section 3.1): every how many steps each
    # optimiser's regularisers run; 1 adds them to every step's loss, k > 1 gives them an update of
    # their own every k-th step, scaled by k (and that optimiser's lr and betas to the power k / (k + 1))
    regularisation_intervals = {"optim_G": 1, "optim_D": 1}

    def __init__(self, config: TrainConfig, culture_loss: CultureLoss, rng: random.Random,
                 profiles: dict[str, CultureProfile] | None = None):
        self.config, self.culture_loss = config, culture_loss
        # None in mode stylegan2: it draws from noise, with no input whose lines to keep
        self.structure_loss = (None if config.lambda_structure is None
                               else StructureLoss(config.lambda_structure, config.structure_scales))
        self.pools = {name: ImagePool(config.pool_size, rng) for name in self.pool_names}
        # culture name -> the profile its culture loss measures against: given here, fitted by
        # fit_profiles, or restored with a resumed run's state (culturegan.training.state)
        self.profiles: dict[str, CultureProfile] = dict(profiles or {})

    def fit_profiles(self, progress: bool = False) -> None:
        """Fits every culture's profile on its training folder (after datasets(), which settles
        the cultures of multi mode); `progress`: a bar per folder, on a terminal."""
        self._fit_profiles(self._culture_features(self.config.profile_size, progress))

    def _culture_features(self, size: int, progress: bool) -> dict[str, CultureFeatures]:
        """Every culture's training images' features at `size` (culturegan.culture.folder_features)."""
        c = self.config
        return {name: folder_features(c.data_root, name, size, manifest=c.manifest or None, progress=progress)
                for name in self.cultures}

    def _fit_profiles(self, features: dict[str, CultureFeatures]) -> None:
        self.profiles = {name: CultureProfile.fit(name, values) for name, values in features.items()}

    def _augment(self) -> Augment:
        return Augment(load_size=self.config.load_size, crop_size=self.config.crop_size)

    def initialise(self, models: dict[str, torch.nn.Module]) -> None:
        """A fresh run's networks from config.init_from (culturegan.training.pretrained)."""
        pretrained.initialise(self.config, models, self.generators, self.discriminators)

    def init_from_shapes(self) -> dict[str, dict]:
        """What build_models took from init_from's networks (their constructor arguments, by
        name), for checkpoints: a resumed run builds from these, and init_from may be gone by
        then. The CycleGAN-family modes build from the config alone: {}."""
        return {}

    def resume_init_from_shapes(self, shapes: dict[str, dict]) -> None:
        """On resume, before build_models: init_from_shapes() as the checkpoint recorded it."""

    def regularisers(self, optimizer: str, m: dict[str, torch.nn.Module], batch: Batch) -> dict[str, torch.Tensor]:
        """The regularisation losses of `optimizer`'s networks ("optim_G" or "optim_D"): R1 on the
        real images when r1_gamma > 0."""
        if optimizer == "optim_D" and self.config.r1_gamma > 0:
            return {"R1": self.r1(m, batch)}
        return {}

    def end_step(self, models: dict[str, torch.nn.Module], images_seen: int, batch_images: int) -> dict[str, float]:
        """Updates what follows the optimisers after a step of `batch_images` images (over all
        processes), `images_seen` before it; returns numbers to log with the step."""
        return {}

    def _culture(self, images: torch.Tensor, cultures: list[str], targets: torch.Tensor | None = None):
        """The culture loss in float32 (outside autocast: its statistics need the precision)."""
        with torch.autocast(images.device.type, enabled=False):
            return self.culture_loss(images.float(), [self.profiles[c] for c in cultures], targets)

    def _features_for_discriminator(self, images: torch.Tensor) -> torch.Tensor:
        """(N, feature_dim): the culture features a culture-aware discriminator sees, in float32."""
        with torch.autocast(images.device.type, enabled=False):
            return self.culture_loss.extractor(images.float()).all()

    def _structure(self, outputs: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """The line-structure loss of outputs to the inputs they were made from, in float32."""
        with torch.autocast(outputs.device.type, enabled=False):
            return self.structure_loss(outputs.float(), inputs.float())


class TwoCultureObjective(Objective):
    """A source culture A and a target culture B, each its own data stream; CycleGAN's networks."""

    @property
    def cultures(self) -> list[str]:
        return [self.config.source, self.config.target]

    def datasets(self) -> dict[str, CultureImages]:
        c = self.config
        return {side: CultureImages(c.data_root, [name], c.manifest or None, self._augment(), seed=c.seed + i)
                for i, (side, name) in enumerate((("A", c.source), ("B", c.target)))}

    def _generator(self) -> ResnetGenerator:
        c = self.config
        return ResnetGenerator(ngf=c.ngf, n_blocks=c.n_blocks, fused=True, upsample=c.upsample)

    def _discriminator(self) -> NLayerDiscriminator | CultureDiscriminator:
        """CycleGAN's PatchGAN; with discriminator_features, multi mode's culture-aware one with
        its one culture (its patch logits plus a projection of the image's culture features)."""
        c = self.config
        if c.discriminator_features:
            return CultureDiscriminator(1, ndf=c.ndf, n_layers=c.d_layers,
                                        feature_dim=self.culture_loss.extractor.feature_dim())
        return NLayerDiscriminator(ndf=c.ndf, n_layers=c.d_layers, fused=True)

    def _discriminator_call(self, m: dict[str, torch.nn.Module], name: str):
        """images -> patch logits of discriminator `name`, whichever _discriminator built."""
        if not self.config.discriminator_features:
            return m[name]

        def culture_aware(images: torch.Tensor) -> torch.Tensor:
            cultures = torch.zeros(images.shape[0], dtype=torch.long, device=images.device)
            return m[name](images, cultures, self._features_for_discriminator(images))[0]

        return culture_aware

    def transfer(self, m: dict[str, torch.nn.Module], images: torch.Tensor) -> torch.Tensor:
        """Source images to the target culture, by the first generator (G_AB, or CUT's G): the
        direction the held-out evaluation measures."""
        return m[self.generators[0]](images)


class CycleObjective(TwoCultureObjective):
    generators = ("G_AB", "G_BA")
    discriminators = ("D_A", "D_B")
    pool_names = ("A", "B")

    def build_models(self) -> dict[str, torch.nn.Module]:
        return {"G_AB": self._generator(), "G_BA": self._generator(),
                "D_A": self._discriminator(), "D_B": self._discriminator()}

    def generator_losses(self, m: dict[str, torch.nn.Module], batch: Batch):
        c = self.config
        real_a, real_b = batch["A"]["image"], batch["B"]["image"]
        # Six generator applications in three calls (see _batched): G_AB's translation and
        # identity inputs, then G_BA's translation, identity and cycle inputs, then G_AB's cycle.
        identity = c.lambda_identity > 0
        fake_b, *same_b = _batched(m["G_AB"], real_a, *([real_b] if identity else []))
        fake_a, rec_a, *same_a = _batched(m["G_BA"], real_b, fake_b, *([real_a] if identity else []))
        rec_b = m["G_AB"](fake_a)
        losses = {"G_adv": generator_loss(self._discriminator_call(m, "D_B")(fake_b), c.gan_mode)
                  + generator_loss(self._discriminator_call(m, "D_A")(fake_a), c.gan_mode),
                  "cycle": cycle_loss(rec_a, real_a, c.lambda_cycle) + cycle_loss(rec_b, real_b, c.lambda_cycle)}
        if identity:
            same_a, same_b = same_a[0], same_b[0]
            weight = c.lambda_identity * c.lambda_cycle
            losses["identity"] = identity_loss(same_b, real_b, weight) + identity_loss(same_a, real_a, weight)
        # both directions' culture losses from one feature extraction: the mean over the 2N
        # images, each against its own target, is half the sum of the two means
        targets = torch.arange(2, device=fake_b.device).repeat_interleave(fake_b.shape[0])
        fakes = torch.cat([fake_b, fake_a])
        losses["culture"] = 2 * self._culture(fakes, [c.target, c.source], targets)
        losses["structure"] = 2 * self._structure(fakes, torch.cat([real_a, real_b]))  # also the sum of the two
        return losses, {"A": fake_a, "B": fake_b}

    def discriminator_loss(self, m: dict[str, torch.nn.Module], batch: Batch, fakes) -> torch.Tensor:
        mode = self.config.gan_mode
        return sum(discriminator_loss(*_batched(self._discriminator_call(m, f"D_{side}"), batch[side]["image"],
                                                self.pools[side].query(fakes[side])), mode)
                   for side in ("A", "B"))

    def r1(self, m: dict[str, torch.nn.Module], batch: Batch) -> torch.Tensor:
        return sum(r1_penalty(self._discriminator_call(m, f"D_{side}"), batch[side]["image"], self.config.r1_gamma)
                   for side in ("A", "B"))

    @torch.no_grad()
    def samples(self, m: dict[str, torch.nn.Module], batch: Batch, count: int) -> list[list[torch.Tensor]]:
        """Rows of (input, output, cycle reconstruction), A->B then B->A."""
        rows = []
        for side, forward, backward in (("A", "G_AB", "G_BA"), ("B", "G_BA", "G_AB")):
            real = batch[side]["image"][:count]
            fake = m[forward](real)
            rows += [list(images) for images in zip(real, fake, m[backward](fake))]
        return rows


class MultiCultureObjective(Objective):
    generators = ("G",)
    discriminators = ("D",)
    pool_names = ("fake",)

    def __init__(self, config: TrainConfig, culture_loss: CultureLoss, rng: random.Random,
                 profiles: dict[str, CultureProfile] | None = None):
        super().__init__(config, culture_loss, rng, profiles)
        features = culture_loss.extractor.feature_dim()
        self.feature_dim = features if config.discriminator_features else None
        self.reference_dim = features if config.lambda_reference > 0 else None  # the generator's projection's
        # (every training image, reference_dim): fitted with the profiles, what build_models
        # standardises a fresh projection's input with; None on resume (the checkpoint has them)
        self.reference_sample: torch.Tensor | None = None
        self._names = list(config.culture_list()) or None

    @property
    def cultures(self) -> list[str]:
        return self._names

    def datasets(self) -> dict[str, CultureImages]:
        c = self.config
        images = CultureImages(c.data_root, self._names, c.manifest or None, self._augment(), seed=c.seed)
        if len(images.cultures) < 2:
            raise ValueError(f"multi-culture training needs at least 2 cultures, {c.data_root} has "
                             f"{images.cultures}")
        self._names = images.cultures
        return {"all": images}

    def fit_profiles(self, progress: bool = False) -> None:
        """The profiles, and with a reference projection the reference features of the same
        images, every one on every rank (so every rank standardises alike)."""
        profile_features = self._culture_features(self.config.profile_size, progress)
        self._fit_profiles(profile_features)
        if self.reference_dim is None:
            return
        # at REFERENCE_SIDE, reference_view leaves the centre-cropped images as they are: these
        # are reference_features of the training images (the profiles' own, at the default size)
        features = (profile_features if self.config.profile_size == REFERENCE_SIDE
                    else self._culture_features(REFERENCE_SIDE, progress))
        self.reference_sample = torch.cat([values.all() for values in features.values()])

    def build_models(self) -> dict[str, torch.nn.Module]:
        c, k = self.config, len(self.cultures)
        generator = MultiCultureGenerator(k, ngf=c.ngf, n_blocks=c.n_blocks, style_dim=c.style_dim,
                                          feature_dim=self.reference_dim)
        if self.reference_sample is not None:
            generator.fit_reference_statistics(self.reference_sample)
        return {"G": generator,
                "D": CultureDiscriminator(k, ndf=c.ndf, n_layers=c.d_layers, feature_dim=self.feature_dim)}

    def transfer(self, m: dict[str, torch.nn.Module], images: torch.Tensor) -> torch.Tensor:
        """Images to config.target (the direction the held-out evaluation measures)."""
        targets = torch.full((len(images),), self.cultures.index(self.config.target), device=images.device)
        return m["G"](images, targets)

    def _discriminate(self, m, images: torch.Tensor, cultures: torch.Tensor):
        features = None if self.feature_dim is None else self._features_for_discriminator(images)
        return m["D"](images, cultures, features)

    def generator_losses(self, m: dict[str, torch.nn.Module], batch: Batch):
        c = self.config
        real, sources = batch["all"]["image"], batch["all"]["culture"]
        # every image to a uniformly drawn other culture (the global RNG: checkpointed)
        shift = torch.randint(1, len(self.cultures), sources.shape).to(sources.device)
        targets = (sources + shift) % len(self.cultures)
        target_codes, source_codes, alignment = self._style_codes(m["G"], real, sources, targets)
        render = functools.partial(_render, m["G"])
        if c.lambda_identity > 0:
            fake, same = _batched(render, (real, target_codes), (real, source_codes))
        else:
            fake = render(real, target_codes)
        patches, classes = self._discriminate(m, fake, targets)
        losses = {"G_adv": generator_loss(patches, c.gan_mode),
                  "G_class": c.lambda_class * F.cross_entropy(classes.float(), targets),
                  "cycle": cycle_loss(render(fake, source_codes), real, c.lambda_cycle)}
        if c.lambda_identity > 0:
            losses["identity"] = identity_loss(same, real, c.lambda_identity * c.lambda_cycle)
        if alignment is not None:
            losses["reference"] = c.lambda_reference * alignment
        losses["culture"] = self._culture(fake, self.cultures, targets)
        losses["structure"] = self._structure(fake, real)
        return losses, {"fake": fake, "targets": targets}

    def _style_codes(self, generator: MultiCultureGenerator, real: torch.Tensor, sources: torch.Tensor,
                     targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(N, style_dim) codes of each image's target and own culture, and the mean squared
        distance of the reference codes among them to their culture's embedding (None without
        a reference projection: then every code is the culture embedding's, and no random
        number is drawn, so such runs train exactly as before references).

        Each image is steered by references with probability REFERENCE_SHARE (StarGAN v2's
        reference-guided half, without its separate reference loader): its target code is the
        projected features of a real batch image of its target culture, drawn at random among
        them, when the batch holds one; its own code, which the cycle returns it with and the
        identity loss keeps it under, is the projection of its own features (StarGAN v2's cycle
        code). At batch size 1 the target's is never a reference (the target is another
        culture): there only the cycle, identity and alignment terms train the projection.

        The alignment pulls the projection toward the embedding, not the embedding toward the
        projection (detached): the culture codes are what the other losses define."""
        target_codes, source_codes = generator.style_code(cultures=targets), generator.style_code(cultures=sources)
        if self.reference_dim is None:
            return target_codes, source_codes, None
        count, device = len(real), real.device
        # the global RNG, on the CPU (checkpointed; the same draws on every device)
        steered = (torch.rand(count) < REFERENCE_SHARE).to(device)
        of_target = sources[None, :] == targets[:, None]  # (image, batch image): of the image's target culture?
        chosen = torch.rand(count, count).to(device).masked_fill(~of_target, -1).argmax(1)
        to_reference = steered & of_target.any(1)
        used = steered.clone()  # the batch images whose features are projected: references of either kind
        used[chosen[to_reference]] = True
        used = used.nonzero().squeeze(1)
        if len(used) == 0:  # no image drawn (0.5 ** N): a zero loss keeps every step's records alike
            return target_codes, source_codes, target_codes.new_zeros(())
        features = reference_features(real[used], self.culture_loss.extractor)
        projected = generator.style_code(reference_features=features)
        codes = projected.new_zeros(count, projected.shape[1]).index_copy(0, used, projected)
        target_codes = torch.where(to_reference[:, None], codes[chosen], target_codes)
        source_codes = torch.where(steered[:, None], codes, source_codes)
        alignment = F.mse_loss(projected.float(), generator.style_code(cultures=sources[used]).detach().float())
        return target_codes, source_codes, alignment

    def discriminator_loss(self, m: dict[str, torch.nn.Module], batch: Batch, fakes) -> torch.Tensor:
        real, sources = batch["all"]["image"], batch["all"]["culture"]
        fake, targets = self.pools["fake"].query(fakes["fake"], fakes["targets"])
        (real_patches, real_classes), (fake_patches, _) = _batched(functools.partial(self._discriminate, m),
                                                                   (real, sources), (fake, targets))
        return (discriminator_loss(real_patches, fake_patches, self.config.gan_mode)
                + self.config.lambda_class * F.cross_entropy(real_classes.float(), sources))

    def r1(self, m: dict[str, torch.nn.Module], batch: Batch) -> torch.Tensor:
        sources = batch["all"]["culture"]
        return r1_penalty(lambda images: self._discriminate(m, images, sources)[0], batch["all"]["image"],
                          self.config.r1_gamma)

    @torch.no_grad()
    def samples(self, m: dict[str, torch.nn.Module], batch: Batch, count: int) -> list[list[torch.Tensor]]:
        """Rows of (input, output in the next culture, reconstruction)."""
        real, sources = batch["all"]["image"][:count], batch["all"]["culture"][:count]
        targets = (sources + 1) % len(self.cultures)
        fake = m["G"](real, targets)
        return [list(images) for images in zip(real, fake, m["G"](fake, sources))]


class ContrastiveObjective(TwoCultureObjective):
    """CUT: G (source -> target), its PatchNCE heads F and one discriminator D of the target; the
    preset's settings (TrainConfig) choose CUT's NCE identity or FastCUT's flip equivariance."""

    generators = ("G",)
    heads = ("F",)
    discriminators = ("D",)
    pool_names = ("B",)

    def __init__(self, config: TrainConfig, culture_loss: CultureLoss, rng: random.Random,
                 profiles: dict[str, CultureProfile] | None = None):
        super().__init__(config, culture_loss, rng, profiles)
        self.nce = PatchNCELoss(config.nce_patches, config.nce_temperature, config.lambda_nce)
        self.nce_shapes = self._nce_feature_shapes()

    def _nce_feature_shapes(self) -> list[tuple[int, int, int]]:
        """(C, H, W) at each of nce_layers for crop_size images, from a probe of G on the meta
        device (no memory, no arithmetic: here, before the profiles are fitted, so that a bad
        nce_layers or nce_patches fails at once); refuses layers G lacks, and more nce_patches
        than a layer has positions."""
        c = self.config
        with torch.device("meta"):
            generator = self._generator()
        shapes = feature_shapes(generator, c.nce_layers, c.crop_size)
        small = [f"layer {i}: {h}x{w}" for i, (_, h, w) in zip(c.nce_layers, shapes) if h * w < c.nce_patches]
        if small:
            raise ValueError(f"nce_patches={c.nce_patches} is more than the positions of {', '.join(small)} at "
                             f"crop_size {c.crop_size}: lower nce_patches, or leave those layers out of nce_layers")
        return shapes

    def build_models(self) -> dict[str, torch.nn.Module]:
        """G, D, and F with one head per nce_layers entry."""
        return {"G": self._generator(), "F": PatchHeads([channels for channels, _, _ in self.nce_shapes]),
                "D": self._discriminator()}

    def generator_losses(self, m: dict[str, torch.nn.Module], batch: Batch):
        c = self.config
        real_a, real_b = batch["A"]["image"], batch["B"]["image"]
        # CUT's identity term translates the target images too, in the same call: G(y) should be y
        sources = torch.cat([real_a, real_b]) if c.nce_idt else real_a
        # one coin per batch, from the global RNG (checkpointed; the same on every rank)
        flipped = bool(c.flip_equivariance and torch.rand(()) < 0.5)
        inputs = sources.flip(3) if flipped else sources
        outputs = m["G"](inputs)
        fake_b, inputs_a = outputs[:len(real_a)], inputs[:len(real_a)]
        encode = functools.partial(layer_features, m["G"], layers=c.nce_layers)
        # with the identity term, the mean over both halves is the mean of the two losses (CUT's)
        losses = {"G_adv": generator_loss(self._discriminator_call(m, "D")(fake_b), c.gan_mode),
                  "nce": self.nce(encode, m["F"], sources, outputs, flipped),
                  "culture": self._culture(fake_b, [c.target]),
                  "structure": self._structure(fake_b, inputs_a)}
        return losses, {"B": fake_b}

    def discriminator_loss(self, m: dict[str, torch.nn.Module], batch: Batch, fakes) -> torch.Tensor:
        judge = self._discriminator_call(m, "D")
        return discriminator_loss(*_batched(judge, batch["B"]["image"], self.pools["B"].query(fakes["B"])),
                                  self.config.gan_mode)

    def r1(self, m: dict[str, torch.nn.Module], batch: Batch) -> torch.Tensor:
        return r1_penalty(self._discriminator_call(m, "D"), batch["B"]["image"], self.config.r1_gamma)

    @torch.no_grad()
    def samples(self, m: dict[str, torch.nn.Module], batch: Batch, count: int) -> list[list[torch.Tensor]]:
        """Rows of (input, output): source images, then target images (CUT's identity)."""
        rows = []
        for side in ("A", "B"):
            real = batch[side]["image"][:count]
            rows += [list(images) for images in zip(real, m["G"](real))]
        return rows


class StyleGAN2Objective(Objective):
    """StyleGAN2-ADA on one culture, config.target (NVlabs' training/loss.py): the non-saturating
    logistic loss, every D input through the adaptive augmentation, lazy R1 on augmented reals
    and the path-length regulariser, style mixing; G_ema, the augmentation's p and the path-length
    mean follow the optimisers after each step (culturegan.training.stylegan2). Unlike CycleGAN's
    modes, D judges fakes made afresh after G's update, from other latents (as NVlabs)."""

    generators = ("G",)
    discriminators = ("D",)
    pool_names = ()

    def __init__(self, config: TrainConfig, culture_loss: CultureLoss, rng: random.Random,
                 profiles: dict[str, CultureProfile] | None = None):
        super().__init__(config, culture_loss, rng, profiles)
        self.regularisation_intervals = {"optim_G": config.pl_interval if config.pl_weight > 0 else 1,
                                         "optim_D": config.r1_interval if config.r1_gamma > 0 else 1}
        self.recorded = None  # init_from's networks' constructor arguments, from a resumed run's checkpoint

    @property
    def cultures(self) -> list[str]:
        return [self.config.target]

    def datasets(self) -> dict[str, CultureImages]:
        c = self.config
        images = Augment(load_size=c.resolution, crop_size=c.resolution)
        return {"real": CultureImages(c.data_root, [c.target], c.manifest or None, images, seed=c.seed)}

    @functools.cached_property
    def imported(self) -> dict | None:
        """init_from's networks (stylegan2.read_import), read when a fresh run needs them; None
        from scratch."""
        return stylegan2.read_import(self.config.init_from) if self.config.init_from else None

    def init_from_shapes(self) -> dict[str, dict]:
        networks = self.recorded or self.imported or {}
        return {name: kwargs for name, (_, kwargs) in networks.items()}

    def resume_init_from_shapes(self, shapes: dict[str, dict]) -> None:
        # the same networks as from init_from itself (a snapshot's D too; a fresh D's minibatch groups
        # from the batch size); checkpoints from before they were recorded read init_from, which must
        # then still be in place
        if shapes:
            self.recorded = {name: (None, kwargs) for name, kwargs in shapes.items()}

    def build_models(self) -> dict[str, torch.nn.Module]:
        c = self.config
        tuning = {} if c.ada_target is None else dict(target=c.ada_target, interval=c.ada_interval, kimg=c.ada_kimg)
        augment = stylegan2.AdaptiveAugment(c.augment, c.augment_p or 0.0, **tuning)
        return {**stylegan2.build_networks(c, self.recorded or self.imported), "augment": augment,
                "path_length": stylegan2.PathLengthPenalty(c.pl_weight)}

    def initialise(self, models: dict[str, torch.nn.Module]) -> None:
        stylegan2.load_imported(models, self.imported, self.config.init_from)

    def _fakes(self, generator, count: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, their ws) from fresh latents, style-mixed."""
        ws = stylegan2.mixed_ws(generator, stylegan2.latents(count, generator.z_dim, device), self.config.style_mixing)
        return generator.synthesis(ws), ws

    def _judge(self, m: dict[str, torch.nn.Module], images: torch.Tensor) -> torch.Tensor:
        return m["D"](m["augment"](images), None)

    def generator_losses(self, m: dict[str, torch.nn.Module], batch: Batch):
        real = batch["real"]["image"]
        fake, _ = self._fakes(m["G"], len(real), real.device)
        return {"G_adv": F.softplus(-self._judge(m, fake)).mean(),
                "culture": self._culture(fake, [self.config.target])}, {}

    def discriminator_loss(self, m: dict[str, torch.nn.Module], batch: Batch, fakes) -> torch.Tensor:
        real = batch["real"]["image"]
        with torch.no_grad():
            fake, _ = self._fakes(m["G"], len(real), real.device)
        real_logits = self._judge(m, real)  # (separate calls: the minibatch-std layer mixes a batch's images)
        m["augment"].observe(real_logits)
        return F.softplus(self._judge(m, fake)).mean() + F.softplus(-real_logits).mean()

    def r1(self, m: dict[str, torch.nn.Module], batch: Batch) -> torch.Tensor:
        """R1 on the augmented reals, differentiated through the augmentation to the reals (NVlabs')."""
        return r1_penalty(functools.partial(self._judge, m), batch["real"]["image"], self.config.r1_gamma)

    def regularisers(self, optimizer: str, m: dict[str, torch.nn.Module], batch: Batch) -> dict[str, torch.Tensor]:
        losses = super().regularisers(optimizer, m, batch)
        if optimizer == "optim_G" and self.config.pl_weight > 0:
            real = batch["real"]["image"]
            images, ws = self._fakes(m["G"], max(1, len(real) // stylegan2.PL_BATCH_SHRINK), real.device)
            losses["path_length"] = m["path_length"](images, ws)
        return losses

    def end_step(self, models: dict[str, torch.nn.Module], images_seen: int, batch_images: int) -> dict[str, float]:
        """G_ema follows G; ADA's p moves on its interval (and is logged)."""
        c = self.config
        stylegan2.update_ema(models["G_ema"], models["G"], images_seen, batch_images, c.ema_kimg, c.ema_rampup)
        models["augment"].step(batch_images)
        return {"augment_p": models["augment"].p}

    @torch.no_grad()
    def samples(self, m: dict[str, torch.nn.Module], batch: Batch, count: int) -> list[list[torch.Tensor]]:
        """count rows of count G_ema images, from the same latents at every step (seeded by config.seed)
        and the networks' constant noise."""
        generator = m["G_ema"]
        z = torch.randn(count * count, generator.z_dim, generator=torch.Generator().manual_seed(self.config.seed))
        images = generator(z.to(batch["real"]["image"].device), None, noise_mode="const")
        return [list(row) for row in images.split(count)]


def _render(generator: MultiCultureGenerator, images: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """The multi-culture generator's output for `images` under (N, style_dim) style `codes`."""
    return generator(images, style=codes)


def _batched(network, *inputs):
    """(network(inputs[0]), network(inputs[1]), ...) from one call on the inputs concatenated.
    Every network here is per image (convolutions, instance norm, AdaIN, per-image heads), so
    the results equal separate calls, and one call of kN images keeps the convolutions busier
    (one weight gradient instead of k). Inputs are tensors, or tuples of tensors (images and
    their cultures); the results are tensors, or tuples of them."""
    groups = [(group,) if torch.is_tensor(group) else tuple(group) for group in inputs]
    counts = [group[0].shape[0] for group in groups]
    results = network(*(torch.cat(parts) for parts in zip(*groups)))
    if torch.is_tensor(results):
        return results.split(counts)
    return tuple(zip(*(result.split(counts) for result in results)))


OBJECTIVES = {"pair": CycleObjective, "multi": MultiCultureObjective, "contrastive": ContrastiveObjective,
              "stylegan2": StyleGAN2Objective}
