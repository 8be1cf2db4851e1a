/*
 * Kernels of the serving engine's batched decode path (inference/hostDecode.ts).
 *
 * decodeMatmul: y[M,N] = x[M,K] · W[K,N] (row-major, W is a weight in our [in, out] layout)
 * in gemm.h's canonical order: one fmaf chain per output element, k ascending from zero. So its
 * bits equal gemm's for every M, blocking and thread count, and each output row depends only on
 * its own input row: a token decodes to the same bits alone or inside any batch. For the few
 * rows of a decode step it streams W once for all rows (W row k is read once and applied to
 * every row), which is what a memory-bound step needs; many rows (prefill) go to gemm itself.
 * Threads split the output columns, never k.
 *
 * CHESS's sparse kernels for the same path are in sparse.c.
 *
 * decodeAttend / decodeAttendRows: query rows against one sequence's cache, all heads: scores
 * q·k (fmaf chain over the head dimension), scaled, softmax (max, att_exp in float, sum in double
 * in position order), output Σ p_t v_t (fmaf chain over positions). A fixed sequence of float
 * operations for a given length: deterministic, and independent of every other row.
 * decodeAttendRows takes n rows of one sequence (a prompt's rows, or one decode row) in one
 * call; threads split (row, head) pairs, each written by one task.
 *
 * decodeFfn: the SwiGLU FFN of M rows, y = (silu(x·Wg) ⊙ (x·Wu))·Wd, with decodeMatmul's products
 * and silu(g)·u in double (g / (1 + exp(−g)), times u, rounded once to float): one call per
 * FFN or FFN expert instead of three products and a JS loop.
 */
#include <math.h>
#if defined(__GLIBC__) || defined(__linux__)
#include <malloc.h>
#endif
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <node_api.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define DMM_Z 1
#else
#define DMM_Z 0
#endif
#include "detmath.h"
#include "gemm.h"
#include "napi_args.h"
#include "pool.h"

#define DMM_COLS 64      /* output columns per task */
#define DMM_MAX_ROWS 8    /* more rows than this go to gemm (same bits; its packed tiles win there) */
#define DMM_MAX_ROWS_Z 16 /* the same with the AVX-512 eight-row kernel, for weights up to DMM_MAX_COLS_Z wide */
#define DMM_MAX_COLS_Z 1024

/*
 * Weight rows read ahead (a hint, no effect on the bits): a task walks a 64-column strip of W
 * down k, one or two cache lines per row at a stride of N floats, an access pattern the
 * hardware prefetchers do not follow far enough; without it each row is a cache miss.
 * Addresses past the end of W are never loaded (a prefetch does not fault).
 */
#define DMM_PF 8
#define DMM_PREFETCH(p) __builtin_prefetch((const void*)(p), 0, 3)

typedef struct {
  const float *x, *W;
  float* y;
  int64_t M, K, N;
  int z; /* eight-row AVX-512 blocks */
} DmmJob;

/*
 * Columns [j0, j0+nc) of every row, k ascending. Full strips run in 32-column halves: for each
 * half, four rows at a time keep 4 x 32 accumulators in registers and load each W row segment
 * once for the four rows; the half strip of W (K x 32 floats) stays in L1 for the next four rows,
 * so W is read from memory once for all M rows.
 */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "fma", "default")))
