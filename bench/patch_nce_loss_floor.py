"""How much of patch_nce_loss's CPU time is its two GEMMs: `python bench/patch_nce_loss_floor.py`.

bench/test_patch_nce_loss.py reports the op against eager. This script says what bounds that
ratio: eager and the fused op both make two (P, P, C) products per layer and image (the logits,
then the query's gradient), so with the same BLAS no implementation can take less time than
those GEMMs alone. It times in interleaved rounds, at the benchmark's sizes (CUT's 5 layers of
256 patches of 256 features, batch 1 and 8; the key detached), the benchmark's own eager and cpu
fwd+bwd steps and the two products alone into preallocated outputs, once as batched GEMMs
(ATen gives each thread whole matrices) and once matrix by matrix over all the threads; and
prints the time a 1.5x target leaves beside the faster GEMM floor.

Eager's time depends on whether glibc hands its freed (N, P, P) temporaries back: when it
unmaps them, every step faults their pages in again. Run it twice to see both sides:

    python bench/patch_nce_loss_floor.py
    MALLOC_MMAP_THRESHOLD_=4000000000 MALLOC_TRIM_THRESHOLD_=8000000000 python bench/patch_nce_loss_floor.py
"""

import random
import statistics

import _harness
import torch
from test_patch_nce_loss import case, eager, fused, make_inputs  # the benchmark's own steps

ROUNDS, WARMUP = 40, 5


def steps(batch: int) -> dict:
    shape = case(batch)
    inputs = make_inputs(shape, torch.float32, torch.device("cpu"))
    dots, product = torch.empty(shape), torch.empty(shape)
    plain, key = (t.detach() for t in inputs)

    def gemms_batched():
        torch.bmm(plain, key.transpose(1, 2), out=dots)
        torch.bmm(dots, key, out=product)

    def gemms_per_matrix():
        for n in range(shape[0]):
            torch.mm(plain[n], key[n].t(), out=dots[n])
            torch.mm(dots[n], key[n], out=product[n])

    # the benchmark's own fwd+bwd steps (their inputs get gradients as the benchmark's do)
    return {"eager": _harness._training_step(eager, inputs), "cpu": _harness._training_step(fused("cpu"), inputs),
            "GEMMs batched": gemms_batched, "GEMMs per matrix": gemms_per_matrix}


def medians(named: dict) -> dict:
    for step in named.values():
        for _ in range(WARMUP):
            step()
    times = {name: [] for name in named}
    order = random.Random(0)
    for _ in range(ROUNDS):
        for name in order.sample(list(named), len(named)):
            times[name].append(_harness._timed(named[name]))
    return {name: statistics.median(seconds) * 1e3 for name, seconds in times.items()}


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; medians of {ROUNDS} interleaved rounds")
    for batch in (1, 8):
        ms = medians(steps(batch))
        floor = min(ms["GEMMs batched"], ms["GEMMs per matrix"])
        print(f"batch {batch}: " + ", ".join(f"{name} {value:.2f} ms" for name, value in ms.items()))
        print(f"  cpu vs eager {ms['eager'] / ms['cpu']:.2f}x; 1.5x eager leaves {ms['eager'] / 1.5:.2f} ms, "
              f"the GEMMs alone take {floor:.2f} ms ({floor / ms['cpu']:.0%} of the cpu backend's step)")


if __name__ == "__main__":
    main()
