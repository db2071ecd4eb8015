// The C++17 wrapper (bindings/cpp/quantshift_core.hpp) against a real redis-server:
// ownership and moves, exceptions carrying status and message, std::function callbacks.
// Environment: QS_REDIS_URL, QS_DEAD_URL (set by scripts/test.d/40-c.sh).
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <unistd.h>

#include "quantshift_core.hpp"

using namespace std::chrono_literals;

static int checks = 0;

#define CHECK(cond)                                                               \
  do {                                                                            \
    ++checks;                                                                     \
    if (!(cond)) {                                                                \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      std::exit(1);                                                               \
    }                                                                             \
  } while (0)

// `expr` throws quantshift::Error with `status` and a message containing `needle`.
#define CHECK_THROWS(expr, expected_status, needle)                                         \
  do {                                                                                      \
    ++checks;                                                                               \
    try {                                                                                   \
      (void)(expr);                                                                         \
      std::fprintf(stderr, "%s:%d: %s did not throw\n", __FILE__, __LINE__, #expr);        \
      std::exit(1);                                                                         \
    } catch (const quantshift::Error &err) {                                                \
      if (err.status() != (expected_status) ||                                              \
          std::string(err.what()).find(needle) == std::string::npos) {                      \
        std::fprintf(stderr, "%s:%d: %s threw %s: %s\n", __FILE__, __LINE__, #expr,         \
                     quantshift::status_name(err.status()), err.what());                    \
        std::exit(1);                                                                       \
      }                                                                                     \
    }                                                                                       \
  } while (0)

static const char *env(const char *name) {
  const char *value = std::getenv(name);
  if (value == nullptr) {
    std::fprintf(stderr, "%s is required\n", name);
    std::exit(2);
  }
  return value;
}

// The first line redis-cli prints for `args` against the test server.
static std::string redis_cli(const std::string &args) {
  const std::string command =
      "redis-cli -h 127.0.0.1 -p " + std::string(env("QS_REDIS_PORT")) + " " + args;
  FILE *pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) {
    std::fprintf(stderr, "cannot run %s\n", command.c_str());
    std::exit(2);
  }
  char line[512] = {0};
  if (std::fgets(line, sizeof line, pipe) == nullptr) line[0] = '\0';
  pclose(pipe);
  std::string out(line);
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

static quantshift::Options options_for(const std::string &bot) {
  // QS_TTL_MS: the lease TTL, 1000 ms by default (valgrind needs more).
  const char *ttl = std::getenv("QS_TTL_MS");
  quantshift::Options options(bot);
  options.redis_url(env("QS_REDIS_URL"))
      .lock_ttl(std::chrono::milliseconds(ttl ? std::atoll(ttl) : 1000))
      .command_timeout(1000ms)
      .install_signal_handlers(false);
  return options;
}

template <typename F>
static bool eventually(F condition, std::chrono::milliseconds timeout) {
  const auto give_up = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < give_up) {
    if (condition()) return true;
    std::this_thread::sleep_for(2ms);
  }
  return condition();
}

