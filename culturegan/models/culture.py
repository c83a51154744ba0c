"""Culture-aware networks: one generator for K cultures (AdaIN-conditioned on the target
culture), and a PatchGAN discriminator that judges "real AND of culture c".

MultiCultureGenerator: CycleGAN's encoder and decoder (fused conv + InstanceNorm + ReLU
blocks) around residual blocks whose normalisations are AdaIN: their per-channel scale and
shift come from a style code, which is either a learned embedding of the target culture or a
projection of a reference image's culture features (culturegan.culture), so an unseen
reference can steer the transfer.

CultureDiscriminator: the PatchGAN trunk (fused blocks) with a projection head (Miyato and
Koyama, 2018): the patch logits get <embedding(c), pooled trunk features>, plus a projection of
the image's culture features, so the discriminator sees the culture statistics directly; and
an auxiliary classifier head (AC-GAN) that predicts the culture from the trunk.
"""

from __future__ import annotations

import torch
from torch import nn

from culturegan.nn import FusedConvLeakyReLU, FusedConvNormAct

# a reference feature's standardising scale is at least this share of the largest (see
# MultiCultureGenerator.fit_reference_statistics)
REFERENCE_SCALE_FLOOR = 1e-3


class AdaINResidualBlock(nn.Module):
    """x + (conv3x3 reflect, AdaIN, ReLU, conv3x3 reflect, AdaIN)(x), the style's scale and shift
    from one linear map of the style code (initialised to the identity: scale 1, shift 0)."""

    def __init__(self, channels: int, style_dim: int):
        super().__init__()
        self.first = FusedConvNormAct(channels, channels, 3, padding=1, padding_mode="reflect", norm="adain")
        self.second = FusedConvNormAct(channels, channels, 3, padding=1, padding_mode="reflect", norm="adain",
                                       activation=None)
        self.style = nn.Linear(style_dim, 4 * channels)
        nn.init.zeros_(self.style.weight)
        nn.init.zeros_(self.style.bias)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        scale1, shift1, scale2, shift2 = self.style(style).chunk(4, dim=1)
        h = self.first(x, 1 + scale1, shift1)
        return x + self.second(h, 1 + scale2, shift2)


