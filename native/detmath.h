/*
 * exp, log and tanh in double for the addon's kernels, written with +, -, *, / and exact bit
 * operations only (compiled with -ffp-contract=off: no FMA contraction). The C library's
 * versions are free to differ between machines (glibc picks FMA code paths by CPU, other
 * libraries use other algorithms), which would break "the same bits on every machine"; these
 * give the same bits wherever IEEE double arithmetic rounds to nearest. Accuracy: a few double
 * ulps, far below the float32 rounding the kernels apply to every result.
 */
#ifndef MOECAT_DETMATH_H
#define MOECAT_DETMATH_H
#include <stdint.h>
#include <string.h>

static inline double dm_from_bits(uint64_t u) {
  double d;
  memcpy(&d, &u, sizeof d);
  return d;
}

static inline uint64_t dm_bits(double d) {
  uint64_t u;
  memcpy(&u, &d, sizeof u);
  return u;
}

/* 2^k for -1022 <= k <= 1023. */
static inline double dm_pow2(int k) { return dm_from_bits((uint64_t)(k + 1023) << 52); }

/* ln 2 split so that k·LN2_HI is exact for |k| < 2^11 (LN2_HI has 32 significant bits). */
#define DM_LN2_HI 6.93147180369123816490e-01
#define DM_LN2_LO 1.90821492927058770002e-10
#define DM_INV_LN2 1.44269504088896338700e+00

/* e^r for |r| <= 0.35: Taylor series to r^13 (truncation below 1e-17), Horner. */
static inline double dm_exp_reduced(double r) {
  double p = 1.0 / 6227020800.0; /* 1/13! */
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  return p * r + 1.0;
}

static inline double dm_exp(double x) {
  if (x != x) return x;
  if (x > 709.782712893384) return 1.0 / 0.0;
  if (x < -745.2) return 0.0;
  /* k = round(x / ln 2) by the 1.5·2^52 trick (round to nearest, exact for |v| < 2^51). */
  const double kd = (x * DM_INV_LN2 + 6755399441055744.0) - 6755399441055744.0;
  const int k = (int)kd;
  const double r = (x - kd * DM_LN2_HI) - kd * DM_LN2_LO;
  const double p = dm_exp_reduced(r);
  if (k >= -1021 && k <= 1023) return p * dm_pow2(k);
  if (k > 1023) return p * dm_pow2(1023) * dm_pow2(k - 1023);
  return p * dm_pow2(k + 600) * dm_pow2(-600); /* subnormal results */
}

static inline double dm_log(double x) {
  if (x != x) return x;
  if (x < 0) return 0.0 / 0.0;
  if (x == 0) return -1.0 / 0.0;
  if (x == 1.0 / 0.0) return x;
  int e = 0;
  uint64_t u = dm_bits(x);
  if ((u >> 52) == 0) { /* subnormal: scale by 2^54 */
    x *= 18014398509481984.0;
    u = dm_bits(x);
    e = -54;
  }
  e += (int)(u >> 52) - 1023;
  double m = dm_from_bits((u & 0x000FFFFFFFFFFFFFull) | 0x3FF0000000000000ull); /* [1, 2) */
  if (m > 1.4142135623730951) {
    m *= 0.5; /* exact */
    e += 1;
  }
  /* log m = 2 atanh(s), s = (m-1)/(m+1), |s| <= 0.1716: series to s^23 (truncation below 1e-18). */
  const double f = m - 1.0;
  const double s = f / (2.0 + f);
  const double z = s * s;
  double p = 1.0 / 23;
  p = p * z + 1.0 / 21;
  p = p * z + 1.0 / 19;
  p = p * z + 1.0 / 17;
  p = p * z + 1.0 / 15;
  p = p * z + 1.0 / 13;
  p = p * z + 1.0 / 11;
  p = p * z + 1.0 / 9;
  p = p * z + 1.0 / 7;
  p = p * z + 1.0 / 5;
  p = p * z + 1.0 / 3;
  const double lm = 2.0 * s + 2.0 * s * (z * p); /* 2s(1 + z p), the small part added last */
  const double ed = (double)e;
  return ed * DM_LN2_HI + (lm + ed * DM_LN2_LO);
}

/* e^y - 1 for |y| <= 1: Taylor series to y^19 (truncation below 1e-17 relative), Horner. */
static inline double dm_expm1_small(double y) {
  double p = 1.0 / 2432902008176640000.0; /* 1/20! */
  static const double inv_fact[] = {1.0 / 121645100408832000.0, 1.0 / 6402373705728000.0, 1.0 / 355687428096000.0, 1.0 / 20922789888000.0,
                                    1.0 / 1307674368000.0,      1.0 / 87178291200.0,      1.0 / 6227020800.0,      1.0 / 479001600.0,
                                    1.0 / 39916800.0,           1.0 / 3628800.0,          1.0 / 362880.0,          1.0 / 40320.0,
                                    1.0 / 5040.0,               1.0 / 720.0,              1.0 / 120.0,             1.0 / 24.0,
                                    1.0 / 6.0,                  0.5,                      1.0};
  for (size_t i = 0; i < sizeof inv_fact / sizeof inv_fact[0]; i++) p = p * y + inv_fact[i];
  return p * y;
}

static inline double dm_tanh(double x) {
  if (x != x) return x;
  const double a = x < 0 ? -x : x;
  double t;
  if (a > 22.0) t = 1.0;
  else if (a < 0.5) {
    const double em = dm_expm1_small(-2.0 * a); /* tanh a = -expm1(-2a) / (expm1(-2a) + 2) */
    t = -em / (em + 2.0);
  } else t = 1.0 - 2.0 / (dm_exp(2.0 * a) + 1.0);
  return x < 0 ? -t : t;
}

#endif
