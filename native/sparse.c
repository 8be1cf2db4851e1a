/*
 * CHESS selective sparse kernels (arXiv 2409.01366, section 3.4) for the serving engine's
 * batched decode path (inference/hostDecode.ts), over all M rows of a decode step at once.
 *
 * sparseFfn: the SwiGLU FFN after its gate projection (the caller runs the gate densely for all
 * rows with decodeMatmul: CHESS thresholds the gate activation, so the gate cannot be skipped).
 * Row r keeps channel c iff |silu(g[r,c])| >= tau[c]. The up projection is stored transposed
 * ([h, d]) and the down projection is [h, d], so a channel is one contiguous row in each: a
 * skipped channel's rows are never read. Work is split by blocks of kept channels (up) and of
 * output columns (down), and inside a block every row of the step is served, so a kept weight row
 * comes from memory once per step and from cache for the other rows that keep it.
 *
 * sparseRows: y[r] = sum over inputs i with |x[r,i]| >= tau of x[r,i] * W[i, :] (the q-projection
 * and o_proj inputs of CHESS's selective attention sparsification); W is [in, out], so a skipped
 * input is a contiguous row never read.
 *
 * Determinism: every output element is one fixed chain of float operations over its own row's
 * kept channels in ascending order, from zero: up a_u[r,c] = an eight-lane dot product of x[r]
 * with WuT[c] (lane l sums inputs i = l mod 8 ascending, lanes added in a fixed tree), then
 * act = (float)(silu in double * a_u); down y[r,j] = fmaf chain over kept c ascending of
 * act[r,c] * Wd[c,j]. No sum ever mixes rows, and threads split whole channels (up) or whole
 * output columns (down, sparseRows), never a sum. So a row's bits are the same alone or inside
 * any batch, and for every thread count.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <node_api.h>
#include "napi_args.h"
#include "pool.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define SPARSE_X86 1
#include <immintrin.h>
/* AVX2 + FMA lanes compute exactly what the portable fmaf loops compute (same bits). Set once by
 * moecat_sparse_register, before any kernel runs on any thread. */
static int avx2_fma = 0;
static int has_avx2_fma(void) {
  return avx2_fma;
}
#else
#define SPARSE_X86 0
#endif

#define UP_CHANNELS 32 /* union channels per up task */
#define ACC_COLS 64    /* output columns per accumulate task: one row's accumulators in registers */
#define MT_BYTES (1024 * 1024) /* fewer weight bytes than this run on the calling thread */

/* Per row: its kept columns (ascending) in idx[r*K ..], their count in cnt[r]; the union over
 * rows (ascending) in uni. Returns the union's size. */
static int64_t kept_lists(const uint8_t* keep, int64_t M, int64_t K, int32_t* idx, int64_t* cnt, int32_t* uni) {
  int64_t n = 0;
  for (int64_t r = 0; r < M; r++) cnt[r] = 0;
  for (int64_t c = 0; c < K; c++) {
    int any = 0;
    for (int64_t r = 0; r < M; r++) {
      if (!keep[r * K + c]) continue;
      idx[r * K + cnt[r]++] = (int32_t)c;
      any = 1;
    }
    if (any) uni[n++] = (int32_t)c;
  }
  return n;
}

/* ------------------------------------------------------------------ accumulate kept rows */

/* y[r, :] = sum over row r's kept inputs c (ascending) of a[r,c] * W[c, :]. */
typedef struct {
  const float* a; /* [M, K] coefficients */
  const int32_t* idx;
  const int64_t* cnt;
  const float* W; /* [K, N] */
  float* y;       /* [M, N] */
  int64_t M, K, N;
} AccJob;

/* out[0..nc) = sum over the n listed rows c of a[c] * W[c, j0 ..] (one fmaf chain per column from
 * zero, rows in order); nc is ACC_COLS or less (the last strip). */
