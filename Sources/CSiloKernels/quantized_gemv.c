// Fused quantised GEMV (one input row) over QuantizedMatrix's re-ordered blocks, AVX2 + FMA.
// See Sources/SiloTensor/Ops/QuantizedMatMul.swift for the layout:
//   4-bit: a block's 16 bytes are four 32-bit lanes; lane k holds elements k, k+4, ..., k+28 as nibbles 0..7.
//   8-bit: two halves of 16 bytes; in half c, byte p of lane k is element 16c + 4p + k.
// Broadcasting a block's 128-bit vector to both halves of a 256-bit register and shifting the low half by
// s and the high half by s + 4 (bits) gives elements 8g..8g+8 in order, so x is read contiguously.
#include "CSiloKernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

__attribute__((target("avx2,fma")))
static inline float silo_hsum256(__m256 v) {
    __m128 low = _mm256_castps256_ps128(v), high = _mm256_extractf128_ps(v, 1);
    __m128 s = _mm_add_ps(low, high);
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0x55));
    return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma")))
static void silo_q4_gemv_avx2(const uint8_t *quants, const float *scales, const float *offsets, const float *sums,
                              int blocks, const float *x, int row_begin, int row_end, float *out, const float *bias) {
    const __m256i mask = _mm256_set1_epi32(0xF);
    const __m256i shift0 = _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4);
    const __m256i shift1 = _mm256_setr_epi32(8, 8, 8, 8, 12, 12, 12, 12);
    const __m256i shift2 = _mm256_setr_epi32(16, 16, 16, 16, 20, 20, 20, 20);
    const __m256i shift3 = _mm256_setr_epi32(24, 24, 24, 24, 28, 28, 28, 28);
    for (int row = row_begin; row < row_end; row++) {
        const uint8_t *q = quants + (size_t)row * blocks * 16;
        const float *d = scales + (size_t)row * blocks;
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
        for (int b = 0; b < blocks; b++) {
            const __m256i v = _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *)(q + (size_t)b * 16)));
            const float *xb = x + (size_t)b * 32;
            __m256 w0 = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(v, shift0), mask));
            __m256 w1 = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(v, shift1), mask));
            __m256 w2 = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(v, shift2), mask));
            __m256 w3 = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(v, shift3), mask));
            __m256 even = _mm256_mul_ps(w0, _mm256_loadu_ps(xb));
            __m256 odd = _mm256_mul_ps(w1, _mm256_loadu_ps(xb + 8));
            even = _mm256_fmadd_ps(w2, _mm256_loadu_ps(xb + 16), even);
            odd = _mm256_fmadd_ps(w3, _mm256_loadu_ps(xb + 24), odd);
            const __m256 scale = _mm256_broadcast_ss(d + b);
            if (b & 1) acc1 = _mm256_fmadd_ps(_mm256_add_ps(even, odd), scale, acc1);
            else acc0 = _mm256_fmadd_ps(_mm256_add_ps(even, odd), scale, acc0);
        }
        float total = silo_hsum256(_mm256_add_ps(acc0, acc1));
        if (offsets) {
            const float *m = offsets + (size_t)row * blocks;
            float extra = 0;
            for (int b = 0; b < blocks; b++) extra += m[b] * sums[b];
            total += extra;
        }
        out[row] = total + (bias ? bias[row] : 0.0f);
    }
}

__attribute__((target("avx2,fma")))
static void silo_q8_gemv_avx2(const uint8_t *quants, const float *scales, int blocks, const float *x,
                              int row_begin, int row_end, float *out, const float *bias) {
    const __m256i left0 = _mm256_setr_epi32(24, 24, 24, 24, 16, 16, 16, 16);
    const __m256i left1 = _mm256_setr_epi32(8, 8, 8, 8, 0, 0, 0, 0);
    for (int row = row_begin; row < row_end; row++) {
        const uint8_t *q = quants + (size_t)row * blocks * 32;
        const float *d = scales + (size_t)row * blocks;
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
        for (int b = 0; b < blocks; b++) {
            const uint8_t *qb = q + (size_t)b * 32;
            const float *xb = x + (size_t)b * 32;
            const __m256i v0 = _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *)qb));
            const __m256i v1 = _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *)(qb + 16)));
            __m256 w0 = _mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_sllv_epi32(v0, left0), 24));
            __m256 w1 = _mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_sllv_epi32(v0, left1), 24));
            __m256 w2 = _mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_sllv_epi32(v1, left0), 24));
            __m256 w3 = _mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_sllv_epi32(v1, left1), 24));
            __m256 even = _mm256_mul_ps(w0, _mm256_loadu_ps(xb));
            __m256 odd = _mm256_mul_ps(w1, _mm256_loadu_ps(xb + 8));
            even = _mm256_fmadd_ps(w2, _mm256_loadu_ps(xb + 16), even);
            odd = _mm256_fmadd_ps(w3, _mm256_loadu_ps(xb + 24), odd);
            const __m256 scale = _mm256_broadcast_ss(d + b);
            if (b & 1) acc1 = _mm256_fmadd_ps(_mm256_add_ps(even, odd), scale, acc1);
            else acc0 = _mm256_fmadd_ps(_mm256_add_ps(even, odd), scale, acc0);
        }
        out[row] = silo_hsum256(_mm256_add_ps(acc0, acc1)) + (bias ? bias[row] : 0.0f);
    }
}
#endif

int silo_quantized_gemv(int format, const uint8_t *quants, const float *scales, const float *offsets, const float *sums,
                        int blocks, const float *x, int row_begin, int row_end, float *out, const float *bias) {
#if defined(__x86_64__)
    if (silo_kernels_isa() < 1) return 0;
    if (format == 2) {
        silo_q8_gemv_avx2(quants, scales, blocks, x, row_begin, row_end, out, bias);
    } else {
        silo_q4_gemv_avx2(quants, scales, offsets, sums, blocks, x, row_begin, row_end, out, bias);
    }
    return 1;
#else
    (void)format; (void)quants; (void)scales; (void)offsets; (void)sums; (void)blocks; (void)x;
    (void)row_begin; (void)row_end; (void)out; (void)bias;
    return 0;
#endif
}
