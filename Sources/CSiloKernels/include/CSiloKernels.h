// CSiloKernels: hand-vectorised CPU kernels with run-time dispatch (AVX2/FMA, AVX-512), called from SiloTensor.
#ifndef CSILOKERNELS_H
#define CSILOKERNELS_H

#include <stdint.h>

/// Which instruction set the kernels dispatch to on this CPU: 0 baseline (SSE2), 1 AVX2+FMA, 2 AVX-512.
/// The environment variable SILO_KERNELS_ISA (0, 1, 2) lowers it (tests force each path).
int silo_kernels_isa(void);

/// out[row] = Σ_b scales[row, b]·Σ_i q[row, b, i]·x[32b + i] (+ Σ_b offsets[row, b]·sums[b]) (+ bias[row]) for
/// row in [row_begin, row_end), one input row x of 32·blocks values, over QuantizedMatrix's re-ordered blocks.
/// format: 0 Q4_0, 1 Q4_1 (both with offsets and the input's block sums), 2 Q8_0 (offsets and sums unused).
/// Returns 0 without touching `out` when no vector path exists on this CPU (the caller falls back).
int silo_quantized_gemv(int format, const uint8_t *quants, const float *scales, const float *offsets, const float *sums,
                        int blocks, const float *x, int row_begin, int row_end, float *out, const float *bias);

#endif
