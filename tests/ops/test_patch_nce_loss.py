"""patch_nce_loss: every backend against the float64 reference.

The loss of a patch is a log-sum-exp over P logits bounded by 1 / temperature, so its rounding
error is relative to 1 / temperature, not to the loss itself (which is ~0 for a well-matched
patch): comparisons take atol = rtol * (1 / temperature). A patch's gradient is bounded by
|grad_i| / (temperature * |x_i|) (the softmax weights sum to 1 and the normalised features have
norm 1), and can cancel to ~0 (with C = 1 the normalised feature cannot turn at all), so
gradients are compared at that scale, not their own.
"""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from culturegan import ops
from culturegan.ops.patch_nce_loss import BACKWARD, FORWARD
from helpers import (BACKENDS, CPU_BACKENDS, DTYPES, FAST_BACKENDS, NOT_INTERPRETED, TOLERANCES, assert_close,
                     bad_input_params, interpreted, native_op, poison_allocator, skip_unless_registered)

# (N, P, C): odd sizes, one patch, one feature, and sizes over the Triton tiles (16, 32, 64).
CASES = [(2, 5, 3), (1, 1, 1), (3, 1, 4), (2, 7, 1), (3, 17, 9), (2, 40, 33), (1, 65, 70)]
LARGE_CASES = [(4, 256, 256), (2, 300, 64), (1, 128, 1000)]  # CUT's size; BLAS blocking
LAYOUTS = ("contiguous", "transposed", "strided")
TEMPERATURES = (0.01, 0.07, 1.0)  # 0.01: logits 200 apart, beyond float32 exp


def features(shape, dtype, device, layout="contiguous", scale=1.0):
    """Random patch features with some rows near-aligned (so the softmax is not flat), made in
    float32, cast, and laid out as asked: transposed (C outer in memory) or every other element."""
    n, p, c = shape
    base = torch.randn(n, p, c, device=device)
    x = (scale * (base + 0.5 * base.roll(1, dims=1))).to(dtype)
    if layout == "transposed":
        return x.transpose(1, 2).contiguous().transpose(1, 2)
    if layout == "strided":
        wide = torch.empty(n, p, 2 * c, dtype=dtype, device=device)
        wide[..., ::2] = x
        return wide[..., ::2]
    return x


def pair(shape, dtype, device, layout="contiguous", requires_grad=False):
    """(query, key): the key a noisy copy of the query, as a generator's features of its output
    and of its input are."""
    query = features(shape, dtype, device, layout)
    key = (query.float() + 0.7 * torch.randn(shape, device=device)).to(dtype)
    key = features(shape, dtype, device, layout).copy_(key) if layout != "contiguous" else key
    return query.requires_grad_(requires_grad), key.requires_grad_(requires_grad)


def reference64(query, key, temperature):
    return ops.patch_nce_loss_reference(query.detach().double(), key.detach().double(), temperature)


def check_losses(losses, query, key, temperature, what):
    assert losses.shape == query.shape[:2] and losses.dtype == query.dtype, f"{what}: {losses.shape} {losses.dtype}"
    atol, rtol = TOLERANCES[query.dtype]
    torch.testing.assert_close(losses.double(), reference64(query, key, temperature), rtol=rtol,
                               atol=max(atol, rtol / temperature), msg=lambda m: f"{what}: {m}")


def reference_gradients(query, key, temperature, grad):
    q, k = (t.detach().double().requires_grad_() for t in (query, key))
    return torch.autograd.grad(ops.patch_nce_loss_reference(q, k, temperature), (q, k), grad.double())


