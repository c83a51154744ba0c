"""Triton kernels of patch_nce_loss, flash-attention style (installed as culturegan.kernels.patch_nce_loss).

Same contract as csrc/ops/patch_nce_loss.h (formulas in culturegan/ops/patch_nce_loss.py), but
the (N, P, P) logits never reach memory: they are made tile by tile and used where made.

Forward, program (n, block of query rows): a first loop over the image's key blocks makes each
tile of cosines <q^_i, k^_j> with tl.dot and keeps an online max and sum of exp(z - max) per
row (z = cosine / T), and picks up z_ii: loss_i = lse_i - z_ii, lse_i = max_i + log(sum_i).
When the query needs a gradient, a second loop remakes the tiles, forms
D_ij = (softmax(z_i)_j - [i == j]) / T from the lse just found, and accumulates D k^ (tl.dot)
into the rows' gradient. The backward's query gradient is the same kernel with the lse loaded
and D scaled by the upstream grad_i; the key's gradient is program (n, block of key rows)
looping over query blocks: D^T q^ needs every query row of a key column, so the key rows own
the accumulator and each query block's lse and grad are loaded with it (no atomics, so the
results are deterministic).

The normalisation backward (u - x^ <x^, u>) / |x| needs <x^_i, u_i> over all C. With whole
rows in a tile it is that row dot product, as the reference takes it (so a u parallel to x^,
e.g. C = 1, cancels to exactly zero). With C split (below) it comes from the tiles instead:
<q^_i, sum_j D_ij k^_j> = sum_j D_ij cos_ij, a row sum of D times the cosine tile already
made, so a program needs only its own columns of u.

Features (C): up to MAX_BLOCK_C (256, CUT's MLP head width; 128 in float64) one tile holds whole rows
(BLOCK_C = next_power_of_2(C), >= 16 for tl.dot): the program's own rows stay in registers
for the whole key loop, every row's norm is a row reduction of the tile loaded anyway (no
separate pass over the inputs), and the one key tile serves both the logits and D k^. Beyond
that the accumulator (BLOCK rows x C) would not fit in registers or shared memory, so C is
split over a third grid axis: program (n, row block, chunk of C) makes the full logits (a loop
over C chunks per tile, with the row norms from a small first kernel) and accumulates only its
chunk of the gradient. That repeats the logits once per chunk (C / 256 times) instead of
keeping the (N, P, P) logits or read-modify-writing the accumulator in memory.

Tiles are normalised as loaded, x / max(|x|, 1e-12) in the compute dtype (float32; float64
for float64) exactly as the reference does, and every tl.dot is an exact IEEE product (no
TF32) of compute-dtype tiles, so float32 and float64 match the reference to rounding. The
GEMMs are small in CUT (P = 256 patches of C = 256 per layer), so exactness costs little.
Offsets are int64; T and the norm floor reach the kernels as float32 pairs (common.split) so
float64 math sees them to ~48 bits.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from culturegan.kernels.common import compute_dtype, join, math_dtype, split

NORM_EPS = 1e-12  # F.normalize's floor, as culturegan.ops.patch_nce_loss
MAX_BLOCK_C = 256  # widest feature tile; wider C is split over programs (see above)


@triton.jit
def _load_rows(X, base, rows, row_mask, cols, col_mask, stride_p, stride_c, COMPUTE: tl.constexpr):
    """Tile X[n, rows, cols] (base = n's offset) in the compute dtype, zero where masked."""
    offsets = base + rows.to(tl.int64)[:, None] * stride_p + cols.to(tl.int64)[None, :] * stride_c
    return tl.load(X + offsets, mask=row_mask[:, None] & col_mask[None, :], other=0.0).to(COMPUTE)


@triton.jit
def _unit_rows(X, NORMS, base, norm_base, rows, row_mask, cols, col_mask, stride_p, stride_c, eps,
               COMPUTE: tl.constexpr, ONE_CHUNK: tl.constexpr):
    """(x^, |x| floored at eps) of the tile's rows: the norms from the tile itself when it holds
    whole rows (ONE_CHUNK), else from NORMS (_norms_kernel). Masked rows come out zero, with norm 1."""
    x = _load_rows(X, base, rows, row_mask, cols, col_mask, stride_p, stride_c, COMPUTE)
    if ONE_CHUNK:  # masked rows get norm 1, as from NORMS: their unused gradient stays finite
        norm = tl.where(row_mask, tl.maximum(tl.sqrt(tl.sum(x * x, axis=1)), eps), 1.0)
    else:
        norm = tl.load(NORMS + norm_base + rows, mask=row_mask, other=1.0)
    return x / norm[:, None], norm


@triton.jit
def _cosines(a, b, A, B, NORMS_A, NORMS_B, a_base, b_base, norm_base, a_rows, a_mask, b_rows, b_mask, channels,
             a_stride_p, a_stride_c, b_stride_p, b_stride_c, COMPUTE: tl.constexpr, ONE_CHUNK: tl.constexpr,
             BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr):
    """Tile <a^_r, b^_s> (BLOCK_A, BLOCK_B): one dot of the whole-row tiles a, b (ONE_CHUNK),
    else a loop over C chunks of A and B, normalised as loaded."""
    if ONE_CHUNK:
        cos = tl.dot(a, tl.trans(b), input_precision="ieee", out_dtype=COMPUTE)
    else:
        a_norm = tl.load(NORMS_A + norm_base + a_rows, mask=a_mask, other=1.0)
        b_norm = tl.load(NORMS_B + norm_base + b_rows, mask=b_mask, other=1.0)
        cos = tl.zeros([BLOCK_A, BLOCK_B], dtype=COMPUTE)
        for start in range(0, channels, BLOCK_C):
            cols = start + tl.arange(0, BLOCK_C)
            col_mask = cols < channels
            a_chunk = _load_rows(A, a_base, a_rows, a_mask, cols, col_mask, a_stride_p, a_stride_c, COMPUTE)
            b_chunk = _load_rows(B, b_base, b_rows, b_mask, cols, col_mask, b_stride_p, b_stride_c, COMPUTE)
            cos += tl.dot(a_chunk / a_norm[:, None], tl.trans(b_chunk / b_norm[:, None]), input_precision="ieee",
                          out_dtype=COMPUTE)
    return cos


@triton.jit
def _gradient_tile(cos, temperature, lse, scale, on_diagonal, mask, COMPUTE: tl.constexpr):
    """D = (softmax(z) - [i == j]) * grad / T of a tile of cosines, z = cos / T; lse and scale
    (grad / T) come broadcast along the tile's query axis (rows for the query kernel, columns
    for the key kernel, whose tile is transposed). Zero outside `mask`."""
    d = (tl.exp(cos / temperature - lse) - on_diagonal.to(COMPUTE)) * scale
    return tl.where(mask, d, 0.0)


@triton.jit
def _accumulate(acc, along, d, cos, features, COMPUTE: tl.constexpr, ONE_CHUNK: tl.constexpr):
    """(acc + D x^, along + sum_j D cos): a tile's share of the gradient rows and, when C is
    split, of their <x^, u> (see the module docstring)."""
    if not ONE_CHUNK:
        along += tl.sum(d * cos, axis=1)
    return acc + tl.dot(d, features, input_precision="ieee", out_dtype=COMPUTE), along


@triton.jit
def _store_normalize_backward(OUT, n, rows, row_mask, cols, col_mask, acc, along, unit, norm, eps,
                              out_stride_n, out_stride_p, out_stride_c, ONE_CHUNK: tl.constexpr):
    """OUT[n, rows, cols] = (acc - x^ <x^, u>) / |x|, the gradient of x from u's columns acc:
    <x^, u> from the whole rows (ONE_CHUNK), else `along` (sum_j D_ij cos_ij); no projection at
    or below the eps floor, as F.normalize's clamp."""
    if ONE_CHUNK:
        along = tl.sum(unit * acc, axis=1)
    along = tl.where(norm <= eps, 0.0, along)
    gradient = (acc - unit * along[:, None]) / norm[:, None]
    offsets = (n * out_stride_n + rows.to(tl.int64)[:, None] * out_stride_p
               + cols.to(tl.int64)[None, :] * out_stride_c)
    tl.store(OUT + offsets, gradient.to(OUT.dtype.element_ty), mask=row_mask[:, None] & col_mask[None, :])


@triton.jit
def _norms_kernel(X, NORMS, rows_total, patches, channels, stride_n, stride_p, stride_c, eps_hi, eps_lo,
                  COMPUTE: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """NORMS[n * P + p] = max(|X[n, p, :]|, eps), for features wider than one tile."""
    r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    mask = r < rows_total
    base = (r // patches) * stride_n + (r % patches) * stride_p
    squares = tl.zeros([BLOCK_R], dtype=COMPUTE)
    for start in range(0, channels, BLOCK_C):
        cols = start + tl.arange(0, BLOCK_C)
        m = mask[:, None] & (cols < channels)[None, :]
        x = tl.load(X + base[:, None] + cols.to(tl.int64)[None, :] * stride_c, mask=m, other=0.0).to(COMPUTE)
        squares += tl.sum(x * x, axis=1)
    tl.store(NORMS + r, tl.maximum(tl.sqrt(squares), join(eps_hi, eps_lo, COMPUTE)), mask=mask)


@triton.jit
def _query_kernel(Q, K, Q_NORMS, K_NORMS, LOSS, LSE, GRAD, OUT, patches, channels,
                  q_stride_n, q_stride_p, q_stride_c, k_stride_n, k_stride_p, k_stride_c,
                  out_stride_n, out_stride_p, out_stride_c, t_hi, t_lo, eps_hi, eps_lo,
                  COMPUTE: tl.constexpr, FORWARD: tl.constexpr, GRADIENT: tl.constexpr, SCALED: tl.constexpr,
                  ONE_CHUNK: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr):
    """Program (n, query block, C chunk). FORWARD: writes loss and lse of the rows (chunk 0),
    else loads lse. GRADIENT: writes the chunk of the rows' gradient, normalize_backward(D k^),
    D scaled by GRAD (SCALED) or by 1."""
    n = tl.program_id(0).to(tl.int64)
    rows = tl.program_id(1) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    chunk = tl.program_id(2)
    row_mask = rows < patches
    cols = chunk * BLOCK_C + tl.arange(0, BLOCK_C)
    col_mask = cols < channels
    temperature = join(t_hi, t_lo, COMPUTE)
    eps = join(eps_hi, eps_lo, COMPUTE)
    q_base = n * q_stride_n
    k_base = n * k_stride_n
    row_base = n * patches
    q, q_norm = _unit_rows(Q, Q_NORMS, q_base, row_base, rows, row_mask, cols, col_mask, q_stride_p, q_stride_c,
                           eps, COMPUTE, ONE_CHUNK)
    if FORWARD:
        largest = tl.full([BLOCK_Q], float("-inf"), dtype=COMPUTE)
        total = tl.zeros([BLOCK_Q], dtype=COMPUTE)
        diagonal = tl.zeros([BLOCK_Q], dtype=COMPUTE)
        for start in range(0, patches, BLOCK_K):
            keys = start + tl.arange(0, BLOCK_K)
            key_mask = keys < patches
            k, _ = _unit_rows(K, K_NORMS, k_base, row_base, keys, key_mask, cols, col_mask, k_stride_p, k_stride_c,
                              eps, COMPUTE, ONE_CHUNK)
            cos = _cosines(q, k, Q, K, Q_NORMS, K_NORMS, q_base, k_base, row_base, rows, row_mask, keys, key_mask,
                           channels, q_stride_p, q_stride_c, k_stride_p, k_stride_c, COMPUTE, ONE_CHUNK, BLOCK_Q,
                           BLOCK_K, BLOCK_C)
            z = tl.where(key_mask[None, :], cos / temperature, float("-inf"))
            new_largest = tl.maximum(largest, tl.max(z, axis=1))
            total = total * tl.exp(largest - new_largest) + tl.sum(tl.exp(z - new_largest[:, None]), axis=1)
            largest = new_largest
            on_diagonal = (rows[:, None] == keys[None, :]) & key_mask[None, :]
            diagonal += tl.sum(tl.where(on_diagonal, z, 0.0), axis=1)
        lse = largest + tl.log(total)
        first = row_mask & (chunk == 0)
        tl.store(LOSS + row_base + rows, (lse - diagonal).to(LOSS.dtype.element_ty), mask=first)
        tl.store(LSE + row_base + rows, lse.to(LSE.dtype.element_ty), mask=first)
    else:
        lse = tl.load(LSE + row_base + rows, mask=row_mask, other=0.0).to(COMPUTE)
    if GRADIENT:
        if SCALED:
            scale = tl.load(GRAD + row_base + rows, mask=row_mask, other=0.0).to(COMPUTE) / temperature
        else:
            scale = tl.full([BLOCK_Q], 1.0, dtype=COMPUTE) / temperature
        acc = tl.zeros([BLOCK_Q, BLOCK_C], dtype=COMPUTE)
        along = tl.zeros([BLOCK_Q], dtype=COMPUTE)
        for start in range(0, patches, BLOCK_K):
            keys = start + tl.arange(0, BLOCK_K)
            key_mask = keys < patches
            k, _ = _unit_rows(K, K_NORMS, k_base, row_base, keys, key_mask, cols, col_mask, k_stride_p, k_stride_c,
                              eps, COMPUTE, ONE_CHUNK)
            cos = _cosines(q, k, Q, K, Q_NORMS, K_NORMS, q_base, k_base, row_base, rows, row_mask, keys, key_mask,
                           channels, q_stride_p, q_stride_c, k_stride_p, k_stride_c, COMPUTE, ONE_CHUNK, BLOCK_Q,
                           BLOCK_K, BLOCK_C)
            d = _gradient_tile(cos, temperature, lse[:, None], scale[:, None], rows[:, None] == keys[None, :],
                               row_mask[:, None] & key_mask[None, :], COMPUTE)
            acc, along = _accumulate(acc, along, d, cos, k, COMPUTE, ONE_CHUNK)
        _store_normalize_backward(OUT, n, rows, row_mask, cols, col_mask, acc, along, q, q_norm, eps,
                                  out_stride_n, out_stride_p, out_stride_c, ONE_CHUNK)


@triton.jit
def _key_kernel(Q, K, Q_NORMS, K_NORMS, LSE, GRAD, OUT, patches, channels,
                q_stride_n, q_stride_p, q_stride_c, k_stride_n, k_stride_p, k_stride_c,
                out_stride_n, out_stride_p, out_stride_c, t_hi, t_lo, eps_hi, eps_lo,
                COMPUTE: tl.constexpr, ONE_CHUNK: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr,
                BLOCK_C: tl.constexpr):
    """Program (n, key block, C chunk): the chunk of the key rows' gradient, normalize_backward(D^T q^)."""
    n = tl.program_id(0).to(tl.int64)
    keys = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    key_mask = keys < patches
    cols = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    col_mask = cols < channels
    temperature = join(t_hi, t_lo, COMPUTE)
    eps = join(eps_hi, eps_lo, COMPUTE)
    q_base = n * q_stride_n
    k_base = n * k_stride_n
    row_base = n * patches
    k, k_norm = _unit_rows(K, K_NORMS, k_base, row_base, keys, key_mask, cols, col_mask, k_stride_p, k_stride_c,
                           eps, COMPUTE, ONE_CHUNK)
    acc = tl.zeros([BLOCK_K, BLOCK_C], dtype=COMPUTE)
    along = tl.zeros([BLOCK_K], dtype=COMPUTE)
    for start in range(0, patches, BLOCK_Q):
        rows = start + tl.arange(0, BLOCK_Q)
        row_mask = rows < patches
        q, _ = _unit_rows(Q, Q_NORMS, q_base, row_base, rows, row_mask, cols, col_mask, q_stride_p, q_stride_c,
                          eps, COMPUTE, ONE_CHUNK)
        # cos[j, i] = <k^_j, q^_i>: the logits' tile seen from its columns
        cos = _cosines(k, q, K, Q, K_NORMS, Q_NORMS, k_base, q_base, row_base, keys, key_mask, rows, row_mask,
                       channels, k_stride_p, k_stride_c, q_stride_p, q_stride_c, COMPUTE, ONE_CHUNK, BLOCK_K,
                       BLOCK_Q, BLOCK_C)
        lse = tl.load(LSE + row_base + rows, mask=row_mask, other=0.0).to(COMPUTE)
        scale = tl.load(GRAD + row_base + rows, mask=row_mask, other=0.0).to(COMPUTE) / temperature
        d = _gradient_tile(cos, temperature, lse[None, :], scale[None, :], keys[:, None] == rows[None, :],
                           key_mask[:, None] & row_mask[None, :], COMPUTE)
        acc, along = _accumulate(acc, along, d, cos, q, COMPUTE, ONE_CHUNK)
    _store_normalize_backward(OUT, n, keys, key_mask, cols, col_mask, acc, along, k, k_norm, eps,
                              out_stride_n, out_stride_p, out_stride_c, ONE_CHUNK)


def _loadable(features: torch.Tensor) -> torch.Tensor:
    """features, copied to contiguous when they are 16-bit and strided on a GPU. On an H200
    (Triton 3.6, 2026-11-30) the key gradient of float16 and bfloat16 features (2, 40, 33) viewed
    from (2, 33, 40) memory came out wrong in two whole rows, deterministically; the same values
    contiguous, float32 ones, and the (2, 17, 9) and (1, 65, 70) views were right. The cause was not
    found in the time the GPU was lent, so such inputs take the layout that was seen right."""
    if features.device.type == "cuda" and features.element_size() == 2 and not features.is_contiguous():
        return features.contiguous()
    return features


class _Tiles:
    """Tile sizes and the grid's C split for (N, P, C) features."""

    def __init__(self, features: torch.Tensor):
        self.images, self.patches, self.channels = features.shape
        # float64 tiles take twice the bytes: at 256 wide they needed 256 KiB of shared memory, more
        # than an H200 has (227 KiB; compiled Triton refused them, the CPU interpreter does not)
        widest = MAX_BLOCK_C // 2 if features.dtype == torch.float64 else MAX_BLOCK_C
        self.block_c = max(16, min(triton.next_power_of_2(self.channels), widest))
        self.chunks = triton.cdiv(self.channels, self.block_c)
        # registers hold the rows' tile, a key tile and the accumulator: fewer rows as C grows
        rows = 64 if self.block_c <= 64 else 32
        self.block_rows = max(16, min(triton.next_power_of_2(self.patches), rows))
        self.num_warps = 8 if self.block_c >= 256 else 4

    def grid(self, gradient: bool = True) -> tuple[int, int, int]:
        """(images, row blocks, C chunks); one chunk when no gradient is formed (the loss alone)."""
        return self.images, triton.cdiv(self.patches, self.block_rows), self.chunks if gradient else 1


def _norms(x: torch.Tensor, tiles: _Tiles, eps: tuple[float, float], unused: torch.Tensor) -> torch.Tensor:
    """(N * P) row norms floored at eps for the split-C kernels; `unused` when one tile holds
    whole rows (the kernels take the norms from their tiles and never read it)."""
    if tiles.chunks == 1:
        return unused
    rows = tiles.images * tiles.patches
    norms = torch.empty(rows, dtype=math_dtype(x), device=x.device)
    block_r = 32
    _norms_kernel[(triton.cdiv(rows, block_r),)](x, norms, rows, tiles.patches, tiles.channels, *x.stride(), *eps,
                                                 COMPUTE=compute_dtype(x), BLOCK_R=block_r, BLOCK_C=tiles.block_c)
    return norms


def forward(query: torch.Tensor, key: torch.Tensor, temperature: float,
            query_grad: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss (N, P) in query's dtype, lse (N, P) in the math dtype, and d loss_i / d query_i
    (N, P, C) in the math dtype when query_grad, else an empty (0,) tensor) for query and key
    (N, P, C) of any strides."""
    query, key = _loadable(query), _loadable(key)
    math = math_dtype(query)
    tiles = _Tiles(query)
    rows = (tiles.images, tiles.patches)
    loss = torch.empty(rows, dtype=query.dtype, device=query.device)
    lse = torch.empty(rows, dtype=math, device=query.device)
    unit = (torch.empty(query.shape, dtype=math, device=query.device) if query_grad
            else query.new_empty((0,), dtype=math))
    eps = split(NORM_EPS)
    q_norms, k_norms = _norms(query, tiles, eps, lse), _norms(key, tiles, eps, lse)
    out = unit if query_grad else lse.view(*rows, 1)  # unused without query_grad
    _query_kernel[tiles.grid(query_grad)](query, key, q_norms, k_norms, loss, lse, lse, out, tiles.patches,
                                          tiles.channels, *query.stride(), *key.stride(), *out.stride(),
                                          *split(temperature), *eps, COMPUTE=compute_dtype(query), FORWARD=True,
                                          GRADIENT=query_grad, SCALED=False, ONE_CHUNK=tiles.chunks == 1,
                                          BLOCK_Q=tiles.block_rows, BLOCK_K=tiles.block_rows, BLOCK_C=tiles.block_c,
                                          num_warps=tiles.num_warps)
    return loss, lse, unit


def backward(grad: torch.Tensor, query: torch.Tensor, key: torch.Tensor, lse: torch.Tensor, temperature: float,
             query_grad: bool, key_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_query if query_grad, grad_key if key_grad; else empty (0,) tensors), each in its
    input's dtype and contiguous, from the upstream grad (N, P) of the per-patch
    losses and the forward's lse, the logits remade from the inputs."""
    grad_query, grad_key = query.new_empty((0,)), key.new_empty((0,))
    if not (query_grad or key_grad):
        return grad_query, grad_key
    grad, lse, query, key = grad.contiguous(), lse.contiguous(), _loadable(query), _loadable(key)
    tiles = _Tiles(query)
    eps, scalars = split(NORM_EPS), (*split(temperature), *split(NORM_EPS))
    q_norms, k_norms = _norms(query, tiles, eps, lse), _norms(key, tiles, eps, lse)
    common = dict(COMPUTE=compute_dtype(query), ONE_CHUNK=tiles.chunks == 1, BLOCK_Q=tiles.block_rows,
                  BLOCK_K=tiles.block_rows, BLOCK_C=tiles.block_c, num_warps=tiles.num_warps)
    if query_grad:
        grad_query = query.new_empty(query.shape)  # contiguous, as the fake kernel says
        _query_kernel[tiles.grid()](query, key, q_norms, k_norms, lse, lse, grad, grad_query, tiles.patches,
                                    tiles.channels, *query.stride(), *key.stride(), *grad_query.stride(), *scalars,
                                    FORWARD=False, GRADIENT=True, SCALED=True, **common)
    if key_grad:
        grad_key = key.new_empty(key.shape)
        _key_kernel[tiles.grid()](query, key, q_norms, k_norms, lse, grad, grad_key, tiles.patches, tiles.channels,
                                  *query.stride(), *key.stride(), *grad_key.stride(), *scalars, **common)
    return grad_query, grad_key