#endif
static void dmm_cols(const float* restrict x, const float* restrict W, float* restrict y, int64_t M, int64_t K, int64_t N, int64_t j0,
                     int64_t nc) {
  int64_t r0 = 0;
  if (nc == DMM_COLS) {
    const int64_t M4 = M / 4 * 4;
    for (int64_t h = 0; h < DMM_COLS; h += 32) {
      for (int64_t r = 0; r < M4; r += 4) {
        float a0[32], a1[32], a2[32], a3[32];
        for (int j = 0; j < 32; j++) a0[j] = a1[j] = a2[j] = a3[j] = 0.0f;
        const float* x0 = x + r * K;
        const float* x1 = x0 + K;
        const float* x2 = x1 + K;
        const float* x3 = x2 + K;
        for (int64_t k = 0; k < K; k++) {
          const float* w = W + k * N + j0 + h;
          DMM_PREFETCH(w + DMM_PF * N);
          DMM_PREFETCH(w + DMM_PF * N + 16);
          const float v0 = x0[k], v1 = x1[k], v2 = x2[k], v3 = x3[k];
          for (int j = 0; j < 32; j++) {
            a0[j] = fmaf(v0, w[j], a0[j]);
            a1[j] = fmaf(v1, w[j], a1[j]);
            a2[j] = fmaf(v2, w[j], a2[j]);
            a3[j] = fmaf(v3, w[j], a3[j]);
          }
        }
        memcpy(y + r * N + j0 + h, a0, sizeof a0);
        memcpy(y + (r + 1) * N + j0 + h, a1, sizeof a1);
        memcpy(y + (r + 2) * N + j0 + h, a2, sizeof a2);
        memcpy(y + (r + 3) * N + j0 + h, a3, sizeof a3);
      }
    }
    r0 = M4;
  }
  for (int64_t r = r0; r < M; r++) {
    const float* xr = x + r * K;
    float acc[DMM_COLS];
    if (nc == DMM_COLS) {
      for (int j = 0; j < DMM_COLS; j++) acc[j] = 0.0f;
      for (int64_t k = 0; k < K; k++) {
        const float xv = xr[k];
        const float* w = W + k * N + j0;
        for (int j = 0; j < DMM_COLS; j += 16) DMM_PREFETCH(w + DMM_PF * N + j);
        for (int j = 0; j < DMM_COLS; j++) acc[j] = fmaf(xv, w[j], acc[j]);
      }
    } else {
      for (int64_t j = 0; j < nc; j++) acc[j] = 0.0f;
      for (int64_t k = 0; k < K; k++) {
        const float xv = xr[k];
        const float* w = W + k * N + j0;
        for (int64_t j = 0; j < nc; j++) acc[j] = fmaf(xv, w[j], acc[j]);
      }
    }
    memcpy(y + r * N + j0, acc, sizeof(float) * (size_t)nc);
  }
}

#if DMM_Z
/*
 * R rows (R <= 8, a constant where it is inlined) x 32 columns [j0, j0+32) on AVX-512: 2R
 * accumulator registers, each W row segment loaded once for the R rows, each x element
 * broadcast once. _mm512_fmadd_ps rounds once, as fmaf does: every output is the same fmaf
 * chain from zero, k ascending (gemm's bits), whatever R.
 */
__attribute__((target("avx512f"), always_inline)) static inline void dmmr_z(const float* x, const float* W, float* y, int64_t K, int64_t N,
                                                                           int64_t j0, const int R) {
  __m512 a[8][2];
  for (int r = 0; r < R; r++) a[r][0] = a[r][1] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k++) {
    DMM_PREFETCH(W + (k + DMM_PF) * N + j0);
    DMM_PREFETCH(W + (k + DMM_PF) * N + j0 + 16);
    const __m512 w0 = _mm512_loadu_ps(W + k * N + j0);
    const __m512 w1 = _mm512_loadu_ps(W + k * N + j0 + 16);
    for (int r = 0; r < R; r++) {
      const __m512 xr = _mm512_set1_ps(x[r * K + k]);
      a[r][0] = _mm512_fmadd_ps(xr, w0, a[r][0]);
      a[r][1] = _mm512_fmadd_ps(xr, w1, a[r][1]);
    }
  }
  for (int r = 0; r < R; r++) {
    _mm512_storeu_ps(y + r * N + j0, a[r][0]);
    _mm512_storeu_ps(y + r * N + j0 + 16, a[r][1]);
  }
}

__attribute__((target("avx512f"))) static void dmm8_z(const float* x, const float* W, float* y, int64_t K, int64_t N, int64_t j0) {
  dmmr_z(x, W, y, K, N, j0, 8);
}

