/*
 * The machine's float32 FMA ceiling: the GFLOP/s of independent 256-bit FMA chains (AVX2 + FMA,
 * 12 accumulators: enough to cover the FMA latency on both pipes of current x86 cores), on 1
 * and on N threads. Matrix products cannot beat it; the compute section reports what each
 * target of issue #12 needs as a share of it. Built and run by bench/fma-peak.ts.
 * Prints one JSON line: {"threads":[1,..,N],"gflops":[...]} (best of 5 per thread count).
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static volatile float sink;
static long iters;

static void *chains(void *arg) {
  (void)arg;
  /* Distinct starting values read through volatile: the compiler may not merge the chains. */
  volatile float init[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  __m256 a[12];
  for (int i = 0; i < 12; i++) a[i] = _mm256_set1_ps(init[i]);
  const __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
  for (long n = 0; n < iters; n++) {
    a[0] = _mm256_fmadd_ps(a[0], x, y); a[1] = _mm256_fmadd_ps(a[1], x, y);
    a[2] = _mm256_fmadd_ps(a[2], x, y); a[3] = _mm256_fmadd_ps(a[3], x, y);
    a[4] = _mm256_fmadd_ps(a[4], x, y); a[5] = _mm256_fmadd_ps(a[5], x, y);
    a[6] = _mm256_fmadd_ps(a[6], x, y); a[7] = _mm256_fmadd_ps(a[7], x, y);
    a[8] = _mm256_fmadd_ps(a[8], x, y); a[9] = _mm256_fmadd_ps(a[9], x, y);
    a[10] = _mm256_fmadd_ps(a[10], x, y); a[11] = _mm256_fmadd_ps(a[11], x, y);
  }
  __m256 s = a[0];
  for (int i = 1; i < 12; i++) s = _mm256_add_ps(s, a[i]);
  float out[8];
  _mm256_storeu_ps(out, s);
  sink = out[0];
  return NULL;
}

int main(int argc, char **argv) {
  int maxThreads = argc > 1 ? atoi(argv[1]) : 2;
  if (maxThreads < 1 || maxThreads > 64) maxThreads = 2;
  iters = 50000000L; /* 12 FMAs × 8 lanes × 2 FLOP = 192 FLOP per iteration */
  printf("{\"threads\":[");
  for (int t = 1; t <= maxThreads; t++) printf("%s%d", t > 1 ? "," : "", t);
  printf("],\"gflops\":[");
  for (int t = 1; t <= maxThreads; t++) {
    double best = 0;
    for (int rep = 0; rep < 5; rep++) {
      pthread_t th[64];
      double t0 = now();
      for (int i = 0; i < t; i++) pthread_create(&th[i], NULL, chains, NULL);
      for (int i = 0; i < t; i++) pthread_join(th[i], NULL);
      double g = 192.0 * iters * t / (now() - t0) / 1e9;
      if (g > best) best = g;
    }
    printf("%s%.1f", t > 1 ? "," : "", best);
  }
  printf("]}\n");
  return 0;
}
