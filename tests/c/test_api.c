/* Every function of the C ABI and its error paths, against a real redis-server.
 *
 * Environment (set by scripts/test.d/40-c.sh): QS_REDIS_URL, QS_REDIS_PORT (a running
 * server), QS_REPLICA_PID (a replica of it, paused by the NOT_REPLICATED test), QS_DEAD_URL
 * (a loopback port nobody listens on), QS_TTL_MS (optional lease TTL). */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <unistd.h>

#include "check.h"

/* The lease TTL of the test managers: QS_TTL_MS, 1000 by default (valgrind needs more). */
static long TTL_MS = 1000;

static const char *url;
static char bot[64];

static quantshift_manager *new_manager(const char *bot_name, uint64_t max_payload) {
  quantshift_options options;
  quantshift_manager *manager = NULL;
  CHECK_OK(quantshift_options_default(&options));
  options.bot_name = bot_name;
  options.redis_url = url;
  options.lock_ttl_ms = (uint64_t)TTL_MS;
  options.command_timeout_ms = 1000;
  options.install_signal_handlers = false;
  if (max_payload != 0) {
    options.max_payload_bytes = max_payload;
  }
  CHECK_OK(quantshift_manager_new(&options, &manager));
  CHECK(manager != NULL);
  return manager;
}

/* ---- statics ---------------------------------------------------------------------------- */

static void test_statics(void) {
  static const char *names[] = {"OK",           "NOT_PRIMARY",    "REDIS_UNAVAILABLE",
                                "INVALID_INPUT", "CORRUPT_DATA",   "NOT_REPLICATED",
                                "REDIS_ERROR",   "NULL_ARGUMENT",  "INVALID_UTF8",
                                "PANIC"};
  uint32_t i;
  CHECK(strcmp(quantshift_version(), "") != 0);
  for (i = 0; i < 10; i++) {
    CHECK(strcmp(quantshift_status_name(i), names[i]) == 0);
  }
  CHECK(strcmp(quantshift_status_name(10), "UNKNOWN") == 0);
  /* The numbers are the ABI. */
  CHECK(QUANTSHIFT_STATUS_OK == 0 && QUANTSHIFT_STATUS_NOT_PRIMARY == 1 &&
        QUANTSHIFT_STATUS_REDIS_UNAVAILABLE == 2 && QUANTSHIFT_STATUS_INVALID_INPUT == 3 &&
        QUANTSHIFT_STATUS_CORRUPT_DATA == 4 && QUANTSHIFT_STATUS_NOT_REPLICATED == 5 &&
        QUANTSHIFT_STATUS_REDIS_ERROR == 6 && QUANTSHIFT_STATUS_NULL_ARGUMENT == 7 &&
        QUANTSHIFT_STATUS_INVALID_UTF8 == 8 && QUANTSHIFT_STATUS_PANIC == 9);
  quantshift_string_free(NULL);
  quantshift_manager_free(NULL);
}

static void test_options(void) {
  quantshift_options options;
  memset(&options, 0xAB, sizeof options);
  CHECK_STATUS(quantshift_options_default(NULL), QUANTSHIFT_STATUS_NULL_ARGUMENT);
  CHECK_MESSAGE("options");
  CHECK_OK(quantshift_options_default(&options));
  CHECK(options.bot_name == NULL);
  CHECK(options.redis_url == NULL);
  CHECK(options.state_ttl_ms == 3600000);
  CHECK(options.position_ttl_ms == 86400000);
  CHECK(options.heartbeat_ttl_ms == 60000);
  CHECK(options.lock_ttl_ms == 30000);
  CHECK(options.renew_deadline_ms == 0);
  CHECK(options.poll_interval_ms == 0);
  CHECK(options.connect_timeout_ms == 2000);
  CHECK(options.command_timeout_ms == 2000);
  CHECK(options.shutdown_timeout_ms == 20000);
  CHECK(options.max_payload_bytes == 16u * 1024 * 1024);
  CHECK(options.wait_replicas == 0);
  CHECK(options.wait_timeout_ms == 1000);
  CHECK(options.tls_ca_file == NULL && options.tls_cert_file == NULL &&
        options.tls_key_file == NULL);
  CHECK(options.sentinel_username == NULL && options.sentinel_password == NULL);
  CHECK(options.install_signal_handlers == true);
}

/* The growable options: a builder made from the frozen struct, with the options added since
 * (fast_failover and failover_tolerance_ms: they set the deadline the holder declares in the
 * lease record). */
static void test_options_builder(void) {
  quantshift_options options;
  quantshift_options_builder *builder = NULL;
  quantshift_manager *m = NULL;
  char name[96], args[160], out[256], expected[32];
  bool primary = false;
  CHECK(QUANTSHIFT_VERSION_NUMBER ==
        QUANTSHIFT_VERSION_MAJOR * 10000 + QUANTSHIFT_VERSION_MINOR * 100 +
            QUANTSHIFT_VERSION_PATCH);
  snprintf(out, sizeof out, "%d.%d.%d", QUANTSHIFT_VERSION_MAJOR, QUANTSHIFT_VERSION_MINOR,
           QUANTSHIFT_VERSION_PATCH);
  CHECK(strcmp(quantshift_version(), out) == 0);
  CHECK_STATUS(quantshift_options_builder_new(NULL, NULL), QUANTSHIFT_STATUS_NULL_ARGUMENT);
  quantshift_options_builder_free(NULL);
  CHECK_STATUS(quantshift_options_builder_set_fast_failover(NULL, false),
               QUANTSHIFT_STATUS_NULL_ARGUMENT);
  CHECK_STATUS(quantshift_options_builder_set_failover_tolerance_ms(NULL, 100),
               QUANTSHIFT_STATUS_NULL_ARGUMENT);
  CHECK_STATUS(quantshift_manager_new_with_builder(NULL, &m), QUANTSHIFT_STATUS_NULL_ARGUMENT);
  CHECK(m == NULL);

  CHECK_STATUS(quantshift_options_builder_new(NULL, &builder), QUANTSHIFT_STATUS_NULL_ARGUMENT);
  CHECK(builder == NULL);

  snprintf(name, sizeof name, "%s-builder", bot);
  CHECK_OK(quantshift_options_default(&options));
  options.bot_name = name;
  options.redis_url = url;
  options.lock_ttl_ms = (uint64_t)TTL_MS;
  options.install_signal_handlers = false;
  CHECK_OK(quantshift_options_builder_new(&options, &builder));
  CHECK_STATUS(quantshift_options_builder_set_failover_tolerance_ms(builder, 0),
               QUANTSHIFT_STATUS_INVALID_INPUT);
  snprintf(args, sizeof args, "HGET bot:%s:lease_record deadline_ms", name);

  /* Off: renew_deadline (2/3 lock_ttl) is the declared deadline. */
  CHECK_OK(quantshift_options_builder_set_fast_failover(builder, false));
  CHECK_OK(quantshift_manager_new_with_builder(builder, &m));
  qs_redis_cli(args, out, sizeof out);
  snprintf(expected, sizeof expected, "%ld", (TTL_MS * 2 + 2) / 3); /* ms, rounded up */
  CHECK_CONTAINS(out, expected);
  quantshift_manager_free(m);
  m = NULL;

  /* On: 100 ms renewals + the tolerance. */
  CHECK_OK(quantshift_options_builder_set_fast_failover(builder, true));
  CHECK_OK(quantshift_options_builder_set_failover_tolerance_ms(builder, 150));
  CHECK_OK(quantshift_manager_new_with_builder(builder, &m));
  CHECK_OK(quantshift_manager_wait_until_primary(m, 5000, &primary));
  CHECK(primary);
  qs_redis_cli(args, out, sizeof out);
  CHECK_CONTAINS(out, "250");
  quantshift_manager_free(m);
  quantshift_options_builder_free(builder);
}

