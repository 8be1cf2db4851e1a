/*
 * moecat native kernels (issue 14): an N-API addon that tfjs' `cpu` backend calls through
 * core/native/. Every entry point takes typed arrays that JS owns (inputs and a preallocated
 * output) plus integers; it never allocates tensors or keeps pointers past the call.
 *
 * Determinism: every function here is a fixed sequence of float operations for a given shape,
 * so results are bitwise reproducible run to run, on every machine and for every thread count.
 * Matrix products go to moecat's own GEMM (gemm.h: one fmaf chain over k ascending per output
 * element, the same bits from the scalar, AVX2 and AVX-512 variants); threads (pool.h) split
 * output tiles or element ranges, never a sum. Everything outside gemm_x86.c is compiled for
 * baseline x86-64 (or the target's baseline), so it runs the same code whichever GEMM variant
 * is selected.
 *
 * Exactness versus tfjs' JS kernels: element-wise float32 +, -, *, / give the same bits as JS
 * (JS computes in double and rounds once; double rounding is exact for these four operations
 * on float32 inputs). Transcendentals are computed in double and rounded, like JS, with moecat's
 * own exp/log/tanh (detmath.h: the same bits on every machine, unlike the C library's); they and
 * V8's may differ in the last double bits, which rarely changes the float32. Sums accumulate in
 * double in index order, as the JS kernels do. sgemm sums in its own order (fused
 * multiply-adds): not bitwise equal to the JS matMul, within float32 rounding.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <node_api.h>
#include "detmath.h"
#include "gemm.h"
#include "napi_args.h"
#include "swiglu.h"
#include "pool.h"
#ifdef __GLIBC__
#include <malloc.h>
#endif

#define MAXR 8

static void throw_range(napi_env env, const char* what) {
  napi_throw_range_error(env, NULL, what);
}

/* ------------------------------------------------------------------ argument validation */

/* Every index in [0, n) of idx lies in [0, rows). */
static int indices_ok(const int32_t* idx, int64_t n, int64_t rows) {
  for (int64_t i = 0; i < n; i++)
    if (idx[i] < 0 || idx[i] >= rows) return 0;
  return 1;
}

/*
 * A strided view: rank dims of `shape` (each >= 0) read at non-negative `strides` from `offset`
 * in an array of `have` elements. *total = product of the shape; the largest index addressed
 * must be < have (an empty view addresses nothing).
 */
static int view_ok(napi_env env, const char* fn, const int32_t* shape, const int32_t* strides, size_t rank, int64_t offset, size_t have, int64_t* total) {
  int64_t t = 1, last = offset;
  if (offset < 0) return bad_arg(env, fn, "an offset is negative");
  for (size_t d = 0; d < rank; d++) {
    if (shape[d] < 0) return bad_arg(env, fn, "a shape dimension is negative");
    if (strides[d] < 0) return bad_arg(env, fn, "a stride is negative");
    if (__builtin_mul_overflow(t, (int64_t)shape[d], &t)) return bad_arg(env, fn, "the shape's size overflows int64");
  }
  *total = t;
  if (t == 0) return 1;
  for (size_t d = 0; d < rank; d++) {
    int64_t step;
    if (__builtin_mul_overflow((int64_t)(shape[d] - 1), (int64_t)strides[d], &step) || __builtin_add_overflow(last, step, &last)) {
      return bad_arg(env, fn, "a strided index overflows int64");
    }
  }
  if (!covers(have, last + 1)) return bad_arg(env, fn, "strides and shape address past the end of an array");
  return 1;
}

/* ------------------------------------------------------------------ element ranges on the pool */

/*
 * par_for(n, chunk, fn, ctx): fn(ctx, lo, hi) over [0, n) in chunks of `chunk` items, on the
 * thread pool. Used by kernels whose items (elements or rows) are independent: each item is
 * computed by the same code whichever thread runs it, so the bits do not depend on the threads.
 */
typedef void (*range_fn)(const void* ctx, int64_t lo, int64_t hi);
typedef struct {
  range_fn fn;
  const void* ctx;
  int64_t n, chunk;
} RangeJob;

static void range_task(void* c, int64_t index, int slot) {
  (void)slot;
  const RangeJob* j = (const RangeJob*)c;
  const int64_t lo = index * j->chunk;
  j->fn(j->ctx, lo, lo + j->chunk < j->n ? lo + j->chunk : j->n);
}

/* Items per task: about 64 Ki floats of work, so a task outweighs handing it out. */
#define PAR_ELEMS 65536

static void par_for(int64_t n, int64_t chunk, range_fn fn, const void* ctx) {
  if (chunk < 1) chunk = 1;
  if (n <= chunk) {
    if (n > 0) fn(ctx, 0, n);
    return;
  }
  RangeJob j = {fn, ctx, n, chunk};
  pool_run((n + chunk - 1) / chunk, range_task, &j, 0);
}

/* ------------------------------------------------------------------ GEMM, threads, variants */

/* setThreads(n): the pool's thread count for later calls (n < 1: all cores). */
static napi_value set_threads(napi_env env, napi_callback_info info) {
  ARGS(1);
  INT(0, n);
  RANGE("setThreads", n, 0, 1024, "the thread count must be in 0..1024 (0: all cores)");
  pool_set_threads((int)n);
  return undef(env);
}

/*
 * poolProfile(on) -> {cpuMs, jobs}: the totals since profiling was last turned on (pool.h
 * pool_profile); on = 1 resets and starts, 0 stops. For the step profile of the native bench.
 */
static napi_value pool_profile_js(napi_env env, napi_callback_info info) {
  ARGS(1);
  INT(0, on);
  RANGE("poolProfile", on, 0, 1, "on must be 0 or 1");
  int64_t ns, jobs;
  pool_profile((int)on, &ns, &jobs);
  napi_value o, v;
  CHECK(napi_create_object(env, &o));
  CHECK(napi_create_double(env, (double)ns / 1e6, &v));
  CHECK(napi_set_named_property(env, o, "cpuMs", v));
  CHECK(napi_create_double(env, (double)jobs, &v));
  CHECK(napi_set_named_property(env, o, "jobs", v));
  return o;
}

/* setIsa(name) -> boolean: selects a GEMM variant; false (nothing changes) when this CPU lacks it. */
static napi_value set_isa(napi_env env, napi_callback_info info) {
  ARGS(1);
  char name[32];
  size_t len;
  if (napi_get_value_string_utf8(env, argv[0], name, sizeof name, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "moecat_native.setIsa: expected a string");
    return NULL;
  }
  if (len + 1 >= sizeof name) {
    throw_range(env, "moecat_native.setIsa: unknown variant (scalar, avx2 or avx512)");
    return NULL;
  }
  const int isa = gemm_isa_parse(name);
  if (isa < 0) {
    throw_range(env, "moecat_native.setIsa: unknown variant (scalar, avx2 or avx512)");
    return NULL;
  }
  napi_value r;
  CHECK(napi_get_boolean(env, gemm_set_isa(isa), &r));
  return r;
}

/* gemmInfo(): { isa, best, supported: string[], threads, cores } */
static napi_value gemm_info(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value o, s, arr;
  CHECK(napi_create_object(env, &o));
  CHECK(napi_create_string_utf8(env, gemm_isa_name(gemm_isa()), NAPI_AUTO_LENGTH, &s));
  CHECK(napi_set_named_property(env, o, "isa", s));
  CHECK(napi_create_string_utf8(env, gemm_isa_name(gemm_isa_best()), NAPI_AUTO_LENGTH, &s));
  CHECK(napi_set_named_property(env, o, "best", s));
  CHECK(napi_create_array(env, &arr));
  uint32_t n = 0;
  for (int i = 0; i < GEMM_ISA_COUNT; i++) {
    if (!gemm_isa_supported(i)) continue;
    CHECK(napi_create_string_utf8(env, gemm_isa_name(i), NAPI_AUTO_LENGTH, &s));
    CHECK(napi_set_element(env, arr, n++, s));
  }
  CHECK(napi_set_named_property(env, o, "supported", arr));
  CHECK(napi_create_int32(env, pool_threads(), &s));
  CHECK(napi_set_named_property(env, o, "threads", s));
  CHECK(napi_create_int32(env, pool_cores(), &s));
  CHECK(napi_set_named_property(env, o, "cores", s));
  return o;
}

