/* A bot process for the failover and signal tests of scripts/test.d/40-c.sh.
 *
 *   bot <redis-url> <bot-name> <lock-ttl-ms> <library|host>
 *
 * "library": the library installs SIGTERM / SIGINT handlers (it runs our shutdown handlers,
 * saves the last state, releases the lease and exits 0). "host": the library installs none;
 * this program catches SIGTERM / SIGINT itself and calls quantshift_manager_shutdown.
 *
 * Prints, one line each, flushed: "standby" once started, "primary <epoch> <wall-ms>" when
 * it first sees itself primary (after updating its state), "promoted <epoch>" from the
 * callback, "handler <n>" from its shutdown handlers, "host shutdown <signal>" and
 * "host done" in host mode. With QS_HANDLER_SLEEP_MS set, the first handler then sleeps that
 * long (for the second-signal test). With QS_LOG_SLEEP_MS set, it installs a log callback (records
 * up to info, so role changes are logged) that sleeps that long per record, as a stalled syslog or
 * network sink would, then prints "log <level> <message>" (the busy-logger test, issue 24).
 * Every 2 ms it tries a fenced write whatever its role and exits 3 if a write succeeded while it
 * did not think itself primary. Runs at most 60 s. */
#define _POSIX_C_SOURCE 200809L

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "quantshift_core.h"

static volatile sig_atomic_t host_signal = 0;

static void on_host_signal(int sig) { host_signal = sig; }

/* One whole line at a time: callbacks print from library threads. */
static void say(const char *line) {
  flockfile(stdout);
  fputs(line, stdout);
  fputc('\n', stdout);
  fflush(stdout);
  funlockfile(stdout);
}

static void on_promoted(void *userdata, uint64_t epoch) {
  char line[64];
  (void)userdata;
  snprintf(line, sizeof line, "promoted %llu", (unsigned long long)epoch);
  say(line);
}

static int handler(void *userdata) {
  char line[32];
  const char *sleep_ms = getenv("QS_HANDLER_SLEEP_MS");
  snprintf(line, sizeof line, "handler %d", *(const int *)userdata);
  say(line);
  if (sleep_ms != NULL && *(const int *)userdata == 0) {
    /* A slow first handler, for the second-signal test. */
    long ms = strtol(sleep_ms, NULL, 10);
    struct timespec pause = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&pause, NULL);
  }
  return 0;
}

/* A blocking sink: every record takes QS_LOG_SLEEP_MS (read once, before the callback is set). */
static long log_sleep_ms = 0;

static void on_log(void *userdata, uint32_t level, const char *target, const char *message) {
  struct timespec pause = {log_sleep_ms / 1000, (log_sleep_ms % 1000) * 1000000L};
  char line[512];
  (void)userdata;
  (void)target;
  nanosleep(&pause, NULL);
  snprintf(line, sizeof line, "log %u %s", (unsigned)level, message);
  say(line);
}

static long long wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int fail(const char *what, quantshift_status status) {
  fprintf(stderr, "bot: %s: %s: %s\n", what, quantshift_status_name(status),
          quantshift_last_error_message());
  return 2;
}

int main(int argc, char **argv) {
  static const int handler_ids[2] = {0, 1};
  quantshift_options options;
  quantshift_manager *manager = NULL;
  quantshift_status status;
  bool host_mode, announced = false;
  struct timespec tick = {0, 2000000L};
  time_t give_up = time(NULL) + 60;
  long n = 0;

  if (argc != 5) {
    fprintf(stderr, "usage: bot <redis-url> <bot-name> <lock-ttl-ms> <library|host>\n");
    return 2;
  }
  host_mode = strcmp(argv[4], "host") == 0;
  if (host_mode) {
    /* Installed before the manager: had the library installed its own, ours would be
     * replaced and "host shutdown" would never be printed. */
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_host_signal;
    sigemptyset(&action.sa_mask);
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGINT, &action, NULL);
  }

  if (getenv("QS_LOG_SLEEP_MS") != NULL) {
    log_sleep_ms = strtol(getenv("QS_LOG_SLEEP_MS"), NULL, 10);
    /* 3: info, the level of "is now primary" / "is now standby". */
    status = quantshift_set_log_callback(on_log, NULL, 3);
    if (status != QUANTSHIFT_STATUS_OK) {
      return fail("quantshift_set_log_callback", status);
    }
  }

  quantshift_options_default(&options);
  options.bot_name = argv[2];
  options.redis_url = argv[1];
  options.lock_ttl_ms = strtoull(argv[3], NULL, 10);
  options.command_timeout_ms = 1000;
  options.install_signal_handlers = !host_mode;
  status = quantshift_manager_new(&options, &manager);
  if (status != QUANTSHIFT_STATUS_OK) {
    return fail("quantshift_manager_new", status);
  }
  quantshift_manager_on_promoted(manager, on_promoted, NULL);
  quantshift_manager_register_shutdown_handler(manager, handler, (void *)&handler_ids[0]);
  quantshift_manager_register_shutdown_handler(manager, handler, (void *)&handler_ids[1]);
  say("standby");

  while (time(NULL) < give_up && host_signal == 0) {
    bool primary = false;
    char data[64];
    n++;
    quantshift_manager_is_primary(manager, &primary);
    if (primary && !announced) {
      uint64_t epoch = 0;
      char line[96];
      char state[64];
      /* Merged into what is stored: a predecessor's shutdown_time stays for the test. */
      snprintf(state, sizeof state, "{\"strategy\": \"c-bot\", \"pid\": %ld}", (long)getpid());
      status = quantshift_manager_update_state(manager, state, NULL);
      if (status == QUANTSHIFT_STATUS_OK) {
        quantshift_manager_epoch(manager, &epoch);
        snprintf(line, sizeof line, "primary %llu %lld", (unsigned long long)epoch, wall_ms());
        say(line);
        announced = true;
      } else if (status != QUANTSHIFT_STATUS_NOT_PRIMARY) {
        quantshift_manager_free(manager);
        return fail("update_state once primary", status);
      } /* else: demoted in between (a starved lease thread); announce on the next turn */
    }
    snprintf(data, sizeof data, "{\"n\": %ld}", n);
    status = quantshift_manager_save_position(manager, "TICK", data, NULL);
    if (status == QUANTSHIFT_STATUS_OK && !primary) {
      /* Fenced writes land only while primary: succeeding before we saw ourselves primary
       * is allowed only if we became primary in between. */
      quantshift_manager_is_primary(manager, &primary);
      if (!primary) {
        say("write accepted while standby");
        quantshift_manager_free(manager);
        return 3;
      }
    }
    nanosleep(&tick, NULL);
  }
  if (host_signal != 0) {
    char line[48];
    snprintf(line, sizeof line, "host shutdown %d", (int)host_signal);
    say(line);
    status = quantshift_manager_shutdown(manager);
    quantshift_manager_free(manager);
    if (status != QUANTSHIFT_STATUS_OK) {
      return fail("shutdown", status);
    }
    say("host done");
    return 0;
  }
  quantshift_manager_free(manager);
  return 1; /* ran out of time: the test did not stop us */
}