/* The last R = 2..7 rows of a full strip in one pass over W (one row stays on dmm_cols: its 64-column pass keeps four chains in flight). */
__attribute__((target("avx512f"))) static void dmm_tail_z(const float* x, const float* W, float* y, int64_t K, int64_t N, int64_t j0, int R) {
  switch (R) {
    case 2: dmmr_z(x, W, y, K, N, j0, 2); break;
    case 3: dmmr_z(x, W, y, K, N, j0, 3); break;
    case 4: dmmr_z(x, W, y, K, N, j0, 4); break;
    case 5: dmmr_z(x, W, y, K, N, j0, 5); break;
    case 6: dmmr_z(x, W, y, K, N, j0, 6); break;
    case 7: dmmr_z(x, W, y, K, N, j0, 7); break;
    default: break;
  }
}
#endif

/* Whether the AVX-512 eight-row kernel runs (the GEMM's selected variant: MOECAT_ISA applies). */
static int dmm_use_z(void) { return DMM_Z && gemm_isa() == GEMM_ISA_AVX512; }

/* Columns [j0, j0+nc) of every row: eight-row AVX-512 blocks on full strips where selected, the rest by dmm_cols. */
static void dmm_strip(const float* x, const float* W, float* y, int64_t M, int64_t K, int64_t N, int64_t j0, int64_t nc, int z) {
  int64_t r = 0;
#if DMM_Z
  if (z && nc == DMM_COLS) {
    const int64_t tail = M % 8 >= 2 ? M % 8 : 0;
    for (int64_t h = 0; h < DMM_COLS; h += 32) {
      for (r = 0; r + 8 <= M; r += 8) dmm8_z(x + r * K, W, y + r * N, K, N, j0 + h);
      if (tail) dmm_tail_z(x + r * K, W, y + r * N, K, N, j0 + h, (int)tail);
    }
    r = M / 8 * 8 + tail;
  }
#else
  (void)z;
#endif
  if (r < M) dmm_cols(x + r * K, W, y + r * N, M - r, K, N, j0, nc);
}

static void dmm_task(void* ctx, int64_t t, int slot) {
  (void)slot;
  const DmmJob* j = (const DmmJob*)ctx;
  const int64_t j0 = t * DMM_COLS;
  const int64_t nc = j->N - j0 < DMM_COLS ? j->N - j0 : DMM_COLS;
  dmm_strip(j->x, j->W, j->y, j->M, j->K, j->N, j0, nc, j->z);
}

/* Weights below this many bytes are read on the calling thread (waking a worker costs more). */
#define DMM_MT_BYTES (1024 * 1024)

static void decode_matmul_run(const float* x, const float* W, float* y, int64_t M, int64_t K, int64_t N, int threads) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    memset(y, 0, sizeof(float) * (size_t)(M * N));
    return;
  }
  const int z = dmm_use_z();
  if (M > (z && N <= DMM_MAX_COLS_Z ? DMM_MAX_ROWS_Z : DMM_MAX_ROWS)) {
    gemm_batched(1, 1, 1, M, N, K, 0, 0, x, W, y, threads);
    return;
  }
  DmmJob j = {x, W, y, M, K, N, z};
  const int64_t tasks = (N + DMM_COLS - 1) / DMM_COLS;
  if ((double)K * (double)N * 4.0 < DMM_MT_BYTES) threads = 1;
  pool_run(tasks, dmm_task, &j, threads);
}

/* ------------------------------------------------------------------ attention */

/* Positions whose scores are computed together: independent fmaf chains (each still k ascending). */
#define ATT_LANES 16

/*
 * e^x for x <= 0 in float (softmax weights), from +, -, * and exact bit operations only, so the
 * bits are the same on every machine and in vector lanes (no library call: glibc's exp differs by
 * CPU): x clamped at −87 (e^−87 ≈ 1.6e−38, nothing a softmax weight can tell from 0), x = k·ln2 + r
 * with |r| <= ln2/2 (ln2 split so k·LN2_HI is exact), e^r by Cephes' expf polynomial (about 1
 * float ulp), times 2^k built from bits.
 */