/*
 * sgemm(a, b, c, batch, batchA, batchB, M, N, K, transA, transB, threads)
 * Row-major C[bi] = op(A[bi % batchA]) · op(B[bi % batchB]); op(A) is M×K, op(B) K×N.
 * The modulo batch mapping is the one tfjs' cpu BatchMatMul uses. threads < 1: the pool's
 * count. The bits depend on neither the thread count nor the GEMM variant (gemm.h).
 */
static napi_value sgemm(napi_env env, napi_callback_info info) {
  ARGS(12);
  F32(0, a, na);
  F32(1, b, nb);
  F32(2, c, nc);
  INT(3, batch);
  INT(4, batchA);
  INT(5, batchB);
  INT(6, M);
  INT(7, N);
  INT(8, K);
  INT(9, ta);
  INT(10, tb);
  INT(11, threads);
  RANGE("sgemm", batchA, 1, INT64_MAX, "batchA must be >= 1");
  RANGE("sgemm", batchB, 1, INT64_MAX, "batchB must be >= 1");
  RANGE("sgemm", M, 0, INT32_MAX, "M must be in 0..2^31-1 (a BLAS int)");
  RANGE("sgemm", N, 0, INT32_MAX, "N must be in 0..2^31-1 (a BLAS int)");
  RANGE("sgemm", K, 0, INT32_MAX, "K must be in 0..2^31-1 (a BLAS int)");
  RANGE("sgemm", ta, 0, 1, "transA must be 0 or 1");
  RANGE("sgemm", tb, 0, 1, "transB must be 0 or 1");
  RANGE("sgemm", threads, 0, 1024, "threads must be in 0..1024");
  SIZE("sgemm", sizeA, batchA, M, K);
  SIZE("sgemm", sizeB, batchB, K, N);
  SIZE("sgemm", sizeC, batch, M, N);
  NEED("sgemm", na, sizeA, "a is shorter than batchA*M*K");
  NEED("sgemm", nb, sizeB, "b is shorter than batchB*K*N");
  NEED("sgemm", nc, sizeC, "c is shorter than batch*M*N");
  if (M == 0 || N == 0) return undef(env);
  if (K == 0) {
    memset(c, 0, sizeof(float) * (size_t)(batch * M * N));
    return undef(env);
  }
  gemm_batched(batch, batchA, batchB, M, N, K, ta != 0, tb != 0, a, b, c, (int)threads);
  return undef(env);
}

/* ------------------------------------------------------------------ element-wise binary */

enum { OP_ADD = 0, OP_SUB = 1, OP_MUL = 2, OP_DIV = 3, OP_MAX = 4, OP_MIN = 5, OP_SQDIFF = 6 };

#define BIN_LOOP(EXPR)                                                   \
  for (int64_t j = 0; j < n; j++) {                                      \
    const float x = A[j * sa];                                           \
    const float y = B[j * sb];                                           \
    O[j] = (EXPR);                                                       \
  }

/*
 * The three stride patterns of nearly every call (same shape, row or scalar broadcast) get loops
 * with constant strides, which the compiler vectorises; the arithmetic is the same, so are the bits.
 */
#define BIN_CASES(EXPR)                                                  \
  if (sa == 1 && sb == 1) {                                              \
    for (int64_t j = 0; j < n; j++) { const float x = A[j], y = B[j]; O[j] = (EXPR); } \
  } else if (sa == 1 && sb == 0) {                                       \
    const float y = B[0];                                                \
    for (int64_t j = 0; j < n; j++) { const float x = A[j]; O[j] = (EXPR); } \
  } else if (sa == 0 && sb == 1) {                                       \
    const float x = A[0];                                                \
    for (int64_t j = 0; j < n; j++) { const float y = B[j]; O[j] = (EXPR); } \
  } else {                                                               \
    BIN_LOOP(EXPR)                                                       \
  }

static void binary_row(int op, const float* A, int64_t sa, const float* B, int64_t sb, float* O, int64_t n) {
  switch (op) {
    case OP_ADD: BIN_CASES(x + y); return;
    case OP_SUB: BIN_CASES(x - y); return;
    case OP_MUL: BIN_CASES(x * y); return;
    case OP_DIV: BIN_CASES(x / y); return;
    default: break;
  }
  switch (op) {
    case OP_ADD: BIN_LOOP(x + y); break;
    case OP_SUB: BIN_LOOP(x - y); break;
    case OP_MUL: BIN_LOOP(x * y); break;
    case OP_DIV: BIN_LOOP(x / y); break;
    /* tfjs: NaN if either is NaN, else the larger / smaller. */
    case OP_MAX: BIN_LOOP((x != x || y != y) ? NAN : (x > y ? x : y)); break;
    case OP_MIN: BIN_LOOP((x != x || y != y) ? NAN : (x < y ? x : y)); break;
    /* JS: diff = a - b; diff * diff, both in double, rounded once */
    case OP_SQDIFF: BIN_LOOP((float)(((double)x - (double)y) * ((double)x - (double)y))); break;
  }
}

/* The odometer at row r (every dim but the last): idx, and that row's offsets under two stride lists. */
static void row_start(const int32_t* shape, size_t rank, int64_t r, int64_t* idx, const int32_t* s1, int64_t* o1, const int32_t* s2, int64_t* o2) {
  for (int d = (int)rank - 2; d >= 0; d--) {
    idx[d] = r % shape[d];
    r /= shape[d];
    *o1 += idx[d] * s1[d];
    *o2 += idx[d] * s2[d];
  }
}

/* One step of the odometer over dims rank-2 .. 0, moving two offsets. */
static inline void row_next(const int32_t* shape, size_t rank, int64_t* idx, const int32_t* s1, int64_t* o1, const int32_t* s2, int64_t* o2) {
  for (int d = (int)rank - 2; d >= 0; d--) {
    idx[d]++;
    *o1 += s1[d];
    *o2 += s2[d];
    if (idx[d] < shape[d]) break;
    *o1 -= (int64_t)s1[d] * shape[d];
    *o2 -= (int64_t)s2[d] * shape[d];
    idx[d] = 0;
  }
}

typedef struct {
  int op;
  const float* a;
  const int32_t* as;
  const float* b;
  const int32_t* bs;
  float* o;
  const int32_t* shape;
  size_t rank;
  int64_t n, outer; /* last dim, rows */
} BinCtx;

/* Rows [lo, hi) of the output, or, when it has one row, its elements [lo, hi). */
static void binary_range(const void* ctx, int64_t lo, int64_t hi) {
  const BinCtx* c = (const BinCtx*)ctx;
  const size_t rank = c->rank;
  const int64_t sa = c->as[rank - 1], sb = c->bs[rank - 1];
  if (c->outer == 1) {
    binary_row(c->op, c->a + lo * sa, sa, c->b + lo * sb, sb, c->o + lo, hi - lo);
    return;
  }
  int64_t idx[MAXR] = {0};
  int64_t ao = 0, bo = 0;
  row_start(c->shape, rank, lo, idx, c->as, &ao, c->bs, &bo);
  for (int64_t r = lo; r < hi; r++) {
    binary_row(c->op, c->a + ao, sa, c->b + bo, sb, c->o + r * c->n, c->n);
    row_next(c->shape, rank, idx, c->as, &ao, c->bs, &bo);
  }
}

/*
 * binary(op, a, aStrides, b, bStrides, out, shape)
 * out (contiguous, `shape`) = a op b, where a and b are read at strides given per output dim
 * (0 on broadcast dims). JS collapses dims first, so rank is small.
 */
