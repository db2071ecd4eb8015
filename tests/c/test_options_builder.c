/* The growable options (quantshift_options_builder), fast_failover, the key layout and the
 * version macros, against a real Redis (QUANTSHIFT_REDIS_URL).
 * Usage: test_options_builder BOT_PREFIX */
#include <quantshift_core.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;
#define EXPECT(cond)                                                     \
  do {                                                                   \
    if (!(cond)) {                                                       \
      fprintf(stderr, "%s:%d: expected %s (last error: %s)\n", __FILE__, \
              __LINE__, #cond, quantshift_last_error_message());         \
      failures++;                                                        \
    }                                                                    \
  } while (0)

/* Seed usage through a builder: construct, save state, load it, a position, shutdown. */
static void run_bot(const char *prefix, bool fast_failover) {
  quantshift_options options;
  quantshift_options_builder *builder = NULL;
  quantshift_manager *manager = NULL;
  char *loaded = NULL;
  bool primary = false;
  size_t len = strlen(prefix) + 16;
  /* The bot name lives in memory freed before the manager is made: the builder copied it. */
  char *name = malloc(len);
  EXPECT(name != NULL);
  if (name == NULL) return;
  snprintf(name, len, "%s-ff%d", prefix, fast_failover ? 1 : 0);

  EXPECT(quantshift_options_default(&options) == QUANTSHIFT_STATUS_OK);
  options.bot_name = name;
  options.install_signal_handlers = false;
  /* Without fast failover a first start leads renew_deadline (+ 2 %) after its claim: 2 s. */
  options.lock_ttl_ms = 3000;
  EXPECT(quantshift_options_builder_new(&options, &builder) == QUANTSHIFT_STATUS_OK);
  memset(name, 'x', strlen(name));
  free(name);
  EXPECT(quantshift_options_builder_set_fast_failover(builder, fast_failover) ==
         QUANTSHIFT_STATUS_OK);
  EXPECT(quantshift_manager_new_with_builder(builder, &manager) == QUANTSHIFT_STATUS_OK);
  quantshift_options_builder_free(builder);
  if (manager == NULL) return;

  EXPECT(quantshift_manager_wait_until_primary(manager, 10000, &primary) == QUANTSHIFT_STATUS_OK);
  EXPECT(primary);
  EXPECT(quantshift_manager_save_state(manager, "{\"builder\": true}", NULL) ==
         QUANTSHIFT_STATUS_OK);
  EXPECT(quantshift_manager_load_state(manager, &loaded) == QUANTSHIFT_STATUS_OK);
  EXPECT(loaded != NULL && strstr(loaded, "\"builder\":true") != NULL);
  quantshift_string_free(loaded);
  EXPECT(quantshift_manager_save_position(manager, "AAPL", "{\"quantity\": 3}", NULL) ==
         QUANTSHIFT_STATUS_OK);
  EXPECT(quantshift_manager_load_positions(manager, &loaded) == QUANTSHIFT_STATUS_OK);
  EXPECT(loaded != NULL && strstr(loaded, "\"AAPL\"") != NULL);
  quantshift_string_free(loaded);
  EXPECT(quantshift_manager_shutdown(manager) == QUANTSHIFT_STATUS_OK);
  quantshift_manager_free(manager);
  printf("builder with fast_failover=%s: ok\n", fast_failover ? "true" : "false");
}

/* A manager of bot `name` in `layout` (NULL: automatic); NULL on failure. */
static quantshift_manager *layout_bot(const char *name, const char *layout) {
  quantshift_options options;
  quantshift_options_builder *builder = NULL;
  quantshift_manager *manager = NULL;
  bool primary = false;
  EXPECT(quantshift_options_default(&options) == QUANTSHIFT_STATUS_OK);
  options.bot_name = name;
  options.install_signal_handlers = false;
  EXPECT(quantshift_options_builder_new(&options, &builder) == QUANTSHIFT_STATUS_OK);
  EXPECT(quantshift_options_builder_set_key_layout(builder, layout) == QUANTSHIFT_STATUS_OK);
  EXPECT(quantshift_manager_new_with_builder(builder, &manager) == QUANTSHIFT_STATUS_OK);
  quantshift_options_builder_free(builder);
  if (manager != NULL) {
    EXPECT(quantshift_manager_wait_until_primary(manager, 10000, &primary) ==
           QUANTSHIFT_STATUS_OK);
    EXPECT(primary);
  }
  return manager;
}

/* The key layout: a state saved in the hash-tagged layout (bot:{name}:state) is not seen in
 * the plain one (bot:name:state), and is seen again in the tagged one. */
static void key_layouts(const char *prefix) {
  quantshift_options options;
  quantshift_options_builder *builder = NULL;
  quantshift_manager *manager = NULL;
  char *loaded = NULL;
  char name[300];
  snprintf(name, sizeof name, "%s-layout", prefix);

  EXPECT(quantshift_options_default(&options) == QUANTSHIFT_STATUS_OK);
  options.bot_name = name;
  options.install_signal_handlers = false;
  EXPECT(quantshift_options_builder_new(&options, &builder) == QUANTSHIFT_STATUS_OK);
  EXPECT(quantshift_options_builder_set_key_layout(NULL, "plain") ==
         QUANTSHIFT_STATUS_NULL_ARGUMENT);
  EXPECT(quantshift_options_builder_set_key_layout(builder, "cluster") ==
         QUANTSHIFT_STATUS_INVALID_INPUT);
  EXPECT(strstr(quantshift_last_error_message(), "key layout") != NULL);
  EXPECT(quantshift_options_builder_set_key_layout(builder, "\xff") ==
         QUANTSHIFT_STATUS_INVALID_UTF8);
  /* plain on a cluster URL: refused when the manager is made, before any connection. */
  options.redis_url = "redis+cluster://127.0.0.1:1";
  quantshift_options_builder_free(builder);
  builder = NULL;
  EXPECT(quantshift_options_builder_new(&options, &builder) == QUANTSHIFT_STATUS_OK);
  EXPECT(quantshift_options_builder_set_key_layout(builder, "plain") == QUANTSHIFT_STATUS_OK);
  EXPECT(quantshift_manager_new_with_builder(builder, &manager) == QUANTSHIFT_STATUS_INVALID_INPUT);
  EXPECT(strstr(quantshift_last_error_message(), "plain") != NULL);
  EXPECT(manager == NULL);
  /* Braces in a name are the hash tag's: refused in the tagged layout. */
  options.redis_url = NULL;
  options.bot_name = "brace{d}";
  quantshift_options_builder_free(builder);
  builder = NULL;
  EXPECT(quantshift_options_builder_new(&options, &builder) == QUANTSHIFT_STATUS_OK);
  EXPECT(quantshift_options_builder_set_key_layout(builder, "hash_tagged") ==
         QUANTSHIFT_STATUS_OK);
  EXPECT(quantshift_manager_new_with_builder(builder, &manager) == QUANTSHIFT_STATUS_INVALID_INPUT);
  EXPECT(manager == NULL);
  quantshift_options_builder_free(builder);

  manager = layout_bot(name, "hash_tagged");
  if (manager == NULL) return;
  EXPECT(quantshift_manager_save_state(manager, "{\"layout\": \"tagged\"}", NULL) ==
         QUANTSHIFT_STATUS_OK);
  EXPECT(quantshift_manager_shutdown(manager) == QUANTSHIFT_STATUS_OK);
  quantshift_manager_free(manager);

  manager = layout_bot(name, NULL); /* automatic: plain on one server */
  if (manager == NULL) return;
  EXPECT(quantshift_manager_load_state(manager, &loaded) == QUANTSHIFT_STATUS_OK);
  EXPECT(loaded == NULL);
  quantshift_string_free(loaded);
  loaded = NULL;
  quantshift_manager_free(manager);

  manager = layout_bot(name, "tagged");
  if (manager == NULL) return;
  EXPECT(quantshift_manager_load_state(manager, &loaded) == QUANTSHIFT_STATUS_OK);
  EXPECT(loaded != NULL && strstr(loaded, "\"layout\":\"tagged\"") != NULL);
  quantshift_string_free(loaded);
  quantshift_manager_free(manager);
  printf("key layouts: ok\n");
}

int main(int argc, char **argv) {
  quantshift_options options;
  quantshift_options_builder *builder = NULL;
  quantshift_manager *manager = NULL;
  char expected[32];
  if (argc != 2) {
    fprintf(stderr, "usage: test_options_builder BOT_PREFIX\n");
    return 2;
  }

  /* The header's version is the library's. */
  snprintf(expected, sizeof expected, "%d.%d.%d", QUANTSHIFT_VERSION_MAJOR,
           QUANTSHIFT_VERSION_MINOR, QUANTSHIFT_VERSION_PATCH);
  EXPECT(strcmp(expected, QUANTSHIFT_VERSION_STRING) == 0);
  EXPECT(strcmp(quantshift_version(), QUANTSHIFT_VERSION_STRING) == 0);
  EXPECT(QUANTSHIFT_VERSION_NUMBER == QUANTSHIFT_VERSION_MAJOR * 10000 +
                                          QUANTSHIFT_VERSION_MINOR * 100 +
                                          QUANTSHIFT_VERSION_PATCH);

  /* Bad arguments: a status and a message, outputs untouched. */
  EXPECT(quantshift_options_builder_new(NULL, &builder) == QUANTSHIFT_STATUS_NULL_ARGUMENT);
  EXPECT(builder == NULL);
  EXPECT(quantshift_options_default(&options) == QUANTSHIFT_STATUS_OK);
  EXPECT(quantshift_options_builder_new(&options, &builder) == QUANTSHIFT_STATUS_NULL_ARGUMENT);
  EXPECT(strstr(quantshift_last_error_message(), "bot_name") != NULL);
  options.bot_name = "builder-bad";
  EXPECT(quantshift_options_builder_new(&options, NULL) == QUANTSHIFT_STATUS_NULL_ARGUMENT);
  EXPECT(quantshift_options_builder_set_fast_failover(NULL, false) ==
         QUANTSHIFT_STATUS_NULL_ARGUMENT);
  EXPECT(quantshift_manager_new_with_builder(NULL, &manager) == QUANTSHIFT_STATUS_NULL_ARGUMENT);
  EXPECT(manager == NULL);
  quantshift_options_builder_free(NULL);

  /* Values are checked when the manager is made, as for quantshift_manager_new. */
  options.lock_ttl_ms = 3000;
  options.renew_deadline_ms = 500; /* not above lock_ttl / 3 */
  EXPECT(quantshift_options_builder_new(&options, &builder) == QUANTSHIFT_STATUS_OK);
  EXPECT(quantshift_manager_new_with_builder(builder, NULL) == QUANTSHIFT_STATUS_NULL_ARGUMENT);
  EXPECT(quantshift_manager_new_with_builder(builder, &manager) == QUANTSHIFT_STATUS_INVALID_INPUT);
  EXPECT(manager == NULL);
  quantshift_options_builder_free(builder);

  run_bot(argv[1], false);
  run_bot(argv[1], true);
  key_layouts(argv[1]);
  if (failures != 0) {
    fprintf(stderr, "test_options_builder: %d failures\n", failures);
    return 1;
  }
  puts("test_options_builder: ok");
  return 0;
}