static inline float att_exp(float x) {
  x = x < -87.0f ? -87.0f : x;
  const float kd = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest by 1.5·2^23 */
  const float r = (x - kd * 0.693359375f) - kd * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = (p * (r * r) + r) + 1.0f;
  const uint32_t bits = (uint32_t)((int32_t)kd + 127) << 23; /* k in [−126, 0]: a normal power of two */
  float scale;
  memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

/*
 * Softmax of scores[0..S) in place (max, att_exp, the sum in double in position order), then
 * o[dv] = Σ p_t v_t (one fmaf chain per output over positions).
 */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "fma", "default")))
#endif
static void attend_softmax_v(float* restrict scores, const float* restrict vc, float* restrict o, int64_t S, int64_t vs, int64_t dv) {
  /* The max in 16 lanes (x > m ? x : m is maxps exactly), then over the lanes: the same value
   * as one running max, up to the sign of a zero maximum or which NaN, neither of which changes
   * an output (x − ±0 differ only at x = ±0, where att_exp gives 1 either way; a NaN score makes
   * every output NaN both ways). */
  float lane[16];
  for (int l = 0; l < 16; l++) lane[l] = -INFINITY;
  int64_t t0 = 0;
  for (; t0 + 16 <= S; t0 += 16)
    for (int l = 0; l < 16; l++) lane[l] = scores[t0 + l] > lane[l] ? scores[t0 + l] : lane[l];
  float max = -INFINITY;
  for (int l = 0; l < 16; l++)
    if (lane[l] > max) max = lane[l];
  for (int64_t t = t0; t < S; t++)
    if (scores[t] > max) max = scores[t];
  for (int64_t t = 0; t < S; t++) scores[t] = att_exp(scores[t] - max);
  double z = 0.0;
  for (int64_t t = 0; t < S; t++) z += scores[t];
  const float inv = (float)(1.0 / z);
  for (int64_t i = 0; i < dv; i++) o[i] = 0.0f;
  for (int64_t t = 0; t < S; t++) {
    const float p = scores[t] * inv;
    const float* vt = vc + t * vs;
    for (int64_t i = 0; i < dv; i++) o[i] = fmaf(p, vt[i], o[i]);
  }
}

/*
 * One head of one query row: scores over S positions, softmax, output. Keys are read at
 * kc[t·ks + i] (the cache: ks = Hk·dk) or, transposed, at kc[i·ks + t] (kt set: a [dk, S] block).
 * Either way each score is one fmaf chain over the head dimension from zero, and ATT_LANES
 * positions run as independent chains (vector lanes): the bits depend neither on the layout nor
 * on the lanes or the instruction set.
 */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "fma", "default")))
#endif
static void attend_scores(const float* restrict qh, const float* restrict kc, int kt, int64_t ks, int64_t S, int64_t dk, float scale,
                          float* restrict scores) {
  int64_t t = 0;
  for (; t + ATT_LANES <= S; t += ATT_LANES) {
    float s[ATT_LANES];
    for (int l = 0; l < ATT_LANES; l++) s[l] = 0.0f;
    if (kt) {
      if (t + 4 * ATT_LANES <= S) { /* four vectors of positions: four chains in flight */
        float s4[4 * ATT_LANES];
        for (int l = 0; l < 4 * ATT_LANES; l++) s4[l] = 0.0f;
        for (int64_t i = 0; i < dk; i++) {
          const float qi = qh[i];
          const float* k = kc + i * ks + t;
          for (int l = 0; l < 4 * ATT_LANES; l++) s4[l] = fmaf(qi, k[l], s4[l]);
        }
        for (int l = 0; l < 4 * ATT_LANES; l++) scores[t + l] = s4[l] * scale;
        t += 3 * ATT_LANES;
        continue;
      }
      for (int64_t i = 0; i < dk; i++) {
        const float qi = qh[i];
        const float* k = kc + i * ks + t;
        for (int l = 0; l < ATT_LANES; l++) s[l] = fmaf(qi, k[l], s[l]);
      }
    } else {
      const float* k0 = kc + t * ks;
      for (int64_t i = 0; i < dk; i++) {
        const float qi = qh[i];
        for (int l = 0; l < ATT_LANES; l++) s[l] = fmaf(qi, k0[l * ks + i], s[l]);
      }
    }
    for (int l = 0; l < ATT_LANES; l++) scores[t + l] = s[l] * scale;
  }
  for (; t < S; t++) {
    float s = 0.0f;
    for (int64_t i = 0; i < dk; i++) s = fmaf(qh[i], kt ? kc[i * ks + t] : kc[t * ks + i], s);
    scores[t] = s * scale;
  }
}

