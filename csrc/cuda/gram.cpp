// gram on CUDA tensors: csrc/ops/gram.h through cuBLAS (a .cpp: no device code of its own).
#include <torch/library.h>

#include "ops/gram.h"

TORCH_LIBRARY_IMPL(culturegan, CUDA, m) { m.impl("gram", &culturegan::gram::forward); }