static napi_value binary(napi_env env, napi_callback_info info) {
  ARGS(7);
  INT(0, op);
  F32(1, a, na);
  I32A(2, as, nas);
  F32(3, b, nb);
  I32A(4, bs, nbs);
  F32(5, o, no);
  I32A(6, shape, rank);
  RANGE("binary", op, OP_ADD, OP_SQDIFF, "unknown op");
  if (rank < 1 || rank > MAXR || nas != rank || nbs != rank) {
    throw_range(env, "moecat_native.binary: bad rank");
    return NULL;
  }
  int64_t total, totalB;
  if (!view_ok(env, "binary", shape, as, rank, 0, na, &total) || !view_ok(env, "binary", shape, bs, rank, 0, nb, &totalB)) return NULL;
  if ((size_t)total > no) {
    throw_range(env, "moecat_native.binary: output too small");
    return NULL;
  }
  if (total == 0) return undef(env);
  const int64_t n = shape[rank - 1];
  const int64_t outer = total / n;
  const BinCtx c = {(int)op, a, as, b, bs, o, shape, rank, n, outer};
  /* Threads take whole rows, or element ranges of a single row: each element the same code. */
  if (outer == 1) par_for(n, PAR_ELEMS, binary_range, &c);
  else par_for(outer, PAR_ELEMS / n + 1, binary_range, &c);
  return undef(env);
}

/* ------------------------------------------------------------------ element-wise unary */

enum { U_EXP = 0, U_SIGMOID = 1, U_RSQRT = 2, U_SQRT = 3, U_LOG = 4, U_NEG = 5, U_SQUARE = 6, U_RELU = 7, U_ABS = 8, U_TANH = 9 };

typedef struct {
  int op;
  const float* x;
  float* o;
} UnaryCtx;

static void unary_range(const void* ctx, int64_t lo, int64_t hi);

/* unary(op, x, out): computed in double and rounded once, like the JS kernels (exp, log, tanh: detmath.h). */
static napi_value unary(napi_env env, napi_callback_info info) {
  ARGS(3);
  INT(0, op);
  F32(1, x, n);
  F32(2, o, no);
  RANGE("unary", op, U_EXP, U_TANH, "unknown op");
  if (no < n) {
    throw_range(env, "moecat_native.unary: output too small");
    return NULL;
  }
  if (op < U_EXP || op > U_TANH) {
    throw_range(env, "moecat_native.unary: unknown op");
    return NULL;
  }
  const UnaryCtx c = {(int)op, x, o};
  par_for((int64_t)n, PAR_ELEMS, unary_range, &c);
  return undef(env);
}

static void unary_range(const void* ctx, int64_t lo, int64_t hi) {
  const UnaryCtx* c = (const UnaryCtx*)ctx;
  const float* x = c->x + lo;
  float* o = c->o + lo;
  const size_t n = (size_t)(hi - lo);
  switch (c->op) {
    case U_EXP: for (size_t i = 0; i < n; i++) o[i] = (float)dm_exp((double)x[i]); break;
    case U_SIGMOID: for (size_t i = 0; i < n; i++) o[i] = (float)(1.0 / (1.0 + dm_exp(-(double)x[i]))); break;
    case U_RSQRT: for (size_t i = 0; i < n; i++) o[i] = (float)(1.0 / sqrt((double)x[i])); break;
    case U_SQRT: for (size_t i = 0; i < n; i++) o[i] = (float)sqrt((double)x[i]); break;
    case U_LOG: for (size_t i = 0; i < n; i++) o[i] = (float)dm_log((double)x[i]); break;
    case U_NEG: for (size_t i = 0; i < n; i++) o[i] = -x[i]; break;
    case U_SQUARE: for (size_t i = 0; i < n; i++) o[i] = x[i] * x[i]; break;
    case U_RELU: for (size_t i = 0; i < n; i++) o[i] = x[i] < 0 ? 0.0f : x[i]; break;
    case U_ABS: for (size_t i = 0; i < n; i++) o[i] = fabsf(x[i]); break;
    case U_TANH: for (size_t i = 0; i < n; i++) o[i] = (float)dm_tanh((double)x[i]); break;
    default: break;
  }
}

/* ------------------------------------------------------------------ reductions over the last axis */

enum { R_SUM = 0, R_MAX = 1, R_MIN = 2, R_MEAN = 3 };

/*
 * reduce(op, x, out, outer, inner): out[i] = reduce(x[i*inner .. (i+1)*inner)).
 * Sum accumulates in double in index order (as tfjs' JS Sum does); max/min skip nothing (NaN
 * propagates like `value > max` comparisons would not: tfjs keeps the first NaN? see JS).
 */
static napi_value reduce(napi_env env, napi_callback_info info) {
  ARGS(5);
  INT(0, op);
  F32(1, x, n);
  F32(2, o, no);
  INT(3, outer);
  INT(4, inner);
  RANGE("reduce", op, R_SUM, R_MIN, "unknown op");
  RANGE("reduce", inner, 1, INT64_MAX, "inner must be >= 1");
  SIZE("reduce", total, outer, inner);
  if (!covers(n, total) || !covers(no, outer)) {
    throw_range(env, "moecat_native.reduce: sizes do not match the arrays");
    return NULL;
  }
  for (int64_t i = 0; i < outer; i++) {
    const float* r = x + i * inner;
    if (op == R_SUM) {
      double s = 0;
      for (int64_t j = 0; j < inner; j++) s += r[j];
      o[i] = (float)s;
    } else if (op == R_MAX) {
      float m = r[0];
      for (int64_t j = 1; j < inner; j++) {
        const float v = r[j];
        if (v != v || v > m) m = v; /* tfjs: `if (Number.isNaN(value) || value > max) max = value` */
      }
      o[i] = m;
    } else if (op == R_MIN) {
      float m = r[0];
      for (int64_t j = 1; j < inner; j++) {
        const float v = r[j];
        if (v != v || v < m) m = v;
      }
      o[i] = m;
    } else {
      throw_range(env, "moecat_native.reduce: unknown op");
      return NULL;
    }
  }
  return undef(env);
}

/*
 * softmax(x, out, rows, cols): the same arithmetic as tfjs' cpu Softmax, which composes
 * max -> sub (float32) -> exp (double, rounded) -> sum (double, rounded) -> div (float32).
 */
static napi_value softmax(napi_env env, napi_callback_info info) {
  ARGS(4);
  F32(0, x, n);
  F32(1, o, no);
  INT(2, rows);
  INT(3, cols);
  RANGE("softmax", cols, 1, INT64_MAX, "cols must be >= 1");
  SIZE("softmax", total, rows, cols);
  if (!covers(n, total) || !covers(no, total)) {
    throw_range(env, "moecat_native.softmax: sizes do not match the arrays");
    return NULL;
  }
  for (int64_t i = 0; i < rows; i++) {
    const float* r = x + i * cols;
    float* w = o + i * cols;
    float m = r[0];
    for (int64_t j = 1; j < cols; j++) {
      const float v = r[j];
      if (v != v || v > m) m = v;
    }
    double s = 0;
    for (int64_t j = 0; j < cols; j++) {
      const float e = (float)dm_exp((double)(float)(r[j] - m));
      w[j] = e;
      s += e;
    }
    const float fs = (float)s;
    for (int64_t j = 0; j < cols; j++) w[j] = w[j] / fs;
  }
  return undef(env);
}

/* ------------------------------------------------------------------ strided copy */

typedef struct {
  const float* src;
  int64_t so;
  const int32_t* ss;
  float* dst;
  int64_t doff;
  const int32_t* ds;
  const int32_t* shape;
  size_t rank;
  int64_t n, outer; /* last dim, rows */
} CopyCtx;

static inline void copy_row(const float* s, int64_t sI, float* t, int64_t dI, int64_t n) {
  if (sI == 1 && dI == 1) {
    memcpy(t, s, sizeof(float) * (size_t)n);
  } else {
    for (int64_t j = 0; j < n; j++) t[j * dI] = s[j * sI];
  }
}

/*
 * Whether distinct indices of `shape` always reach distinct offsets under `st`: with the dims of
 * size > 1 in ascending stride, each stride exceeds the largest offset the dims before it reach.
 */