static void attend_head(const float* qh, const float* kc, const float* vc, float* o, int64_t S, int64_t Hk, int64_t kh, int64_t dk,
                        int64_t dv, float scale, float* scores) {
  attend_scores(qh, kc + kh * dk, 0, Hk * dk, S, dk, scale, scores);
  attend_softmax_v(scores, vc + kh * dv, o, S, Hk * dv, dv);
}

/* One query row against one sequence's cache, all heads. */
static void attend_row(const float* q, const float* kc, const float* vc, float* out, int64_t S, int64_t H, int64_t Hk, int64_t dk,
                       int64_t dv, float scale, float* scores) {
  const int64_t g = H / Hk;
  for (int64_t h = 0; h < H; h++) attend_head(q + h * dk, kc, vc, out + h * dv, S, Hk, h / g, dk, dv, scale, scores);
}

/* n rows of one sequence at positions S0 .. S0+n-1: row r attends positions 0 .. S0+r. */
typedef struct {
  const float *q, *kc, *vc;
  float* out;
  const float* kT; /* keys transposed, [Hk, dk, S] (NULL: read the cache) */
  int64_t S0, S, H, Hk, dk, dv;
  float scale;
  float* scores; /* per thread slot: S floats */
} AttJob;

static void att_task(void* ctx, int64_t task, int slot) {
  const AttJob* j = (const AttJob*)ctx;
  const int64_t r = task / j->H;
  const int64_t h = task % j->H;
  const int64_t kh = h / (j->H / j->Hk);
  const float* qh = j->q + (r * j->H + h) * j->dk;
  float* scores = j->scores + (int64_t)slot * j->S;
  const int64_t S = j->S0 + r + 1;
  if (j->kT) attend_scores(qh, j->kT + kh * j->dk * j->S, 1, j->S, S, j->dk, j->scale, scores);
  else attend_scores(qh, j->kc + kh * j->dk, 0, j->Hk * j->dk, S, j->dk, j->scale, scores);
  attend_softmax_v(scores, j->vc + kh * j->dv, j->out + (r * j->H + h) * j->dv, S, j->Hk * j->dv, j->dv);
}

/* kT[(kh·dk + i)·S + t] = kc[(t·Hk + kh)·dk + i]: a copy (AVX-512: 16 positions per gather). */
static void att_transpose_c(const float* kc, float* kT, int64_t S, int64_t Hk, int64_t dk) {
  for (int64_t t = 0; t < S; t++)
    for (int64_t kh = 0; kh < Hk; kh++)
      for (int64_t i = 0; i < dk; i++) kT[(kh * dk + i) * S + t] = kc[(t * Hk + kh) * dk + i];
}

#if DMM_Z
__attribute__((target("avx512f"))) static void att_transpose_z(const float* kc, float* kT, int64_t S, int64_t Hk, int64_t dk) {
  const int64_t ks = Hk * dk;
  const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32((int)ks));
  int64_t t = 0;
  for (; t + 16 <= S; t += 16)
    for (int64_t c = 0; c < ks; c++) _mm512_storeu_ps(kT + c * S + t, _mm512_i32gather_ps(idx, kc + t * ks + c, 4));
  for (; t < S; t++)
    for (int64_t c = 0; c < ks; c++) kT[c * S + t] = kc[t * ks + c];
}
#endif

static void att_transpose(const float* kc, float* kT, int64_t S, int64_t Hk, int64_t dk) {
#if DMM_Z
  /* 16 positions' offsets must fit the gather's 32-bit indices */
  if (__builtin_cpu_supports("avx512f") && 16 * Hk * dk < INT32_MAX) {
    att_transpose_z(kc, kT, S, Hk, dk);
    return;
  }
#endif
  att_transpose_c(kc, kT, S, Hk, dk);
}

