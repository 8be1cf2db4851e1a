/*
 * Argument helpers shared by the addon's entry points (moecat_native.c, decode.c, sparse.c):
 * typed-array and number getters that refuse what they cannot take exactly, and the validation macros every
 * entry point runs at its top. Errors start with `moecat_native` (spec/native/fuzz.spec.ts).
 */
#ifndef MOECAT_NAPI_ARGS_H
#define MOECAT_NAPI_ARGS_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <node_api.h>

/* ------------------------------------------------------------------ N-API helpers */

#define CHECK(call)                                                     \
  do {                                                                  \
    if ((call) != napi_ok) {                                            \
      napi_throw_error(env, NULL, "moecat_native: N-API call failed: " #call); \
      return NULL;                                                      \
    }                                                                   \
  } while (0)

static int get_f32(napi_env env, napi_value v, float** p, size_t* n) {
  napi_typedarray_type t;
  size_t len;
  void* data;
  napi_value ab;
  size_t off;
  if (napi_get_typedarray_info(env, v, &t, &len, &data, &ab, &off) != napi_ok || t != napi_float32_array) {
    napi_throw_type_error(env, NULL, "moecat_native: expected a Float32Array");
    return 0;
  }
  *p = (float*)data;
  if (n) *n = len;
  return 1;
}

static int get_i32arr(napi_env env, napi_value v, int32_t** p, size_t* n) {
  napi_typedarray_type t;
  size_t len;
  void* data;
  napi_value ab;
  size_t off;
  if (napi_get_typedarray_info(env, v, &t, &len, &data, &ab, &off) != napi_ok || t != napi_int32_array) {
    napi_throw_type_error(env, NULL, "moecat_native: expected an Int32Array");
    return 0;
  }
  *p = (int32_t*)data;
  if (n) *n = len;
  return 1;
}

/* A safe integer (|x| <= 2^53 - 1): fractions, NaN and infinities are refused, not truncated. */
static int get_int(napi_env env, napi_value v, int64_t* out) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok || d != d || d != floor(d) || fabs(d) > 9007199254740991.0) {
    napi_throw_type_error(env, NULL, "moecat_native: expected a safe integer");
    return 0;
  }
  *out = (int64_t)d;
  return 1;
}

static int get_dbl(napi_env env, napi_value v, double* out) {
  if (napi_get_value_double(env, v, out) != napi_ok) {
    napi_throw_type_error(env, NULL, "moecat_native: expected a number");
    return 0;
  }
  return 1;
}

#define ARGS(N)                                                        \
  size_t argc = N;                                                     \
  napi_value argv[N];                                                  \
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));         \
  if (argc < N) {                                                      \
    napi_throw_error(env, NULL, "moecat_native: too few arguments");   \
    return NULL;                                                       \
  }

#define F32(i, p, n) float* p; size_t n; if (!get_f32(env, argv[i], &p, &n)) return NULL;
#define I32A(i, p, n) int32_t* p; size_t n; if (!get_i32arr(env, argv[i], &p, &n)) return NULL;
#define INT(i, x) int64_t x; if (!get_int(env, argv[i], &x)) return NULL;
#define DBL(i, x) double x; if (!get_dbl(env, argv[i], &x)) return NULL;

static napi_value undef(napi_env env) {
  napi_value u;
  napi_get_undefined(env, &u);
  return u;
}

/*
 * Every entry point validates all of its arguments at its top, before it reads or writes an
 * array: sizes are non-negative, products of sizes do not overflow int64, array lengths cover
 * what shapes and strides address, indices and op codes are in range. A bad argument throws a
 * RangeError `moecat_native.<entry>: <what>` (spec/native/fuzz.spec.ts calls every entry point
 * with random bad arguments).
 */
static int bad_arg(napi_env env, const char* fn, const char* what) {
  char msg[192];
  snprintf(msg, sizeof msg, "moecat_native.%s: %s", fn, what);
  napi_throw_range_error(env, NULL, msg);
  return 0;
}

/* *out = product of `count` sizes; false (and a RangeError) on a negative size or int64 overflow. */
static int size_product(napi_env env, const char* fn, int64_t* out, int count, const int64_t* dims) {
  int64_t p = 1;
  for (int i = 0; i < count; i++) {
    if (dims[i] < 0) return bad_arg(env, fn, "a size is negative");
    if (__builtin_mul_overflow(p, dims[i], &p)) return bad_arg(env, fn, "a size product overflows int64");
  }
  *out = p;
  return 1;
}
#define SIZE(fn, out, ...) int64_t out; { const int64_t dims_[] = {__VA_ARGS__}; if (!size_product(env, fn, &out, (int)(sizeof dims_ / sizeof dims_[0]), dims_)) return NULL; }

/* An array of `have` elements covers `need`. */
static int covers(size_t have, int64_t need) {
  return need >= 0 && (uint64_t)need <= (uint64_t)have;
}
#define NEED(fn, have, need, what) if (!covers((have), (need))) { bad_arg(env, fn, what); return NULL; }

/* lo <= v <= hi, else a RangeError naming `what`. */
#define RANGE(fn, v, lo, hi, what) if ((v) < (lo) || (v) > (hi)) { bad_arg(env, fn, what); return NULL; }

#endif
