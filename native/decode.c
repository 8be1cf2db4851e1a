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
 * decodeSparseRows / decodeSparseFfn: CHESS (arXiv 2409.01366) on one row: inputs or FFN
 * channels below their threshold are skipped, and so are the weight rows they would read.
 *
 * decodeAttend: one query row against one sequence's cache, all heads: scores q·k (fmaf chain
 * over the head dimension), scaled, softmax (max, exp in double, sum in double in position
 * order), output Σ p_t v_t (fmaf chain over positions). A fixed sequence of float operations
 * for a given length: deterministic, and independent of every other row.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <node_api.h>
#include "gemm.h"
#include "napi_args.h"
#include "pool.h"

#define DMM_COLS 64      /* output columns per task */
#define DMM_MAX_ROWS 4   /* more rows than this go to gemm (same bits; its packed tiles win there) */

typedef struct {
  const float *x, *W;
  float* y;
  int64_t M, K, N;
} DmmJob;

/*
 * Columns [j0, j0+nc) of every row: the accumulators of one row's strip live in registers
 * (DMM_COLS floats), k ascending; the strip of W (K x DMM_COLS) stays in cache for the next row.
 */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("fma", "default")))
#endif
static void dmm_cols(const float* restrict x, const float* restrict W, float* restrict y, int64_t M, int64_t K, int64_t N, int64_t j0,
                     int64_t nc) {
  int64_t r = 0;
  /* Four rows at a time over 32-column halves of the strip: 4 x 32 accumulators in registers,
   * each W row segment loaded once for the four rows. */
  if (nc == DMM_COLS) {
    for (; r + 4 <= M; r += 4) {
      for (int64_t h = 0; h < DMM_COLS; h += 32) {
        float a0[32], a1[32], a2[32], a3[32];
        for (int j = 0; j < 32; j++) a0[j] = a1[j] = a2[j] = a3[j] = 0.0f;
        const float* x0 = x + r * K;
        const float* x1 = x0 + K;
        const float* x2 = x1 + K;
        const float* x3 = x2 + K;
        for (int64_t k = 0; k < K; k++) {
          const float* w = W + k * N + j0 + h;
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
  }
  for (; r < M; r++) {
    const float* xr = x + r * K;
    float acc[DMM_COLS];
    if (nc == DMM_COLS) {
      for (int j = 0; j < DMM_COLS; j++) acc[j] = 0.0f;
      for (int64_t k = 0; k < K; k++) {
        const float xv = xr[k];
        const float* w = W + k * N + j0;
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

/* One row, every column strip (the calling thread). */
static void dmm_cols_all(const float* x, const float* W, float* y, int64_t K, int64_t N) {
  for (int64_t j0 = 0; j0 < N; j0 += DMM_COLS) dmm_cols(x, W, y, 1, K, N, j0, N - j0 < DMM_COLS ? N - j0 : DMM_COLS);
}

static void dmm_task(void* ctx, int64_t t, int slot) {
  (void)slot;
  const DmmJob* j = (const DmmJob*)ctx;
  const int64_t j0 = t * DMM_COLS;
  const int64_t nc = j->N - j0 < DMM_COLS ? j->N - j0 : DMM_COLS;
  dmm_cols(j->x, j->W, j->y, j->M, j->K, j->N, j0, nc);
}

/* Weights below this many bytes are read on the calling thread (waking a worker costs more). */
#define DMM_MT_BYTES (1024 * 1024)

static void decode_matmul_run(const float* x, const float* W, float* y, int64_t M, int64_t K, int64_t N, int threads) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    memset(y, 0, sizeof(float) * (size_t)(M * N));
    return;
  }
  if (M > DMM_MAX_ROWS) {
    gemm_batched(1, 1, 1, M, N, K, 0, 0, x, W, y, threads);
    return;
  }
  DmmJob j = {x, W, y, M, K, N};
  const int64_t tasks = (N + DMM_COLS - 1) / DMM_COLS;
  if ((double)K * (double)N * 4.0 < DMM_MT_BYTES) threads = 1;
  pool_run(tasks, dmm_task, &j, threads);
}

/* ------------------------------------------------------------------ attention of one row */

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("fma", "default")))
#endif
static void attend_row(const float* q, const float* kc, const float* vc, float* out, int64_t S, int64_t H, int64_t Hk, int64_t dk,
                       int64_t dv, float scale, float* scores) {
  const int64_t g = H / Hk;
  for (int64_t h = 0; h < H; h++) {
    const int64_t kh = h / g;
    const float* qh = q + h * dk;
    float max = -INFINITY;
    /* Four positions at a time: four independent chains (each still k ascending) hide the fma latency. */
    int64_t t = 0;
    for (; t + 4 <= S; t += 4) {
      const float* k0 = kc + (t * Hk + kh) * dk;
      const float* k1 = k0 + Hk * dk;
      const float* k2 = k1 + Hk * dk;
      const float* k3 = k2 + Hk * dk;
      float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
      for (int64_t i = 0; i < dk; i++) {
        s0 = fmaf(qh[i], k0[i], s0);
        s1 = fmaf(qh[i], k1[i], s1);
        s2 = fmaf(qh[i], k2[i], s2);
        s3 = fmaf(qh[i], k3[i], s3);
      }
      scores[t] = s0 * scale;
      scores[t + 1] = s1 * scale;
      scores[t + 2] = s2 * scale;
      scores[t + 3] = s3 * scale;
    }
    for (; t < S; t++) {
      const float* kt = kc + (t * Hk + kh) * dk;
      float s = 0.0f;
      for (int64_t i = 0; i < dk; i++) s = fmaf(qh[i], kt[i], s);
      scores[t] = s * scale;
    }
    for (t = 0; t < S; t++)
      if (scores[t] > max) max = scores[t];
    double z = 0.0;
    for (t = 0; t < S; t++) {
      const float e = (float)exp((double)scores[t] - (double)max);
      scores[t] = e;
      z += e;
    }
    const float inv = (float)(1.0 / z);
    float* o = out + h * dv;
    for (int64_t i = 0; i < dv; i++) o[i] = 0.0f;
    for (t = 0; t < S; t++) {
      const float p = scores[t] * inv;
      const float* vt = vc + (t * Hk + kh) * dv;
      for (int64_t i = 0; i < dv; i++) o[i] = fmaf(p, vt[i], o[i]);
    }
  }
}

/* ------------------------------------------------------------------ CHESS: activation-sparse rows */

/*
 * y[N] = sum over inputs i with |x_i| >= tau (ascending) of x_i * W[i, :], one fmaf chain per
 * output from zero. With every input kept it is decodeMatmul's chain for one row (same bits).
 * Returns the inputs kept.
 */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("fma", "default")))
#endif
static int64_t sparse_rows(const float* restrict x, const float* restrict W, float* restrict y, int64_t K, int64_t N, float tau) {
  int32_t* idx = (int32_t*)malloc(sizeof(int32_t) * (size_t)(K > 0 ? K : 1));
  if (!idx) abort(); /* a few KiB: nothing sensible remains */
  int64_t kept = 0;
  for (int64_t i = 0; i < K; i++)
    if (fabsf(x[i]) >= tau) idx[kept++] = (int32_t)i;
  /* Column strips with their accumulators in registers, as decodeMatmul's. */
  for (int64_t j0 = 0; j0 < N; j0 += DMM_COLS) {
    const int64_t nc = N - j0 < DMM_COLS ? N - j0 : DMM_COLS;
    float acc[DMM_COLS];
    for (int64_t j = 0; j < nc; j++) acc[j] = 0.0f;
    if (nc == DMM_COLS) {
      for (int64_t r = 0; r < kept; r++) {
        const float xi = x[idx[r]];
        const float* w = W + (int64_t)idx[r] * N + j0;
        for (int j = 0; j < DMM_COLS; j++) acc[j] = fmaf(xi, w[j], acc[j]);
      }
    } else {
      for (int64_t r = 0; r < kept; r++) {
        const float xi = x[idx[r]];
        const float* w = W + (int64_t)idx[r] * N + j0;
        for (int64_t j = 0; j < nc; j++) acc[j] = fmaf(xi, w[j], acc[j]);
      }
    }
    memcpy(y + j0, acc, sizeof(float) * (size_t)nc);
  }
  free(idx);
  return kept;
}

/*
 * CHESS SwiGLU for one row: a_g = silu(x·Wg) densely (rounded to float), keep channel j iff
 * |a_g,j| >= tau_j; the up projection runs only for kept channels (rows of WuT, an eight-lane dot
 * product over the input), act_j = a_g,j * a_u,j (the product in double, rounded once, as the dense JS
 * path does), and the down projection adds only kept rows. ag is scratch of h floats. Returns
 * the channels kept.
 */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("fma", "default")))