static int writes_disjoint(const int32_t* shape, const int32_t* st, size_t rank) {
  int used[MAXR] = {0};
  int64_t reach = 0; /* largest offset of the dims taken so far */
  for (;;) {
    int best = -1;
    for (size_t d = 0; d < rank; d++) {
      if (!used[d] && shape[d] > 1 && (best < 0 || st[d] < st[best])) best = (int)d;
    }
    if (best < 0) return 1;
    if (st[best] <= reach) return 0;
    used[best] = 1;
    reach += (int64_t)st[best] * (shape[best] - 1);
  }
}

/* Rows [lo, hi) of the index space, or, when it has one row, its elements [lo, hi). */
static void copy_range(const void* ctx, int64_t lo, int64_t hi) {
  const CopyCtx* c = (const CopyCtx*)ctx;
  const size_t rank = c->rank;
  const int64_t sI = c->ss[rank - 1], dI = c->ds[rank - 1];
  if (c->outer == 1) {
    copy_row(c->src + c->so + lo * sI, sI, c->dst + c->doff + lo * dI, dI, hi - lo);
    return;
  }
  int64_t idx[MAXR] = {0};
  int64_t sp = c->so, dp = c->doff;
  row_start(c->shape, rank, lo, idx, c->ss, &sp, c->ds, &dp);
  for (int64_t r = lo; r < hi; r++) {
    copy_row(c->src + sp, sI, c->dst + dp, dI, c->n);
    row_next(c->shape, rank, idx, c->ss, &sp, c->ds, &dp);
  }
}

/*
 * copy(src, srcOffset, srcStrides, dst, dstOffset, dstStrides, shape)
 * dst[dstOffset + Σ i_d·dstStrides_d] = src[srcOffset + Σ i_d·srcStrides_d] for every index in
 * `shape`. One routine serves Transpose, Slice, Concat, Pad, Tile and SplitV.
 */
static napi_value copy(napi_env env, napi_callback_info info) {
  ARGS(7);
  F32(0, src, ns);
  INT(1, so);
  I32A(2, ss, nss);
  F32(3, dst, nd);
  INT(4, doff);
  I32A(5, ds, nds);
  I32A(6, shape, rank);
  if (rank < 1 || rank > MAXR || nss != rank || nds != rank) {
    throw_range(env, "moecat_native.copy: bad rank");
    return NULL;
  }
  int64_t total, totalD;
  if (!view_ok(env, "copy", shape, ss, rank, so, ns, &total) || !view_ok(env, "copy", shape, ds, rank, doff, nd, &totalD)) return NULL;
  if (total == 0) return undef(env);
  const int64_t n = shape[rank - 1];
  const int64_t outer = total / n;
  const CopyCtx c = {src, so, ss, dst, doff, ds, shape, rank, n, outer};
  /* Threads only when no two indices write one destination element (else the last writer wins). */
  const int64_t items = outer == 1 ? n : outer;
  if (!writes_disjoint(shape, ds, rank)) copy_range(&c, 0, items);
  else if (outer == 1) par_for(n, PAR_ELEMS, copy_range, &c);
  else par_for(outer, PAR_ELEMS / n + 1, copy_range, &c);
  return undef(env);
}

#define T2_BS 32
typedef struct {
  const float* src;
  float* dst;
  int64_t rows, cols, blocks; /* blocks of T2_BS rows per matrix */
} T2Ctx;

/* Items [lo, hi): (matrix, block of T2_BS source rows), each written to its own destination columns. */
static void transpose2d_range(const void* ctx, int64_t lo, int64_t hi) {
  const T2Ctx* c = (const T2Ctx*)ctx;
  const int64_t rows = c->rows, cols = c->cols;
  for (int64_t it = lo; it < hi; it++) {
    const int64_t b = it / c->blocks, i0 = (it % c->blocks) * T2_BS;
    const float* s = c->src + b * rows * cols;
    float* t = c->dst + b * rows * cols;
    const int64_t i1 = i0 + T2_BS < rows ? i0 + T2_BS : rows;
    for (int64_t j0 = 0; j0 < cols; j0 += T2_BS) {
      const int64_t j1 = j0 + T2_BS < cols ? j0 + T2_BS : cols;
      for (int64_t i = i0; i < i1; i++)
        for (int64_t j = j0; j < j1; j++) t[j * rows + i] = s[i * cols + j];
    }
  }
}

/*
 * transpose2d(src, dst, batch, rows, cols): dst[b] = src[b]^T, blocked for cache use. The
 * general copy handles any permutation; this one is the fast path for the last-two-axes swap.
 */
static napi_value transpose2d(napi_env env, napi_callback_info info) {
  ARGS(5);
  F32(0, src, ns);
  F32(1, dst, nd);
  INT(2, batch);
  INT(3, rows);
  INT(4, cols);
  SIZE("transpose2d", total, batch, rows, cols);
  if (!covers(ns, total) || !covers(nd, total)) {
    throw_range(env, "moecat_native.transpose2d: sizes do not match the arrays");
    return NULL;
  }
  if (total == 0) return undef(env);
  const T2Ctx c = {src, dst, rows, cols, (rows + T2_BS - 1) / T2_BS};
  par_for(batch * c.blocks, PAR_ELEMS / (T2_BS * cols) + 1, transpose2d_range, &c);
  return undef(env);
}

/* ------------------------------------------------------------------ gather / scatter rows */

/* gatherRows(x, idx, out, rowSize, nRows, outer): out[o][i] = x[o][idx[i]] (rows of rowSize). */
static napi_value gather_rows(napi_env env, napi_callback_info info) {
  ARGS(6);
  F32(0, x, nx);
  I32A(1, idx, ni);
  F32(2, o, no);
  INT(3, rowSize);
  INT(4, nRows);
  INT(5, outer);
  RANGE("gatherRows", outer, 1, INT64_MAX, "outer must be >= 1");
  SIZE("gatherRows", outSize, outer, (int64_t)ni, rowSize);
  SIZE("gatherRows", inSize, outer, nRows, rowSize);
  if (!covers(no, outSize)) {
    throw_range(env, "moecat_native.gatherRows: output too small");
    return NULL;
  }
  NEED("gatherRows", nx, inSize, "x is shorter than outer*nRows*rowSize");
  if (!indices_ok(idx, (int64_t)ni, nRows)) {
    throw_range(env, "moecat_native.gatherRows: index out of range");
    return NULL;
  }
  for (int64_t q = 0; q < outer; q++) {
    const float* xs = x + q * nRows * rowSize;
    float* os = o + q * (int64_t)ni * rowSize;
    for (size_t i = 0; i < ni; i++) {
      const int64_t r = idx[i];
      if (r < 0 || r >= nRows || (size_t)((q * nRows + r + 1) * rowSize) > nx) {
        throw_range(env, "moecat_native.gatherRows: index out of range");
        return NULL;
      }
      memcpy(os + i * rowSize, xs + r * rowSize, sizeof(float) * (size_t)rowSize);
    }
  }
  return undef(env);
}

/*
 * scatterAddRows(updates, idx, out, rowSize, nRows): out (zeroed by JS) [idx[i]] += updates[i],
 * in index order (as tfjs' cpu ScatterNd sums duplicates: sequentially, in float32).
 */
static napi_value scatter_add_rows(napi_env env, napi_callback_info info) {
  ARGS(5);
  F32(0, u, nu);
  I32A(1, idx, ni);
  F32(2, o, no);
  INT(3, rowSize);
  INT(4, nRows);
  SIZE("scatterAddRows", inSize, (int64_t)ni, rowSize);
  SIZE("scatterAddRows", outSize, nRows, rowSize);
  if (!covers(nu, inSize) || !covers(no, outSize)) {
    throw_range(env, "moecat_native.scatterAddRows: sizes do not match the arrays");
    return NULL;
  }
  if (!indices_ok(idx, (int64_t)ni, nRows)) {
    throw_range(env, "moecat_native.scatterAddRows: index out of range");
    return NULL;
  }
  for (size_t i = 0; i < ni; i++) {
    const int64_t r = idx[i];
    if (r < 0 || r >= nRows) {
      throw_range(env, "moecat_native.scatterAddRows: index out of range");
      return NULL;
    }
    float* t = o + r * rowSize;
    const float* s = u + i * rowSize;
    for (int64_t j = 0; j < rowSize; j++) t[j] = t[j] + s[j];
  }
  return undef(env);
}