class MultiCultureGenerator(nn.Module):
    """G(x, culture) for K cultures; ``forward(x, cultures=..., reference_features=...)``.

    Args:
        num_cultures: K.
        feature_dim: the length of culture feature vectors (``CultureFeatures.all()``) a
            reference image may steer with; None disables reference steering. The projection
            takes them standardised by the persistent buffers reference_mean and reference_scale
            (fit_reference_statistics; identity until fitted).
    """

    def __init__(self, num_cultures: int, in_channels: int = 3, out_channels: int = 3, ngf: int = 64,
                 n_blocks: int = 6, style_dim: int = 64, feature_dim: int | None = None):
        super().__init__()
        if num_cultures < 1 or n_blocks < 1:
            raise ValueError(f"need num_cultures >= 1 and n_blocks >= 1, got {num_cultures}, {n_blocks}")
        self.encoder = nn.Sequential(
            FusedConvNormAct(in_channels, ngf, 7, padding=3, padding_mode="reflect"),
            FusedConvNormAct(ngf, 2 * ngf, 3, stride=2, padding=1),
            FusedConvNormAct(2 * ngf, 4 * ngf, 3, stride=2, padding=1))
        self.blocks = nn.ModuleList(AdaINResidualBlock(4 * ngf, style_dim) for _ in range(n_blocks))
        self.decoder = nn.Sequential(
            FusedConvNormAct(4 * ngf, 2 * ngf, 3, stride=2, padding=1, output_padding=1, transposed=True),
            FusedConvNormAct(2 * ngf, ngf, 3, stride=2, padding=1, output_padding=1, transposed=True),
            nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7), nn.Tanh())
        self.culture_embedding = nn.Embedding(num_cultures, style_dim)
        self.reference_projection = None if feature_dim is None else nn.Sequential(
            nn.Linear(feature_dim, style_dim), nn.LeakyReLU(0.2), nn.Linear(style_dim, style_dim))
        if feature_dim is not None:  # identity statistics until fit_reference_statistics
            self.register_buffer("reference_mean", torch.zeros(feature_dim))
            self.register_buffer("reference_scale", torch.ones(feature_dim))
        self.num_cultures = num_cultures

    @torch.no_grad()
    def fit_reference_statistics(self, features: torch.Tensor) -> None:
        """Sets what style_code standardises reference features with: the mean and standard
        deviation of (n, feature_dim) `features`, a training run's images'.

        The raw features' scales differ by orders of magnitude (a culture's share of a feature
        can be a few hundredths of a unit), and Adam grows each input weight at about the
        learning rate per step, so without this the projection needs tens of thousands of steps
        to use the features that tell cultures apart. Each scale is floored at REFERENCE_SCALE_FLOOR
        of the largest: a feature constant over the training images would otherwise turn a
        reference that varies there into a huge input."""
        if self.reference_projection is None:
            raise ValueError("this generator was built without feature_dim: it has no reference statistics")
        if features.dim() != 2 or features.shape[0] < 2 or features.shape[1] != self.reference_mean.numel():
            raise ValueError(f"reference statistics need (n >= 2, {self.reference_mean.numel()}) features, "
                             f"got {tuple(features.shape)}")
        scale = features.double().std(0)
        self.reference_mean.copy_(features.double().mean(0))
        self.reference_scale.copy_(scale.clamp_min(max(REFERENCE_SCALE_FLOOR * float(scale.max()), 1e-12)))

    def complete_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`state` with identity reference statistics when it has a reference projection saved
        without them: one trained before culturegan standardised reference features, so on the
        raw features, which identity statistics pass through unchanged."""
        weight = state.get("reference_projection.0.weight")
        if weight is None or "reference_mean" in state or "reference_scale" in state:
            return state
        return {**state, "reference_mean": weight.new_zeros(weight.shape[1]),
                "reference_scale": weight.new_ones(weight.shape[1])}

    def style_code(self, cultures: torch.Tensor | None = None,
                   reference_features: torch.Tensor | None = None) -> torch.Tensor:
        if (cultures is None) == (reference_features is None):
            raise ValueError("give the target either as `cultures` (N,) indices or as `reference_features`")
        if cultures is not None:
            if cultures.dim() != 1 or int(cultures.min()) < 0 or int(cultures.max()) >= self.num_cultures:
                raise ValueError(f"cultures must be (N,) indices below {self.num_cultures}, got {cultures.tolist()}")
            return self.culture_embedding(cultures)
        if self.reference_projection is None:
            raise ValueError("this generator was built without feature_dim: it cannot take reference features")
        return self.reference_projection((reference_features - self.reference_mean) / self.reference_scale)

    def forward(self, x: torch.Tensor, cultures: torch.Tensor | None = None,
                reference_features: torch.Tensor | None = None, style: torch.Tensor | None = None) -> torch.Tensor:
        """G(x) toward target `cultures` or `reference_features` (style_code), or under given (N,
        style_dim) `style` codes (render; training mixes culture and reference codes in one batch)."""
        if style is None:
            return self.render(x, self.style_code(cultures, reference_features))
        if cultures is not None or reference_features is not None:
            raise ValueError("give the target as one of `cultures`, `reference_features` or `style`")
        return self.render(x, style)

    def render(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """G(x) under (N, style_dim) style codes: style_code()'s, or mixes of them (every AdaIN
        scale and shift is affine in the code, so a mix of codes mixes those parameters)."""
        if style.shape[0] != x.shape[0]:
            raise ValueError(f"{style.shape[0]} targets for {x.shape[0]} images")
        h = self.encoder(x)
        for block in self.blocks:
            h = block(h, style)
        return self.decoder(h)

    def parts(self) -> dict[str, list[str]]:
        """Parameter names by part: "encoder", "block0".., "decoder" and "style" (the culture
        embedding and the reference projection), as ResnetGenerator.parts()."""
        names: dict[str, list[str]] = {}
        for name, _ in self.named_parameters():
            top, child = name.split(".")[:2]
            if top == "blocks":
                part = f"block{child}"
            else:
                part = top if top in ("encoder", "decoder") else "style"
            names.setdefault(part, []).append(name)
        return names


class CultureDiscriminator(nn.Module):
    """Returns (patch logits (N, 1, h, w), culture logits (N, K)) for images and their
    (claimed) culture; ``culture_features`` (N, feature_dim) adds their projection."""

    def __init__(self, num_cultures: int, in_channels: int = 3, ndf: int = 64, n_layers: int = 3,
                 feature_dim: int | None = None):
        super().__init__()
        layers: list[nn.Module] = [FusedConvLeakyReLU(in_channels, ndf, 4, stride=2, padding=1)]
        channels = ndf
        for n in range(1, n_layers + 1):
            out = ndf * min(2**n, 8)
            layers.append(FusedConvNormAct(channels, out, 4, stride=2 if n < n_layers else 1, padding=1,
                                           activation="leaky_relu", negative_slope=0.2))
            channels = out
        self.trunk = nn.Sequential(*layers)
        self.patch = nn.Conv2d(channels, 1, 4, padding=1)
        self.culture_embedding = nn.Embedding(num_cultures, channels)
        self.classifier = nn.Linear(channels, num_cultures)
        self.feature_projection = None if feature_dim is None else nn.Linear(feature_dim, 1)
        self.num_cultures = num_cultures

    def forward(self, x: torch.Tensor, cultures: torch.Tensor,
                culture_features: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if cultures.shape != (x.shape[0],) or int(cultures.min()) < 0 or int(cultures.max()) >= self.num_cultures:
            raise ValueError(f"cultures must be (N,) indices below {self.num_cultures}, got {cultures.tolist()}")
        h = self.trunk(x)
        pooled = h.mean((2, 3))
        projection = (self.culture_embedding(cultures) * pooled).sum(1)
        if culture_features is not None:
            if self.feature_projection is None:
                raise ValueError("this discriminator was built without feature_dim: it cannot take culture features")
            projection = projection + self.feature_projection(culture_features).squeeze(1)
        return self.patch(h) + projection.view(-1, 1, 1, 1), self.classifier(pooled)