#endif
static int64_t sparse_ffn(const float* restrict x, const float* restrict Wg, const float* restrict WuT, const float* restrict Wd,
                          const float* restrict tau, float* restrict y, float* restrict ag, int64_t d, int64_t h) {
  dmm_cols_all(x, Wg, ag, d, h);
  /* Kept channels (ascending) with their silu(gate) in double; ag's slots 0..kept hold the indices. */
  int64_t kept = 0;
  double* sg = (double*)malloc(sizeof(double) * (size_t)h);
  int32_t* idx = (int32_t*)malloc(sizeof(int32_t) * (size_t)h);
  if (!sg || !idx) abort(); /* a few KiB: nothing sensible remains */
  for (int64_t c = 0; c < h; c++) {
    const double g = (double)ag[c];
    const double s = g / (1.0 + exp(-g));
    if (!(fabsf((float)s) >= tau[c])) continue;
    sg[kept] = s;
    idx[kept++] = (int32_t)c;
  }
  /* Up projection of each kept channel: a dot product of x with the channel's row of WuT in
   * eight lanes (lane l sums inputs i = l mod 8, ascending), the lanes added in a fixed tree.
   * Vectorised where a single chain would wait on each fma; deterministic and row-local, but
   * rounded differently from the dense path's single chain (CHESS need not equal dense). */
  for (int64_t r = 0; r < kept; r++) {
    const float* u = WuT + (int64_t)idx[r] * d;
    float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= d; i += 8)
      for (int l = 0; l < 8; l++) lane[l] = fmaf(x[i + l], u[i + l], lane[l]);
    for (int l = 0; i < d; i++, l++) lane[l] = fmaf(x[i], u[i], lane[l]);
    const float au = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
    ag[r] = (float)(sg[r] * (double)au);
  }
  /* Down projection: the kept rows of Wd (ascending) gathered into one block, then
   * decodeMatmul's kernel on it (one fmaf chain per output over the kept rows). */
  float* Wk = (float*)malloc(sizeof(float) * (size_t)((kept > 0 ? kept : 1) * d));
  if (!Wk) abort();
  for (int64_t r = 0; r < kept; r++) memcpy(Wk + r * d, Wd + (int64_t)idx[r] * d, sizeof(float) * (size_t)d);
  if (kept > 0) dmm_cols_all(ag, Wk, y, kept, d);
  else memset(y, 0, sizeof(float) * (size_t)d);
  free(Wk);
  free(sg);
  free(idx);
  return kept;
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

