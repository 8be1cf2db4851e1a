/*
 * All FFN experts of one MoE layer in one call each way (model/moe/nativeKernels.ts), with the
 * experts spread over the thread pool. An expert's products are small (small.yaml: about 200
 * rows × 192 × 128, below the GEMM's threading threshold), so threading each product leaves the
 * second core idle; here one pool task runs one expert's whole chain on one thread instead.
 *
 * Bits: a task makes exactly the GEMM calls (shapes, transposes), activation code and final add
 * that the per-expert loop made, and moecat's GEMM gives the same bits for every thread count
 * (gemm.h). Experts write disjoint rows of the outputs (and their own weight gradients), so
 * which thread runs which expert changes nothing. With fewer experts than twice the threads,
 * the experts run one after another and each product uses the pool itself: same bits again.
 *
 * expertsForward(x, ws, offsets, y, g, u, sig, a, d, hid)
 *   x [R, d]; ws: JS array of 3N Float32Arrays (gate [d, hid], up [d, hid], down [hid, d] of
 *   expert 0, then 1, ...); offsets Int32Array [N+1], rows of expert e are [offsets[e],
 *   offsets[e+1]); outputs y [R, d] and g, u, sig, a [R, hid].
 * expertsBackward(x, ws, offsets, g, u, sig, a, dy, dx, dws, da, dg, du, dxu, d, hid)
 *   dws: JS array of 3N Float32Arrays receiving the weight gradients (left untouched for an
 *   expert without rows); da, dg, du [R, hid] and dxu [R, d] are scratch.
 */
#include <stdint.h>
#include <stdlib.h>
#include <node_api.h>
#include "gemm.h"
#include "napi_args.h"
#include "pool.h"
#include "swiglu.h"

/* Most experts one call takes (an array of pointers per call). */
#define MAX_EXPERTS 65536

typedef struct {
  int64_t N, d, hid;
  const int32_t* off;
  const float* x;
  float** w;  /* 3N weights */
  float** dw; /* 3N weight gradients (backward) */
  float *y, *g, *u, *sig, *a;
  const float* dy;
  float *dx, *da, *dg, *du, *dxu;
  int threads; /* GEMM threads inside one expert */
} ExpertsJob;

static void forward_expert(void* ctx, int64_t e, int slot) {
  (void)slot;
  const ExpertsJob* j = (const ExpertsJob*)ctx;
  const int64_t lo = j->off[e], n = j->off[e + 1] - lo, d = j->d, h = j->hid;
  if (n == 0) return;
  const float* x = j->x + lo * d;
  float *g = j->g + lo * h, *u = j->u + lo * h, *s = j->sig + lo * h, *a = j->a + lo * h;
  gemm_batched(1, 1, 1, n, h, d, 0, 0, x, j->w[3 * e], g, j->threads);
  gemm_batched(1, 1, 1, n, h, d, 0, 0, x, j->w[3 * e + 1], u, j->threads);
  const SiluCtx c = {g, u, a, s, NULL, NULL, NULL};
  silu_range(&c, 0, n * h);
  gemm_batched(1, 1, 1, n, d, h, 0, 0, a, j->w[3 * e + 2], j->y + lo * d, j->threads);
}

static void backward_expert(void* ctx, int64_t e, int slot) {
  (void)slot;
  const ExpertsJob* j = (const ExpertsJob*)ctx;
  const int64_t lo = j->off[e], n = j->off[e + 1] - lo, d = j->d, h = j->hid;
  if (n == 0) return;
  const float* x = j->x + lo * d;
  const float *g = j->g + lo * h, *u = j->u + lo * h, *s = j->sig + lo * h, *a = j->a + lo * h, *dy = j->dy + lo * d;
  float *da = j->da + lo * h, *dg = j->dg + lo * h, *du = j->du + lo * h, *dx = j->dx + lo * d, *dxu = j->dxu + lo * d;
  /* Down projection y = a·Wd: da = dy·Wdᵀ, dWd = aᵀ·dy. */
  gemm_batched(1, 1, 1, n, h, d, 0, 1, dy, j->w[3 * e + 2], da, j->threads);
  gemm_batched(1, 1, 1, h, d, n, 1, 0, a, dy, j->dw[3 * e + 2], j->threads);
  const SiluCtx c = {g, u, NULL, (float*)s, da, dg, du};
  silu_grad_range(&c, 0, n * h);
  /* Gate and up projections: dx = dg·Wgᵀ + du·Wuᵀ (one float add), dW = xᵀ·d(g|u). */
  gemm_batched(1, 1, 1, n, d, h, 0, 1, dg, j->w[3 * e], dx, j->threads);
  gemm_batched(1, 1, 1, d, h, n, 1, 0, x, dg, j->dw[3 * e], j->threads);
  gemm_batched(1, 1, 1, n, d, h, 0, 1, du, j->w[3 * e + 1], dxu, j->threads);
  gemm_batched(1, 1, 1, d, h, n, 1, 0, x, du, j->dw[3 * e + 1], j->threads);
  for (int64_t i = 0; i < n * d; i++) dx[i] = dx[i] + dxu[i];
}