static void acc_strip_c(const float* a, const int32_t* idx, int64_t n, const float* W, int64_t N, int64_t j0, int64_t nc, float* out) {
  float acc[ACC_COLS];
  for (int64_t q = 0; q < nc; q++) acc[q] = 0.0f;
  for (int64_t k = 0; k < n; k++) {
    const float av = a[idx[k]];
    const float* w = W + (int64_t)idx[k] * N + j0;
    for (int64_t q = 0; q < nc; q++) acc[q] = fmaf(av, w[q], acc[q]);
  }
  memcpy(out, acc, sizeof(float) * (size_t)nc);
}

#if SPARSE_X86
/* The same chains, eight columns per AVX2 lane group (an FMA lane is one fmaf). */
__attribute__((target("avx2,fma"))) static void acc_strip64_avx2(const float* a, const int32_t* idx, int64_t n, const float* W, int64_t N,
                                                               int64_t j0, float* out) {
  __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0;
  for (int64_t k = 0; k < n; k++) {
    const __m256 av = _mm256_set1_ps(a[idx[k]]);
    const float* w = W + (int64_t)idx[k] * N + j0;
    c0 = _mm256_fmadd_ps(av, _mm256_loadu_ps(w), c0);
    c1 = _mm256_fmadd_ps(av, _mm256_loadu_ps(w + 8), c1);
    c2 = _mm256_fmadd_ps(av, _mm256_loadu_ps(w + 16), c2);
    c3 = _mm256_fmadd_ps(av, _mm256_loadu_ps(w + 24), c3);
    c4 = _mm256_fmadd_ps(av, _mm256_loadu_ps(w + 32), c4);
    c5 = _mm256_fmadd_ps(av, _mm256_loadu_ps(w + 40), c5);
    c6 = _mm256_fmadd_ps(av, _mm256_loadu_ps(w + 48), c6);
    c7 = _mm256_fmadd_ps(av, _mm256_loadu_ps(w + 56), c7);
  }
  _mm256_storeu_ps(out, c0);
  _mm256_storeu_ps(out + 8, c1);
  _mm256_storeu_ps(out + 16, c2);
  _mm256_storeu_ps(out + 24, c3);
  _mm256_storeu_ps(out + 32, c4);
  _mm256_storeu_ps(out + 40, c5);
  _mm256_storeu_ps(out + 48, c6);
  _mm256_storeu_ps(out + 56, c7);
}
#endif

#if SPARSE_X86
/* A last strip of nc < ACC_COLS columns, nc a multiple of 8. */
__attribute__((target("avx2,fma"))) static void acc_strip8_avx2(const float* a, const int32_t* idx, int64_t n, const float* W, int64_t N,
                                                              int64_t j0, int64_t nc, float* out) {
  __m256 c[ACC_COLS / 8];
  const int nb = (int)(nc / 8);
  for (int b = 0; b < nb; b++) c[b] = _mm256_setzero_ps();
  for (int64_t k = 0; k < n; k++) {
    const __m256 av = _mm256_set1_ps(a[idx[k]]);
    const float* w = W + (int64_t)idx[k] * N + j0;
    for (int b = 0; b < nb; b++) c[b] = _mm256_fmadd_ps(av, _mm256_loadu_ps(w + 8 * b), c[b]);
  }
  for (int b = 0; b < nb; b++) _mm256_storeu_ps(out + 8 * b, c[b]);
}
#endif

static void acc_strip(const float* a, const int32_t* idx, int64_t n, const float* W, int64_t N, int64_t j0, int64_t nc, float* out) {
#if SPARSE_X86
  if (has_avx2_fma() && nc == ACC_COLS) return acc_strip64_avx2(a, idx, n, W, N, j0, out);
  if (has_avx2_fma() && nc % 8 == 0) return acc_strip8_avx2(a, idx, n, W, N, j0, nc, out);
#endif
  acc_strip_c(a, idx, n, W, N, j0, nc, out);
}