/* decodeSparseRows(x, W, y, K, N, tau) -> inputs kept */
static napi_value decode_sparse_rows(napi_env env, napi_callback_info info) {
  ARGS(6);
  F32(0, x, nx);
  F32(1, W, nw);
  F32(2, y, ny);
  INT(3, K);
  INT(4, N);
  DBL(5, tau);
  SIZE("decodeSparseRows", kn, K, N);
  NEED("decodeSparseRows", nx, K, "sizes do not match the arrays");
  NEED("decodeSparseRows", nw, kn, "sizes do not match the arrays");
  NEED("decodeSparseRows", ny, N, "sizes do not match the arrays");
  napi_value r;
  CHECK(napi_create_int64(env, sparse_rows(x, W, y, K, N, (float)tau), &r));
  return r;
}

/* decodeSparseFfn(x, Wg, WuT, Wd, tau, y, d, h) -> channels kept */
static napi_value decode_sparse_ffn(napi_env env, napi_callback_info info) {
  ARGS(8);
  F32(0, x, nx);
  F32(1, wg, ng);
  F32(2, wu, nu);
  F32(3, wd, nd);
  F32(4, tau, nt);
  F32(5, y, ny);
  INT(6, d);
  INT(7, h);
  RANGE("decodeSparseFfn", d, 1, INT64_MAX, "d must be >= 1");
  RANGE("decodeSparseFfn", h, 1, INT64_MAX, "h must be >= 1");
  SIZE("decodeSparseFfn", dh, d, h);
  NEED("decodeSparseFfn", nx, d, "sizes do not match the arrays");
  NEED("decodeSparseFfn", ng, dh, "sizes do not match the arrays");
  NEED("decodeSparseFfn", nu, dh, "sizes do not match the arrays");
  NEED("decodeSparseFfn", nd, dh, "sizes do not match the arrays");
  NEED("decodeSparseFfn", nt, h, "sizes do not match the arrays");
  NEED("decodeSparseFfn", ny, d, "sizes do not match the arrays");
  float* ag = (float*)malloc(sizeof(float) * (size_t)h);
  if (!ag) {
    napi_throw_error(env, NULL, "moecat_native.decodeSparseFfn: out of memory");
    return NULL;
  }
  const int64_t kept = sparse_ffn(x, wg, wu, wd, tau, y, ag, d, h);
  free(ag);
  napi_value r;
  CHECK(napi_create_int64(env, kept, &r));
  return r;
}

/* Called from the module's init (moecat_native.c). */
int moecat_decode_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"decodeMatmul", NULL, decode_matmul, NULL, NULL, NULL, napi_default, NULL},
      {"decodeAttend", NULL, decode_attend, NULL, NULL, NULL, napi_default, NULL},
      {"decodeSparseRows", NULL, decode_sparse_rows, NULL, NULL, NULL, napi_default, NULL},
      {"decodeSparseFfn", NULL, decode_sparse_ffn, NULL, NULL, NULL, napi_default, NULL},
  };
  return napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props) == napi_ok;
}
