/*
 * The fused kernels' float exp and the SwiGLU activation with its gradient, shared by
 * moecat_native.c (siluMul, siluMulGrad) and experts.c (the whole experts of a layer), so both
 * compute the same bits. Compiled with -ffp-contract=off (binding.gyp) like every source.
 */
#ifndef MOECAT_SWIGLU_H
#define MOECAT_SWIGLU_H
#include <stdint.h>
#include <string.h>

/* ------------------------------------------------------------------ fast exp for fused kernels */

/*
 * fexp(x): float e^x by Cephes' expf scheme (range reduction by ln 2 split in two, degree-6
 * polynomial, exponent by bit arithmetic), branch-free so the loops that call it vectorise
 * (SSE2 at -O3 without -march). Relative error about 2e-7 (1-2 float ulps); inputs below -87.3
 * give exactly 0, above 88.3 clamp. Only the fused kernels use it: their bits are the native
 * backend's own; the tfjs kernel replacements keep libm's exp in double.
 */
static inline float fexp(float x) {
  const float under = x < -87.3f ? 0.0f : 1.0f;
  x = x < -87.3f ? -87.3f : x;
  x = x > 88.3f ? 88.3f : x; /* keeps 2^n finite: n <= 127 */
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest */
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  const int32_t e = ((int32_t)n + 127) << 23;
  float sc;
  memcpy(&sc, &e, sizeof sc);
  return y * sc * under;
}

/* ------------------------------------------------------------------ SwiGLU activation */

typedef struct {
  const float *g, *u;
  float *o, *sig;
  const float* da;
  float *dg, *du;
} SiluCtx;

static void silu_range(const void* ctx, int64_t lo, int64_t hi) {
  const SiluCtx* c = (const SiluCtx*)ctx;
  for (int64_t i = lo; i < hi; i++) {
    const float sg = 1.0f / (1.0f + fexp(-c->g[i]));
    c->sig[i] = sg;
    c->o[i] = c->g[i] * sg * c->u[i];
  }
}

static void silu_grad_range(const void* ctx, int64_t lo, int64_t hi) {
  const SiluCtx* c = (const SiluCtx*)ctx;
  for (int64_t i = lo; i < hi; i++) {
    const double gi = c->g[i], ui = c->u[i], ai = c->da[i], sg = c->sig[i];
    c->dg[i] = (float)(ai * ui * sg * (1.0 + gi * (1.0 - sg)));
    c->du[i] = (float)(ai * gi * sg);
  }
}

#endif
