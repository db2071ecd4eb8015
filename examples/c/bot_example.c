/* The bot usage of STATE_MANAGEMENT.md, in C: register a shutdown handler, save and load
 * the state, save and load positions, heartbeat, check the role.
 *
 * Build (see README "Use from C/C++"), then run with the Redis URL in the environment:
 *   QUANTSHIFT_REDIS_URL=redis://127.0.0.1:6379/0 ./bot_example
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "quantshift_core.h"

/* Prints the failure and its message, and returns from main with status 1. */
#define TRY(call)                                                                          \
  do {                                                                                     \
    quantshift_status status_ = (call);                                                    \
    if (status_ != QUANTSHIFT_STATUS_OK) {                                                 \
      fprintf(stderr, "%s failed: %s: %s\n", #call, quantshift_status_name(status_),       \
              quantshift_last_error_message());                                            \
      quantshift_manager_free(state);                                                      \
      return 1;                                                                            \
    }                                                                                      \
  } while (0)

static int close_positions(void *userdata) {
  (void)userdata;
  /* Your cleanup code: runs on shutdown, on SIGTERM / SIGINT, before the last state is saved. */
  puts("closing positions");
  return 0;
}

int main(void) {
  quantshift_options options;
  quantshift_manager *state = NULL;
  char *previous = NULL, *positions = NULL;
  bool primary = false;

  /* Initialize the state manager. redis_url stays NULL: QUANTSHIFT_REDIS_URL, else
   * REDIS_URL, else redis://127.0.0.1:6379/0. */
  TRY(quantshift_options_default(&options));
  options.bot_name = "equity-bot";
  TRY(quantshift_manager_new(&options, &state));

  /* Register a shutdown handler. */
  TRY(quantshift_manager_register_shutdown_handler(state, close_positions, NULL));

  /* Writes are fenced: only the primary's land. Wait (up to 10 s) to be primary. */
  TRY(quantshift_manager_wait_until_primary(state, 10000, &primary));
  if (!primary) {
    fprintf(stderr, "another instance is primary; this one stays standby\n");
    quantshift_manager_free(state);
    return 1;
  }

  /* Load state on startup (NULL when none was saved). */
  TRY(quantshift_manager_load_state(state, &previous));
  if (previous != NULL) {
    printf("Recovered state: %s\n", previous);
  }
  quantshift_string_free(previous);

  /* Save bot state. */
  TRY(quantshift_manager_save_state(state,
                                    "{\"strategy\": \"moving_average\", "
                                    "\"last_trade\": \"2025-12-24T22:00:00\", "
                                    "\"daily_pnl\": 150.50}",
                                    NULL));

  /* Save a position. */
  TRY(quantshift_manager_save_position(state, "AAPL",
                                       "{\"quantity\": 10, \"entry_price\": 150.00, "
                                       "\"stop_loss\": 145.00, \"take_profit\": 160.00}",
                                       NULL));

  /* Load all positions: one JSON object, {symbol: data}. */
  TRY(quantshift_manager_load_positions(state, &positions));
  printf("Positions: %s\n", positions);
  quantshift_string_free(positions);

  /* Send a heartbeat (the library also renews on its own). */
  TRY(quantshift_manager_heartbeat(state));

  /* Check if primary. */
  TRY(quantshift_manager_is_primary(state, &primary));
  puts(primary ? "This instance is primary" : "This instance is standby");

  /* Graceful stop: handlers, final state, lease released. free() would do it too. */
  TRY(quantshift_manager_shutdown(state));
  quantshift_manager_free(state);
  return 0;
}
