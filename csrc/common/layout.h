// The memory layouts the channel-wise kernels take, seen as a dense [outer, channels, inner]
// array: NC* contiguous (inner = H*W) or channels-innermost (channels_last; inner = 1).
// Any other strided input is copied to contiguous first, which is what the fake kernels in
// culturegan/ops/_layout.py assume as well.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

namespace culturegan {

struct ChannelLayout {
  at::Tensor tensor;  // the input itself, or a contiguous copy of it
  int64_t outer;
  int64_t channels;
  int64_t inner;
};

inline bool is_channels_innermost(const at::Tensor& t) { return t.movedim(1, -1).is_contiguous(); }

inline ChannelLayout channel_layout(const at::Tensor& x) {
  const int64_t channels = x.size(1);
  if (x.is_contiguous()) {
    return {x, x.size(0), channels, x.numel() / (x.size(0) * channels)};
  }
  if (is_channels_innermost(x)) {
    return {x, x.numel() / channels, channels, 1};
  }
  at::Tensor copy = x.contiguous();
  return {copy, x.size(0), channels, x.numel() / (x.size(0) * channels)};
}

// An uninitialised output in x's kernel layout, with the canonical strides of that layout.
// (empty_like would copy x's strides, and a size-1 batch may carry any batch stride, as
// oneDNN's outputs do; F.pad and the convolutions then take the tensor for NCHW and copy it.)
inline at::Tensor empty_in_layout(const at::Tensor& x) {
  if (x.is_contiguous() || !is_channels_innermost(x)) return at::empty(x.sizes(), x.options());
  return at::empty(x.movedim(1, -1).sizes(), x.options()).movedim(-1, 1);
}

// `t` in the same element order as `like` (a tensor in one of the layouts above), copied if needed.
inline at::Tensor match_layout(const at::Tensor& t, const at::Tensor& like) {
  if (like.is_contiguous()) return t.contiguous();
  if (is_channels_innermost(t)) return t;
  return t.movedim(1, -1).contiguous().movedim(-1, 1);
}

}  // namespace culturegan
