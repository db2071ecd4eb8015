/* Latency of C ABI calls against a real redis-server (not a test; built by 40-c.sh so it
 * keeps compiling). Build the library with --release for meaningful numbers:
 *
 *   QS_REDIS_URL=redis://127.0.0.1:PORT/0 ./bench [iterations]
 *
 * Prints, per operation, the median and 99th percentile in microseconds (is_primary: mean
 * in nanoseconds over a million calls). */
#define _POSIX_C_SOURCE 200809L

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "quantshift_core.h"

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int compare(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static void report(const char *what, double *samples, int n) {
  qsort(samples, (size_t)n, sizeof *samples, compare);
  printf("| %-44s | %8.1f | %8.1f |\n", what, samples[n / 2], samples[(n * 99) / 100]);
}

static void ok(quantshift_status status, const char *what) {
  if (status != QUANTSHIFT_STATUS_OK) {
    fprintf(stderr, "%s: %s: %s\n", what, quantshift_status_name(status),
            quantshift_last_error_message());
    exit(1);
  }
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 2000, i;
  double *samples = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
  quantshift_options options;
  quantshift_manager *m = NULL;
  char bot[64], symbol[32], fill_id[32], data[128];
  bool primary = false;
  double start;
  long calls = 1000000, c;

  if (samples == NULL || n <= 0) return 2;
  snprintf(bot, sizeof bot, "c-bench-%ld", (long)getpid());
  ok(quantshift_options_default(&options), "options");
  options.bot_name = bot;
  options.redis_url = getenv("QS_REDIS_URL");
  options.install_signal_handlers = false;
  ok(quantshift_manager_new(&options, &m), "new");
  ok(quantshift_manager_wait_until_primary(m, 5000, &primary), "wait");

  start = now_us();
  for (c = 0; c < calls; c++) {
    quantshift_manager_is_primary(m, &primary);
  }
  printf("is_primary: %.1f ns per call (mean of %ld)\n\n", (now_us() - start) * 1e3 / calls,
         calls);
  printf("| operation (%d runs)                          | p50 us   | p99 us   |\n", n);
  printf("|----------------------------------------------|----------|----------|\n");

  for (i = 0; i < n; i++) {
    start = now_us();
    ok(quantshift_manager_save_state(m, "{\"strategy\": \"moving_average\", \"daily_pnl\": 150.5}",
                                     NULL),
       "save_state");
    samples[i] = now_us() - start;
  }
  report("save_state (small object)", samples, n);

  for (i = 0; i < n; i++) {
    char *out = NULL;
    start = now_us();
    ok(quantshift_manager_load_state(m, &out), "load_state");
    samples[i] = now_us() - start;
    quantshift_string_free(out);
  }
  report("load_state", samples, n);

  for (i = 0; i < n; i++) {
    snprintf(symbol, sizeof symbol, "SYM%d", i % 100);
    snprintf(data, sizeof data, "{\"quantity\": %d, \"entry_price\": 101.5}", i + 1);
    start = now_us();
    ok(quantshift_manager_save_position(m, symbol, data, NULL), "save_position");
    samples[i] = now_us() - start;
  }
  report("save_position", samples, n);

  for (i = 0; i < n; i++) {
    snprintf(fill_id, sizeof fill_id, "fill-%d", i);
    start = now_us();
    ok(quantshift_manager_apply_fill(m, "FILLS", 1.0, 100.0 + i % 7, fill_id, NULL), "fill");
    samples[i] = now_us() - start;
  }
  report("apply_fill (with fill id)", samples, n);

  for (i = 0; i < n; i++) {
    char *out = NULL;
    start = now_us();
    ok(quantshift_manager_load_positions(m, &out), "load_positions");
    samples[i] = now_us() - start;
    quantshift_string_free(out);
  }
  report("load_positions (101 positions)", samples, n);

  for (i = 0; i < n; i++) {
    start = now_us();
    ok(quantshift_manager_heartbeat(m), "heartbeat");
    samples[i] = now_us() - start;
  }
  report("heartbeat (lease renewal)", samples, n);

  quantshift_manager_free(m);
  free(samples);
  return 0;
}
