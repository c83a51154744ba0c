"""CultureProfile: a culture's feature distribution (mean and covariance per group), fitted on
its images, saved as safetensors + JSON, and the distance of new images to it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from culturegan._files import atomic_path, write_text
from culturegan._progress import progress_bar
from culturegan.culture.features import GROUPS, TEXTURE_SEED, CultureFeatureExtractor, CultureFeatures

FORMAT_VERSION = 3  # 2: multi-scale features (culturegan.culture.features.SCALES); 3: colour-gradient lines
MIN_SHRINKAGE = 0.1  # the covariance is shrunk toward its diagonal by at least this much
# Each feature's variance is floored at this share of the group's mean variance: a feature that
# barely varies within a culture (few images, a constant statistic) would otherwise dominate the
# distance and give the culture loss huge gradients.
VARIANCE_FLOOR = 0.01


class CultureProfile:
    """Per group: the mean and (shrunk) covariance of a culture's features."""

    def __init__(self, culture: str, means: dict[str, torch.Tensor], covariances: dict[str, torch.Tensor],
                 count: int, seed: int = TEXTURE_SEED, gram: bool = False):
        missing = set(GROUPS) - set(means) | set(GROUPS) - set(covariances)
        if missing:
            raise ValueError(f"a culture profile needs every group; {sorted(missing)} missing")
        self.culture, self.means, self.covariances = culture, means, covariances
        self.count, self.seed, self.gram = count, seed, gram
        self._precisions: dict[tuple, torch.Tensor] = {}  # (group, device, dtype) -> inverse covariance

    @classmethod
    def fit(cls, culture: str, features: CultureFeatures | list[CultureFeatures], seed: int = TEXTURE_SEED,
            gram: bool = False) -> CultureProfile:
        """The profile of features (of at least 2 images), e.g. extract() of a culture's batches."""
        batches = features if isinstance(features, list) else [features]
        groups = {g: torch.cat([getattr(b, g).detach().double() for b in batches]) for g in GROUPS}
        count = groups["colour"].shape[0]
        if count < 2:
            raise ValueError(f"a culture profile needs at least 2 images, got {count}")
        means = {g: v.mean(0) for g, v in groups.items()}
        covariances = {g: _shrunk_covariance(v) for g, v in groups.items()}
        return cls(culture, means, covariances, count, seed, gram)

    @classmethod
    def fit_folder(cls, root: str | os.PathLike, culture: str, size: int = 128, batch_size: int = 16,
                   manifest: str | os.PathLike | None = None, extractor: CultureFeatureExtractor | None = None,
                   progress: bool = False) -> CultureProfile:
        """The profile of one culture folder of a dataset (ROOT/<culture>/...), see folder_features."""
        extractor = extractor or CultureFeatureExtractor()
        features = folder_features(root, culture, size, batch_size, manifest, extractor, progress)
        return cls.fit(culture, features, extractor.seed, extractor.gram)

    def distance(self, features: CultureFeatures, group: str) -> torch.Tensor:
        """(N,) Mahalanobis distance of each image's `group` features to this culture
        (differentiable in the features: usable as a loss)."""
        if group not in GROUPS:
            raise ValueError(f"unknown feature group {group!r}; expected one of {', '.join(GROUPS)}")
        values = getattr(features, group)
        mean = self.means[group].to(values)
        precision = self._precision(group, values)
        centred = values - mean
        return torch.einsum("ni,ij,nj->n", centred, precision, centred).clamp_min(0).sqrt()

    def _precision(self, group: str, like: torch.Tensor) -> torch.Tensor:
        """The group's inverse covariance on like's device and dtype, inverted once (in float64)
        and kept: the culture loss asks for it every training step."""
        key = (group, like.device, like.dtype)
        if key not in self._precisions:
            self._precisions[key] = torch.linalg.inv(self.covariances[group].double()).to(like)
        return self._precisions[key]

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """(tensors, metadata): what save() writes, for containers such as training checkpoints."""
        tensors = {f"{kind}.{g}": getattr(self, kind)[g].contiguous() for kind in ("means", "covariances")
                   for g in GROUPS}
        meta = {"format": "culturegan.CultureProfile", "version": FORMAT_VERSION, "culture": self.culture,
                "count": self.count, "texture_seed": self.seed, "texture_gram": self.gram,
                "groups": {g: int(self.means[g].numel()) for g in GROUPS}}
        return tensors, meta

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], meta: dict, source: str | os.PathLike) -> CultureProfile:
        """The profile state() returned; `source` names where it came from in errors."""
        if not isinstance(meta, dict) or meta.get("format") != "culturegan.CultureProfile" \
                or meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"{source}: not a culturegan culture profile of version {FORMAT_VERSION} (version "
                             f"{meta.get('version') if isinstance(meta, dict) else None}; profiles and checkpoints "
                             f"made with the features of another version must be fitted or trained again)")
        try:
            means = {g: tensors[f"means.{g}"] for g in GROUPS}
            covariances = {g: tensors[f"covariances.{g}"] for g in GROUPS}
        except KeyError as error:
            raise ValueError(f"{source}: culture profile lacks tensor {error}") from error
        for g in GROUPS:
            if means[g].numel() != meta["groups"][g] or covariances[g].shape != (means[g].numel(),) * 2:
                raise ValueError(f"{source}: group {g} has inconsistent shapes")
        return cls(meta["culture"], means, covariances, meta["count"], meta["texture_seed"], meta["texture_gram"])

    def save(self, path: str | os.PathLike) -> Path:
        """path.safetensors (the tensors) and path.json (what they are), each written atomically."""
        path = Path(path).with_suffix(".safetensors")
        tensors, meta = self.state()
        with atomic_path(path) as temporary:
            save_file(tensors, str(temporary), metadata={"culture": self.culture})
        write_text(path.with_suffix(".json"), json.dumps(meta, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> CultureProfile:
        path = Path(path).with_suffix(".safetensors")
        json_path = path.with_suffix(".json")
        try:
            meta = json.loads(json_path.read_text())
            tensors = load_file(str(path))
        except (OSError, ValueError, SafetensorError) as error:
            raise ValueError(f"{path}: not a readable culture profile ({error})") from error
        return cls.from_state(tensors, meta, json_path)


def folder_features(root: str | os.PathLike, culture: str, size: int = 128, batch_size: int = 16,
                    manifest: str | os.PathLike | None = None, extractor: CultureFeatureExtractor | None = None,
                    progress: bool = False) -> CultureFeatures:
    """The features of every image of one culture folder (ROOT/<culture>/...), each resized so
    that its shorter side is `size` and centre-cropped (no random augmentation); `progress`: a
    bar per folder, on a terminal (culturegan._progress)."""
    from culturegan.data import centre_cropped, make_loader

    extractor = extractor or CultureFeatureExtractor()
    # every image on every rank: under torchrun each rank fits the profiles, and they must be the
    # same profiles (a rank's share would give each rank its own culture loss)
    loader = make_loader(centre_cropped(root, culture, size, manifest), batch_size, workers=0, shuffle=False,
                         drop_last=False, shard=False)
    batches = []
    with torch.no_grad(), progress_bar(total=len(loader.sampler), enabled=progress, desc=f"features of {culture}",
                                       unit="image", leave=False) as bar:
        for batch in loader:
            batches.append(extractor(batch["image"]))
            bar.update(len(batch["image"]))
    return CultureFeatures(**{g: torch.cat([getattr(b, g) for b in batches]) for g in GROUPS})


def _shrunk_covariance(values: torch.Tensor) -> torch.Tensor:
    """The covariance of (n, d) values shrunk toward its diagonal by the Ledoit-Wolf intensity
    (at least MIN_SHRINKAGE), with every variance floored (VARIANCE_FLOOR).

    With fewer images than features (60 images, 384 texture features) the sample covariance is
    singular: a fixed small shrinkage leaves the directions the images never varied in with a
    tenth of their variance, so any step along them costs about 3x the culture's own spread and
    a generator is pushed hard along arbitrary directions. Ledoit-Wolf (on the standardised
    features, toward the identity: toward the diagonal of the covariance) picks the intensity
    from how noisy the sample correlations are, so it grows as images get fewer than features.
    """
    covariance = torch.cov(values.T).reshape(values.shape[1], values.shape[1])
    variances = covariance.diagonal()
    scale = variances.clamp_min(1e-12).sqrt()
    standard = (values - values.mean(0)) / scale
    shrinkage = max(MIN_SHRINKAGE, _ledoit_wolf_intensity(standard))
    shrunk = (1 - shrinkage) * covariance + shrinkage * torch.diag(variances)
    floor = (VARIANCE_FLOOR * variances.mean()).clamp_min(1e-8)
    return shrunk + torch.diag((floor - variances).clamp_min(0))


def _ledoit_wolf_intensity(standard: torch.Tensor) -> float:
    """Ledoit and Wolf's (2004) optimal shrinkage of the sample correlation of (n, d) centred,
    unit-variance values toward the identity, in [0, 1]."""
    n, d = standard.shape
    sample = standard.T @ standard / n
    distance = (sample - torch.eye(d, dtype=sample.dtype)).square().sum() / d
    if distance <= 0:
        return 1.0
    # sum_k ||x_k x_k^T - S||^2 without forming the n outer products
    norms = standard.square().sum(1)
    spread = (norms.square().sum() - 2 * torch.einsum("ki,ij,kj->", standard, sample, standard)
              + n * sample.square().sum()) / (n * n * d)
    return float(min(spread, distance) / distance)