/* Every refusal of quantshift_manager_new, and `out` untouched by each. */
static void test_new_errors(void) {
  quantshift_options options;
  quantshift_manager *const sentinel = (quantshift_manager *)&options;
  quantshift_manager *out = sentinel;
  char secret_url[256];

  CHECK_OK(quantshift_options_default(&options));
  options.redis_url = url;
  options.install_signal_handlers = false;
  options.connect_timeout_ms = 300;

  CHECK_STATUS(quantshift_manager_new(NULL, &out), QUANTSHIFT_STATUS_NULL_ARGUMENT);
  CHECK_MESSAGE("options");
  options.bot_name = bot;
  CHECK_STATUS(quantshift_manager_new(&options, NULL), QUANTSHIFT_STATUS_NULL_ARGUMENT);
  CHECK_MESSAGE("out");
  options.bot_name = NULL;
  CHECK_STATUS(quantshift_manager_new(&options, &out), QUANTSHIFT_STATUS_NULL_ARGUMENT);
  CHECK_MESSAGE("bot_name");
  options.bot_name = "bad\xff";
  CHECK_STATUS(quantshift_manager_new(&options, &out), QUANTSHIFT_STATUS_INVALID_UTF8);
  CHECK_MESSAGE("bot_name");
  options.bot_name = "other:bot";
  CHECK_STATUS(quantshift_manager_new(&options, &out), QUANTSHIFT_STATUS_INVALID_INPUT);
  CHECK_MESSAGE("':'");
  options.bot_name = "";
  CHECK_STATUS(quantshift_manager_new(&options, &out), QUANTSHIFT_STATUS_INVALID_INPUT);
  options.bot_name = bot;
  options.redis_url = "bad\xfe";
  CHECK_STATUS(quantshift_manager_new(&options, &out), QUANTSHIFT_STATUS_INVALID_UTF8);
  CHECK_MESSAGE("redis_url");
  options.redis_url = "http://127.0.0.1:1/0";
  CHECK_STATUS(quantshift_manager_new(&options, &out), QUANTSHIFT_STATUS_INVALID_INPUT);
  CHECK_MESSAGE("unsupported Redis URL");
  options.redis_url = url;
  options.tls_ca_file = "/tmp/\xff.pem";
  CHECK_STATUS(quantshift_manager_new(&options, &out), QUANTSHIFT_STATUS_INVALID_UTF8);
  CHECK_MESSAGE("tls_ca_file");
  options.tls_ca_file = NULL;
  options.sentinel_password = "\xc3";
  CHECK_STATUS(quantshift_manager_new(&options, &out), QUANTSHIFT_STATUS_INVALID_UTF8);
  CHECK_MESSAGE("sentinel_password");
  options.sentinel_password = NULL;
  options.wait_replicas = 1000;
  CHECK_STATUS(quantshift_manager_new(&options, &out), QUANTSHIFT_STATUS_INVALID_INPUT);
  CHECK_MESSAGE("wait_replicas");
  options.wait_replicas = 0;
  options.tls_cert_file = "/tmp/client.pem"; /* without its key */
  CHECK_STATUS(quantshift_manager_new(&options, &out), QUANTSHIFT_STATUS_INVALID_INPUT);
  CHECK_MESSAGE("go together");
  options.tls_cert_file = NULL;
  /* Durations that would overflow the clock arithmetic. */
  options.lock_ttl_ms = UINT64_MAX;
  CHECK_STATUS(quantshift_manager_new(&options, &out), QUANTSHIFT_STATUS_INVALID_INPUT);
  CHECK_MESSAGE("lock_ttl must be at most");
  options.lock_ttl_ms = 30000;
  options.shutdown_timeout_ms = UINT64_MAX;
  CHECK_STATUS(quantshift_manager_new(&options, &out), QUANTSHIFT_STATUS_INVALID_INPUT);
  CHECK_MESSAGE("shutdown_timeout");
  options.shutdown_timeout_ms = 20000;
  /* Inverted timing: lock_ttl > renew_deadline > lock_ttl / 3 does not hold. */
  options.lock_ttl_ms = 1000;
  options.renew_deadline_ms = 2000;
  CHECK_STATUS(quantshift_manager_new(&options, &out), QUANTSHIFT_STATUS_INVALID_INPUT);
  CHECK_MESSAGE("lock_ttl > renew_deadline");
  options.renew_deadline_ms = 300;
  CHECK_STATUS(quantshift_manager_new(&options, &out), QUANTSHIFT_STATUS_INVALID_INPUT);
  options.renew_deadline_ms = 0;
  options.command_timeout_ms = 0;
  CHECK_STATUS(quantshift_manager_new(&options, &out), QUANTSHIFT_STATUS_INVALID_INPUT);
  CHECK_MESSAGE("command_timeout");
  options.command_timeout_ms = 1000;
  options.max_payload_bytes = 0;
  CHECK_STATUS(quantshift_manager_new(&options, &out), QUANTSHIFT_STATUS_INVALID_INPUT);
  options.max_payload_bytes = 1024;
  /* Nobody listens there; the password never shows in the message. */
  snprintf(secret_url, sizeof secret_url, "redis://:s3cret-pw@%s",
           qs_env("QS_DEAD_URL") + strlen("redis://"));
  options.redis_url = secret_url;
  CHECK_STATUS(quantshift_manager_new(&options, &out), QUANTSHIFT_STATUS_REDIS_UNAVAILABLE);
  CHECK(strstr(quantshift_last_error_message(), "s3cret-pw") == NULL);
  CHECK(out == sentinel);
}

/* ---- callbacks -------------------------------------------------------------------------- */

typedef struct {
  quantshift_manager *manager;
  atomic_int promoted;
  atomic_int demoted;
  atomic_uint_fast64_t last_epoch;
  atomic_int epoch_seen_inside; /* the callback could call back into the manager */
  char reason[256];
} events;

static void on_promoted(void *userdata, uint64_t epoch) {
  events *ev = userdata;
  uint64_t inside = 0;
  bool primary = false;
  char *state = NULL;
  /* Calling back into the library from a callback must not deadlock. */
  if (quantshift_manager_epoch(ev->manager, &inside) == QUANTSHIFT_STATUS_OK &&
      quantshift_manager_is_primary(ev->manager, &primary) == QUANTSHIFT_STATUS_OK &&
      quantshift_manager_load_state(ev->manager, &state) == QUANTSHIFT_STATUS_OK) {
    atomic_store(&ev->epoch_seen_inside, inside == epoch && primary);
  }
  quantshift_string_free(state);
  atomic_store(&ev->last_epoch, epoch);
  atomic_fetch_add(&ev->promoted, 1);
}