def check_gradient(actual, expected, x, grad, temperature, what):
    """actual against the float64 reference gradient of x: per patch row i within
    rtol * |expected| + max(atol, rtol) * max|grad| / (T |x_i|)."""
    assert actual.dtype == x.dtype and actual.shape == expected.shape, f"{what}: {actual.dtype} {actual.shape}"
    atol, rtol = TOLERANCES[x.dtype]
    rows = x.detach().double().norm(dim=-1, keepdim=True).clamp_min(1e-12)
    allowed = rtol * expected.abs() + max(atol, rtol) * grad.abs().max().item() / (temperature * rows)
    error = (actual.double() - expected).abs()
    bad = ~(error <= allowed)  # NaN fails too
    assert not bad.any(), (f"{what}: {int(bad.sum())} of {error.numel()} elements differ; worst |diff| "
                           f"{(error - allowed).max().item():.3g} over the allowed")


# ---------------------------------------------------------------------------- forward

@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", CASES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_forward_matches_reference(device, backend, dtype, shape, layout):
    query, key = pair(shape, dtype, device, layout)
    before = (query.clone(), key.clone())
    for temperature in TEMPERATURES:
        poison_allocator(device, query.numel(), torch.float32)
        losses = ops.patch_nce_loss(query, key, temperature, "none", backend=backend)
        check_losses(losses, query, key, temperature, f"{backend} {layout} T={temperature}")
    assert torch.equal(query, before[0]) and torch.equal(key, before[1]), "an input was modified"


@pytest.mark.parametrize("device, backend", NOT_INTERPRETED)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", LARGE_CASES, ids=str)
def test_forward_large(device, backend, dtype, shape):
    query, key = pair(shape, dtype, device)
    check_losses(ops.patch_nce_loss(query, key, 0.07, "none", backend=backend), query, key, 0.07, backend)


@pytest.mark.parametrize("device, backend", BACKENDS)
def test_reductions(device, backend):
    query, key = pair((3, 6, 5), torch.float64, device)
    losses = ops.patch_nce_loss(query, key, reduction="none", backend=backend)
    torch.testing.assert_close(ops.patch_nce_loss(query, key, backend=backend), losses.mean())
    torch.testing.assert_close(ops.patch_nce_loss(query, key, reduction="sum", backend=backend), losses.sum())


def test_matches_cuts_formulation():
    """CUT's PatchNCELoss: the positive as an extra first logit, the diagonal of the negatives
    masked to -10 before dividing by T, cross-entropy with target 0, mean over patches."""
    query, key = pair((2, 9, 6), torch.float64, "cpu")
    q = torch.nn.functional.normalize(query, dim=-1)
    k = torch.nn.functional.normalize(key, dim=-1)
    positive = (q * k).sum(-1, keepdim=True)
    negatives = torch.bmm(q, k.transpose(1, 2))
    negatives = negatives.masked_fill(torch.eye(9, dtype=torch.bool), -10.0)
    logits = torch.cat([positive, negatives], dim=2).flatten(0, 1) / 0.07
    cut = torch.nn.functional.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long))
    torch.testing.assert_close(ops.patch_nce_loss(query, key, 0.07), cut)


@pytest.mark.parametrize("device, backend", BACKENDS)
def test_known_values(device, backend):
    """Orthonormal patches matching themselves: every loss is log(1 + (P - 1) e^(-1/T)); a key
    that swaps two patches makes those two lose 1/T more than the others (their positive is now
a negative's logit)."""
    patches, temperature = 4, 0.5
    query = torch.eye(patches, dtype=torch.float64, device=device)[None] * 3.0  # scale does not matter
    losses = ops.patch_nce_loss(query, query.clone(), temperature, "none", backend=backend)
    expected = torch.log(torch.tensor(1 + (patches - 1) * torch.e ** (-1 / temperature), dtype=torch.float64))
    torch.testing.assert_close(losses, expected.expand(1, patches).to(device))
    swapped = query[:, [1, 0, 2, 3]]
    losses = ops.patch_nce_loss(query, swapped, temperature, "none", backend=backend)
    torch.testing.assert_close(losses[0, :2] - losses[0, 2:], torch.full((2,), 1 / temperature,
                                                                           dtype=torch.float64, device=device))