/* fexp: swiglu.h */

/* ------------------------------------------------------------------ fused softmax */

typedef struct {
  const float *a, *b; /* inputs */
  float* out;
  int64_t cols;
} RowsCtx;

static void softmax_fused_range(const void* ctx, int64_t lo, int64_t hi) {
  const RowsCtx* c = (const RowsCtx*)ctx;
  const int64_t cols = c->cols;
  for (int64_t i = lo; i < hi; i++) {
    const float* r = c->a + i * cols;
    float* w = c->out + i * cols;
    float m = r[0];
    for (int64_t j = 1; j < cols; j++) m = r[j] > m ? r[j] : m;
    for (int64_t j = 0; j < cols; j++) w[j] = fexp(r[j] - m);
    double s = 0;
    for (int64_t j = 0; j < cols; j++) s += w[j];
    const float inv = (float)(1.0 / s);
    for (int64_t j = 0; j < cols; j++) w[j] = w[j] * inv;
  }
}

static void softmax_fused_grad_range(const void* ctx, int64_t lo, int64_t hi) {
  const RowsCtx* c = (const RowsCtx*)ctx;
  const int64_t cols = c->cols;
  for (int64_t i = lo; i < hi; i++) {
    const float* yr = c->a + i * cols;
    const float* gr = c->b + i * cols;
    float* o = c->out + i * cols;
    double d = 0;
    for (int64_t j = 0; j < cols; j++) d += (double)gr[j] * (double)yr[j];
    const float df = (float)d;
    for (int64_t j = 0; j < cols; j++) o[j] = yr[j] * (gr[j] - df);
  }
}

/* softmaxFused(x, y, rows, cols): y = softmax over the last axis, exps by fexp, sum in double. */
static napi_value softmax_fused(napi_env env, napi_callback_info info) {
  ARGS(4);
  F32(0, x, nx);
  F32(1, y, ny);
  INT(2, rows);
  INT(3, cols);
  RANGE("softmaxFused", cols, 1, INT64_MAX, "cols must be >= 1");
  SIZE("softmaxFused", total, rows, cols);
  if (!covers(nx, total) || !covers(ny, total)) {
    throw_range(env, "moecat_native.softmaxFused: sizes do not match the arrays");
    return NULL;
  }
  const RowsCtx c = {x, NULL, y, cols};
  par_for(rows, PAR_ELEMS / cols + 1, softmax_fused_range, &c);
  return undef(env);
}

/* softmaxFusedGrad(y, dy, dx, rows, cols): dx = y (dy - sum_j dy_j y_j), the sum in double. */
static napi_value softmax_fused_grad(napi_env env, napi_callback_info info) {
  ARGS(5);
  F32(0, y, ny);
  F32(1, dy, nd);
  F32(2, dx, nx);
  INT(3, rows);
  INT(4, cols);
  RANGE("softmaxFusedGrad", cols, 1, INT64_MAX, "cols must be >= 1");
  SIZE("softmaxFusedGrad", total, rows, cols);
  if (!covers(ny, total) || !covers(nd, total) || !covers(nx, total)) {
    throw_range(env, "moecat_native.softmaxFusedGrad: sizes do not match the arrays");
    return NULL;
  }
  const RowsCtx c = {y, dy, dx, cols};
  par_for(rows, PAR_ELEMS / cols + 1, softmax_fused_grad_range, &c);
  return undef(env);
}

/* ------------------------------------------------------------------ fused cross-entropy */

typedef struct {
  const float* z;
  const int32_t* y;
  const float* w;
  float* lse;
  double* term; /* forward: w_t (lse_t - z_t[y_t]) per row */
  float* e;     /* forward: one row of exponentials per chunk of rows */
  int64_t cols, chunk;
  double dy;    /* backward */
  float* o;     /* backward */
} CeCtx;

static void ce_rows(const void* ctx, int64_t lo, int64_t hi) {
  const CeCtx* c = (const CeCtx*)ctx;
  const int64_t cols = c->cols;
  float* e = c->e + (lo / c->chunk) * cols;
  for (int64_t i = lo; i < hi; i++) {
    const float* r = c->z + i * cols;
    float m = r[0];
    for (int64_t j = 1; j < cols; j++) {
      const float v = r[j];
      if (v != v || v > m) m = v;
    }
    for (int64_t j = 0; j < cols; j++) e[j] = fexp(r[j] - m);
    double s = 0;
    for (int64_t j = 0; j < cols; j++) s += e[j];
    const double l = (double)m + dm_log(s);
    c->lse[i] = (float)l;
    c->term[i] = c->w[i] != 0 ? (double)c->w[i] * (l - (double)r[c->y[i]]) : 0;
  }
}

static void ce_grad_rows(const void* ctx, int64_t lo, int64_t hi) {
  const CeCtx* c = (const CeCtx*)ctx;
  const int64_t cols = c->cols;
  for (int64_t i = lo; i < hi; i++) {
    const float* r = c->z + i * cols;
    float* g = c->o + i * cols;
    if (c->w[i] == 0) {
      memset(g, 0, sizeof(float) * (size_t)cols);
      continue;
    }
    const int32_t yi = c->y[i];
    const float sc = (float)((double)c->w[i] * c->dy);
    const float l = c->lse[i];
    for (int64_t j = 0; j < cols; j++) g[j] = fexp(r[j] - l) * sc;
    g[yi] = (fexp(r[yi] - l) - 1.0f) * sc;
  }
}

/*
 * crossEntropy(z, targets, weights, lse, rows, cols) -> sum_t w_t (lse_t - z_t[y_t])
 * One pass for the row max, one for sum fexp(z - max) accumulated in double; lse_t = max + log(sum) is
 * stored (float32) for the backward pass. Rows with weight 0 still get their lse. The total is
 * accumulated in double in row order.
 */
static napi_value cross_entropy(napi_env env, napi_callback_info info) {
  ARGS(6);
  F32(0, z, nz);
  I32A(1, y, ny);
  F32(2, w, nw);
  F32(3, lse, nl);
  INT(4, rows);
  INT(5, cols);
  RANGE("crossEntropy", cols, 1, INT64_MAX, "cols must be >= 1");
  SIZE("crossEntropy", zsize, rows, cols);
  if (!covers(nz, zsize) || !covers(ny, rows) || !covers(nw, rows) || !covers(nl, rows)) {
    throw_range(env, "moecat_native.crossEntropy: sizes do not match the arrays");
    return NULL;
  }
  if (!indices_ok(y, rows, cols)) {
    throw_range(env, "moecat_native.crossEntropy: target out of range");
    return NULL;
  }
  /* Rows on the pool, each with its own row of exponentials (computed in a loop that vectorises,
     then summed in order) and its own loss term; the terms are then added in row order. */
  const int64_t chunk = PAR_ELEMS / cols + 1, chunks = (rows + chunk - 1) / chunk;
  float* e = (float*)malloc(sizeof(float) * (size_t)(cols * (chunks > 0 ? chunks : 1)));
  double* term = (double*)malloc(sizeof(double) * (size_t)(rows > 0 ? rows : 1));
  if (!e || !term) {
    free(e);
    free(term);
    napi_throw_error(env, NULL, "moecat_native.crossEntropy: out of memory");
    return NULL;
  }
  const CeCtx c = {z, y, w, lse, term, e, cols, chunk, 0, NULL};
  par_for(rows, chunk, ce_rows, &c);
  double total = 0;
  for (int64_t i = 0; i < rows; i++) {
    if (w[i] != 0) total += term[i];
  }
  free(e);
  free(term);
  napi_value out;
  CHECK(napi_create_double(env, total, &out));
  return out;
}

/*
 * crossEntropyGrad(z, targets, weights, lse, dy, out, rows, cols)
 * out_tj = (fexp(z_tj - lse_t) - [j == y_t]) * w_t * dy, in float; zero rows
 * where w_t = 0.
 */
