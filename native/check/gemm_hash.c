/*
 * Prints one FNV-1a hash of moecat GEMM outputs per variant and thread count, for fixed
 * pseudo-random inputs over shapes that cross every blocking path (packed and in-place A,
 * transposes, broadcast batches, k blocks, edge tiles), and one hash of detmath.h's exp, log
 * and tanh over a million inputs. Every gemm line must show the same hash on every machine, and
 * so must the detmath line: spec/native/crossArch.spec.ts builds it natively and, where a cross compiler
 * and qemu are installed, for arm64, and compares both with the committed value.
 */
#include "detmath.h"
#include "gemm.h"
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
static uint32_t s = 12345;
static float rnd(void) { s = s * 1664525u + 1013904223u; return (float)(s >> 8) / 16777216.0f - 0.5f; }
static uint64_t fnv(const void* p, size_t n, uint64_t h) { const unsigned char* c = p; for (size_t i = 0; i < n; i++) { h ^= c[i]; h *= 1099511628211ull; } return h; }
int main(void) {
  int shapes[][7] = {{1,1024,1024,1024,0,0,0},{1,300,1100,600,1,1,0},{48,128,128,32,0,0,0},{48,128,48,128,0,1,0},{3,17,255,7,1,0,0},{1,1,2049,300,0,0,0},{2,255,33,513,0,1,1}};
  for (int isa = 0; isa < GEMM_ISA_COUNT; isa++) {
    if (!gemm_set_isa(isa)) continue;
    for (int th = 1; th <= 2; th++) {
      uint64_t h = 1469598103934665603ull; s = 12345;
      for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        int b = shapes[si][0], M = shapes[si][1], N = shapes[si][2], K = shapes[si][3], ta = shapes[si][4], tb = shapes[si][5], bc = shapes[si][6];
        int bB = bc ? 1 : b;
        float *A = malloc(4ul*b*M*K), *B = malloc(4ul*bB*K*N), *C = malloc(4ul*b*M*N);
        for (long i = 0; i < (long)b*M*K; i++) A[i] = rnd();
        for (long i = 0; i < (long)bB*K*N; i++) B[i] = rnd();
        gemm_batched(b, b, bB, M, N, K, ta, tb, A, B, C, th);
        h = fnv(C, 4ul*b*M*N, h);
        free(A); free(B); free(C);
      }
      printf("%s threads=%d hash=%016llx\n", gemm_isa_name(isa), th, (unsigned long long)h);
    }
  }
  uint64_t h = 1469598103934665603ull;
  s = 777;
  for (int i = 0; i < 1000000; i++) {
    const double x = (double)(rnd() * (i % 3 == 0 ? 200.0f : i % 3 == 1 ? 20.0f : 2.0f));
    const double v[3] = {dm_exp(x), dm_log(x < 0 ? -x : x), dm_tanh(x)};
    h = fnv(v, sizeof v, h);
  }
  printf("detmath hash=%016llx\n", (unsigned long long)h);
}