@pytest.mark.parametrize("device, backend", BACKENDS)
def test_zero_feature_vectors(device, backend):
    """F.normalize's floor: a zero patch is a zero vector, not NaN, and its gradient is finite."""
    query, key = pair((2, 5, 4), torch.float64, device)
    query[0, 1] = 0.0
    key[1, 3] = 0.0
    query.requires_grad_()
    key.requires_grad_()
    losses = ops.patch_nce_loss(query, key, 0.1, "none", backend=backend)
    check_losses(losses, query, key, 0.1, backend)
    grads = torch.autograd.grad(losses.sum(), (query, key))
    ones = torch.ones(2, 5, dtype=torch.float64, device=device)
    expected = reference_gradients(query, key, 0.1, ones)
    for got, want, x, name in zip(grads, expected, (query, key), ("query", "key")):
        assert torch.isfinite(got).all(), f"{backend} grad_{name}: {got}"
        check_gradient(got, want, x, ones, 0.1, f"{backend} grad_{name}")


# ---------------------------------------------------------------------------- backward

@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", CASES, ids=str)
@pytest.mark.parametrize("wanted", ["both", "query", "key"])
def test_gradients_match_reference(device, backend, dtype, shape, wanted):
    query, key = pair(shape, dtype, device, "transposed")
    query.requires_grad_(wanted in ("both", "query"))
    key.requires_grad_(wanted in ("both", "key"))
    losses = ops.patch_nce_loss(query, key, 0.07, "none", backend=backend)
    grad = torch.rand(losses.shape, device=device).to(dtype)
    inputs = [t for t in (query, key) if t.requires_grad]
    grads = torch.autograd.grad(losses, inputs, grad)
    expected = dict(zip(("query", "key"), reference_gradients(query, key, 0.07, grad)))
    named = [(name, t) for name, t in zip(("query", "key"), (query, key)) if t.requires_grad]
    for got, (name, x) in zip(grads, named):
        check_gradient(got, expected[name], x, grad, 0.07, f"{backend} grad_{name}")


@pytest.mark.parametrize("device, backend", NOT_INTERPRETED)
@pytest.mark.parametrize("shape", LARGE_CASES[:2], ids=str)
def test_gradients_large(device, backend, shape):
    query, key = pair(shape, torch.float32, device, requires_grad=True)
    loss = ops.patch_nce_loss(query, key, 0.07, backend=backend)
    grads = torch.autograd.grad(loss, (query, key))
    grad = torch.full(shape[:2], 1 / (shape[0] * shape[1]), dtype=torch.float64, device=device)
    for got, want, x, name in zip(grads, reference_gradients(query, key, 0.07, grad), (query, key), ("query", "key")):
        check_gradient(got, want, x, grad, 0.07, f"{backend} grad_{name}")


