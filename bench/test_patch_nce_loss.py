"""patch_nce_loss (CUT's PatchNCE) against torch eager and torch.compile, at CUT's sizes.

A case (L * N, P, C) is L layers of N images with P sampled patches of C features each: CUT
samples 256 patches at each of 5 encoder layers and projects them to 256 features, for batch
sizes 1 to 8. Every provider computes CUT's loss as CUT trains with it, with the key detached
(only the query, the generated image's features, gets a gradient): the mean over layers of each
layer's mean PatchNCE. Every layer has the same N * P patches, so that is the mean over all
L * N * P patches, and every provider computes it in one call over the stacked layers (one
batched GEMM for eager): the strongest form of the baseline, and the way culturegan's
contrastive mode calls the op. The eager baseline is the plainest form of the loss (normalise,
one batched GEMM, cross-entropy with the diagonal as targets), which is faster than CUT's own
(an extra positive column, a masked diagonal and a concatenation).
"""

import math

import _harness
import torch
import torch.nn.functional as F

from culturegan import ops

TEMPERATURE = 0.07
LAYERS, PATCHES, FEATURES = 5, 256, 256  # CUT's nce_layers, num_patches and netF_nc


def case(batch):
    return (LAYERS * batch, PATCHES, FEATURES)


CPU_CASES = tuple((case(batch), torch.float32) for batch in (1, 8))
GPU_CASES = tuple((case(batch), dtype) for batch in (1, 8) for dtype in (torch.float32, torch.bfloat16))


def eager(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    query, key = F.normalize(query, dim=-1), F.normalize(key.detach(), dim=-1)
    logits = torch.bmm(query, key.transpose(1, 2)) / TEMPERATURE
    targets = torch.arange(logits.shape[1], device=logits.device).repeat(logits.shape[0])
    return F.cross_entropy(logits.flatten(0, 1), targets)


def fused(backend: str):
    def patch_nce(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        return ops.patch_nce_loss(query, key.detach(), TEMPERATURE, backend=backend)

    return patch_nce


def make_inputs(shape, dtype, device):
    # the key a noisy copy of the query, as the features of a generator's output and its input are
    query = torch.randn(shape, device=device)
    return query.to(dtype), (query + torch.randn(shape, device=device)).to(dtype)


def bytes_moved(shape, dtype, mode):
    # Forward reads query and key and writes one loss per patch; backward writes grad_query.
    elements = math.prod(shape)
    forward = 2 * elements * dtype.itemsize
    return forward if mode == _harness.FORWARD else forward + elements * dtype.itemsize


def flops(shape, dtype, mode):
    # The (P, P) logits of each layer and image: 2 P^2 C; the query's gradient is one more such GEMM.
    logits = 2 * shape[0] * shape[1] ** 2 * shape[2]
    return logits if mode == _harness.FORWARD else 2 * logits


TARGETS = (
    *(_harness.Target("cpu", _harness.TRAINING, "vs_eager", 1.5, shape=case(batch), dtype=torch.float32)
      for batch in (1, 8)),
    *(_harness.Target("cuda", _harness.TRAINING, metric, minimum, shape=case(8), dtype=dtype)
      for metric, minimum in (("vs_eager", 1.5), ("vs_compile", 1.1)) for dtype in (torch.float32, torch.bfloat16)),
)

PATCH_NCE_LOSS = _harness.OpBench("patch_nce_loss", eager, fused, make_inputs, bytes_moved, TARGETS,
                                  cpu_cases=CPU_CASES, gpu_cases=GPU_CASES, flops=flops)

test_patch_nce_loss = _harness.make_test(PATCH_NCE_LOSS)
