/* A program built against the previous header: it declares, as that header did, the frozen
 * v1 struct quantshift_options (layout of quantshift-core 0.1.0) and the functions it uses,
 * without including today's quantshift_core.h. It must keep working with every later
 * library of the same major version (scripts/test.d/45-c-install.sh runs it).
 * Usage: previous_abi BOT_NAME (Redis from QUANTSHIFT_REDIS_URL). */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* ---- the previous header (0.1.0), copied: never update it ---- */
typedef uint32_t quantshift_status;
typedef struct quantshift_manager quantshift_manager;
typedef struct quantshift_options {
  const char *bot_name;
  const char *redis_url;
  uint64_t state_ttl_ms;
  uint64_t position_ttl_ms;
  uint64_t heartbeat_ttl_ms;
  uint64_t lock_ttl_ms;
  uint64_t renew_deadline_ms;
  uint64_t poll_interval_ms;
  uint64_t connect_timeout_ms;
  uint64_t command_timeout_ms;
  uint64_t shutdown_timeout_ms;
  uint64_t max_payload_bytes;
  uint32_t wait_replicas;
  uint64_t wait_timeout_ms;
  const char *tls_ca_file;
  const char *tls_cert_file;
  const char *tls_key_file;
  const char *sentinel_username;
  const char *sentinel_password;
  bool install_signal_handlers;
} quantshift_options;
quantshift_status quantshift_options_default(struct quantshift_options *options);
quantshift_status quantshift_manager_new(const struct quantshift_options *options,
                                         struct quantshift_manager **out);
void quantshift_manager_free(struct quantshift_manager *manager);
quantshift_status quantshift_manager_wait_until_primary(const struct quantshift_manager *manager,
                                                        int64_t timeout_ms, bool *out);
quantshift_status quantshift_manager_save_state(const struct quantshift_manager *manager,
                                                const char *state_json, char **out);
quantshift_status quantshift_manager_load_state(const struct quantshift_manager *manager,
                                                char **out);
quantshift_status quantshift_manager_shutdown(const struct quantshift_manager *manager);
const char *quantshift_last_error_message(void);
const char *quantshift_version(void);
void quantshift_string_free(char *s);
/* ---- end of the previous header ---- */

#define TRY(call)                                                                     \
  do {                                                                                \
    quantshift_status status_ = (call);                                               \
    if (status_ != 0) {                                                               \
      fprintf(stderr, "%s failed (%u): %s\n", #call, (unsigned)status_,               \
              quantshift_last_error_message());                                       \
      return 1;                                                                       \
    }                                                                                 \
  } while (0)

int main(int argc, char **argv) {
  quantshift_options options;
  quantshift_manager *state = NULL;
  char *loaded = NULL;
  bool primary = false;
  if (argc != 2) {
    fprintf(stderr, "usage: previous_abi BOT_NAME\n");
    return 2;
  }
  /* Non-default values in the last fields: a library that read the struct with another
   * layout would see other values there and refuse or misbehave. */
  TRY(quantshift_options_default(&options));
  options.bot_name = argv[1];
  options.lock_ttl_ms = 6000;
  options.install_signal_handlers = false;
  TRY(quantshift_manager_new(&options, &state));
  TRY(quantshift_manager_wait_until_primary(state, 10000, &primary));
  if (!primary) {
    fprintf(stderr, "not primary\n");
    quantshift_manager_free(state);
    return 1;
  }
  TRY(quantshift_manager_save_state(state, "{\"abi\": \"previous\"}", NULL));
  TRY(quantshift_manager_load_state(state, &loaded));
  if (loaded == NULL || strstr(loaded, "\"previous\"") == NULL) {
    fprintf(stderr, "state not saved: %s\n", loaded ? loaded : "(null)");
    quantshift_string_free(loaded);
    quantshift_manager_free(state);
    return 1;
  }
  quantshift_string_free(loaded);
  TRY(quantshift_manager_shutdown(state));
  quantshift_manager_free(state);
  printf("previous ABI ok against library %s\n", quantshift_version());
  return 0;
}