@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("wanted", ["query", "both"])
def test_gradients_when_logits_exceed_the_positive_by_far(device, backend, dtype, wanted):
    """T = 0.01 and keys opposite to their queries: other logits exceed a row's positive by up to
    200, beyond what exp holds, so the CPU rows are summed again from their maximum. The query's
    gradient comes from that path in the forward's fused pass; with both, the key's comes from
    the backward's recomputation over the same rows."""
    shape, temperature = (2, 9, 6), 0.01
    query, key = pair(shape, dtype, device)
    key[:, ::2] = -query[:, ::2]
    query.requires_grad_()
    key.requires_grad_(wanted == "both")
    losses = ops.patch_nce_loss(query, key, temperature, "none", backend=backend)
    check_losses(losses, query, key, temperature, f"{backend} T={temperature}")
    grad = torch.rand(shape[:2], device=device).to(dtype)
    inputs = (query, key) if wanted == "both" else (query,)
    expected = reference_gradients(query, key, temperature, grad)
    for got, want, x, name in zip(torch.autograd.grad(losses, inputs, grad), expected, inputs, ("query", "key")):
        assert torch.isfinite(got).all(), f"{backend} grad_{name}"
        check_gradient(got, want, x, grad, temperature, f"{backend} grad_{name}")


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("shape", [(1, 33, 20), (4, 33, 20), (5, 33, 20), (17, 256, 8)], ids=str)
def test_cpu_batches_split_by_threads_and_cache(threads, shape):
    """The CPU backend multiplies the images a batch's thread count leaves over one at a time (5
    images on 2 threads: 4 in one batched GEMM, then 1), and forms the query's gradient a chunk of
    images at a time (17 images of 256 patches: 15 or 14, then the rest): every image's losses
    and gradients still match, whichever way its GEMMs ran."""
    skip_unless_registered("patch_nce_loss")
    query, key = pair(shape, torch.float32, "cpu", requires_grad=True)
    grad = torch.rand(shape[:2])
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        losses = ops.patch_nce_loss(query, key, 0.07, "none", backend="cpu")
        grads = torch.autograd.grad(losses, (query, key), grad)
        (query_only,) = torch.autograd.grad(ops.patch_nce_loss(query, key.detach(), 0.07, "none", backend="cpu"),
                                            query, grad)
    finally:
        torch.set_num_threads(before)
    check_losses(losses.detach(), query, key, 0.07, f"{threads} threads")
    expected = reference_gradients(query, key, 0.07, grad)
    for got, want, x, name in zip((*grads, query_only), (*expected, expected[0]), (query, key, query),
                                  ("query", "key", "query (formed in the forward)")):
        check_gradient(got, want, x, grad, 0.07, f"{threads} threads grad_{name}")


@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("shape", [(2, 5, 3), (1, 1, 2), (2, 3, 1)], ids=str)
def test_gradcheck_float64(device, backend, shape):
    query, key = pair(shape, torch.float64, device, "strided", requires_grad=True)
    fast = interpreted(device, backend)
    assert torch.autograd.gradcheck(lambda q, k: ops.patch_nce_loss(q, k, 0.3, "none", backend=backend),
                                    (query, key), fast_mode=fast)
    # the query's gradient formed in the forward (only the query needs one)
    assert torch.autograd.gradcheck(lambda q: ops.patch_nce_loss(q, key.detach(), 0.3, "none", backend=backend),
                                    (query,), fast_mode=fast)


@pytest.mark.parametrize("device, backend", FAST_BACKENDS)
def test_second_derivative_raises(device, backend):
    """The fast backends are differentiable once: asking for more raises, never a silent zero."""
    query, key = pair((2, 4, 3), torch.float64, device, requires_grad=True)
    loss = ops.patch_nce_loss(query, key, backend=backend)
    (grad_query,) = torch.autograd.grad(loss, query, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiable once"):
        torch.autograd.grad(grad_query.sum(), (query, key))


@pytest.mark.parametrize("device, backend", BACKENDS)
def test_no_gradient_work_without_grad(device, backend):
    """Without autograd the forward forms no gradient; with it, the saved unit gradient gives the
    same result as the recomputing backward (the native and Triton ops called directly)."""
    if backend == "reference":
        pytest.skip("the reference has no kernel")
    query, key = pair((2, 6, 5), torch.float64, device)
    forward = FORWARD.on(backend)
    loss, lse, unit = forward(query, key, 0.2, False)
    assert unit.numel() == 0
    loss_with, lse_with, unit = forward(query, key, 0.2, True)
    assert torch.equal(loss, loss_with) and torch.equal(lse, lse_with)
    grad = torch.rand(2, 6, dtype=torch.float64, device=device)
    grad_query, grad_key = BACKWARD.on(backend)(grad, query, key, lse, 0.2, True, False)
    assert grad_key.numel() == 0
    torch.testing.assert_close(grad_query, grad[..., None] * unit)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_autocast_takes_float32(backend):
    """Under CPU autocast (bfloat16 projections, float32 keys) the loss runs in float32, as
    autocast runs cross-entropy, and the bfloat16 query gets its gradient in bfloat16."""
    query, key = pair((2, 6, 5), torch.float32, "cpu")
    query = query.bfloat16().requires_grad_()
    with torch.autocast("cpu", torch.bfloat16):
        loss = ops.patch_nce_loss(query, key, backend=backend)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, ops.patch_nce_loss(query.detach().float(), key, backend=backend), rtol=0, atol=0)
    (grad,) = torch.autograd.grad(loss, query)
    assert grad.dtype == torch.bfloat16 and torch.isfinite(grad).all()