/* Query heads per KV head (rows of the call x heads of a group) from which the keys are transposed first (each query head then reads them contiguously). */
#define ATT_TRANSPOSE_ROWS 4

/* Float multiply-adds below which one call stays on the calling thread (a decode row). */
#define ATT_MT_FMAS (256 * 1024)

/* ------------------------------------------------------------------ SwiGLU FFN of M rows */

/*
 * e^x in double for silu: detmath.h's dm_exp without branches (x clamped to ±700, where
 * g / (1 + e^−g) no longer changes in float), so a loop of them runs in vector lanes, with the
 * same bits as dm_exp (and on every machine).
 */
static inline double silu_exp(double x) {
  x = x < -700.0 ? -700.0 : x > 700.0 ? 700.0 : x;
  const double kd = (x * DM_INV_LN2 + 6755399441055744.0) - 6755399441055744.0;
  const double r = (x - kd * DM_LN2_HI) - kd * DM_LN2_LO;
  /* 2^k without a double-to-integer conversion (none in AVX-512F, so the loop would not
   * vectorise): 2^52 + 1023 + k holds k + 1023 in its low mantissa bits, shifted into the
   * exponent field. */
  const double biased = kd + (4503599627370496.0 + 1023.0);
  uint64_t bits;
  memcpy(&bits, &biased, sizeof bits);
  bits <<= 52;
  double scale;
  memcpy(&scale, &bits, sizeof scale);
  return dm_exp_reduced(r) * scale;
}

/* act[i] = silu(g[i]) · u[i] in double, rounded once (the JS path's formula, with silu_exp). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "fma", "default")))
#endif
static void swiglu(float* restrict g, const float* restrict u, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    const double x = (double)g[i];
    g[i] = (float)(x / (1.0 + silu_exp(-x)) * (double)u[i]);
  }
}

/* y[M,d] = (silu(x·Wg) ⊙ (x·Wu))·Wd; gu: scratch of 2·M·h floats. */
static void ffn_run(const float* x, const float* Wg, const float* Wu, const float* Wd, float* y, int64_t M, int64_t d, int64_t h, float* gu,
                    int threads) {
  float* g = gu;
  float* u = gu + M * h;
  decode_matmul_run(x, Wg, g, M, d, h, threads);
  decode_matmul_run(x, Wu, u, M, d, h, threads);
  swiglu(g, u, M * h);
  decode_matmul_run(g, Wd, y, M, h, d, threads);
}

/* ------------------------------------------------------------------ N-API */

/* decodeMatmul(x, W, y, M, K, N, threads) */
static napi_value decode_matmul(napi_env env, napi_callback_info info) {
  ARGS(7);
  F32(0, x, nx);
  F32(1, W, nw);
  F32(2, y, ny);
  INT(3, M);
  INT(4, K);
  INT(5, N);
  INT(6, threads);
  SIZE("decodeMatmul", mk, M, K);
  SIZE("decodeMatmul", kn, K, N);
  SIZE("decodeMatmul", mn, M, N);
  NEED("decodeMatmul", nx, mk, "sizes do not match the arrays");
  NEED("decodeMatmul", nw, kn, "sizes do not match the arrays");
  NEED("decodeMatmul", ny, mn, "sizes do not match the arrays");
  RANGE("decodeMatmul", threads, 0, 1024, "threads must be in 0..1024");
  decode_matmul_run(x, W, y, M, K, N, (int)threads);
  return undef(env);
}

