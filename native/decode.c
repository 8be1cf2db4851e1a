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

/* Called from the module's init (moecat_native.c). */
int moecat_decode_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"decodeMatmul", NULL, decode_matmul, NULL, NULL, NULL, napi_default, NULL},
      {"decodeAttend", NULL, decode_attend, NULL, NULL, NULL, napi_default, NULL},
  };
  return napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props) == napi_ok;
}