int main() {
  const std::string bot = "cpp-wrapper-" + std::to_string(getpid());

  // Construction failures throw with the status of the C ABI.
  CHECK_THROWS(quantshift::Manager(options_for("bad:name")), quantshift::Status::InvalidInput,
               "':'");
  CHECK_THROWS(quantshift::Manager(quantshift::Options(bot)
                                       .redis_url(env("QS_DEAD_URL"))
                                       .connect_timeout(300ms)
                                       .install_signal_handlers(false)),
               quantshift::Status::RedisUnavailable, "");
  CHECK_THROWS(quantshift::Manager(options_for(std::string("nul\0inside", 10))),
               quantshift::Status::InvalidInput, "NUL");
  CHECK_THROWS(quantshift::Options(bot).lock_ttl(-5ms), quantshift::Status::InvalidInput,
               "negative");

  // Options added after the frozen C struct reach the library through the builder.
  CHECK(options_for(bot).fast_failover());
  CHECK(!options_for(bot).fast_failover(false).fast_failover());
  CHECK(options_for(bot).failover_tolerance_ms() == 200);
  CHECK(options_for(bot).failover_tolerance_ms(150).failover_tolerance_ms() == 150);
  {
    // They set the deadline a holder declares in the lease record: renew_deadline without
    // fast failover, 100 ms + the tolerance with it.
    quantshift::Manager no_fast(options_for(bot + "-nofast").fast_failover(false));
    quantshift::Manager fast(options_for(bot + "-fast").failover_tolerance_ms(150));
    CHECK(fast.wait_until_primary(5s));
    CHECK(redis_cli("HGET bot:" + bot + "-fast:lease_record deadline_ms").find("250") !=
          std::string::npos);
    CHECK(!redis_cli("HGET bot:" + bot + "-nofast:lease_record deadline_ms").empty());
    CHECK(redis_cli("HGET bot:" + bot + "-nofast:lease_record deadline_ms").find("250") ==
          std::string::npos);
  }

  // The key layout: hash_tagged names every key bot:{<name>}:..., an unknown one throws.
  CHECK(!options_for(bot).key_layout().has_value());
  CHECK(options_for(bot).key_layout("hash_tagged").key_layout().value() == "hash_tagged");
  CHECK_THROWS(quantshift::Manager(options_for(bot).key_layout("cluster")),
               quantshift::Status::InvalidInput, "key layout");
  CHECK_THROWS(quantshift::Manager(options_for(bot + "{x}").key_layout("hash_tagged")),
               quantshift::Status::InvalidInput, "hash-tagged");
  {
    quantshift::Manager tagged(options_for(bot + "-tagged").key_layout("hash_tagged"));
    CHECK(tagged.wait_until_primary(5s));
    tagged.save_state(R"({"layout": "tagged"})");
    CHECK(redis_cli("GET bot:{" + bot + "-tagged}:state").find("tagged") != std::string::npos);
    CHECK(redis_cli("EXISTS bot:" + bot + "-tagged:state") == "0");
  }

  quantshift::Manager primary(options_for(bot));
  CHECK(primary.wait_until_primary(5s));
  CHECK(primary.is_primary());
  const auto first_epoch = primary.epoch();
  CHECK(first_epoch.has_value() && *first_epoch >= 1);
  CHECK(primary.bot_name() == bot);
  CHECK(primary.instance_id().find(":" + std::to_string(getpid())) != std::string::npos);
  CHECK(primary.startup_warnings().front() == '[');
  {
    const quantshift_lease_stalls stalls = primary.lease_stalls();
    CHECK(stalls.tolerance_us == 200000);
    CHECK(stalls.round_trip_p99_us <= stalls.round_trip_max_us);
  }
  primary.heartbeat();

  // Moves keep one owner; the moved-from object refuses use with an exception.
  quantshift::Manager moved(std::move(primary));
  CHECK(moved.is_primary());
  CHECK_THROWS(primary.is_primary(), quantshift::Status::NullArgument, "moved-from");

  // State and positions as std::string JSON.
  CHECK(!moved.load_state().has_value());
  const std::string saved = moved.save_state(R"({"strategy": "moving_average", "daily_pnl": 150.5})");
  CHECK(saved.find("\"last_update\":\"20") != std::string::npos);
  CHECK(moved.load_state().value() == saved);
  CHECK(moved.update_state(R"({"daily_pnl": 200})").find("\"daily_pnl\":200") !=
        std::string::npos);
  CHECK_THROWS(moved.save_state("[1]"), quantshift::Status::InvalidInput, "JSON object");
  CHECK_THROWS(moved.save_state("{"), quantshift::Status::InvalidInput, "not valid JSON");
  CHECK_THROWS(moved.save_state("{\"a\": \"\xff\"}"), quantshift::Status::InvalidUtf8,
               "state_json");
  moved.save_position("BTC/USD", R"({"quantity": 0.5})");
  CHECK(moved.load_positions().find("\"BTC/USD\":{\"quantity\":0.5") != std::string::npos);
  CHECK(moved.clear_position("BTC/USD"));
  CHECK(!moved.clear_position("BTC/USD"));
  auto after = moved.apply_fill("AAPL", 10, 100, std::string("f-1"));
  CHECK(after && after->find("\"quantity\":10") != std::string::npos);
  after = moved.apply_fill("AAPL", 10, 100, std::string("f-1"));
  CHECK(after && after->find("\"quantity\":10") != std::string::npos);
  CHECK(!moved.apply_fill("AAPL", -10, 120).has_value());
  CHECK_THROWS(moved.apply_fill("AAPL", std::nan(""), 1.0), quantshift::Status::InvalidInput,
               "quantity");
  const std::string report = moved.sync_positions(R"({"MSFT": {"quantity": 4}})");
  CHECK(report.find("\"inserted\":1") != std::string::npos);

  // A standby: fenced writes throw NotPrimary, epoch() is empty; callbacks fire on takeover.
  quantshift::Manager standby(options_for(bot));
  std::atomic<int> promoted{0}, handlers{0};
  std::atomic<std::uint64_t> promoted_epoch{0};
  standby.on_promoted([&](std::uint64_t epoch) {
    promoted_epoch = epoch;
    ++promoted;
    throw std::runtime_error("swallowed by the wrapper, never reaches the library");
  });
  standby.on_demoted([](const std::string &) {});
  CHECK(!standby.wait_until_primary(100ms));
  CHECK(!standby.epoch().has_value());
  CHECK_THROWS(standby.save_state("{}"), quantshift::Status::NotPrimary, "primary");
  CHECK_THROWS(standby.apply_fill("AAPL", 1, 1), quantshift::Status::NotPrimary, "");
  CHECK(standby.load_state().has_value());

  moved.register_shutdown_handler([&] { ++handlers; throw std::runtime_error("reported"); });
  moved.register_shutdown_handler([&] { ++handlers; });
  CHECK(!moved.is_closed());
  moved.shutdown();
  CHECK(moved.is_closed());
  CHECK(handlers == 2);
  CHECK(eventually([&] { return promoted.load() == 1; }, 2000ms));
  CHECK(promoted_epoch > *first_epoch);
  CHECK(standby.is_primary());
  CHECK(standby.load_state().value().find("\"shutdown_time\"") != std::string::npos);

  // Move-assignment frees the target's handle first (its lease is released).
  quantshift::Manager third(options_for(bot + "-other"));
  CHECK(third.wait_until_primary(5s));
  third = std::move(standby);
  CHECK(third.is_primary());

  std::printf("test_wrapper: %d checks passed\n", checks);
  return 0;
}
