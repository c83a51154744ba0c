// CPU kernel of instance_norm_act_backward (see ops/instance_norm_act.h). NCHW: each parallel
// task takes whole planes, sums a plane and then writes its gradient while the plane is still in
// cache. channels_last: per sample, fixed chunks of rows sum in parallel (partials added in a
// fixed order: the result does not depend on the number of threads), then the rows are written.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "common/layout.h"
#include "cpu/memory.h"
#include "cpu/parallel.h"
#include "cpu/vectorizable.h"
#include "ops/instance_norm_act.h"

namespace culturegan::instance_norm_act {
namespace {

using cpu::kSumBlock;
using cpu::load;
using cpu::store;

// Sums of g' and g' (z - mean) over elements [begin, end) (at most kSumBlock of them).
template <typename scalar_t, typename acc_t>
CG_CPU_CLONES void block_sums(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ z, int64_t begin,
                              int64_t end, Plane<acc_t> p, double& sum_grad, double& sum_grad_centered) {
  acc_t a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
  for (int64_t i = begin; i < end; ++i) {
    const acc_t zi = load(z, i);
    const acc_t g = activated_grad(acc_t(load(grad, i)), zi, p);
    a += g;
    b += g * (zi - p.mean);
  }
  sum_grad += double(a);
  sum_grad_centered += double(b);
}

template <typename scalar_t, typename acc_t>
CG_CPU_CLONES void apply_span(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ z,
                              scalar_t* __restrict__ out, int64_t begin, int64_t end, Plane<acc_t> p, Apply<acc_t> a) {
#pragma omp simd
  for (int64_t i = begin; i < end; ++i) store(out, i, grad_z(acc_t(load(grad, i)), acc_t(load(z, i)), p, a));
}

template <typename scalar_t, typename acc_t>
void planes(const scalar_t* grad, const scalar_t* z, scalar_t* out, int64_t planes_count, int64_t inner,
            Parameters<acc_t> params) {
  at::parallel_for(0, planes_count, cpu::spans_per_task(inner), [=](int64_t first, int64_t last) {
    for (int64_t plane = first; plane < last; ++plane) {
      const Plane<acc_t> p = params.plane(plane);
      double sum_grad = 0, sum_grad_centered = 0;
      for (int64_t begin = plane * inner; begin < (plane + 1) * inner; begin += kSumBlock)
        block_sums(grad, z, begin, std::min((plane + 1) * inner, begin + kSumBlock), p, sum_grad, sum_grad_centered);
      apply_span(grad, z, out, plane * inner, (plane + 1) * inner, p,
                 finish(params, plane, p, sum_grad, sum_grad_centered, acc_t(inner)));
    }
  });
}

// Per-channel sums of rows [first, last) of one sample (channels innermost) into a, b.
template <typename scalar_t, typename acc_t>
CG_CPU_CLONES void rows_sums(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ z, int64_t first,
                             int64_t last, int64_t channels, const Plane<acc_t>* __restrict__ p,
                             acc_t* __restrict__ a, acc_t* __restrict__ b) {
  for (int64_t row = first; row < last; ++row) {
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) {
      const acc_t zi = load(z, row * channels + c);
      const acc_t g = activated_grad(acc_t(load(grad, row * channels + c)), zi, p[c]);
      a[c] += g;
      b[c] += g * (zi - p[c].mean);
    }
  }
}

template <typename scalar_t, typename acc_t>
CG_CPU_CLONES void rows_apply(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ z,
                              scalar_t* __restrict__ out, int64_t first, int64_t last, int64_t channels,
                              const Plane<acc_t>* __restrict__ p, const Apply<acc_t>* __restrict__ a) {
  for (int64_t row = first; row < last; ++row) {
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) {
      const int64_t i = row * channels + c;
      store(out, i, grad_z(acc_t(load(grad, i)), acc_t(load(z, i)), p[c], a[c]));
    }
  }
}

template <typename scalar_t, typename acc_t>
void rows(const scalar_t* grad, const scalar_t* z, scalar_t* out, int64_t samples, int64_t spatial,
          int64_t channels, Parameters<acc_t> params) {
  const int64_t chunk_rows = cpu::rows_per_sum_block(channels);
  const int64_t chunks = (spatial + chunk_rows - 1) / chunk_rows;
  std::vector<Plane<acc_t>> planes_of_sample(channels);
  std::vector<Apply<acc_t>> applies(channels);
  std::vector<acc_t> partial(2 * chunks * channels);
  for (int64_t n = 0; n < samples; ++n) {
    const scalar_t* g = grad + n * spatial * channels;
    const scalar_t* zn = z + n * spatial * channels;
    for (int64_t c = 0; c < channels; ++c) planes_of_sample[c] = params.plane(n * channels + c);
    std::fill(partial.begin(), partial.end(), acc_t(0));
    const Plane<acc_t>* p = planes_of_sample.data();
    acc_t* sums = partial.data();
    at::parallel_for(0, chunks, 1, [=](int64_t first, int64_t last) {
      for (int64_t chunk = first; chunk < last; ++chunk)
        rows_sums(g, zn, chunk * chunk_rows, std::min(spatial, (chunk + 1) * chunk_rows), channels, p,
                  sums + 2 * chunk * channels, sums + (2 * chunk + 1) * channels);
    });
    for (int64_t c = 0; c < channels; ++c) {
      double sum_grad = 0, sum_grad_centered = 0;
      for (int64_t chunk = 0; chunk < chunks; ++chunk) {
        sum_grad += double(partial[2 * chunk * channels + c]);
        sum_grad_centered += double(partial[(2 * chunk + 1) * channels + c]);
      }
      applies[c] = finish(params, n * channels + c, p[c], sum_grad, sum_grad_centered, acc_t(spatial));
    }
    const Apply<acc_t>* a = applies.data();
    scalar_t* o = out + n * spatial * channels;
    at::parallel_for(0, spatial, cpu::spans_per_task(channels), [=](int64_t first, int64_t last) {
      rows_apply(g, zn, o, first, last, channels, p, a);
    });
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(const at::Tensor& grad, const at::Tensor& z,
                                                        const at::Tensor& mean, const at::Tensor& std,
                                                        const at::Tensor& gamma, const at::Tensor& beta,
                                                        std::optional<double> negative_slope) {
  check_args(grad, z, mean, std, gamma, beta, negative_slope);
  const KernelArgs args = kernel_args(grad, z, mean, std, gamma, beta, negative_slope);
  cpu::advise_huge_pages(args.grad_z);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "instance_norm_act_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* g = args.grad.const_data_ptr<scalar_t>();
    const scalar_t* zd = args.z.tensor.const_data_ptr<scalar_t>();
    scalar_t* out = args.grad_z.mutable_data_ptr<scalar_t>();
    const Parameters<acc_t> params = args.parameters<acc_t>();
    if (args.by_rows()) rows(g, zd, out, args.samples, args.spatial, args.channels, params);
    else planes(g, zd, out, args.samples * args.channels, args.spatial, params);
  });
  return {args.grad_z, args.grad_gamma, args.grad_beta};
}

}  // namespace

TORCH_LIBRARY_IMPL(culturegan, CPU, m) { m.impl("instance_norm_act_backward", &backward); }

}  // namespace culturegan::instance_norm_act