static void on_demoted(void *userdata, const char *reason) {
  events *ev = userdata;
  snprintf(ev->reason, sizeof ev->reason, "%s", reason);
  atomic_fetch_add(&ev->demoted, 1);
}

typedef struct {
  quantshift_manager *manager;
  int order[8];
  atomic_int calls;
  atomic_int saved_in_handler;
} shutdown_log;

static int handler_first(void *userdata) {
  shutdown_log *log = userdata;
  /* A handler may still write: the instance is primary until the lease is released. */
  if (quantshift_manager_save_position(log->manager, "CLOSED", "{\"quantity\": 1}", NULL) ==
      QUANTSHIFT_STATUS_OK) {
    atomic_store(&log->saved_in_handler, 1);
  }
  log->order[atomic_fetch_add(&log->calls, 1)] = 1;
  return 7; /* a failure: logged, the next handler still runs */
}

static int handler_second(void *userdata) {
  shutdown_log *log = userdata;
  log->order[atomic_fetch_add(&log->calls, 1)] = 2;
  return 0;
}

static bool wait_until(atomic_int *counter, int at_least, long timeout_ms) {
  int64_t give_up = qs_now_ms() + timeout_ms;
  while (qs_now_ms() < give_up) {
    if (atomic_load(counter) >= at_least) {
      return true;
    }
    qs_sleep_ms(2);
  }
  return atomic_load(counter) >= at_least;
}

/* ---- the lease thread's stall meter ----------------------------------------------------- */

/* A primary renews every 100 ms (fast failover): after half a second the meter has counted
 * wake-ups and round trips, with fields that are consistent; the tolerance is 200 ms. */
static void test_lease_stalls(quantshift_manager *m) {
  quantshift_lease_stalls stalls, later;
  memset(&stalls, 0, sizeof stalls);
  qs_sleep_ms(500);
  CHECK_OK(quantshift_manager_lease_stalls(m, &stalls));
  CHECK(stalls.tolerance_us == 200000);
  CHECK(stalls.round_trip_count >= 2);
  CHECK(stalls.wake_late_count >= 2);
  CHECK(stalls.round_trip_p50_us <= stalls.round_trip_p99_us);
  CHECK(stalls.round_trip_p99_us <= stalls.round_trip_max_us);
  CHECK(stalls.round_trip_sum_us >= stalls.round_trip_max_us);
  CHECK(stalls.wake_late_sum_us >= stalls.wake_late_max_us);
  CHECK(stalls.dropped_records == 0);
  CHECK_OK(quantshift_manager_lease_stalls(m, &later));
  CHECK(later.round_trip_count >= stalls.round_trip_count);
}

/* ---- every call with NULL where a pointer is required ----------------------------------- */

static void test_null_arguments(quantshift_manager *m) {
  char *s = NULL;
  bool b = false;
  uint64_t u = 0;
  const quantshift_status null = QUANTSHIFT_STATUS_NULL_ARGUMENT;
  CHECK_STATUS(quantshift_manager_shutdown(NULL), null);
  CHECK_STATUS(quantshift_manager_is_closed(NULL, &b), null);
  CHECK_STATUS(quantshift_manager_is_closed(m, NULL), null);
  CHECK_STATUS(quantshift_manager_is_primary(NULL, &b), null);
  CHECK_STATUS(quantshift_manager_is_primary(m, NULL), null);
  CHECK_MESSAGE("out_primary");
  CHECK_STATUS(quantshift_manager_wait_until_primary(NULL, 0, &b), null);
  CHECK_STATUS(quantshift_manager_wait_until_primary(m, 0, NULL), null);
  CHECK_STATUS(quantshift_manager_epoch(NULL, &u), null);
  CHECK_STATUS(quantshift_manager_epoch(m, NULL), null);
  CHECK_STATUS(quantshift_manager_instance_id(NULL, &s), null);
  CHECK_STATUS(quantshift_manager_instance_id(m, NULL), null);
  CHECK_STATUS(quantshift_manager_bot_name(NULL, &s), null);
  CHECK_STATUS(quantshift_manager_bot_name(m, NULL), null);
  CHECK_STATUS(quantshift_manager_startup_warnings(NULL, &s), null);
  CHECK_STATUS(quantshift_manager_startup_warnings(m, NULL), null);
  {
    quantshift_lease_stalls stalls;
    CHECK_STATUS(quantshift_manager_lease_stalls(NULL, &stalls), null);
    CHECK_STATUS(quantshift_manager_lease_stalls(m, NULL), null);
    CHECK_MESSAGE("out_stalls");
  }
  CHECK_STATUS(quantshift_manager_heartbeat(NULL), null);
  CHECK_STATUS(quantshift_manager_on_promoted(NULL, on_promoted, NULL), null);
  CHECK_STATUS(quantshift_manager_on_promoted(m, NULL, NULL), null);
  CHECK_MESSAGE("callback");
  CHECK_STATUS(quantshift_manager_on_demoted(NULL, on_demoted, NULL), null);
  CHECK_STATUS(quantshift_manager_on_demoted(m, NULL, NULL), null);
  CHECK_STATUS(quantshift_manager_register_shutdown_handler(NULL, handler_second, NULL), null);
  CHECK_STATUS(quantshift_manager_register_shutdown_handler(m, NULL, NULL), null);
  CHECK_STATUS(quantshift_manager_save_state(NULL, "{}", NULL), null);
  CHECK_STATUS(quantshift_manager_save_state(m, NULL, NULL), null);
  CHECK_MESSAGE("state_json");
  CHECK_STATUS(quantshift_manager_update_state(NULL, "{}", NULL), null);
  CHECK_STATUS(quantshift_manager_update_state(m, NULL, NULL), null);
  CHECK_STATUS(quantshift_manager_load_state(NULL, &s), null);
  CHECK_STATUS(quantshift_manager_load_state(m, NULL), null);
  CHECK_STATUS(quantshift_manager_save_position(NULL, "A", "{}", NULL), null);
  CHECK_STATUS(quantshift_manager_save_position(m, NULL, "{}", NULL), null);
  CHECK_MESSAGE("symbol");
  CHECK_STATUS(quantshift_manager_save_position(m, "A", NULL, NULL), null);
  CHECK_MESSAGE("data_json");
  CHECK_STATUS(quantshift_manager_load_positions(NULL, &s), null);
  CHECK_STATUS(quantshift_manager_load_positions(m, NULL), null);
  CHECK_STATUS(quantshift_manager_clear_position(NULL, "A", &b), null);
  CHECK_STATUS(quantshift_manager_clear_position(m, NULL, &b), null);
  CHECK_STATUS(quantshift_manager_apply_fill(NULL, "A", 1.0, 1.0, NULL, &s), null);
  CHECK_STATUS(quantshift_manager_apply_fill(m, NULL, 1.0, 1.0, NULL, &s), null);
  CHECK_STATUS(quantshift_manager_sync_positions(NULL, "{}", &s), null);
  CHECK_STATUS(quantshift_manager_sync_positions(m, NULL, &s), null);
  CHECK_MESSAGE("broker_json");
  /* Nothing was written through the out-parameters. */
  CHECK(s == NULL && b == false && u == 0);
}