/* decodeAttend(q, kCache, vCache, out, S, H, Hk, dk, dv, scale) */
static napi_value decode_attend(napi_env env, napi_callback_info info) {
  ARGS(10);
  F32(0, q, nq);
  F32(1, kc, nk);
  F32(2, vc, nv);
  F32(3, out, no);
  INT(4, S);
  INT(5, H);
  INT(6, Hk);
  INT(7, dk);
  INT(8, dv);
  DBL(9, scale);
  RANGE("decodeAttend", S, 1, INT64_MAX, "S must be >= 1");
  RANGE("decodeAttend", H, 1, INT64_MAX, "H must be >= 1");
  RANGE("decodeAttend", Hk, 1, H, "Hk must be in 1..H");
  RANGE("decodeAttend", dk, 1, INT64_MAX, "dk must be >= 1");
  RANGE("decodeAttend", dv, 1, INT64_MAX, "dv must be >= 1");
  if (H % Hk != 0) return bad_arg(env, "decodeAttend", "H must be a multiple of Hk"), NULL;
  SIZE("decodeAttend", hdk, H, dk);
  SIZE("decodeAttend", shdk, S, Hk, dk);
  SIZE("decodeAttend", shdv, S, Hk, dv);
  SIZE("decodeAttend", hdv, H, dv);
  NEED("decodeAttend", nq, hdk, "sizes do not match the arrays");
  NEED("decodeAttend", nk, shdk, "sizes do not match the arrays");
  NEED("decodeAttend", nv, shdv, "sizes do not match the arrays");
  NEED("decodeAttend", no, hdv, "sizes do not match the arrays");
  float* scores = (float*)malloc(sizeof(float) * (size_t)S);
  if (!scores) {
    napi_throw_error(env, NULL, "moecat_native.decodeAttend: out of memory");
    return NULL;
  }
  attend_row(q, kc, vc, out, S, H, Hk, dk, dv, (float)scale, scores);
  free(scores);
  return undef(env);
}

/* decodeAttendRows(q, kCache, vCache, out, S0, n, H, Hk, dk, dv, scale, threads): n rows of one
 * sequence at positions S0..S0+n-1, each attending positions 0..its own (the cache holds them). */
static napi_value decode_attend_rows(napi_env env, napi_callback_info info) {
  ARGS(12);
  F32(0, q, nq);
  F32(1, kc, nk);
  F32(2, vc, nv);
  F32(3, out, no);
  INT(4, S0);
  INT(5, n);
  INT(6, H);
  INT(7, Hk);
  INT(8, dk);
  INT(9, dv);
  DBL(10, scale);
  INT(11, threads);
  RANGE("decodeAttendRows", S0, 0, INT32_MAX, "S0 must be in 0..2^31-1");
  RANGE("decodeAttendRows", n, 1, INT32_MAX, "n must be in 1..2^31-1");
  RANGE("decodeAttendRows", H, 1, INT32_MAX, "H must be in 1..2^31-1");
  RANGE("decodeAttendRows", Hk, 1, H, "Hk must be in 1..H");
  RANGE("decodeAttendRows", dk, 1, INT32_MAX, "dk must be in 1..2^31-1");
  RANGE("decodeAttendRows", dv, 1, INT32_MAX, "dv must be in 1..2^31-1");
  RANGE("decodeAttendRows", threads, 0, 1024, "threads must be in 0..1024");
  if (H % Hk != 0) return bad_arg(env, "decodeAttendRows", "H must be a multiple of Hk"), NULL;
  const int64_t S = S0 + n; /* positions the last row attends */
  SIZE("decodeAttendRows", nhdk, n, H, dk);
  SIZE("decodeAttendRows", nhdv, n, H, dv);
  SIZE("decodeAttendRows", shdk, S, Hk, dk);
  SIZE("decodeAttendRows", shdv, S, Hk, dv);
  NEED("decodeAttendRows", nq, nhdk, "sizes do not match the arrays");
  NEED("decodeAttendRows", nk, shdk, "sizes do not match the arrays");
  NEED("decodeAttendRows", nv, shdv, "sizes do not match the arrays");
  NEED("decodeAttendRows", no, nhdv, "sizes do not match the arrays");
  int nt = threads < 1 ? pool_threads() : (int)threads;
  /* Multiply-adds of the call: each row reads S0+r+1 positions of dk+dv floats per head. */
  const double fmas = (double)H * (double)(dk + dv) * ((double)n * (double)S0 + (double)n * (double)(n + 1) / 2.0);
  if (fmas < ATT_MT_FMAS || n * H < 2) nt = 1;
  float* scores = (float*)malloc(sizeof(float) * (size_t)S * (size_t)nt);
  /* Query heads that read each KV head in this call (rows x heads per group: absorbed MLA's
   * shared latent has all H): past a few, transposing the keys once pays. */
  const int transpose = n * (H / Hk) >= ATT_TRANSPOSE_ROWS;
  float* kT = transpose ? (float*)malloc(sizeof(float) * (size_t)shdk) : NULL;
  if (!scores || (transpose && !kT)) {
    free(scores);
    free(kT);
    napi_throw_error(env, NULL, "moecat_native.decodeAttendRows: out of memory");
    return NULL;
  }
  if (kT) att_transpose(kc, kT, S, Hk, dk);
  AttJob j = {q, kc, vc, out, kT, S0, S, H, Hk, dk, dv, (float)scale, scores};
  pool_run(n * H, att_task, &j, nt);
  free(kT);
  free(scores);
  return undef(env);
}

