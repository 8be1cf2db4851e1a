/*
 * moecat's GEMM driver (see gemm.h for the canonical order): variant dispatch, cache blocking,
 * packing, output tiles for the thread pool, and the portable scalar micro-kernel. The vector
 * micro-kernels live in gemm_x86.c. Packing only copies; all arithmetic is in the micro-kernels,
 * and each of them computes acc = fmaf(a, b, acc) per output element with k ascending.
 */
#include "gemm.h"
#include "pool.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#include <xmmintrin.h>
#endif

/* ------------------------------------------------------------------ scalar micro-kernel */

#define SC_MR 4
#define SC_NR 16

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
/* A second copy for CPUs with FMA: fmaf becomes one instruction instead of a libm call (same result). */
__attribute__((target_clones("fma", "default")))
#endif
static void ukr_scalar(int64_t kc, const float* A, int64_t rsa, int64_t csa, const float* Bp, float* C, int64_t ldc, int mr, int nr,
                       int first) {
  float acc[SC_MR][SC_NR];
  for (int r = 0; r < SC_MR; r++)
    for (int j = 0; j < SC_NR; j++) acc[r][j] = (!first && r < mr && j < nr) ? C[r * ldc + j] : 0.0f;
  for (int64_t k = 0; k < kc; k++) {
    const float* a = A + k * csa;
    const float* b = Bp + k * SC_NR;
    for (int r = 0; r < mr; r++) {
      const float ar = a[r * rsa];
      for (int j = 0; j < SC_NR; j++) acc[r][j] = fmaf(ar, b[j], acc[r][j]);
    }
  }
  for (int r = 0; r < mr; r++)
    for (int j = 0; j < nr; j++) C[r * ldc + j] = acc[r][j];
}

static const gemm_kernel gemm_kernel_scalar = {SC_MR, SC_NR, 256, 64, 1024, ukr_scalar};

/* ------------------------------------------------------------------ variants */

static const char* const ISA_NAMES[GEMM_ISA_COUNT] = {"scalar", "avx2", "avx512"};

const char* gemm_isa_name(int isa) { return isa >= 0 && isa < GEMM_ISA_COUNT ? ISA_NAMES[isa] : "unknown"; }

int gemm_isa_parse(const char* name) {
  for (int i = 0; i < GEMM_ISA_COUNT; i++)
    if (strcmp(name, ISA_NAMES[i]) == 0) return i;
  return -1;
}

static const gemm_kernel* kernel_of(int isa) {
  switch (isa) {
    case GEMM_ISA_AVX512: return &gemm_kernel_avx512;
    case GEMM_ISA_AVX2: return &gemm_kernel_avx2;
    default: return &gemm_kernel_scalar;
  }
}

int gemm_isa_supported(int isa) {
  if (isa == GEMM_ISA_SCALAR) return 1;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  if (isa == GEMM_ISA_AVX2) return kernel_of(isa)->ukr && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (isa == GEMM_ISA_AVX512) return kernel_of(isa)->ukr && __builtin_cpu_supports("avx512f");
#endif
  return 0;
}

int gemm_isa_best(void) {
  for (int i = GEMM_ISA_COUNT - 1; i > 0; i--)
    if (gemm_isa_supported(i)) return i;
  return GEMM_ISA_SCALAR;
}

static int current_isa = -1;

int gemm_isa(void) {
  if (current_isa < 0) current_isa = gemm_isa_best();
  return current_isa;
}

int gemm_set_isa(int isa) {
  if (isa < 0 || isa >= GEMM_ISA_COUNT || !gemm_isa_supported(isa)) return 0;
  current_isa = isa;
  return 1;
}

/* ------------------------------------------------------------------ packing (copies only) */

/* Per-thread packing buffers (workers are persistent, so these are allocated once). */
static _Thread_local float* buf_a = NULL;
static _Thread_local size_t cap_a = 0;
static _Thread_local float* buf_b = NULL;
static _Thread_local size_t cap_b = 0;

static float* grow(float** buf, size_t* cap, size_t n) {
  if (n > *cap) {
    free(*buf);
    const size_t bytes = ((n * sizeof(float)) + 63) & ~(size_t)63;
    *buf = (float*)aligned_alloc(64, bytes);
    *cap = *buf ? n : 0;
  }
  return *buf;
}