/* Columns [j0, j0+nc) of every row: the row's accumulators stay in registers while its kept
 * rows of W stream past (the strip of W stays in cache for the next row). */
static void acc_cols(const AccJob* j, int64_t j0, int64_t nc) {
  for (int64_t r = 0; r < j->M; r++) acc_strip(j->a + r * j->K, j->idx + r * j->K, j->cnt[r], j->W, j->N, j0, nc, j->y + r * j->N + j0);
}

static void acc_task(void* ctx, int64_t t, int slot) {
  (void)slot;
  const AccJob* j = (const AccJob*)ctx;
  const int64_t j0 = t * ACC_COLS;
  acc_cols(j, j0, j->N - j0 < ACC_COLS ? j->N - j0 : ACC_COLS);
}

static void accumulate(const AccJob* j, int64_t nuni, int threads) {
  if ((double)nuni * (double)j->N * 4.0 < MT_BYTES) threads = 1;
  pool_run((j->N + ACC_COLS - 1) / ACC_COLS, acc_task, (void*)j, threads);
}

/* ------------------------------------------------------------------ up projection of kept channels */

typedef struct {
  const float* x;   /* [M, d] */
  const float* WuT; /* [h, d] */
  const double* sg; /* [M, h] silu(gate) */
  const uint8_t* keep;
  const int32_t* uni;
  int64_t nuni;
  float* act; /* [M, h] */
  int64_t M, d, h;
} UpJob;

/* Eight-lane dot product of x with row u: lane l sums inputs i = l mod 8 (ascending) in one fmaf
 * chain, the lanes added in a fixed tree. */
static float lanes_sum(const float* l) {
  return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

static float dot8_c(const float* x, const float* u, int64_t d) {
  float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= d; i += 8)
    for (int l = 0; l < 8; l++) lane[l] = fmaf(x[i + l], u[i + l], lane[l]);
  for (int l = 0; i < d; i++, l++) lane[l] = fmaf(x[i], u[i], lane[l]);
  return lanes_sum(lane);
}

#if SPARSE_X86
/* dot8 of x with four rows at once, one AVX2 register of lanes per row (four independent chains
 * hide the fma latency); each result is exactly dot8_c's. */
__attribute__((target("avx2,fma"))) static void dot8x4_avx2(const float* x, const float* const* u, int64_t d, float* out) {
  __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  int64_t i = 0;
  for (; i + 8 <= d; i += 8) {
    const __m256 xv = _mm256_loadu_ps(x + i);
    s0 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(u[0] + i), s0);
    s1 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(u[1] + i), s1);
    s2 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(u[2] + i), s2);
    s3 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(u[3] + i), s3);
  }
  float l[4][8];
  _mm256_storeu_ps(l[0], s0);
  _mm256_storeu_ps(l[1], s1);
  _mm256_storeu_ps(l[2], s2);
  _mm256_storeu_ps(l[3], s3);
  for (int c = 0; c < 4; c++) {
    for (int64_t t = i, k = 0; t < d; t++, k++) l[c][k] = fmaf(x[t], u[c][t], l[c][k]);
    out[c] = lanes_sum(l[c]);
  }
}
#endif

/* au[k] = dot8(x, u[k]) for k < n (n <= 4). */
static void dots(const float* x, const float* const* u, int n, int64_t d, float* au) {
#if SPARSE_X86
  if (n == 4 && has_avx2_fma()) return dot8x4_avx2(x, u, d, au);
#endif
  for (int k = 0; k < n; k++) au[k] = dot8_c(x, u[k], d);
}