/* decodeFfn(x, Wg, Wu, Wd, y, M, d, h, threads): y[M,d] = (silu(x·Wg) ⊙ (x·Wu))·Wd */
static napi_value decode_ffn(napi_env env, napi_callback_info info) {
  ARGS(9);
  F32(0, x, nx);
  F32(1, wg, ng);
  F32(2, wu, nu);
  F32(3, wd, nd);
  F32(4, y, ny);
  INT(5, M);
  INT(6, d);
  INT(7, h);
  INT(8, threads);
  RANGE("decodeFfn", M, 1, INT32_MAX, "M must be in 1..2^31-1");
  RANGE("decodeFfn", d, 1, INT32_MAX, "d must be in 1..2^31-1");
  RANGE("decodeFfn", h, 1, INT32_MAX, "h must be in 1..2^31-1");
  RANGE("decodeFfn", threads, 0, 1024, "threads must be in 0..1024");
  SIZE("decodeFfn", md, M, d);
  SIZE("decodeFfn", dh, d, h);
  SIZE("decodeFfn", mh2, M, h, 2);
  NEED("decodeFfn", nx, md, "sizes do not match the arrays");
  NEED("decodeFfn", ng, dh, "sizes do not match the arrays");
  NEED("decodeFfn", nu, dh, "sizes do not match the arrays");
  NEED("decodeFfn", nd, dh, "sizes do not match the arrays");
  NEED("decodeFfn", ny, md, "sizes do not match the arrays");
  float* gu = (float*)malloc(sizeof(float) * (size_t)mh2);
  if (!gu) {
    napi_throw_error(env, NULL, "moecat_native.decodeFfn: out of memory");
    return NULL;
  }
  ffn_run(x, wg, wu, wd, y, M, d, h, gu, (int)threads);
  free(gu);
  return undef(env);
}

/*
 * decodeTrim() -> boolean: hands the C heap's free pages back to the system (glibc's
 * malloc_trim over every arena; false where the C library has none). The server calls it when
 * it goes idle: the buffers of a load's requests (typed arrays, kernel scratch) are freed by
 * then, but glibc keeps freed pages in its arenas, so without it RSS stays at the load's peak.
 */
static napi_value decode_trim(napi_env env, napi_callback_info info) {
  (void)info;
  int done = 0;
#if defined(__GLIBC__)
  malloc_trim(0);
  done = 1;
#endif
  napi_value r;
  CHECK(napi_get_boolean(env, done, &r));
  return r;
}

/* Called from the module's init (moecat_native.c). */
int moecat_decode_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"decodeMatmul", NULL, decode_matmul, NULL, NULL, NULL, napi_default, NULL},
      {"decodeAttend", NULL, decode_attend, NULL, NULL, NULL, napi_default, NULL},
      {"decodeAttendRows", NULL, decode_attend_rows, NULL, NULL, NULL, napi_default, NULL},
      {"decodeFfn", NULL, decode_ffn, NULL, NULL, NULL, napi_default, NULL},
      {"decodeTrim", NULL, decode_trim, NULL, NULL, NULL, napi_default, NULL},
  };
  return napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props) == napi_ok;
}