/* ---- JSON, UTF-8 and value refusals ----------------------------------------------------- */

static void test_bad_input(quantshift_manager *m) {
  static const char *not_objects[] = {"[1, 2]", "42", "\"text\"", "null", "true"};
  static const char *not_json[] = {"{", "", "{\"a\": NaN}", "{\"a\": Infinity}",
                                   "{\"a\": 1e400}", "{'a': 1}", "{\"a\": 1} trailing"};
  char *const sentinel = (char *)"untouched";
  char *out = sentinel;
  bool existed = true;
  size_t i;

  for (i = 0; i < sizeof not_objects / sizeof *not_objects; i++) {
    CHECK_STATUS(quantshift_manager_save_state(m, not_objects[i], &out),
                 QUANTSHIFT_STATUS_INVALID_INPUT);
    CHECK_MESSAGE("must be a JSON object");
    CHECK_STATUS(quantshift_manager_update_state(m, not_objects[i], &out),
                 QUANTSHIFT_STATUS_INVALID_INPUT);
    CHECK_STATUS(quantshift_manager_save_position(m, "AAPL", not_objects[i], &out),
                 QUANTSHIFT_STATUS_INVALID_INPUT);
    CHECK_STATUS(quantshift_manager_sync_positions(m, not_objects[i], &out),
                 QUANTSHIFT_STATUS_INVALID_INPUT);
  }
  for (i = 0; i < sizeof not_json / sizeof *not_json; i++) {
    CHECK_STATUS(quantshift_manager_save_state(m, not_json[i], &out),
                 QUANTSHIFT_STATUS_INVALID_INPUT);
    CHECK_MESSAGE("not valid JSON");
    CHECK_STATUS(quantshift_manager_save_position(m, "AAPL", not_json[i], &out),
                 QUANTSHIFT_STATUS_INVALID_INPUT);
    CHECK_STATUS(quantshift_manager_sync_positions(m, not_json[i], &out),
                 QUANTSHIFT_STATUS_INVALID_INPUT);
  }
  /* A broker position that is not an object. */
  CHECK_STATUS(quantshift_manager_sync_positions(m, "{\"AAPL\": 10}", &out),
               QUANTSHIFT_STATUS_INVALID_INPUT);
  CHECK_MESSAGE("AAPL");
  CHECK_STATUS(quantshift_manager_sync_positions(m, "{\"AAPL\": {\"quantity\": \"ten\"}}", &out),
               QUANTSHIFT_STATUS_INVALID_INPUT);

  /* Invalid UTF-8 in every string argument. */
  CHECK_STATUS(quantshift_manager_save_state(m, "{\"a\": \"\xc3\x28\"}", &out),
               QUANTSHIFT_STATUS_INVALID_UTF8);
  CHECK_MESSAGE("state_json");
  CHECK_STATUS(quantshift_manager_update_state(m, "{\"\xff\": 1}", &out),
               QUANTSHIFT_STATUS_INVALID_UTF8);
  CHECK_STATUS(quantshift_manager_save_position(m, "AA\xffPL", "{}", &out),
               QUANTSHIFT_STATUS_INVALID_UTF8);
  CHECK_MESSAGE("symbol");
  CHECK_STATUS(quantshift_manager_save_position(m, "AAPL", "{\"n\": \"\xe2\x82\"}", &out),
               QUANTSHIFT_STATUS_INVALID_UTF8);
  CHECK_STATUS(quantshift_manager_clear_position(m, "\x80", &existed),
               QUANTSHIFT_STATUS_INVALID_UTF8);
  CHECK_STATUS(quantshift_manager_apply_fill(m, "\xc0\xaf", 1.0, 1.0, NULL, &out),
               QUANTSHIFT_STATUS_INVALID_UTF8);
  CHECK_STATUS(quantshift_manager_apply_fill(m, "AAPL", 1.0, 1.0, "id\xff", &out),
               QUANTSHIFT_STATUS_INVALID_UTF8);
  CHECK_MESSAGE("fill_id");
  CHECK_STATUS(quantshift_manager_sync_positions(m, "{\"\xed\xa0\x80\": {}}", &out),
               QUANTSHIFT_STATUS_INVALID_UTF8);

  /* Names the key schema refuses. */
  CHECK_STATUS(quantshift_manager_save_position(m, "", "{}", &out),
               QUANTSHIFT_STATUS_INVALID_INPUT);
  CHECK_STATUS(quantshift_manager_save_position(m, "tab\there", "{}", &out),
               QUANTSHIFT_STATUS_INVALID_INPUT);
  CHECK_STATUS(quantshift_manager_clear_position(m, "", &existed),
               QUANTSHIFT_STATUS_INVALID_INPUT);
  CHECK_STATUS(quantshift_manager_apply_fill(m, "AAPL", 1.0, 1.0, "", &out),
               QUANTSHIFT_STATUS_INVALID_INPUT);

  /* Numbers a fill refuses before anything is sent. */
  CHECK_STATUS(quantshift_manager_apply_fill(m, "AAPL", NAN, 100.0, NULL, &out),
               QUANTSHIFT_STATUS_INVALID_INPUT);
  CHECK_MESSAGE("quantity");
  CHECK_STATUS(quantshift_manager_apply_fill(m, "AAPL", 0.0, 100.0, NULL, &out),
               QUANTSHIFT_STATUS_INVALID_INPUT);
  CHECK_STATUS(quantshift_manager_apply_fill(m, "AAPL", INFINITY, 100.0, NULL, &out),
               QUANTSHIFT_STATUS_INVALID_INPUT);
  CHECK_STATUS(quantshift_manager_apply_fill(m, "AAPL", 1.0, NAN, NULL, &out),
               QUANTSHIFT_STATUS_INVALID_INPUT);
  CHECK_MESSAGE("price");
  CHECK_STATUS(quantshift_manager_apply_fill(m, "AAPL", 1.0, -INFINITY, NULL, &out),
               QUANTSHIFT_STATUS_INVALID_INPUT);

  CHECK(out == sentinel && existed == true);
}

/* ---- state ------------------------------------------------------------------------------ */

