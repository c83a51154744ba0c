// Argument checks shared by the CPU and CUDA entry points. They raise the same Python
// exception types as culturegan.ops' own checks (TypeError for dtypes, ValueError otherwise),
// so a user calling torch.ops.culturegan.* directly gets an equally clear message.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>
#include <string>

namespace culturegan {

// The dtype as Python spells it ("torch.float32"), so messages match culturegan.ops' own.
inline std::string dtype_name(at::ScalarType type) {
  return std::string("torch.").append(c10::getDtypeNames(type).first);
}

inline void check_floating(const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), name,
                   " must be a floating-point tensor (float16, bfloat16, float32 or float64), got ",
                   dtype_name(t.scalar_type()));
}

// A floating tensor (N, C, ...) with channels on dim 1, min_dim to max_dim dimensions and no
// empty dimension.
inline void check_channel_tensor(const at::Tensor& x, const char* name, int64_t min_dim = 2, int64_t max_dim = 4) {
  TORCH_CHECK_VALUE(x.dim() >= min_dim && x.dim() <= max_dim, name, " must have ", min_dim,
                    max_dim == min_dim + 1 ? " or " : " to ", max_dim, " dimensions, got shape ", x.sizes());
  TORCH_CHECK_VALUE(x.numel() > 0, name, " is empty (shape ", x.sizes(), "); every dimension must be >= 1");
  check_floating(x, name);
}

inline void check_same_device(const at::Tensor& t, const char* name, const at::Tensor& ref, const char* ref_name) {
  TORCH_CHECK_VALUE(t.device() == ref.device(), name, " is on ", t.device(), " but ", ref_name, " is on ",
                    ref.device(), "; move both to the same device");
}

inline void check_same_dtype(const at::Tensor& t, const char* name, const at::Tensor& ref, const char* ref_name) {
  TORCH_CHECK_TYPE(t.scalar_type() == ref.scalar_type(), name, " has dtype ", dtype_name(t.scalar_type()), " but ",
                   ref_name, " has dtype ", dtype_name(ref.scalar_type()), "; cast it with .to(", ref_name, ".dtype)");
}

inline void check_same_shape(const at::Tensor& t, const char* name, const at::Tensor& ref, const char* ref_name) {
  TORCH_CHECK_VALUE(t.sizes() == ref.sizes(), name, " has shape ", t.sizes(), " but ", ref_name, " has shape ",
                    ref.sizes());
}

// A per-channel vector (bias, scale, ...) for a tensor whose channels are dim 1.
inline void check_channel_vector(const at::Tensor& v, const char* name, const at::Tensor& x, const char* x_name) {
  check_same_device(v, name, x, x_name);
  check_same_dtype(v, name, x, x_name);
  TORCH_CHECK_VALUE(v.dim() == 1 && v.size(0) == x.size(1), name, " must have shape (", x.size(1), ",) to match ",
                    x_name, "'s channel dimension, got shape ", v.sizes());
}

// An (N, C) parameter of ref (one value per sample and channel) in ref's math type: float32 for
// the half types, so tiny factors such as 1 / (H * W * std) keep their precision. shape_note
// follows the expected shape in the shape error.
inline void check_parameter(const at::Tensor& p, const char* name, const at::Tensor& ref, const char* ref_name,
                            const char* shape_note = "") {
  check_same_device(p, name, ref, ref_name);
  const at::ScalarType math = at::toOpMathType(ref.scalar_type());
  TORCH_CHECK_TYPE(p.scalar_type() == math, name, " must have dtype ", dtype_name(math), " (", ref_name,
                   "'s math type), got ", dtype_name(p.scalar_type()));
  TORCH_CHECK_VALUE(p.dim() == 2 && p.size(0) == ref.size(0) && p.size(1) == ref.size(1), name, " must have shape (",
                    ref.size(0), ", ", ref.size(1), ")", shape_note, ", got shape ", p.sizes());
}

// The slope of an optional LeakyReLU: None (no activation) or >= 0.
inline void check_optional_slope(std::optional<double> negative_slope) {
  TORCH_CHECK_VALUE(!negative_slope.has_value() || *negative_slope >= 0.0,
                    "negative_slope must be >= 0 (or None), got ", negative_slope.value_or(0.0));
}

}  // namespace culturegan
