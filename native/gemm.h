/*
 * moecat's own single-precision GEMM (native/gemm.c, native/gemm_x86.c).
 *
 * The canonical order: every output element is one fused multiply-add chain over k in
 * ascending order from zero,
 *     acc = 0;  for k = 0 .. K-1:  acc = fmaf(op(A)[i,k], op(B)[k,j], acc);  C[i,j] = acc
 * whatever the blocking, packing, instruction set or thread count. Blocking over k stores acc
 * in C (a float, as it is in a register) and resumes from it; vector kernels give each lane its
 * own output element; threads split the output into tiles and never split k. So the scalar,
 * AVX2 and AVX-512 variants, and every thread count, give the same bits on every machine.
 */
#ifndef MOECAT_GEMM_H
#define MOECAT_GEMM_H
#include <stdint.h>

enum { GEMM_ISA_SCALAR = 0, GEMM_ISA_AVX2 = 1, GEMM_ISA_AVX512 = 2, GEMM_ISA_COUNT = 3 };

/* "scalar", "avx2", "avx512". */
const char* gemm_isa_name(int isa);
/* The ISA named `name`, or -1. */
int gemm_isa_parse(const char* name);
/* Whether this CPU (and OS) can run the variant. */
int gemm_isa_supported(int isa);
/* The fastest supported variant. */
int gemm_isa_best(void);
/* The variant in use (default: the best). */
int gemm_isa(void);
/* Selects a supported variant; returns 0 when unsupported (nothing changes). */
int gemm_set_isa(int isa);

/*
 * Row-major C[bi] = op(A[bi % batchA]) · op(B[bi % batchB]) for bi < batch; op(A) is M×K
 * (stored K×M when transA), op(B) is K×N (stored N×K when transB); C[bi] is M×N, overwritten.
 * threads < 1: the pool's default. Any thread count gives the same bits.
 */
void gemm_batched(int64_t batch, int64_t batchA, int64_t batchB, int64_t M, int64_t N, int64_t K, int transA, int transB,
                  const float* A, const float* B, float* C, int threads);

/*
 * Micro-kernel: C[r, j] for r < mr, j < nr. op(A)[r, k] is read at A[r·rsa + k·csa]: a packed
 * panel has rsa = 1, csa = MR; A read in place has its own strides. Bp holds kc steps of `NR`
 * floats (zero past nr). first: start from 0, else from C (the stored accumulator of the
 * previous k block).
 */
typedef void (*gemm_ukr_fn)(int64_t kc, const float* A, int64_t rsa, int64_t csa, const float* Bp, float* C, int64_t ldc, int mr, int nr,
                            int first);

typedef struct {
  int mr, nr;      /* register tile */
  int kc, mc, nc;  /* cache blocks: k depth, rows of A, columns of B per packed block */
  gemm_ukr_fn ukr;
} gemm_kernel;

/* Defined in gemm_x86.c on x86-64 (NULL ukr elsewhere). */
extern const gemm_kernel gemm_kernel_avx2;
extern const gemm_kernel gemm_kernel_avx512;

#endif