# -------------------------------------------------------------------- determinism, compile, opcheck

@pytest.mark.parametrize("device, backend", FAST_BACKENDS)
def test_deterministic(device, backend):
    shape = (2, 17, 9) if interpreted(device, backend) else (4, 256, 256)
    query, key = pair(shape, torch.float32, device, requires_grad=True)

    def run():
        loss = ops.patch_nce_loss(query, key, backend=backend)
        return loss, *torch.autograd.grad(loss, (query, key))

    for a, b in zip(run(), run()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("device, backend", BACKENDS)
def test_torch_compile_fullgraph(device, backend):
    """A projection head and the loss compiled whole, forward and backward (CUT's use: the key
    detached), give eager's values and gradients."""
    head = torch.randn(6, 8, device=device, requires_grad=True)

    def nce(query, key, weight):
        return ops.patch_nce_loss(query @ weight, (key @ weight).detach(), 0.07, backend=backend)

    query, key = pair((2, 9, 6), torch.float32, device, requires_grad=True)
    compiled = torch.compile(nce, fullgraph=True)
    loss = compiled(query, key, head)
    grads = torch.autograd.grad(loss, (query, head))
    expected_loss = nce(query, key, head)
    for got, want in zip((loss, *grads), (expected_loss, *torch.autograd.grad(expected_loss, (query, head)))):
        assert_close(got, want, torch.float32)


@pytest.mark.parametrize("device, backend", FAST_BACKENDS)
@pytest.mark.parametrize("query_grad", [False, True])
@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_opcheck(device, backend, query_grad, layout):
    """Also the fake kernels' strides for transposed inputs (the outputs are contiguous)."""
    skip_unless_registered("patch_nce_loss_triton" if backend == "triton" else "patch_nce_loss")
    query, key = pair((2, 5, 3), torch.float32, device, layout, requires_grad=True)
    torch.library.opcheck(native_op("patch_nce_loss", backend), (query, key, 0.07, query_grad))
    grad = torch.rand(2, 5, device=device)
    lse = torch.rand(2, 5, device=device)
    torch.library.opcheck(native_op("patch_nce_loss_backward", backend),
                          (grad, query.detach(), key.detach(), lse, 0.07, True, query_grad))


# ----------------------------------------------------------------------- random shapes

@pytest.mark.parametrize("device, backend", FAST_BACKENDS)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=st.tuples(st.integers(1, 4), st.integers(1, 40), st.integers(1, 40)),
       layout=st.sampled_from(LAYOUTS), temperature=st.sampled_from([0.05, 0.07, 0.5, 2.0]))
def test_random_shapes(device, backend, shape, layout, temperature):
    query, key = pair(shape, torch.float32, device, layout, requires_grad=True)
    losses = ops.patch_nce_loss(query, key, temperature, "none", backend=backend)
    check_losses(losses, query, key, temperature, f"{backend} {shape} {layout}")
    grad = torch.rand(shape[:2], device=device)
    grads = torch.autograd.grad(losses, (query, key), grad)
    expected = reference_gradients(query, key, temperature, grad)
    for got, want, x, name in zip(grads, expected, (query, key), ("query", "key")):
        check_gradient(got, want, x, grad, temperature, f"{backend} {shape} {layout} grad_{name}")


# ------------------------------------------------------------------------------ bad input

