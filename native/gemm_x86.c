/*
 * Vector micro-kernels of moecat's GEMM (see gemm.h): AVX2+FMA (6×16 tile) and AVX-512F (14×32
 * tile). Each accumulator lane is one output element; at step k it becomes
 * fma(a[r,k], b[k,j], acc), a single rounding, exactly what the scalar kernel's fmaf computes,
 * with k ascending. So the variants agree bit for bit by construction.
 *
 * Compiled with function target attributes (no -march), so the addon loads on any x86-64 and
 * these run only after gemm.c's cpuid check. Elsewhere the kernels are absent (NULL).
 */
#include "gemm.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define INLINE static inline __attribute__((always_inline))

/* ------------------------------------------------------------------ AVX-512F: 14 × 32 */

#define Z_MR 14
#define Z_NR 32
#define T512 __attribute__((target("avx512f")))

INLINE T512 void z_body(const int MR, const int64_t rs, const int64_t cs, int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc,
                        int nr, int first) {
  __m512 c0[Z_MR], c1[Z_MR];
  const __mmask16 m0 = nr >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nr) - 1);
  const __mmask16 m1 = nr >= 32 ? (__mmask16)0xFFFF : nr > 16 ? (__mmask16)((1u << (nr - 16)) - 1) : (__mmask16)0;
  for (int r = 0; r < MR; r++) {
    if (first) {
      c0[r] = _mm512_setzero_ps();
      c1[r] = _mm512_setzero_ps();
    } else {
      c0[r] = _mm512_maskz_loadu_ps(m0, C + r * ldc);
      c1[r] = _mm512_maskz_loadu_ps(m1, C + r * ldc + 16);
    }
  }
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; k++) {
    const __m512 b0 = _mm512_load_ps(Bp);
    const __m512 b1 = _mm512_load_ps(Bp + 16);
    for (int r = 0; r < MR; r++) {
      const __m512 a = _mm512_set1_ps(Ap[r * rs]);
      c0[r] = _mm512_fmadd_ps(a, b0, c0[r]);
      c1[r] = _mm512_fmadd_ps(a, b1, c1[r]);
    }
    Ap += cs;
    Bp += Z_NR;
  }
  for (int r = 0; r < MR; r++) {
    _mm512_mask_storeu_ps(C + r * ldc, m0, c0[r]);
    _mm512_mask_storeu_ps(C + r * ldc + 16, m1, c1[r]);
  }
}

/* One instance per row count, with the A strides as constants where they are known. */
#define Z_CASE(n, RS, CS) \
  case n: z_body(n, RS, CS, kc, A, Bp, C, ldc, nr, first); return;
#define Z_SWITCH(RS, CS) \
  switch (mr) { \
    Z_CASE(14, RS, CS) Z_CASE(13, RS, CS) Z_CASE(12, RS, CS) Z_CASE(11, RS, CS) Z_CASE(10, RS, CS) Z_CASE(9, RS, CS) Z_CASE(8, RS, CS) \
    Z_CASE(7, RS, CS) Z_CASE(6, RS, CS) Z_CASE(5, RS, CS) Z_CASE(4, RS, CS) Z_CASE(3, RS, CS) Z_CASE(2, RS, CS) Z_CASE(1, RS, CS) \
    default: return; \
  }

static T512 void ukr_avx512(int64_t kc, const float* A, int64_t rsa, int64_t csa, const float* Bp, float* C, int64_t ldc, int mr, int nr,
                            int first) {
  if (rsa == 1 && csa == Z_MR) Z_SWITCH(1, Z_MR)        /* packed panel */
  else if (rsa == 1) Z_SWITCH(1, csa)                   /* transposed A in place */
  else Z_SWITCH(rsa, csa)                               /* A in place */
}

/* kc 256: a 32 KiB panel of B per micro-kernel call; 140 rows of A (140 KiB) stay in L2. */
const gemm_kernel gemm_kernel_avx512 = {Z_MR, Z_NR, 256, 140, 1024, ukr_avx512};

/* ------------------------------------------------------------------ AVX2 + FMA: 6 × 16 */

#define Y_MR 6
#define Y_NR 16
#define T256 __attribute__((target("avx2,fma")))

INLINE T256 __m256i y_mask(int n) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx);
}

INLINE T256 void y_body(const int MR, const int64_t rs, const int64_t cs, int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc,
                        int nr, int first) {
  __m256 c0[Y_MR], c1[Y_MR];
  const __m256i m0 = y_mask(nr);
  const __m256i m1 = y_mask(nr - 8);
  for (int r = 0; r < MR; r++) {
    if (first) {
      c0[r] = _mm256_setzero_ps();
      c1[r] = _mm256_setzero_ps();
    } else {
      c0[r] = _mm256_maskload_ps(C + r * ldc, m0);
      c1[r] = _mm256_maskload_ps(C + r * ldc + 8, m1);
    }
  }
  for (int64_t k = 0; k < kc; k++) {
    const __m256 b0 = _mm256_load_ps(Bp);
    const __m256 b1 = _mm256_load_ps(Bp + 8);
    for (int r = 0; r < MR; r++) {
      const __m256 a = _mm256_broadcast_ss(Ap + r * rs);
      c0[r] = _mm256_fmadd_ps(a, b0, c0[r]);
      c1[r] = _mm256_fmadd_ps(a, b1, c1[r]);
    }
    Ap += cs;
    Bp += Y_NR;
  }
  for (int r = 0; r < MR; r++) {
    _mm256_maskstore_ps(C + r * ldc, m0, c0[r]);
    _mm256_maskstore_ps(C + r * ldc + 8, m1, c1[r]);
  }
}

#define Y_CASE(n, RS, CS) \
  case n: y_body(n, RS, CS, kc, A, Bp, C, ldc, nr, first); return;
#define Y_SWITCH(RS, CS) \
  switch (mr) { \
    Y_CASE(6, RS, CS) Y_CASE(5, RS, CS) Y_CASE(4, RS, CS) Y_CASE(3, RS, CS) Y_CASE(2, RS, CS) Y_CASE(1, RS, CS) \
    default: return; \
  }

static T256 void ukr_avx2(int64_t kc, const float* A, int64_t rsa, int64_t csa, const float* Bp, float* C, int64_t ldc, int mr, int nr,
                          int first) {
  if (rsa == 1 && csa == Y_MR) Y_SWITCH(1, Y_MR)
  else if (rsa == 1) Y_SWITCH(1, csa)
  else Y_SWITCH(rsa, csa)
}

const gemm_kernel gemm_kernel_avx2 = {Y_MR, Y_NR, 256, 96, 1024, ukr_avx2};

#else

const gemm_kernel gemm_kernel_avx512 = {14, 32, 256, 140, 1024, 0};
const gemm_kernel gemm_kernel_avx2 = {6, 16, 256, 96, 1024, 0};

#endif