static void test_state(quantshift_manager *m) {
  char *saved = NULL, *loaded = (char *)"untouched", *merged = NULL;
  char key[128], value[512];

  CHECK_OK(quantshift_manager_load_state(m, &loaded));
  CHECK(loaded == NULL); /* nothing stored yet */
  CHECK_OK(quantshift_manager_save_state(
      m, "{\"strategy\": \"moving_average\", \"last_trade\": \"2025-12-24T22:00:00\", "
         "\"daily_pnl\": 150.5, \"symbol\": \"\xe6\x97\xa5\xe6\x9c\xac\"}",
      &saved));
  CHECK_CONTAINS(saved, "\"strategy\":\"moving_average\"");
  CHECK_CONTAINS(saved, "\"last_update\":\"20");
  CHECK_OK(quantshift_manager_load_state(m, &loaded));
  CHECK(loaded != NULL && strcmp(loaded, saved) == 0);
  quantshift_string_free(loaded);
  /* What Redis holds is what the Python bots read. */
  snprintf(key, sizeof key, "GET bot:%s:state", bot);
  qs_redis_cli(key, value, sizeof value);
  CHECK_CONTAINS(value, "\"daily_pnl\":150.5");
  CHECK_CONTAINS(value, "\xe6\x97\xa5\xe6\x9c\xac");

  /* The saved copy is optional. */
  CHECK_OK(quantshift_manager_save_state(m, "{\"strategy\": \"breakout\"}", NULL));
  CHECK_OK(quantshift_manager_update_state(m, "{\"daily_pnl\": 200}", &merged));
  CHECK_CONTAINS(merged, "\"strategy\":\"breakout\"");
  CHECK_CONTAINS(merged, "\"daily_pnl\":200");
  CHECK_OK(quantshift_manager_update_state(m, "{\"trades\": 3}", NULL));
  CHECK_OK(quantshift_manager_load_state(m, &loaded));
  CHECK_CONTAINS(loaded, "\"trades\":3");
  CHECK_CONTAINS(loaded, "\"daily_pnl\":200");
  quantshift_string_free(loaded);
  quantshift_string_free(merged);
  quantshift_string_free(saved);
}

/* ---- positions -------------------------------------------------------------------------- */

static void test_positions(quantshift_manager *m) {
  char *saved = NULL, *all = NULL, *after = NULL, *report = NULL;
  bool existed = false;

  CHECK_OK(quantshift_manager_save_position(
      m, "AAPL",
      "{\"quantity\": 10, \"entry_price\": 150.0, \"stop_loss\": 145.0, \"take_profit\": 160.0}",
      &saved));
  CHECK_CONTAINS(saved, "\"last_update\":\"20");
  CHECK_OK(quantshift_manager_save_position(m, "BTC/USD", "{\"quantity\": 0.5}", NULL));
  CHECK_OK(quantshift_manager_save_position(m, "ES:FUT", "{\"quantity\": -2}", NULL));
  CHECK_OK(quantshift_manager_save_position(m, "\xe6\x97\xa5\xe6\x9c\xac\xe6\xa0\xaa",
                                            "{\"quantity\": 100}", NULL));
  CHECK_OK(quantshift_manager_load_positions(m, &all));
  CHECK_CONTAINS(all, "\"AAPL\":{\"quantity\":10,\"entry_price\":150.0,\"stop_loss\":145.0");
  CHECK_CONTAINS(all, "\"BTC/USD\":{\"quantity\":0.5");
  CHECK_CONTAINS(all, "\"ES:FUT\":{\"quantity\":-2");
  CHECK_CONTAINS(all, "\"\xe6\x97\xa5\xe6\x9c\xac\xe6\xa0\xaa\":{\"quantity\":100");
  quantshift_string_free(all);

  CHECK_OK(quantshift_manager_clear_position(m, "ES:FUT", &existed));
  CHECK(existed == true);
  CHECK_OK(quantshift_manager_clear_position(m, "ES:FUT", &existed));
  CHECK(existed == false);
  CHECK_OK(quantshift_manager_clear_position(m, "NEVER", NULL));
  CHECK_OK(quantshift_manager_load_positions(m, &all));
  CHECK(strstr(all, "ES:FUT") == NULL);
  quantshift_string_free(all);

  /* Fills: weighted entry price, duplicates ignored, flat removes. */
  CHECK_OK(quantshift_manager_apply_fill(m, "MSFT", 10.0, 100.0, "fill-1", &after));
  CHECK_CONTAINS(after, "\"quantity\":10");
  CHECK_CONTAINS(after, "\"entry_price\":100");
  quantshift_string_free(after);
  CHECK_OK(quantshift_manager_apply_fill(m, "MSFT", 10.0, 110.0, "fill-2", &after));
  CHECK_CONTAINS(after, "\"quantity\":20");
  CHECK_CONTAINS(after, "\"entry_price\":105");
  quantshift_string_free(after);
  CHECK_OK(quantshift_manager_apply_fill(m, "MSFT", 10.0, 110.0, "fill-2", &after));
  CHECK_CONTAINS(after, "\"quantity\":20"); /* the same fill twice counts once */
  quantshift_string_free(after);
  CHECK_OK(quantshift_manager_apply_fill(m, "MSFT", -5.0, 125.0, NULL, NULL));
  CHECK_OK(quantshift_manager_apply_fill(m, "MSFT", -15.0, 125.0, "fill-4", &after));
  CHECK(after == NULL); /* flat */
  CHECK_OK(quantshift_manager_load_positions(m, &all));
  CHECK(strstr(all, "MSFT") == NULL);
  quantshift_string_free(all);

  /* Reconciliation with the broker. Stored: AAPL 10, BTC/USD 0.5, 日本株 100, CLOSED? no. */
  CHECK_OK(quantshift_manager_sync_positions(
      m,
      "{\"AAPL\": {\"quantity\": 10, \"entry_price\": 150.0}, "
      "\"BTC/USD\": {\"quantity\": 0.75}, \"TSLA\": {\"quantity\": 3, \"entry_price\": 200}}",
      &report));
  CHECK_CONTAINS(report, "\"inserted\":1");
  CHECK_CONTAINS(report, "\"updated\":1");
  CHECK_CONTAINS(report, "\"deleted\":1");
  CHECK_CONTAINS(report, "\"unchanged\":1");
  CHECK_CONTAINS(report, "\"TSLA\":{\"change\":\"inserted\",\"before\":null");
  CHECK_CONTAINS(report, "\"change\":\"deleted\"");
  quantshift_string_free(report);
  CHECK_OK(quantshift_manager_sync_positions(m, "{\"AAPL\": {\"quantity\": 10}, "
                                                "\"BTC/USD\": {\"quantity\": 0.75}, "
                                                "\"TSLA\": {\"quantity\": 3}}",
                                             NULL));
  CHECK_OK(quantshift_manager_load_positions(m, &all));
  CHECK_CONTAINS(all, "\"TSLA\":{\"quantity\":3");
  CHECK_CONTAINS(all, "\"BTC/USD\":{\"quantity\":0.75");
  CHECK(strstr(all, "\xe6\x97\xa5") == NULL);
  quantshift_string_free(all);
  quantshift_string_free(saved);
}

/* Over max_payload_bytes: refused before anything is sent. */
static void test_payload_limit(void) {
  char small_bot[80];
  quantshift_manager *m;
  bool primary = false;
  char *loaded = (char *)"untouched";
  snprintf(small_bot, sizeof small_bot, "%s-small", bot);
  m = new_manager(small_bot, 64);
  /* quantshift_manager_new makes one acquisition attempt, but the lease thread's own attempt
   * may win by a moment (then it is primary an instant later): wait, briefly. */
  CHECK_OK(quantshift_manager_wait_until_primary(m, 5000, &primary));
  CHECK(primary);
  CHECK_STATUS(quantshift_manager_save_state(
                   m, "{\"text\": \"0123456789012345678901234567890123456789012345678\"}", NULL),
               QUANTSHIFT_STATUS_INVALID_INPUT);
  CHECK_MESSAGE("over the limit");
  CHECK_OK(quantshift_manager_load_state(m, &loaded));
  CHECK(loaded == NULL);
  quantshift_manager_free(m);
}