static void up_task(void* ctx, int64_t t, int slot) {
  (void)slot;
  const UpJob* j = (const UpJob*)ctx;
  const int64_t end = (t + 1) * UP_CHANNELS < j->nuni ? (t + 1) * UP_CHANNELS : j->nuni;
  for (int64_t r = 0; r < j->M; r++) {
    const float* xr = j->x + r * j->d;
    int64_t ch[4];
    const float* rows[4];
    float au[4];
    int n = 0;
    for (int64_t u = t * UP_CHANNELS; u <= end; u++) {
      if (u < end) {
        const int64_t c = j->uni[u];
        if (!j->keep[r * j->h + c]) continue;
        ch[n] = c;
        rows[n++] = j->WuT + c * j->d;
        if (n < 4) continue;
      }
      if (n == 0) continue;
      dots(xr, rows, n, j->d, au);
      for (int k = 0; k < n; k++) j->act[r * j->h + ch[k]] = (float)(j->sg[r * j->h + ch[k]] * (double)au[k]);
      n = 0;
    }
  }
}

/* ------------------------------------------------------------------ entry kernels */

/* Returns the (row, channel) pairs kept, or -1 when out of memory (nothing written). */
static int64_t sparse_ffn_run(const float* x, const float* g, const float* WuT, const float* Wd, const float* tau, float* y, int64_t M,
                              int64_t d, int64_t h, int threads) {
  double* sg = (double*)malloc(sizeof(double) * (size_t)(M * h));
  float* act = (float*)malloc(sizeof(float) * (size_t)(M * h));
  uint8_t* keep = (uint8_t*)malloc((size_t)(M * h));
  int32_t* idx = (int32_t*)malloc(sizeof(int32_t) * (size_t)(M * h));
  int64_t* cnt = (int64_t*)malloc(sizeof(int64_t) * (size_t)M);
  int32_t* uni = (int32_t*)malloc(sizeof(int32_t) * (size_t)h);
  if (!sg || !act || !keep || !idx || !cnt || !uni) {
    free(sg), free(act), free(keep), free(idx), free(cnt), free(uni);
    return -1;
  }
  int64_t kept = 0;
  for (int64_t r = 0; r < M; r++) {
    for (int64_t c = 0; c < h; c++) {
      const double gv = (double)g[r * h + c];
      const double s = gv / (1.0 + exp(-gv));
      sg[r * h + c] = s;
      kept += keep[r * h + c] = fabsf((float)s) >= tau[c];
    }
  }
  const int64_t nuni = kept_lists(keep, M, h, idx, cnt, uni);
  UpJob up = {x, WuT, sg, keep, uni, nuni, act, M, d, h};
  pool_run((nuni + UP_CHANNELS - 1) / UP_CHANNELS, up_task, &up, (double)nuni * (double)d * 4.0 < MT_BYTES ? 1 : threads);
  AccJob down = {act, idx, cnt, Wd, y, M, h, d};
  accumulate(&down, nuni, threads);
  free(sg), free(act), free(keep), free(idx), free(cnt), free(uni);
  return kept;
}

static int64_t sparse_rows_run(const float* x, const float* W, float* y, int64_t M, int64_t K, int64_t N, float tau, int threads) {
  uint8_t* keep = (uint8_t*)malloc((size_t)(M * K));
  int32_t* idx = (int32_t*)malloc(sizeof(int32_t) * (size_t)(M * K));
  int64_t* cnt = (int64_t*)malloc(sizeof(int64_t) * (size_t)M);
  int32_t* uni = (int32_t*)malloc(sizeof(int32_t) * (size_t)K);
  if (!keep || !idx || !cnt || !uni) {
    free(keep), free(idx), free(cnt), free(uni);
    return -1;
  }
  int64_t kept = 0;
  for (int64_t i = 0; i < M * K; i++) kept += keep[i] = fabsf(x[i]) >= tau;
  const int64_t nuni = kept_lists(keep, M, K, idx, cnt, uni);
  AccJob j = {x, idx, cnt, W, y, M, K, N};
  accumulate(&j, nuni, threads);
  free(keep), free(idx), free(cnt), free(uni);
  return kept;
}

/* ------------------------------------------------------------------ N-API */