Q = lambda: torch.ones(2, 4, 3)  # noqa: E731
BAD_INPUTS = [
    # (description, kwargs maker, exception, message fragment)
    ("integer query", lambda: dict(query=torch.ones(2, 4, 3, dtype=torch.int32), key=Q()), TypeError,
     "query must be a floating-point tensor"),
    ("query rank 2", lambda: dict(query=torch.ones(4, 3), key=torch.ones(4, 3)), ValueError,
     r"query must have shape \(N, P, C\)"),
    ("query rank 4", lambda: dict(query=torch.ones(2, 4, 3, 1), key=torch.ones(2, 4, 3, 1)), ValueError,
     r"query must have shape \(N, P, C\)"),
    ("empty patches", lambda: dict(query=torch.ones(2, 0, 3), key=torch.ones(2, 0, 3)), ValueError, "query is empty"),
    ("empty features", lambda: dict(query=torch.ones(2, 4, 0), key=torch.ones(2, 4, 0)), ValueError,
     "query is empty"),
    ("key shape", lambda: dict(query=Q(), key=torch.ones(2, 5, 3)), ValueError, "key must have query's shape"),
    ("key features", lambda: dict(query=Q(), key=torch.ones(2, 4, 2)), ValueError, "key must have query's shape"),
    ("key dtype", lambda: dict(query=Q(), key=torch.ones(2, 4, 3, dtype=torch.float64)), TypeError,
     "key has dtype torch.float64 but query has dtype torch.float32"),
    ("key device", lambda: dict(query=Q(), key=torch.ones(2, 4, 3, device="meta")), ValueError,
     "key is on meta but query is on cpu"),
    ("key not a tensor", lambda: dict(query=Q(), key=[[[1.0]]]), TypeError, "key must be a torch.Tensor"),
    ("zero temperature", lambda: dict(query=Q(), key=Q(), temperature=0.0), ValueError, "temperature must be > 0"),
    ("negative temperature", lambda: dict(query=Q(), key=Q(), temperature=-0.07), ValueError,
     "temperature must be > 0"),
    ("infinite temperature", lambda: dict(query=Q(), key=Q(), temperature=float("inf")), TypeError,
     "temperature must be a finite number"),
    ("temperature tensor", lambda: dict(query=Q(), key=Q(), temperature=torch.tensor(0.07)), TypeError,
     "temperature must be a finite number"),
    ("reduction", lambda: dict(query=Q(), key=Q(), reduction="batchmean"), ValueError, "reduction must be one of"),
]


@pytest.mark.parametrize("device, backend", CPU_BACKENDS)
@pytest.mark.parametrize("make, error, message", bad_input_params(BAD_INPUTS))
def test_bad_input_raises_clear_error(device, backend, make, error, message):
    with pytest.raises(error, match=message):
        ops.patch_nce_loss(**make(), backend=backend)


@pytest.mark.parametrize("backend", ["cpu", "triton"])
@pytest.mark.parametrize("make, error, message", bad_input_params(
    [row for row in BAD_INPUTS if "temperature" not in row[0] and "tensor" not in row[0]
     and row[0] not in ("reduction", "key device")]))
def test_registered_op_raises_clear_error(backend, make, error, message):
    """torch.ops.culturegan.patch_nce_loss(_triton) called directly checks as the public function."""
    skip_unless_registered("patch_nce_loss_triton" if backend == "triton" else "patch_nce_loss")
    arguments = make()
    with pytest.raises(error, match=message):
        native_op("patch_nce_loss", backend)(arguments["query"], arguments["key"], 0.07, False)


@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_registered_op_rejects_bad_temperature(backend):
    skip_unless_registered("patch_nce_loss_triton" if backend == "triton" else "patch_nce_loss")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        native_op("patch_nce_loss", backend)(Q(), Q(), 0.0, False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_key_on_another_device_raises():
    with pytest.raises(ValueError, match="key is on cpu but query is on cuda"):
        ops.patch_nce_loss(torch.ones(2, 4, 3, device="cuda"), torch.ones(2, 4, 3))