/* A stored value that is not the JSON object expected. */
static void test_corrupt_data(void) {
  char corrupt_bot[80], command[160], reply[64];
  quantshift_manager *m;
  char *const sentinel = (char *)"untouched";
  char *loaded = sentinel;
  snprintf(corrupt_bot, sizeof corrupt_bot, "%s-corrupt", bot);
  m = new_manager(corrupt_bot, 0);
  snprintf(command, sizeof command, "SET bot:%s:state not-json", corrupt_bot);
  qs_redis_cli(command, reply, sizeof reply);
  CHECK_STATUS(quantshift_manager_load_state(m, &loaded), QUANTSHIFT_STATUS_CORRUPT_DATA);
  snprintf(command, sizeof command, "SET bot:%s:state '[1,2]'", corrupt_bot);
  qs_redis_cli(command, reply, sizeof reply);
  CHECK_STATUS(quantshift_manager_load_state(m, &loaded), QUANTSHIFT_STATUS_CORRUPT_DATA);
  CHECK(loaded == sentinel);
  /* A key of another Redis type stored by hand (WRONGTYPE): the error names the key. */
  snprintf(command, sizeof command, "DEL bot:%s:state", corrupt_bot);
  qs_redis_cli(command, reply, sizeof reply);
  snprintf(command, sizeof command, "RPUSH bot:%s:state by-hand", corrupt_bot);
  qs_redis_cli(command, reply, sizeof reply);
  CHECK_STATUS(quantshift_manager_load_state(m, &loaded), QUANTSHIFT_STATUS_CORRUPT_DATA);
  CHECK(loaded == sentinel);
  snprintf(command, sizeof command, "bot:%s:state holds a Redis list", corrupt_bot);
  CHECK(strstr(quantshift_last_error_message(), command) != NULL);
  quantshift_manager_free(m);
}

/* Log records routed to a C callback, from any thread. */
typedef struct {
  pthread_mutex_t lock;
  int records[6]; /* per level */
  int bad_target;
  char warning[512];
} log_sink;

static void on_log(void *userdata, uint32_t level, const char *target, const char *message) {
  log_sink *sink = userdata;
  pthread_mutex_lock(&sink->lock);
  if (level >= 1 && level <= 5) {
    sink->records[level]++;
  }
  if (strncmp(target, "quantshift_core", 15) != 0) {
    sink->bad_target++;
  }
  if (level == 2 && strstr(message, "maxmemory-policy") != NULL) {
    snprintf(sink->warning, sizeof sink->warning, "%s", message);
  }
  pthread_mutex_unlock(&sink->lock);
}

/* The eviction policy is checked at start: reported, and logged as a warning. */
static void test_startup_warnings_and_logging(void) {
  char other[80], reply[64];
  char *text = NULL;
  quantshift_manager *m;
  log_sink sink;
  memset(&sink, 0, sizeof sink);
  pthread_mutex_init(&sink.lock, NULL);
  snprintf(other, sizeof other, "%s-lru", bot);

  CHECK_STATUS(quantshift_set_log_callback(on_log, &sink, 6), QUANTSHIFT_STATUS_INVALID_INPUT);
  CHECK_MESSAGE("max_level");
  CHECK_OK(quantshift_set_log_callback(on_log, &sink, 2)); /* errors and warnings */
  qs_redis_cli("CONFIG SET maxmemory-policy allkeys-lru", reply, sizeof reply);
  CHECK(strcmp(reply, "OK") == 0);
  m = new_manager(other, 0);
  qs_redis_cli("CONFIG SET maxmemory-policy noeviction", reply, sizeof reply);
  CHECK_OK(quantshift_manager_startup_warnings(m, &text));
  CHECK_CONTAINS(text, "maxmemory-policy is \\\"allkeys-lru\\\"");
  quantshift_string_free(text);
  quantshift_manager_free(m);
  pthread_mutex_lock(&sink.lock);
  CHECK_CONTAINS(sink.warning, "maxmemory-policy is \"allkeys-lru\"");
  CHECK(sink.records[3] == 0 && sink.records[4] == 0 && sink.records[5] == 0);
  CHECK(sink.bad_target == 0);
  pthread_mutex_unlock(&sink.lock);

  /* Info records once asked for ("started as", "released the primary lease"). */
  CHECK_OK(quantshift_set_log_callback(on_log, &sink, 3));
  m = new_manager(other, 0);
  quantshift_manager_free(m);
  pthread_mutex_lock(&sink.lock);
  CHECK(sink.records[3] >= 1);
  pthread_mutex_unlock(&sink.lock);

  /* None after NULL. */
  CHECK_OK(quantshift_set_log_callback(NULL, NULL, 5));
  memset(sink.records, 0, sizeof sink.records);
  m = new_manager(other, 0);
  quantshift_manager_free(m);
  CHECK(sink.records[1] + sink.records[2] + sink.records[3] + sink.records[4] == 0);
  pthread_mutex_destroy(&sink.lock);
}

static void log_to_stderr(void *userdata, uint32_t level, const char *target,
                          const char *message) {
  (void)userdata;
  fprintf(stderr, "test_api: log %u %s: %s\n", level, target, message);
}

/* A write the master applied but the requested replica did not confirm in time. */
static void test_not_replicated(void) {
  const char *replica_pid = qs_env("QS_REPLICA_PID");
  char replicated[80], command[64];
  quantshift_options options;
  quantshift_manager *m = NULL;
  bool primary = false;
  snprintf(replicated, sizeof replicated, "%s-replicated", bot);
  CHECK_OK(quantshift_options_default(&options));
  options.bot_name = replicated;
  options.redis_url = url;
  options.lock_ttl_ms = (uint64_t)(3 * TTL_MS);
  options.wait_replicas = 1;
  options.wait_timeout_ms = 1000;
  options.install_signal_handlers = false;
  /* What the lease did, should this fail (warnings and role changes). */
  CHECK_OK(quantshift_set_log_callback(log_to_stderr, NULL, 3));
  CHECK_OK(quantshift_manager_new(&options, &m));
  CHECK_OK(quantshift_manager_wait_until_primary(m, 10000, &primary));
  CHECK(primary); /* the lease itself was confirmed by the replica */
  CHECK_OK(quantshift_manager_save_state(m, "{\"replicated\": true}", NULL));
  snprintf(command, sizeof command, "kill -STOP %s", replica_pid);
  CHECK(system(command) == 0);
  CHECK_STATUS(quantshift_manager_save_state(m, "{\"replicated\": false}", NULL),
               QUANTSHIFT_STATUS_NOT_REPLICATED);
  snprintf(command, sizeof command, "kill -CONT %s", replica_pid);
  CHECK(system(command) == 0);
  quantshift_manager_free(m);
  CHECK_OK(quantshift_set_log_callback(NULL, NULL, 0));
}