static napi_value kept_or_oom(napi_env env, const char* fn, int64_t kept) {
  if (kept < 0) {
    char msg[96];
    snprintf(msg, sizeof msg, "moecat_native.%s: out of memory", fn);
    napi_throw_error(env, NULL, msg);
    return NULL;
  }
  napi_value r;
  CHECK(napi_create_int64(env, kept, &r));
  return r;
}

/* sparseFfn(x, g, WuT, Wd, tau, y, M, d, h, threads) -> (row, channel) pairs kept */
static napi_value sparse_ffn(napi_env env, napi_callback_info info) {
  ARGS(10);
  F32(0, x, nx);
  F32(1, g, ng);
  F32(2, wu, nu);
  F32(3, wd, nd);
  F32(4, tau, nt);
  F32(5, y, ny);
  INT(6, M);
  INT(7, d);
  INT(8, h);
  INT(9, threads);
  RANGE("sparseFfn", M, 1, INT64_MAX, "M must be >= 1");
  RANGE("sparseFfn", d, 1, INT64_MAX, "d must be >= 1");
  RANGE("sparseFfn", h, 1, INT32_MAX, "h must be in 1..2^31-1");
  RANGE("sparseFfn", threads, 0, 1024, "threads must be in 0..1024");
  SIZE("sparseFfn", md, M, d);
  SIZE("sparseFfn", mh, M, h);
  SIZE("sparseFfn", dh, d, h);
  NEED("sparseFfn", nx, md, "sizes do not match the arrays");
  NEED("sparseFfn", ng, mh, "sizes do not match the arrays");
  NEED("sparseFfn", nu, dh, "sizes do not match the arrays");
  NEED("sparseFfn", nd, dh, "sizes do not match the arrays");
  NEED("sparseFfn", nt, h, "sizes do not match the arrays");
  NEED("sparseFfn", ny, md, "sizes do not match the arrays");
  return kept_or_oom(env, "sparseFfn", sparse_ffn_run(x, g, wu, wd, tau, y, M, d, h, (int)threads));
}

/* sparseRows(x, W, y, M, K, N, tau, threads) -> (row, input) pairs kept */
static napi_value sparse_rows(napi_env env, napi_callback_info info) {
  ARGS(8);
  F32(0, x, nx);
  F32(1, W, nw);
  F32(2, y, ny);
  INT(3, M);
  INT(4, K);
  INT(5, N);
  DBL(6, tau);
  INT(7, threads);
  RANGE("sparseRows", M, 1, INT64_MAX, "M must be >= 1");
  RANGE("sparseRows", K, 1, INT32_MAX, "K must be in 1..2^31-1");
  RANGE("sparseRows", N, 1, INT64_MAX, "N must be >= 1");
  RANGE("sparseRows", threads, 0, 1024, "threads must be in 0..1024");
  if (!(tau >= 0.0 && tau <= 3.4e38)) return bad_arg(env, "sparseRows", "tau must be a finite number >= 0"), NULL;
  SIZE("sparseRows", mk, M, K);
  SIZE("sparseRows", kn, K, N);
  SIZE("sparseRows", mn, M, N);
  NEED("sparseRows", nx, mk, "sizes do not match the arrays");
  NEED("sparseRows", nw, kn, "sizes do not match the arrays");
  NEED("sparseRows", ny, mn, "sizes do not match the arrays");
  return kept_or_oom(env, "sparseRows", sparse_rows_run(x, W, y, M, K, N, (float)tau, (int)threads));
}

/* Called from the module's init (moecat_native.c). */
int moecat_sparse_register(napi_env env, napi_value exports) {
#if SPARSE_X86
  __builtin_cpu_init();
  avx2_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
  napi_property_descriptor props[] = {
      {"sparseFfn", NULL, sparse_ffn, NULL, NULL, NULL, napi_default, NULL},
      {"sparseRows", NULL, sparse_rows, NULL, NULL, NULL, napi_default, NULL},
  };
  return napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props) == napi_ok;
}