/* Runs fn for every expert: one task per expert on the pool, or (few experts) in turn with
   threaded products. */
static void run_experts(ExpertsJob* j, pool_task_fn fn) {
  int64_t busy = 0;
  for (int64_t e = 0; e < j->N; e++) busy += j->off[e + 1] > j->off[e];
  const int threads = pool_threads();
  if (busy >= 2 * (threads > 2 ? threads : 2)) {
    j->threads = 1;
    pool_run(j->N, fn, j, 0);
  } else {
    j->threads = 0;
    for (int64_t e = 0; e < j->N; e++) fn(j, e, 0);
  }
}

/*
 * Reads a JS array of `count` Float32Arrays of at least `need` elements each into a new array of
 * pointers (freed by the caller); NULL with a JS error pending on anything else.
 */
static float** f32_list(napi_env env, napi_value v, const char* fn, int64_t count, const int64_t* need) {
  bool isArr = false;
  uint32_t len = 0;
  if (napi_is_array(env, v, &isArr) != napi_ok || !isArr) {
    napi_throw_type_error(env, NULL, "moecat_native: expected an array of Float32Arrays");
    return NULL;
  }
  if (napi_get_array_length(env, v, &len) != napi_ok || (int64_t)len != count) {
    bad_arg(env, fn, "the weight list must hold 3 arrays per expert (3N, N = offsets.length - 1)");
    return NULL;
  }
  float** out = (float**)malloc(sizeof(float*) * (size_t)(count > 0 ? count : 1));
  if (!out) {
    napi_throw_error(env, NULL, "moecat_native: out of memory");
    return NULL;
  }
  for (int64_t i = 0; i < count; i++) {
    napi_value el;
    size_t n;
    if (napi_get_element(env, v, (uint32_t)i, &el) != napi_ok || !get_f32(env, el, &out[i], &n)) {
      free(out);
      return NULL;
    }
    if (!covers(n, need[i % 3])) {
      free(out);
      bad_arg(env, fn, "a weight array is shorter than d*hid");
      return NULL;
    }
  }
  return out;
}

/* Offsets [N+1]: 0 = offsets[0] <= offsets[1] <= ... = R. Returns R, or -1 with an error pending. */
static int64_t check_offsets(napi_env env, const char* fn, const int32_t* off, size_t n) {
  if (n < 1 || n - 1 > MAX_EXPERTS) {
    bad_arg(env, fn, "offsets must hold N+1 entries, 1 <= N <= 65536");
    return -1;
  }
  if (off[0] != 0) {
    bad_arg(env, fn, "offsets must start at 0");
    return -1;
  }
  for (size_t e = 1; e < n; e++) {
    if (off[e] < off[e - 1]) {
      bad_arg(env, fn, "offsets must not decrease");
      return -1;
    }
  }
  return off[n - 1];
}