/* Rows [i0, i0+mc) of op(A), k in [p0, p0+kc), into MR-row panels: panel p at step k holds MR floats. */
static void pack_a(const float* A, int64_t lda, int ta, int64_t i0, int64_t mc, int64_t p0, int64_t kc, int MR, float* Ap) {
  for (int64_t ir = 0; ir < mc; ir += MR) {
    const int mr = (int)(mc - ir < MR ? mc - ir : MR);
    float* P = Ap + ir * kc;
    if (ta) {
      for (int64_t k = 0; k < kc; k++) {
        const float* src = A + (p0 + k) * lda + i0 + ir;
        for (int r = 0; r < mr; r++) P[k * MR + r] = src[r];
      }
    } else {
      for (int r = 0; r < mr; r++) {
        const float* src = A + (i0 + ir + r) * lda + p0;
        for (int64_t k = 0; k < kc; k++) P[k * MR + r] = src[k];
      }
    }
    for (int r = mr; r < MR; r++)
      for (int64_t k = 0; k < kc; k++) P[k * MR + r] = 0.0f;
  }
}

/* Columns [j0, j0+nc) of op(B), k in [p0, p0+kc), into NR-column panels, zero past the edge. */
static void pack_b(const float* B, int64_t ldb, int tb, int64_t j0, int64_t nc, int64_t p0, int64_t kc, int NR, float* Bp) {
  for (int64_t jr = 0; jr < nc; jr += NR) {
    const int nr = (int)(nc - jr < NR ? nc - jr : NR);
    float* P = Bp + jr * kc;
    if (tb) {
      if (nr < NR) memset(P, 0, sizeof(float) * (size_t)(kc * NR));
      int j = 0;
#ifdef __SSE2__
      /* 4×4 blocks transposed in registers (baseline x86-64): the strided copy's cost halves. */
      for (; j + 4 <= nr; j += 4) {
        const float* s0 = B + (j0 + jr + j) * ldb + p0;
        int64_t k = 0;
        for (; k + 4 <= kc; k += 4) {
          __m128 r0 = _mm_loadu_ps(s0 + k), r1 = _mm_loadu_ps(s0 + ldb + k);
          __m128 r2 = _mm_loadu_ps(s0 + 2 * ldb + k), r3 = _mm_loadu_ps(s0 + 3 * ldb + k);
          _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
          _mm_storeu_ps(P + k * NR + j, r0);
          _mm_storeu_ps(P + (k + 1) * NR + j, r1);
          _mm_storeu_ps(P + (k + 2) * NR + j, r2);
          _mm_storeu_ps(P + (k + 3) * NR + j, r3);
        }
        for (; k < kc; k++)
          for (int q = 0; q < 4; q++) P[k * NR + j + q] = s0[q * ldb + k];
      }
#endif
      for (; j < nr; j++) {
        const float* src = B + (j0 + jr + j) * ldb + p0;
        for (int64_t k = 0; k < kc; k++) P[k * NR + j] = src[k];
      }
    } else {
      for (int64_t k = 0; k < kc; k++) {
        const float* src = B + (p0 + k) * ldb + j0 + jr;
        float* dst = P + k * NR;
        memcpy(dst, src, sizeof(float) * (size_t)nr);
        for (int j = nr; j < NR; j++) dst[j] = 0.0f;
      }
    }
  }
}

/* ------------------------------------------------------------------ driver */

typedef struct {
  const gemm_kernel* kr;
  int64_t batchA, batchB, M, N, K;
  int ta, tb;
  const float *A, *B;
  float* C;
  int64_t lda, ldb, ldc;
  int64_t strideA, strideB, strideC; /* between batch elements */
  int64_t tm, tn;                    /* output tile */
  int64_t tilesM, tilesN;
} GemmJob;

