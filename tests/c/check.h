/* Small test helpers for the C tests of quantshift-core: checks that print where they failed
 * and exit non-zero, environment lookups, clocks, and redis-cli for looking at what the
 * library wrote. */
#ifndef QS_TEST_CHECK_H
#define QS_TEST_CHECK_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "quantshift_core.h"

#if defined(__GNUC__)
#define QS_MAYBE_UNUSED __attribute__((unused))
#else
#define QS_MAYBE_UNUSED
#endif

static int qs_checks_run = 0;

#define CHECK(cond)                                                                    \
  do {                                                                                 \
    qs_checks_run++;                                                                   \
    if (!(cond)) {                                                                     \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);         \
      exit(1);                                                                         \
    }                                                                                  \
  } while (0)

/* Checks that `call` returns `expected`; on a mismatch prints both and the last error. */
#define CHECK_STATUS(call, expected)                                                   \
  do {                                                                                 \
    quantshift_status qs_got_ = (call);                                                \
    qs_checks_run++;                                                                   \
    if (qs_got_ != (quantshift_status)(expected)) {                                    \
      fprintf(stderr, "%s:%d: %s returned %s, expected %s (last error: %s)\n",         \
              __FILE__, __LINE__, #call, quantshift_status_name(qs_got_),              \
              quantshift_status_name(expected), quantshift_last_error_message());      \
      exit(1);                                                                         \
    }                                                                                  \
  } while (0)

#define CHECK_OK(call) CHECK_STATUS(call, QUANTSHIFT_STATUS_OK)

/* The last error's message contains `needle`. */
#define CHECK_MESSAGE(needle)                                                          \
  do {                                                                                 \
    const char *qs_msg_ = quantshift_last_error_message();                             \
    qs_checks_run++;                                                                   \
    if (strstr(qs_msg_, (needle)) == NULL) {                                           \
      fprintf(stderr, "%s:%d: last error \"%s\" does not contain \"%s\"\n", __FILE__,  \
              __LINE__, qs_msg_, (needle));                                            \
      exit(1);                                                                         \
    }                                                                                  \
  } while (0)

#define CHECK_CONTAINS(text, needle)                                                   \
  do {                                                                                 \
    const char *qs_text_ = (text);                                                     \
    qs_checks_run++;                                                                   \
    if (qs_text_ == NULL || strstr(qs_text_, (needle)) == NULL) {                      \
      fprintf(stderr, "%s:%d: \"%s\" does not contain \"%s\"\n", __FILE__, __LINE__,   \
              qs_text_ ? qs_text_ : "(null)", (needle));                               \
      exit(1);                                                                         \
    }                                                                                  \
  } while (0)

QS_MAYBE_UNUSED static const char *qs_env(const char *name) {
  const char *value = getenv(name);
  if (value == NULL || value[0] == '\0') {
    fprintf(stderr, "environment variable %s is required (set by scripts/test.d/40-c.sh)\n",
            name);
    exit(2);
  }
  return value;
}

QS_MAYBE_UNUSED static int64_t qs_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

QS_MAYBE_UNUSED static int64_t qs_wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

QS_MAYBE_UNUSED static void qs_sleep_ms(long ms) {
  struct timespec ts;
  ts.tv_sec = ms / 1000;
  ts.tv_nsec = (ms % 1000) * 1000000L;
  nanosleep(&ts, NULL);
}

/* Runs `redis-cli -p $QS_REDIS_PORT <args>` and returns its first output line (without the
 * newline) in `out`. */
QS_MAYBE_UNUSED static void qs_redis_cli(const char *args, char *out, size_t size) {
  char command[1024];
  FILE *pipe;
  snprintf(command, sizeof command, "redis-cli -h 127.0.0.1 -p %s %s",
           qs_env("QS_REDIS_PORT"), args);
  pipe = popen(command, "r");
  if (pipe == NULL) {
    fprintf(stderr, "cannot run %s\n", command);
    exit(2);
  }
  out[0] = '\0';
  if (fgets(out, (int)size, pipe) != NULL) {
    out[strcspn(out, "\n")] = '\0';
  }
  pclose(pipe);
}

#endif
