/* CRC-32 throughput: zlib's crc32 (what olm's checkpoints use, core/io/crc32.cpp) against the
 * byte-at-a-time table implementation olm had before, on the same 256 MiB buffer, interleaved
 * (A B A B ...) so that a change of machine load falls on both sides alike. Prints each pair,
 * then the medians, the ratio's median and spread, and the load average before and after. */
#define _POSIX_C_SOURCE 199309L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

static uint32_t table[256];

static void make_table(void) {
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    table[i] = c;
  }
}

static uint32_t table_crc32(const unsigned char* p, size_t n) {
  uint32_t crc = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ p[i]) & 0xFFu] ^ (crc >> 8);
  return ~crc;
}

static uint32_t zlib_crc32(const unsigned char* p, size_t n) {
  uLong crc = crc32(0L, Z_NULL, 0);
  while (n > 0) { /* zlib takes a uInt length */
    const uInt chunk = n > (1u << 30) ? (1u << 30) : (uInt)n;
    crc = crc32(crc, p, chunk);
    p += chunk;
    n -= chunk;
  }
  return (uint32_t)crc;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp(const void* a, const void* b) {
  const double x = *(const double*)a, y = *(const double*)b;
  return (x > y) - (x < y);
}

static double median(double* v, int n) {
  qsort(v, n, sizeof *v, cmp);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void load(const char* when) {
  double l[3] = {0, 0, 0};
  FILE* f = fopen("/proc/loadavg", "r");
  if (f && fscanf(f, "%lf %lf %lf", &l[0], &l[1], &l[2]) == 3) printf("load %s: %.2f %.2f %.2f\n", when, l[0], l[1], l[2]);
  if (f) fclose(f);
}

int main(int argc, char** argv) {
  const int pairs = argc > 1 ? atoi(argv[1]) : 5;
  const size_t size = (size_t)256 << 20;
  if (pairs < 1 || pairs > 100) return fprintf(stderr, "usage: crc32_bench [pairs 1..100]\n"), 2;
  unsigned char* buf = malloc(size);
  if (!buf) return fprintf(stderr, "out of memory\n"), 1;
  uint64_t x = 88172645463325252ull;
  for (size_t i = 0; i < size; ++i) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    buf[i] = (unsigned char)x;
  }
  make_table();
  if (table_crc32(buf, size) != zlib_crc32(buf, size)) return fprintf(stderr, "the two CRC-32s disagree\n"), 1;
  double* a = malloc(pairs * sizeof *a);
  double* b = malloc(pairs * sizeof *b);
  double* r = malloc(pairs * sizeof *r);
  load("before");
  volatile uint32_t sink = 0;
  for (int i = 0; i < pairs; ++i) {
    double t0 = now();
    sink ^= table_crc32(buf, size);
    double t1 = now();
    sink ^= zlib_crc32(buf, size);
    double t2 = now();
    a[i] = size / (t1 - t0) / 1e6;
    b[i] = size / (t2 - t1) / 1e6;
    r[i] = b[i] / a[i];
    printf("pair %d: table %.0f MB/s, zlib %.0f MB/s, ratio %.2fx\n", i + 1, a[i], b[i], r[i]);
  }
  load("after");
  const double ma = median(a, pairs), mb = median(b, pairs), mr = median(r, pairs);
  printf("median over %d pairs of 256 MiB: table %.0f MB/s, zlib %.0f MB/s, zlib/table %.2fx (range %.2f-%.2f)\n",
         pairs, ma, mb, mr, r[0], r[pairs - 1]);
  free(buf), free(a), free(b), free(r);
  return 0;
}