static napi_value cross_entropy_grad(napi_env env, napi_callback_info info) {
  ARGS(8);
  F32(0, z, nz);
  I32A(1, y, ny);
  F32(2, w, nw);
  F32(3, lse, nl);
  DBL(4, dy);
  F32(5, o, no);
  INT(6, rows);
  INT(7, cols);
  RANGE("crossEntropyGrad", cols, 1, INT64_MAX, "cols must be >= 1");
  SIZE("crossEntropyGrad", total, rows, cols);
  if (!covers(nz, total) || !covers(no, total) || !covers(ny, rows) || !covers(nw, rows) || !covers(nl, rows)) {
    throw_range(env, "moecat_native.crossEntropyGrad: sizes do not match the arrays");
    return NULL;
  }
  for (int64_t i = 0; i < rows; i++) {
    if (w[i] != 0 && (y[i] < 0 || y[i] >= cols)) {
      throw_range(env, "moecat_native.crossEntropyGrad: target out of range");
      return NULL;
    }
  }
  const CeCtx c = {z, y, w, lse, NULL, NULL, cols, 0, dy, o};
  par_for(rows, PAR_ELEMS / cols + 1, ce_grad_rows, &c);
  return undef(env);
}


/* ------------------------------------------------------------------ fused RMSNorm */

typedef struct {
  const float *x, *w;
  float *y, *rinv;
  const float* dy;
  float *dx, *dw;
  int64_t cols, rows;
  double eps;
} RmsCtx;

static void rms_rows(const void* ctx, int64_t lo, int64_t hi) {
  const RmsCtx* c = (const RmsCtx*)ctx;
  const int64_t cols = c->cols;
  for (int64_t i = lo; i < hi; i++) {
    const float* xr = c->x + i * cols;
    float* yr = c->y + i * cols;
    double ss = 0;
    for (int64_t j = 0; j < cols; j++) ss += (double)xr[j] * (double)xr[j];
    const double r = 1.0 / sqrt(ss / (double)cols + c->eps);
    c->rinv[i] = (float)r;
    for (int64_t j = 0; j < cols; j++) yr[j] = (float)((double)xr[j] * r * (double)c->w[j]);
  }
}

static void rms_grad_rows(const void* ctx, int64_t lo, int64_t hi) {
  const RmsCtx* c = (const RmsCtx*)ctx;
  const int64_t cols = c->cols;
  for (int64_t i = lo; i < hi; i++) {
    const float* xr = c->x + i * cols;
    const float* gr = c->dy + i * cols;
    float* dr = c->dx + i * cols;
    const double r = (double)c->rinv[i];
    double dot = 0;
    for (int64_t j = 0; j < cols; j++) dot += (double)gr[j] * (double)c->w[j] * (double)xr[j];
    const double k = r * r * r * dot / (double)cols;
    for (int64_t j = 0; j < cols; j++) dr[j] = (float)(r * (double)gr[j] * (double)c->w[j] - (double)xr[j] * k);
  }
}

/* Columns of dw per task: accumulators of one block stay in registers / L1 across the rows. */
#define RMS_DW_COLS 32

static void rms_grad_dw(const void* ctx, int64_t lo, int64_t hi) {
  const RmsCtx* c = (const RmsCtx*)ctx;
  const int64_t cols = c->cols;
  for (int64_t blk = lo; blk < hi; blk++) {
    const int64_t j0 = blk * RMS_DW_COLS, j1 = j0 + RMS_DW_COLS < cols ? j0 + RMS_DW_COLS : cols;
    double acc[RMS_DW_COLS] = {0};
    for (int64_t i = 0; i < c->rows; i++) {
      const float* xr = c->x + i * cols;
      const float* gr = c->dy + i * cols;
      const double r = (double)c->rinv[i];
      for (int64_t j = j0; j < j1; j++) acc[j - j0] += (double)gr[j] * (double)xr[j] * r;
    }
    for (int64_t j = j0; j < j1; j++) c->dw[j] = (float)acc[j - j0];
  }
}

/*
 * rmsNorm(x, w, y, rinv, rows, cols, eps): rinv_t = 1 / sqrt(sum_j x_tj^2 / cols + eps) in
 * double; y_tj = x_tj * rinv_t * w_j, rounded once. rinv is kept (float32) for the backward.
 */
static napi_value rms_norm(napi_env env, napi_callback_info info) {
  ARGS(7);
  F32(0, x, nx);
  F32(1, w, nw);
  F32(2, y, ny);
  F32(3, rinv, nr);
  INT(4, rows);
  INT(5, cols);
  DBL(6, eps);
  RANGE("rmsNorm", cols, 1, INT64_MAX, "cols must be >= 1");
  SIZE("rmsNorm", total, rows, cols);
  if (!covers(nx, total) || !covers(ny, total) || !covers(nw, cols) || !covers(nr, rows)) {
    throw_range(env, "moecat_native.rmsNorm: sizes do not match the arrays");
    return NULL;
  }
  const RmsCtx c = {x, w, y, rinv, NULL, NULL, NULL, cols, rows, eps};
  par_for(rows, PAR_ELEMS / cols + 1, rms_rows, &c);
  return undef(env);
}

/*
 * rmsNormGrad(x, w, rinv, dy, dx, dw, rows, cols): with r = rinv_t,
 *   dx_tj = r (dy_tj w_j) - x_tj r^3 / cols * sum_k dy_tk w_k x_tk,
 *   dw_j  = sum_t dy_tj x_tj r (double, in row order).
 */
static napi_value rms_norm_grad(napi_env env, napi_callback_info info) {
  ARGS(8);
  F32(0, x, nx);
  F32(1, w, nw);
  F32(2, rinv, nr);
  F32(3, dy, nd);
  F32(4, dx, ndx);
  F32(5, dw, ndw);
  INT(6, rows);
  INT(7, cols);
  RANGE("rmsNormGrad", cols, 1, INT64_MAX, "cols must be >= 1");
  SIZE("rmsNormGrad", total, rows, cols);
  if (!covers(nx, total) || !covers(nd, total) || !covers(ndx, total) || !covers(nw, cols) || !covers(ndw, cols) || !covers(nr, rows)) {
    throw_range(env, "moecat_native.rmsNormGrad: sizes do not match the arrays");
    return NULL;
  }
  /* dx row by row; then dw column block by column block, each column summed over rows in order. */
  const RmsCtx c = {x, w, NULL, rinv, dy, dx, dw, cols, rows, 0};
  par_for(rows, PAR_ELEMS / cols + 1, rms_grad_rows, &c);
  par_for((cols + RMS_DW_COLS - 1) / RMS_DW_COLS, rows * RMS_DW_COLS >= PAR_ELEMS ? 1 : PAR_ELEMS, rms_grad_dw, &c);
  return undef(env);
}

/* ------------------------------------------------------------------ fused SwiGLU activation (swiglu.h) */

/* siluMul(g, u, out, sig, n): sig = sigmoid(g) with fexp (kept for the backward), out = g * sig * u, in float. */
static napi_value silu_mul(napi_env env, napi_callback_info info) {
  ARGS(5);
  F32(0, g, ng);
  F32(1, u, nu);
  F32(2, o, no);
  F32(3, sig, ns);
  INT(4, n);
  if (n < 0 || (size_t)n > ng || (size_t)n > nu || (size_t)n > no || (size_t)n > ns) {
    throw_range(env, "moecat_native.siluMul: sizes do not match the arrays");
    return NULL;
  }
  const SiluCtx c = {g, u, o, sig, NULL, NULL, NULL};
  par_for(n, PAR_ELEMS, silu_range, &c);
  return undef(env);
}

/* siluMulGrad(g, u, sig, da, dg, du, n): with s = sig (float32 sigmoid(g) from the forward),
 * dg = da u s (1 + g (1 - s)); du = da g s; in double, rounded once. */