/* ---- the last error is per thread ------------------------------------------------------- */

static void *other_thread(void *arg) {
  int *ok = arg;
  quantshift_options options;
  /* Nothing failed on this thread yet. */
  *ok = strcmp(quantshift_last_error_message(), "") == 0;
  *ok = *ok && quantshift_options_default(NULL) == QUANTSHIFT_STATUS_NULL_ARGUMENT;
  *ok = *ok && strstr(quantshift_last_error_message(), "options") != NULL;
  *ok = *ok && quantshift_options_default(&options) == QUANTSHIFT_STATUS_OK;
  return NULL;
}

static void test_last_error_is_per_thread(quantshift_manager *m) {
  pthread_t thread;
  int ok = 0;
  CHECK_STATUS(quantshift_manager_save_state(m, "[]", NULL), QUANTSHIFT_STATUS_INVALID_INPUT);
  CHECK(pthread_create(&thread, NULL, other_thread, &ok) == 0);
  CHECK(pthread_join(thread, NULL) == 0);
  CHECK(ok);
  /* Unchanged here by the other thread's failure, and by successes. */
  CHECK_MESSAGE("must be a JSON object");
}

/* ---- concurrent use of one handle ------------------------------------------------------- */

typedef struct {
  quantshift_manager *manager;
  int thread;
  int failures;
} filler;

static void *fill_many(void *arg) {
  filler *f = arg;
  char fill_id[32];
  int i;
  for (i = 0; i < 10; i++) {
    snprintf(fill_id, sizeof fill_id, "t%d-%d", f->thread, i);
    if (quantshift_manager_apply_fill(f->manager, "CONC", 1.0, 10.0 + i, fill_id, NULL) !=
        QUANTSHIFT_STATUS_OK) {
      f->failures++;
    }
  }
  return NULL;
}

static void test_concurrent_fills(quantshift_manager *m) {
  pthread_t threads[4];
  filler fillers[4];
  char *after = NULL;
  int i;
  for (i = 0; i < 4; i++) {
    fillers[i].manager = m;
    fillers[i].thread = i;
    fillers[i].failures = 0;
    CHECK(pthread_create(&threads[i], NULL, fill_many, &fillers[i]) == 0);
  }
  for (i = 0; i < 4; i++) {
    CHECK(pthread_join(threads[i], NULL) == 0);
    CHECK(fillers[i].failures == 0);
  }
  /* 40 distinct fills of 1, then one seen before: 40. */
  CHECK_OK(quantshift_manager_apply_fill(m, "CONC", 1.0, 10.0, "t0-0", &after));
  CHECK_CONTAINS(after, "\"quantity\":40,");
  quantshift_string_free(after);
}

typedef struct {
  quantshift_manager *manager;
  quantshift_status status;
  bool primary;
} forever_wait;

static void *wait_forever(void *arg) {
  forever_wait *w = arg;
  w->status = quantshift_manager_wait_until_primary(w->manager, -1, &w->primary);
  return NULL;
}

/* ---- two instances: roles, fencing, callbacks, shutdown --------------------------------- */