static napi_value experts_forward(napi_env env, napi_callback_info info) {
  ARGS(10);
  F32(0, x, nx);
  I32A(2, off, noff);
  F32(3, y, ny);
  F32(4, g, ng);
  F32(5, u, nu);
  F32(6, sig, ns);
  F32(7, a, na);
  INT(8, d);
  INT(9, hid);
  RANGE("expertsForward", d, 1, INT32_MAX, "d must be in 1..2^31-1");
  RANGE("expertsForward", hid, 1, INT32_MAX, "hid must be in 1..2^31-1");
  const int64_t R = check_offsets(env, "expertsForward", off, noff);
  if (R < 0) return NULL;
  SIZE("expertsForward", rd, R, d);
  SIZE("expertsForward", rh, R, hid);
  SIZE("expertsForward", dh, d, hid);
  NEED("expertsForward", nx, rd, "x is shorter than R*d (R = offsets[N])");
  NEED("expertsForward", ny, rd, "y is shorter than R*d");
  NEED("expertsForward", ng, rh, "g is shorter than R*hid");
  NEED("expertsForward", nu, rh, "u is shorter than R*hid");
  NEED("expertsForward", ns, rh, "sig is shorter than R*hid");
  NEED("expertsForward", na, rh, "a is shorter than R*hid");
  const int64_t N = (int64_t)noff - 1;
  const int64_t need[3] = {dh, dh, dh};
  float** w = f32_list(env, argv[1], "expertsForward", 3 * N, need);
  if (!w) return NULL;
  ExpertsJob j = {N, d, hid, off, x, w, NULL, y, g, u, sig, a, NULL, NULL, NULL, NULL, NULL, NULL, 0};
  run_experts(&j, forward_expert);
  free(w);
  return undef(env);
}

static napi_value experts_backward(napi_env env, napi_callback_info info) {
  ARGS(16);
  F32(0, x, nx);
  I32A(2, off, noff);
  F32(3, g, ng);
  F32(4, u, nu);
  F32(5, sig, ns);
  F32(6, a, na);
  F32(7, dy, ndy);
  F32(8, dx, ndx);
  F32(10, da, nda);
  F32(11, dg, ndg);
  F32(12, du, ndu);
  F32(13, dxu, ndxu);
  INT(14, d);
  INT(15, hid);
  RANGE("expertsBackward", d, 1, INT32_MAX, "d must be in 1..2^31-1");
  RANGE("expertsBackward", hid, 1, INT32_MAX, "hid must be in 1..2^31-1");
  const int64_t R = check_offsets(env, "expertsBackward", off, noff);
  if (R < 0) return NULL;
  SIZE("expertsBackward", rd, R, d);
  SIZE("expertsBackward", rh, R, hid);
  SIZE("expertsBackward", dh, d, hid);
  NEED("expertsBackward", nx, rd, "x is shorter than R*d (R = offsets[N])");
  NEED("expertsBackward", ng, rh, "g is shorter than R*hid");
  NEED("expertsBackward", nu, rh, "u is shorter than R*hid");
  NEED("expertsBackward", ns, rh, "sig is shorter than R*hid");
  NEED("expertsBackward", na, rh, "a is shorter than R*hid");
  NEED("expertsBackward", ndy, rd, "dy is shorter than R*d");
  NEED("expertsBackward", ndx, rd, "dx is shorter than R*d");
  NEED("expertsBackward", nda, rh, "da is shorter than R*hid");
  NEED("expertsBackward", ndg, rh, "dg is shorter than R*hid");
  NEED("expertsBackward", ndu, rh, "du is shorter than R*hid");
  NEED("expertsBackward", ndxu, rd, "dxu is shorter than R*d");
  const int64_t N = (int64_t)noff - 1;
  const int64_t need[3] = {dh, dh, dh};
  float** w = f32_list(env, argv[1], "expertsBackward", 3 * N, need);
  if (!w) return NULL;
  float** dw = f32_list(env, argv[9], "expertsBackward", 3 * N, need);
  if (!dw) {
    free(w);
    return NULL;
  }
  ExpertsJob j = {N, d, hid, off, x, w, dw, NULL, g, u, sig, a, dy, dx, da, dg, du, dxu, 0};
  run_experts(&j, backward_expert);
  free(w);
  free(dw);
  return undef(env);
}

/* Called from the module's init (moecat_native.c). */
int moecat_experts_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"expertsForward", NULL, experts_forward, NULL, NULL, NULL, napi_default, NULL},
      {"expertsBackward", NULL, experts_backward, NULL, NULL, NULL, napi_default, NULL},
  };
  return napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props) == napi_ok;
}