static napi_value silu_mul_grad(napi_env env, napi_callback_info info) {
  ARGS(7);
  F32(0, g, ng);
  F32(1, u, nu);
  F32(2, sig, ns);
  F32(3, da, nda);
  F32(4, dg, ndg);
  F32(5, du, ndu);
  INT(6, n);
  if (n < 0 || (size_t)n > ng || (size_t)n > nu || (size_t)n > ns || (size_t)n > nda || (size_t)n > ndg || (size_t)n > ndu) {
    throw_range(env, "moecat_native.siluMulGrad: sizes do not match the arrays");
    return NULL;
  }
  const SiluCtx c = {g, u, NULL, sig, da, dg, du};
  par_for(n, PAR_ELEMS, silu_grad_range, &c);
  return undef(env);
}

/* ------------------------------------------------------------------ MoE weighted combine */

/* True when every slot[i] < rows (and >= 0); otherwise throws a RangeError with `what`. */
static int slots_in_range(napi_env env, const int32_t* slot, int64_t n, int64_t rows, const char* what) {
  for (int64_t i = 0; i < n; i++) {
    if (slot[i] < 0 || slot[i] >= rows) {
      throw_range(env, what);
      return 0;
    }
  }
  return 1;
}

typedef struct {
  const float* src;
  const int32_t* slot;
  const float* gates;
  const float* dy;
  float* out;    /* forward: out; backward: dsrc */
  float* dgates; /* backward */
  int64_t K, d, T;
} CombineCtx;

static void combine_rows(const void* ctx, int64_t lo, int64_t hi) {
  const CombineCtx* c = (const CombineCtx*)ctx;
  const int64_t K = c->K, d = c->d;
  for (int64_t t = lo; t < hi; t++) {
    float* o = c->out + t * d;
    for (int64_t j = 0; j < d; j++) {
      double acc = 0;
      for (int64_t k = 0; k < K; k++) {
        const float p = c->gates[t * K + k] * c->src[(int64_t)c->slot[t * K + k] * d + j];
        acc += p;
      }
      o[j] = (float)acc;
    }
  }
}

static void combine_grad_gates(const void* ctx, int64_t lo, int64_t hi) {
  const CombineCtx* c = (const CombineCtx*)ctx;
  const int64_t K = c->K, d = c->d;
  for (int64_t i = lo; i < hi; i++) {
    const float* g = c->dy + (i / K) * d;
    const float* s = c->src + (int64_t)c->slot[i] * d;
    double acc = 0;
    for (int64_t j = 0; j < d; j++) {
      const float p = g[j] * s[j];
      acc += p;
    }
    c->dgates[i] = (float)acc;
  }
}

/* Columns of dsrc per task. */
#define COMBINE_COLS 32

static void combine_grad_src(const void* ctx, int64_t lo, int64_t hi) {
  const CombineCtx* c = (const CombineCtx*)ctx;
  const int64_t K = c->K, d = c->d;
  for (int64_t blk = lo; blk < hi; blk++) {
    const int64_t j0 = blk * COMBINE_COLS, j1 = j0 + COMBINE_COLS < d ? j0 + COMBINE_COLS : d;
    for (int64_t i = 0; i < c->T * K; i++) {
      const float* g = c->dy + (i / K) * d;
      float* ds = c->out + (int64_t)c->slot[i] * d;
      const float w = c->gates[i];
      for (int64_t j = j0; j < j1; j++) {
        const float q = g[j] * w;
        ds[j] = ds[j] + q;
      }
    }
  }
}

/*
 * moeCombine(src, slot, gates, out, T, K, d): out[t] = sum_k gates[t*K+k] * src[slot[t*K+k]],
 * with the arithmetic of the composite gather -> mul -> sum over k: each product rounded to
 * float32, the K products summed in double from zero, rounded once.
 */
static napi_value moe_combine(napi_env env, napi_callback_info info) {
  ARGS(7);
  F32(0, src, nsrc);
  I32A(1, slot, nslot);
  F32(2, gates, ng);
  F32(3, out, no);
  INT(4, T);
  INT(5, K);
  INT(6, d);
  RANGE("moeCombine", K, 1, INT64_MAX, "K must be >= 1");
  RANGE("moeCombine", d, 1, INT64_MAX, "d must be >= 1");
  SIZE("moeCombine", tk, T, K);
  SIZE("moeCombine", td, T, d);
  if (!covers(nslot, tk) || !covers(ng, tk) || !covers(no, td)) {
    throw_range(env, "moecat_native.moeCombine: sizes do not match the arrays");
    return NULL;
  }
  if (!slots_in_range(env, slot, T * K, (int64_t)(nsrc / (size_t)d), "moecat_native.moeCombine: slot source out of range")) return NULL;
  const CombineCtx c = {src, slot, gates, NULL, out, NULL, K, d, T};
  par_for(T, PAR_ELEMS / (d * K) + 1, combine_rows, &c);
  return undef(env);
}

/*
 * moeCombineGrad(src, slot, gates, dy, dsrc, dgates, T, K, d): the composite's gradient.
 * dgates[i] = sum_j float32(dy[t,j] * src[slot[i],j]) in double, rounded once; dsrc (zeroed by
 * the caller) [slot[i]] += float32(dy[t] * gates[i]), in slot order, in float32 (ScatterNd's order).
 */
static napi_value moe_combine_grad(napi_env env, napi_callback_info info) {
  ARGS(9);
  F32(0, src, nsrc);
  I32A(1, slot, nslot);
  F32(2, gates, ng);
  F32(3, dy, ndy);
  F32(4, dsrc, nds);
  F32(5, dgates, ndg);
  INT(6, T);
  INT(7, K);
  INT(8, d);
  RANGE("moeCombineGrad", K, 1, INT64_MAX, "K must be >= 1");
  RANGE("moeCombineGrad", d, 1, INT64_MAX, "d must be >= 1");
  SIZE("moeCombineGrad", tk, T, K);
  SIZE("moeCombineGrad", td, T, d);
  if (!covers(nslot, tk) || !covers(ng, tk) || !covers(ndg, tk) || !covers(ndy, td) || nds < nsrc) {
    throw_range(env, "moecat_native.moeCombineGrad: sizes do not match the arrays");
    return NULL;
  }
  if (!slots_in_range(env, slot, T * K, (int64_t)(nsrc / (size_t)d), "moecat_native.moeCombineGrad: slot source out of range")) return NULL;
  /* dgates by slots; dsrc by column blocks, each block taking the slots in order (a source row
     shared by several slots adds their terms in slot order, as one loop would). */
  const CombineCtx c = {src, slot, gates, dy, dsrc, dgates, K, d, T};
  par_for(T * K, PAR_ELEMS / d + 1, combine_grad_gates, &c);
  par_for((d + COMBINE_COLS - 1) / COMBINE_COLS, T * K * COMBINE_COLS >= PAR_ELEMS ? 1 : PAR_ELEMS, combine_grad_src, &c);
  return undef(env);
}

/* ------------------------------------------------------------------ AdamW */

/*
 * adamw(params, grads, m, v, offsets, sizes, lrs, wds, b1, b2, c1, c2, eps, gradScale, threads)
 * One AdamW update over parameter slices (trainer/adamw.ts): the same double expressions in the
 * same order as the JS loop, each store rounded to float32 once, so the bits equal the JS path.
 * The JS loop keeps m_i and v_i unrounded (the value of an assignment) for the update; so does
 * this one. Every element is independent, so splitting the elements into chunks for the pool
 * (threads < 1: the pool's count) cannot change a bit.
 */
typedef struct {
  float *p, *m, *v;
  const float* g;
  const int32_t *offs, *sizes;
  const double *lrs, *wds;
  size_t nslices;
  double b1, b2, c1, c2, eps, gs;
  int64_t lo, hi; /* element range [lo, hi) of the concatenated slices */
} AdamTask;