static void test_roles_and_shutdown(void) {
  quantshift_manager *a, *b;
  bool primary = true;
  uint64_t epoch_a = 0, epoch = 0;
  char *text = NULL, *id_b = NULL, *sentinel = (char *)"untouched", *out = sentinel;
  char command[160], reply[256];
  events ev_a, ev_b;
  shutdown_log log;
  int64_t started;
  forever_wait forever;
  pthread_t waiter;

  memset(&ev_a, 0, sizeof ev_a);
  memset(&ev_b, 0, sizeof ev_b);
  memset(&log, 0, sizeof log);

  a = new_manager(bot, 0);
  CHECK_OK(quantshift_manager_wait_until_primary(a, 5000, &primary));
  CHECK(primary);
  CHECK_OK(quantshift_manager_is_primary(a, &primary));
  CHECK(primary);
  CHECK_OK(quantshift_manager_epoch(a, &epoch_a));
  CHECK(epoch_a >= 1);
  CHECK_OK(quantshift_manager_bot_name(a, &text));
  CHECK(strcmp(text, bot) == 0);
  quantshift_string_free(text);
  CHECK_OK(quantshift_manager_instance_id(a, &text));
  snprintf(reply, sizeof reply, ":%ld", (long)getpid());
  CHECK_CONTAINS(text, reply);
  quantshift_string_free(text);
  CHECK_OK(quantshift_manager_startup_warnings(a, &text));
  CHECK(text[0] == '[' && text[strlen(text) - 1] == ']');
  CHECK(strstr(text, "maxmemory-policy") == NULL); /* the test server runs with noeviction */
  quantshift_string_free(text);
  CHECK_OK(quantshift_manager_heartbeat(a));
  snprintf(command, sizeof command, "GET bot:%s:heartbeat", bot);
  qs_redis_cli(command, reply, sizeof reply);
  CHECK(strncmp(reply, "20", 2) == 0);

  test_lease_stalls(a);
  test_null_arguments(a);
  test_bad_input(a);
  test_state(a);
  test_positions(a);
  test_last_error_is_per_thread(a);
  test_concurrent_fills(a);

  /* A second instance of the same bot is a standby: reads work, every write is fenced. */
  b = new_manager(bot, 0);
  ev_b.manager = b;
  CHECK_OK(quantshift_manager_on_promoted(b, on_promoted, &ev_b));
  CHECK_OK(quantshift_manager_on_demoted(b, on_demoted, &ev_b));
  started = qs_now_ms();
  CHECK_OK(quantshift_manager_wait_until_primary(b, 150, &primary));
  CHECK(!primary);
  CHECK(qs_now_ms() - started >= 140);
  CHECK_OK(quantshift_manager_is_primary(b, &primary));
  CHECK(!primary);
  CHECK_STATUS(quantshift_manager_epoch(b, &epoch), QUANTSHIFT_STATUS_NOT_PRIMARY);
  CHECK(epoch == 0);
  CHECK_OK(quantshift_manager_heartbeat(b)); /* tries to take the lease; it is held */
  CHECK_OK(quantshift_manager_is_primary(b, &primary));
  CHECK(!primary);
  CHECK_OK(quantshift_manager_load_state(b, &text));
  CHECK_CONTAINS(text, "\"trades\":3");
  quantshift_string_free(text);
  CHECK_OK(quantshift_manager_load_positions(b, &text));
  CHECK_CONTAINS(text, "\"TSLA\"");
  quantshift_string_free(text);
  CHECK_STATUS(quantshift_manager_save_state(b, "{\"x\": 1}", &out), QUANTSHIFT_STATUS_NOT_PRIMARY);
  CHECK_MESSAGE("primary");
  CHECK_STATUS(quantshift_manager_update_state(b, "{\"x\": 1}", &out),
               QUANTSHIFT_STATUS_NOT_PRIMARY);
  CHECK_STATUS(quantshift_manager_save_position(b, "AAPL", "{\"quantity\": 1}", &out),
               QUANTSHIFT_STATUS_NOT_PRIMARY);
  CHECK_STATUS(quantshift_manager_clear_position(b, "AAPL", NULL), QUANTSHIFT_STATUS_NOT_PRIMARY);
  CHECK_STATUS(quantshift_manager_apply_fill(b, "AAPL", 1.0, 1.0, "x", &out),
               QUANTSHIFT_STATUS_NOT_PRIMARY);
  CHECK_STATUS(quantshift_manager_sync_positions(b, "{}", &out), QUANTSHIFT_STATUS_NOT_PRIMARY);
  CHECK(out == sentinel);
  CHECK_OK(quantshift_manager_load_positions(b, &text));
  CHECK_CONTAINS(text, "\"AAPL\":{\"quantity\":10,"); /* nothing changed */
  quantshift_string_free(text);

  /* Demotion and promotion callbacks of the primary: its lease key vanishes. */
  ev_a.manager = a;
  CHECK_OK(quantshift_manager_on_promoted(a, on_promoted, &ev_a));
  CHECK_OK(quantshift_manager_on_demoted(a, on_demoted, &ev_a));
  snprintf(command, sizeof command, "DEL bot:%s:primary_lock", bot);
  qs_redis_cli(command, reply, sizeof reply);
  CHECK(wait_until(&ev_a.demoted, 1, 3 * TTL_MS));
  CHECK(strlen(ev_a.reason) > 0);
  /* One of the two takes the lease again, and its promoted callback says so. */
  started = qs_now_ms();
  while (atomic_load(&ev_a.promoted) + atomic_load(&ev_b.promoted) == 0 &&
         qs_now_ms() - started < 3 * TTL_MS) {
    qs_sleep_ms(2);
  }
  CHECK(atomic_load(&ev_a.promoted) + atomic_load(&ev_b.promoted) == 1);
  fprintf(stderr, "test_api: after losing its lease key, %s took the lease again\n",
          atomic_load(&ev_b.promoted) == 1 ? "the standby" : "the old primary");
  if (atomic_load(&ev_b.promoted) == 1) {
    /* b won: hand the lease back by shutting b down, as the rest expects a primary. */
    CHECK(atomic_load(&ev_b.epoch_seen_inside) == 1);
    CHECK(atomic_load(&ev_b.last_epoch) > epoch_a);
    CHECK_OK(quantshift_manager_shutdown(b));
    quantshift_manager_free(b);
    b = new_manager(bot, 0);
    memset(&ev_b, 0, sizeof ev_b);
    ev_b.manager = b;
    CHECK_OK(quantshift_manager_on_promoted(b, on_promoted, &ev_b));
    CHECK(wait_until(&ev_a.promoted, 1, 3 * TTL_MS));
  }
  CHECK(atomic_load(&ev_a.epoch_seen_inside) == 1 || atomic_load(&ev_a.promoted) == 0);
  CHECK_OK(quantshift_manager_wait_until_primary(a, 3000, &primary));
  CHECK(primary);
  CHECK_OK(quantshift_manager_epoch(a, &epoch));
  CHECK(epoch > epoch_a);
  epoch_a = epoch;

  /* Shutdown: handlers in order (a failing one does not stop the next), the last state
   * saved with shutdown_time, the lease released: the standby takes over at once. */
  CHECK_OK(quantshift_manager_save_state(a, "{\"strategy\": \"final\"}", NULL));
  log.manager = a;
  CHECK_OK(quantshift_manager_register_shutdown_handler(a, handler_first, &log));
  CHECK_OK(quantshift_manager_register_shutdown_handler(a, handler_second, &log));
  CHECK_OK(quantshift_manager_instance_id(b, &id_b));
  CHECK_OK(quantshift_manager_is_closed(a, &primary));
  CHECK(!primary);
  /* A negative timeout waits for ever: until a's shutdown hands the lease over. */
  forever.manager = b;
  forever.status = QUANTSHIFT_STATUS_PANIC;
  forever.primary = false;
  CHECK(pthread_create(&waiter, NULL, wait_forever, &forever) == 0);
  qs_sleep_ms(50);
  started = qs_now_ms();
  CHECK_OK(quantshift_manager_shutdown(a));
  CHECK_OK(quantshift_manager_is_closed(a, &primary));
  CHECK(primary);
  CHECK(atomic_load(&log.calls) == 2 && log.order[0] == 1 && log.order[1] == 2);
  CHECK(atomic_load(&log.saved_in_handler) == 1);
  CHECK(wait_until(&ev_b.promoted, 1, 2000));
  CHECK(pthread_join(waiter, NULL) == 0);
  CHECK(forever.status == QUANTSHIFT_STATUS_OK && forever.primary);
  fprintf(stderr, "test_api: standby promoted %ld ms after the primary's shutdown began\n",
          (long)(qs_now_ms() - started));
  CHECK(atomic_load(&ev_b.last_epoch) > epoch_a);
  CHECK_OK(quantshift_manager_is_primary(a, &primary));
  CHECK(!primary);
  CHECK_OK(quantshift_manager_load_state(b, &text));
  CHECK_CONTAINS(text, "\"strategy\":\"final\"");
  CHECK_CONTAINS(text, "\"shutdown_time\":\"20");
  quantshift_string_free(text);
  CHECK_OK(quantshift_manager_load_positions(b, &text));
  CHECK_CONTAINS(text, "\"CLOSED\":{\"quantity\":1");
  quantshift_string_free(text);
  snprintf(command, sizeof command, "GET bot:%s:primary_lock", bot);
  qs_redis_cli(command, reply, sizeof reply);
  CHECK(strncmp(reply, id_b, strlen(id_b)) == 0); /* b's token now */
  quantshift_string_free(id_b);
  /* After shutdown: writes and heartbeats refused, reads allowed, shutdown again a no-op. */
  CHECK_STATUS(quantshift_manager_save_state(a, "{}", NULL), QUANTSHIFT_STATUS_NOT_PRIMARY);
  CHECK_STATUS(quantshift_manager_heartbeat(a), QUANTSHIFT_STATUS_NOT_PRIMARY);
  CHECK_OK(quantshift_manager_load_state(a, &text));
  quantshift_string_free(text);
  CHECK_OK(quantshift_manager_shutdown(a));
  CHECK(atomic_load(&log.calls) == 2);
  quantshift_manager_free(a);
  /* free shuts down by itself. */
  quantshift_manager_free(b);
  snprintf(command, sizeof command, "EXISTS bot:%s:primary_lock", bot);
  qs_redis_cli(command, reply, sizeof reply);
  CHECK(strcmp(reply, "0") == 0);
}

int main(void) {
  url = qs_env("QS_REDIS_URL");
  if (getenv("QS_TTL_MS") != NULL) {
    TTL_MS = strtol(getenv("QS_TTL_MS"), NULL, 10);
  }
  snprintf(bot, sizeof bot, "c-api-%ld", (long)getpid());
  test_statics();
  test_options();
  test_options_builder();
  test_new_errors();
  test_payload_limit();
  test_corrupt_data();
  test_startup_warnings_and_logging();
  test_not_replicated();
  test_roles_and_shutdown();
  printf("test_api: %d checks passed\n", qs_checks_run);
  return 0;
}
