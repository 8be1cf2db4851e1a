/*
 * sgemm benchmark of moecat's GEMM (native/gemm.c) against OpenBLAS, built by
 * scripts/bench/gemm.ts with the compiler at hand; OpenBLAS is linked only here, and only when
 * installed (-DWITH_OPENBLAS). Prints JSON lines:
 *   gemm-sgemm    one thread, GFLOP/s per variant and OpenBLAS; time is the thread's CPU time
 *                 (best of interleaved repeats), so other processes on a shared machine count less
 *   gemm-scaling  best variant, 1 vs 2 threads, wall time (best of interleaved repeats), and
 *                 whether the two outputs are bitwise identical
 */
#define _GNU_SOURCE
#include "gemm.h"
#include "pool.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef WITH_OPENBLAS
#include <cblas.h>
#endif

static double clock_s(clockid_t c) {
  struct timespec t;
  clock_gettime(c, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

typedef struct {
  const char* label;
  int b, m, k, n, ta, tb;
} Shape;

static const Shape SHAPES[] = {
    {"1024^3", 1, 1024, 1024, 1024, 0, 0},
    {"1024^3 transposeA", 1, 1024, 1024, 1024, 1, 0},
    {"1024^3 transposeB", 1, 1024, 1024, 1024, 0, 1},
    /* configs/small.yaml: 1024 tokens, d 192, vocab 2048, ffn 512, 6 heads x 8 sequences, seq 128, dk 48 */
    {"small lm_head 1024x192x2048", 1, 1024, 192, 2048, 0, 0},
    {"small lm_head dW 192x1024x2048 (tA)", 1, 192, 1024, 2048, 1, 0},
    {"small ffn 1024x192x512", 1, 1024, 192, 512, 0, 0},
    {"small expert ~200x192x128", 1, 200, 192, 128, 0, 0},
    {"small attn QK^T 48x(128x48x128) (tB)", 48, 128, 48, 128, 0, 1},
    {"small attn PV 48x(128x128x32)", 48, 128, 128, 32, 0, 0},
};

static void moecat(const Shape* s, const float* A, const float* B, float* C, int threads) {
  gemm_batched(s->b, s->b, s->b, s->m, s->n, s->k, s->ta, s->tb, A, B, C, threads);
}

#ifdef WITH_OPENBLAS
static void openblas(const Shape* s, const float* A, const float* B, float* C) {
  for (int i = 0; i < s->b; i++)
    cblas_sgemm(CblasRowMajor, s->ta ? CblasTrans : CblasNoTrans, s->tb ? CblasTrans : CblasNoTrans, s->m, s->n, s->k, 1.0f,
                A + (size_t)i * s->m * s->k, s->ta ? s->m : s->k, B + (size_t)i * s->k * s->n, s->tb ? s->k : s->n, 0.0f,
                C + (size_t)i * s->m * s->n, s->n);
}
#endif

/* Repeats so that one measurement takes about 50 ms at 100 GFLOP/s. */
static int reps_for(double flops) {
  int r = (int)(5e9 / flops);
  return r < 1 ? 1 : r > 200 ? 200 : r;
}

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? atoi(argv[1]) : 5;
  srand(1);
  for (size_t si = 0; si < sizeof SHAPES / sizeof SHAPES[0]; si++) {
    const Shape* s = &SHAPES[si];
    const size_t na = (size_t)s->b * s->m * s->k, nb = (size_t)s->b * s->k * s->n, nc = (size_t)s->b * s->m * s->n;
    float *A = malloc(4 * na), *B = malloc(4 * nb), *C = malloc(4 * nc), *C2 = malloc(4 * nc);
    for (size_t i = 0; i < na; i++) A[i] = rand() / (float)RAND_MAX - 0.5f;
    for (size_t i = 0; i < nb; i++) B[i] = rand() / (float)RAND_MAX - 0.5f;
    const double flops = 2.0 * s->b * s->m * s->n * s->k;
    const int reps = reps_for(flops);
    double best[GEMM_ISA_COUNT], bo = 1e30;
    for (int i = 0; i < GEMM_ISA_COUNT; i++) best[i] = 1e30;
    /* One thread: variants and OpenBLAS interleaved, thread CPU time. */
    for (int r = 0; r < rounds; r++) {
      for (int isa = 0; isa < GEMM_ISA_COUNT; isa++) {
        if (!gemm_set_isa(isa)) continue;
        const int n = isa == GEMM_ISA_SCALAR ? 1 : reps; /* the scalar variant is ~50x slower */
        double t = clock_s(CLOCK_THREAD_CPUTIME_ID);
        for (int i = 0; i < n; i++) moecat(s, A, B, C, 1);
        t = (clock_s(CLOCK_THREAD_CPUTIME_ID) - t) / n;
        if (t < best[isa]) best[isa] = t;
      }
#ifdef WITH_OPENBLAS
      openblas_set_num_threads(1);
      double t = clock_s(CLOCK_THREAD_CPUTIME_ID);
      for (int i = 0; i < reps; i++) openblas(s, A, B, C2);
      t = (clock_s(CLOCK_THREAD_CPUTIME_ID) - t) / reps;
      if (t < bo) bo = t;
#endif
    }
    const int top = gemm_isa_best();
    printf("{\"bench\":\"gemm-sgemm\",\"shape\":\"%s\",\"threads\":1", s->label);
    for (int isa = 0; isa < GEMM_ISA_COUNT; isa++)
      if (best[isa] < 1e30) printf(",\"moecat_%s_gflops\":%.1f", gemm_isa_name(isa), flops / best[isa] / 1e9);
#ifdef WITH_OPENBLAS
    printf(",\"openblas_gflops\":%.1f,\"best_vs_openblas\":%.3f", flops / bo / 1e9, bo / best[top]);
#endif
    printf("}\n");
    fflush(stdout);
    /* 1 vs 2 threads, best variant, wall time; bits compared. */
    gemm_set_isa(top);
    double w1 = 1e30, w2 = 1e30, o2 = 1e30;
    for (int r = 0; r < rounds; r++) {
      double t = clock_s(CLOCK_MONOTONIC);
      for (int i = 0; i < reps; i++) moecat(s, A, B, C, 1);
      t = (clock_s(CLOCK_MONOTONIC) - t) / reps;
      if (t < w1) w1 = t;
      t = clock_s(CLOCK_MONOTONIC);
      for (int i = 0; i < reps; i++) moecat(s, A, B, C2, 2);
      t = (clock_s(CLOCK_MONOTONIC) - t) / reps;
      if (t < w2) w2 = t;
#ifdef WITH_OPENBLAS
      float* C3 = malloc(4 * nc);
      openblas_set_num_threads(2);
      t = clock_s(CLOCK_MONOTONIC);
      for (int i = 0; i < reps; i++) openblas(s, A, B, C3);
      t = (clock_s(CLOCK_MONOTONIC) - t) / reps;
      if (t < o2) o2 = t;
      free(C3);
#endif
    }
    printf("{\"bench\":\"gemm-scaling\",\"shape\":\"%s\",\"isa\":\"%s\",\"gflops_1_thread\":%.1f,\"gflops_2_threads\":%.1f,\"speedup\":%.2f,\"bits_identical\":%s",
           s->label, gemm_isa_name(top), flops / w1 / 1e9, flops / w2 / 1e9, w1 / w2, memcmp(C, C2, 4 * nc) == 0 ? "true" : "false");
#ifdef WITH_OPENBLAS
    printf(",\"openblas_gflops_2_threads\":%.1f", flops / o2 / 1e9);
#endif
    printf("}\n");
    fflush(stdout);
    free(A);
    free(B);
    free(C);
    free(C2);
  }
  return 0;
}