/* One output tile (all of k) of one batch element. */
static void gemm_tile(void* ctx, int64_t task, int slot) {
  (void)slot;
  const GemmJob* j = (const GemmJob*)ctx;
  const gemm_kernel* kr = j->kr;
  const int64_t per = j->tilesM * j->tilesN;
  const int64_t bi = task / per;
  const int64_t t = task % per;
  const int64_t i0 = (t / j->tilesN) * j->tm;
  const int64_t j0 = (t % j->tilesN) * j->tn;
  const int64_t mt = j->M - i0 < j->tm ? j->M - i0 : j->tm;
  const int64_t nt = j->N - j0 < j->tn ? j->N - j0 : j->tn;
  const float* A = j->A + (bi % j->batchA) * j->strideA;
  const float* B = j->B + (bi % j->batchB) * j->strideB;
  float* C = j->C + bi * j->strideC;
  const int MR = kr->mr, NR = kr->nr;
  const int64_t kcMax = j->K < kr->kc ? j->K : kr->kc;
  const int64_t mcMax = mt < kr->mc ? mt : kr->mc; /* rows of A packed at a time */
  const int64_t ntPad = (nt + NR - 1) / NR * NR;
  const int64_t mcPad = (mcMax + MR - 1) / MR * MR;
  /*
   * A tile of at most four column panels reads each block of A at most four times: packing it would
   * cost as much as it saves (attention's batched products), so the kernel reads A in place.
   */
  const int direct = nt <= 4 * NR;
  float* Bp = grow(&buf_b, &cap_b, (size_t)(kcMax * ntPad));
  float* Ap = grow(&buf_a, &cap_a, (size_t)(kcMax * mcPad));
  if (!Bp || !Ap) abort(); /* out of memory for a few hundred KiB: nothing sensible remains */
  for (int64_t p0 = 0; p0 < j->K; p0 += kr->kc) {
    const int64_t kc = j->K - p0 < kr->kc ? j->K - p0 : kr->kc;
    pack_b(B, j->ldb, j->tb, j0, nt, p0, kc, NR, Bp);
    for (int64_t ic = 0; ic < mt; ic += kr->mc) {
      const int64_t mc = mt - ic < kr->mc ? mt - ic : kr->mc;
      if (!direct) pack_a(A, j->lda, j->ta, i0 + ic, mc, p0, kc, MR, Ap);
      for (int64_t jr = 0; jr < nt; jr += NR) {
        const int nr = (int)(nt - jr < NR ? nt - jr : NR);
        for (int64_t ir = 0; ir < mc; ir += MR) {
          const int mr = (int)(mc - ir < MR ? mc - ir : MR);
          float* Ct = C + (i0 + ic + ir) * j->ldc + j0 + jr;
          if (direct) {
            const int64_t row = i0 + ic + ir;
            const float* Ad = j->ta ? A + p0 * j->lda + row : A + row * j->lda + p0;
            kr->ukr(kc, Ad, j->ta ? 1 : j->lda, j->ta ? j->lda : 1, Bp + jr * kc, Ct, j->ldc, mr, nr, p0 == 0);
          } else {
            kr->ukr(kc, Ap + ir * kc, 1, MR, Bp + jr * kc, Ct, j->ldc, mr, nr, p0 == 0);
          }
        }
      }
    }
  }
}

/* Products below this many FLOPs (~0.15 ms on one AVX-512 core) run on the calling thread: waking
   a worker and waiting for it cost more (an MoE expert's 200×192×128 ran 0.6x as fast on two). */
#define MT_MIN_FLOPS 2.0e7

static void run(GemmJob* j, int64_t batch, int threads) {
  const gemm_kernel* kr = j->kr;
  const double flops = 2.0 * (double)batch * (double)j->M * (double)j->N * (double)j->K;
  if (flops < MT_MIN_FLOPS) threads = 1;
  const int asked = threads; /* 0: the pool's default (pool_profile counts such jobs as parallel) */
  if (threads < 1) threads = pool_threads();
  /*
   * Tiles: all rows and up to nc columns, so one packed block of B serves every row. When that
   * leaves threads short of work, the output is cut into 2 parts per thread (a preempted thread
   * then holds up less) along the longer side:
   * each part repacks the other operand's block (rows: B, columns: A), so the cut that repacks
   * less is taken. Any cut gives the same bits: it moves whole output elements between threads.
   */
  int64_t tm = j->M;
  int64_t tn = j->N < kr->nc ? j->N : kr->nc;
  const int64_t tiles = batch * ((j->N + tn - 1) / tn);
  if (threads > 1 && tiles < 2 * threads) {
    const int64_t parts = (2 * threads + tiles - 1) / tiles;
    if (j->M >= j->N && j->M >= 2 * kr->mr) {
      tm = (j->M + parts - 1) / parts;
      tm = (tm + kr->mr - 1) / kr->mr * kr->mr;
    } else if (tn >= 2 * kr->nr) {
      tn = (tn + parts - 1) / parts;
      tn = (tn + kr->nr - 1) / kr->nr * kr->nr;
    }
  }
  j->tm = tm;
  j->tn = tn;
  j->tilesM = (j->M + tm - 1) / tm;
  j->tilesN = (j->N + tn - 1) / tn;
  pool_run(batch * j->tilesM * j->tilesN, gemm_tile, j, asked);
}

void gemm_batched(int64_t batch, int64_t batchA, int64_t batchB, int64_t M, int64_t N, int64_t K, int transA, int transB,
                  const float* A, const float* B, float* C, int threads) {
  if (batch <= 0 || M <= 0 || N <= 0) return;
  if (K <= 0) {
    memset(C, 0, sizeof(float) * (size_t)(batch * M * N));
    return;
  }
  GemmJob j = {kernel_of(gemm_isa()), batchA, batchB, M, N, K, transA, transB, A, B, C,
               transA ? M : K, transB ? K : N, N, M * K, K * N, M * N, 0, 0, 0, 0};
  run(&j, batch, threads);
}
