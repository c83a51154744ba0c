// CG_INLINE: a function inlined on the host and, in CUDA translation units, on the device too,
// for the math that the CPU and CUDA kernels share (csrc/ops/<op>.h).
#pragma once

#if defined(__CUDACC__)
#define CG_INLINE __host__ __device__ __forceinline__
#else
#define CG_INLINE inline
#endif
