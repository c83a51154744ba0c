// Fresh CPU outputs of GAN-sized activations (tens of MB) are dominated by page faults, not by
// the kernel: glibc maps allocations above 32 MiB anew each time, and touching them faults in
// 4 KiB pages one by one (measured on 2 cores: 17 ms to fault in 33.5 MB, 2.6 ms to write it
// once it is mapped). Asking for transparent huge pages on the untouched, 2 MiB aligned
// interior of a new output before the kernel writes it cuts the number of faults 512-fold.
// This is what torch's own THP_MEM_ALLOC_ENABLE=1 does for every allocation; here it applies
// to our outputs only. It is advice: where the kernel ignores it (THP "never"), nothing changes.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace culturegan::cpu {

inline void advise_huge_pages(const at::Tensor& fresh_output) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr std::uintptr_t kHugePage = std::uintptr_t(2) << 20;
  const std::size_t bytes = fresh_output.nbytes();
  if (bytes < 2 * kHugePage) return;
  const auto begin = reinterpret_cast<std::uintptr_t>(fresh_output.const_data_ptr());
  const std::uintptr_t first = (begin + kHugePage - 1) & ~(kHugePage - 1);
  const std::uintptr_t last = (begin + bytes) & ~(kHugePage - 1);
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);  // advice only
#else
  (void)fresh_output;
#endif
}

}  // namespace culturegan::cpu