static void* adamw_run(void* arg) {
  const AdamTask* t = (const AdamTask*)arg;
  const double ob1 = 1 - t->b1, ob2 = 1 - t->b2;
  int64_t base = 0;
  for (size_t k = 0; k < t->nslices; k++) {
    const int64_t n = t->sizes[k];
    const int64_t a = t->lo > base ? t->lo - base : 0;
    const int64_t b = t->hi - base < n ? t->hi - base : n;
    const double glr = t->lrs[k], wd = t->wds[k];
    const double b1 = t->b1, b2 = t->b2, c1 = t->c1, c2 = t->c2, eps = t->eps, gs = t->gs;
    /* Local restrict pointers let the loop vectorise (same per-element arithmetic). */
    const int64_t o = t->offs[k];
    float* restrict P = t->p + o;
    float* restrict M = t->m + o;
    float* restrict V = t->v + o;
    const float* restrict G = t->g + o;
    for (int64_t j = a; j < b; j++) {
      const double gi = (double)G[j] * gs;
      const double mi = b1 * (double)M[j] + ob1 * gi;
      M[j] = (float)mi;
      const double vi = b2 * (double)V[j] + ob2 * gi * gi;
      V[j] = (float)vi;
      const double pi = (double)P[j];
      P[j] = (float)(pi - glr * ((mi / c1) / (sqrt(vi / c2) + eps) + wd * pi));
    }
    base += n;
    if (base >= t->hi) break;
  }
  return NULL;
}

/* Elements per pool task: large enough that a task outweighs taking it. */
#define ADAM_CHUNK 65536

static void adamw_chunk(void* ctx, int64_t index, int slot) {
  (void)slot;
  AdamTask t = *(const AdamTask*)ctx;
  t.lo = index * ADAM_CHUNK;
  if (t.hi > t.lo + ADAM_CHUNK) t.hi = t.lo + ADAM_CHUNK;
  adamw_run(&t);
}

static napi_value adamw(napi_env env, napi_callback_info info) {
  ARGS(15);
  F32(0, p, np);
  F32(1, g, ng);
  F32(2, m, nm);
  F32(3, v, nv);
  I32A(4, offs, noffs);
  I32A(5, sizes, nsizes);
  napi_typedarray_type t;
  size_t nlr, nwd;
  void* lrp;
  void* wdp;
  napi_value ab;
  size_t off;
  if (napi_get_typedarray_info(env, argv[6], &t, &nlr, &lrp, &ab, &off) != napi_ok || t != napi_float64_array ||
      napi_get_typedarray_info(env, argv[7], &t, &nwd, &wdp, &ab, &off) != napi_ok || t != napi_float64_array) {
    napi_throw_type_error(env, NULL, "moecat_native.adamw: lrs and wds must be Float64Arrays");
    return NULL;
  }
  DBL(8, b1);
  DBL(9, b2);
  DBL(10, c1);
  DBL(11, c2);
  DBL(12, eps);
  DBL(13, gs);
  INT(14, threads);
  RANGE("adamw", threads, 0, 1024, "threads must be in 0..1024");
  if (ng != np || nm != np || nv != np || nsizes != noffs || nlr != noffs || nwd != noffs) {
    throw_range(env, "moecat_native.adamw: array lengths do not match");
    return NULL;
  }
  int64_t total = 0;
  for (size_t k = 0; k < noffs; k++) {
    if (offs[k] < 0 || sizes[k] < 0 || (size_t)offs[k] + (size_t)sizes[k] > np) {
      throw_range(env, "moecat_native.adamw: slice out of range");
      return NULL;
    }
    total += sizes[k];
  }
  AdamTask a = {p, m, v, g, offs, sizes, (const double*)lrp, (const double*)wdp, noffs, b1, b2, c1, c2, eps, gs, 0, total};
  pool_run((total + ADAM_CHUNK - 1) / ADAM_CHUNK, adamw_chunk, &a, (int)threads);
  return undef(env);
}

/* ------------------------------------------------------------------ malloc */

/*
 * tuneMalloc(mmapThreshold, trimThreshold) -> boolean
 * glibc serves blocks above M_MMAP_THRESHOLD (dynamic, at most 32 MiB) with fresh mmap()s and
 * gives freed heap tops back to the kernel above M_TRIM_THRESHOLD. A training step allocates
 * and frees the same large ArrayBuffers every step, so every one of them page-faults afresh
 * (kernel page clearing was 10% of a configs/small step). Raising both keeps the memory mapped
 * and reused. Returns false where the C library is not glibc.
 */
static napi_value tune_malloc(napi_env env, napi_callback_info info) {
  ARGS(2);
  INT(0, mmap_threshold);
  INT(1, trim_threshold);
  RANGE("tuneMalloc", mmap_threshold, 0, INT32_MAX, "mmapThreshold must be in 0..2^31-1");
  RANGE("tuneMalloc", trim_threshold, 0, INT32_MAX, "trimThreshold must be in 0..2^31-1");
  napi_value r;
#ifdef __GLIBC__
  int ok = mallopt(M_MMAP_THRESHOLD, (int)mmap_threshold) == 1 && mallopt(M_TRIM_THRESHOLD, (int)trim_threshold) == 1;
  CHECK(napi_get_boolean(env, ok, &r));
#else
  (void)mmap_threshold;
  (void)trim_threshold;
  CHECK(napi_get_boolean(env, 0, &r));
#endif
  return r;
}

/* ------------------------------------------------------------------ module */

/* The serving engine's decode kernels (decode.c). */
int moecat_decode_register(napi_env env, napi_value exports);
/* CHESS's selective sparse kernels (sparse.c). */
int moecat_sparse_register(napi_env env, napi_value exports);
int moecat_experts_register(napi_env env, napi_value exports);

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"setThreads", NULL, set_threads, NULL, NULL, NULL, napi_default, NULL},
      {"setIsa", NULL, set_isa, NULL, NULL, NULL, napi_default, NULL},
      {"poolProfile", NULL, pool_profile_js, NULL, NULL, NULL, napi_default, NULL},
      {"gemmInfo", NULL, gemm_info, NULL, NULL, NULL, napi_default, NULL},
      {"sgemm", NULL, sgemm, NULL, NULL, NULL, napi_default, NULL},
      {"binary", NULL, binary, NULL, NULL, NULL, napi_default, NULL},
      {"unary", NULL, unary, NULL, NULL, NULL, napi_default, NULL},
      {"reduce", NULL, reduce, NULL, NULL, NULL, napi_default, NULL},
      {"softmax", NULL, softmax, NULL, NULL, NULL, napi_default, NULL},
      {"copy", NULL, copy, NULL, NULL, NULL, napi_default, NULL},
      {"transpose2d", NULL, transpose2d, NULL, NULL, NULL, napi_default, NULL},
      {"gatherRows", NULL, gather_rows, NULL, NULL, NULL, napi_default, NULL},
      {"scatterAddRows", NULL, scatter_add_rows, NULL, NULL, NULL, napi_default, NULL},
      {"adamw", NULL, adamw, NULL, NULL, NULL, napi_default, NULL},
      {"crossEntropy", NULL, cross_entropy, NULL, NULL, NULL, napi_default, NULL},
      {"crossEntropyGrad", NULL, cross_entropy_grad, NULL, NULL, NULL, napi_default, NULL},
      {"rmsNorm", NULL, rms_norm, NULL, NULL, NULL, napi_default, NULL},
      {"softmaxFused", NULL, softmax_fused, NULL, NULL, NULL, napi_default, NULL},
      {"softmaxFusedGrad", NULL, softmax_fused_grad, NULL, NULL, NULL, napi_default, NULL},
      {"rmsNormGrad", NULL, rms_norm_grad, NULL, NULL, NULL, napi_default, NULL},
      {"siluMul", NULL, silu_mul, NULL, NULL, NULL, napi_default, NULL},
      {"siluMulGrad", NULL, silu_mul_grad, NULL, NULL, NULL, napi_default, NULL},
      {"moeCombine", NULL, moe_combine, NULL, NULL, NULL, napi_default, NULL},
      {"moeCombineGrad", NULL, moe_combine_grad, NULL, NULL, NULL, napi_default, NULL},
      {"tuneMalloc", NULL, tune_malloc, NULL, NULL, NULL, napi_default, NULL},
  };
  if (napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props) != napi_ok) return NULL;
  if (!moecat_decode_register(env, exports)) return NULL;
  if (!moecat_sparse_register(env, exports)) return NULL;
  if (!moecat_experts_register(env, exports)) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
