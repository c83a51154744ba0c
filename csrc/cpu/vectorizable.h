// Loads and stores between a tensor's storage type and its math type (float, or double) that
// GCC and Clang vectorise. c10's own Half/BFloat16 conversions go through the structs, which
// keeps the vectoriser away from any loop that touches them.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <c10/util/bit_cast.h>

#include <cstdint>

// Compiles a loop function twice, for AVX2 and for baseline x86-64, and picks one when the
// library loads (GCC/Clang function multi-versioning): wheels stay portable, and AVX2 machines
// run 8-wide loops.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CG_CPU_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CG_CPU_CLONES
#endif

namespace culturegan::cpu {

inline float load(const float* p, int64_t i) { return p[i]; }
inline double load(const double* p, int64_t i) { return p[i]; }
inline float load(const c10::BFloat16* p, int64_t i) {
  return c10::bit_cast<float>(uint32_t(reinterpret_cast<const uint16_t*>(p)[i]) << 16);
}
inline float load(const c10::Half* p, int64_t i) {
  return c10::detail::fp16_ieee_to_fp32_value(reinterpret_cast<const uint16_t*>(p)[i]);
}

inline void store(float* p, int64_t i, float v) { p[i] = v; }
inline void store(double* p, int64_t i, double v) { p[i] = v; }
inline void store(c10::BFloat16* p, int64_t i, float v) {  // round to nearest even; NaN stays NaN
  const uint32_t bits = c10::bit_cast<uint32_t>(v);
  const uint16_t rounded = uint16_t((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
  reinterpret_cast<uint16_t*>(p)[i] = v != v ? uint16_t(0x7FC0) : rounded;
}
inline void store(c10::Half* p, int64_t i, float v) {
  reinterpret_cast<uint16_t*>(p)[i] = c10::detail::fp16_ieee_from_fp32_value(v);
}

}  // namespace culturegan::cpu
