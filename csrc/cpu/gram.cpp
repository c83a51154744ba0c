// gram on CPU tensors: csrc/ops/gram.h through ATen's BLAS batched GEMM.
#include <torch/library.h>

#include "ops/gram.h"

TORCH_LIBRARY_IMPL(culturegan, CPU, m) { m.impl("gram", &culturegan::gram::forward); }
