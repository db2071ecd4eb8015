// quantshift-core for C++17: a header-only RAII wrapper over the C ABI (quantshift_core.h).
//
//   quantshift::Options options("equity-bot");
//   options.redis_url("redis://127.0.0.1:6379/0").lock_ttl(std::chrono::seconds(30));
//   quantshift::Manager state(options);
//   if (state.wait_until_primary(std::chrono::seconds(60))) {
//     state.save_state(R"({"strategy": "moving_average"})");
//   }
//
// Every failure throws quantshift::Error, carrying the status and the library's message.
// JSON goes in and out as std::string. Manager owns its handle (move-only); its destructor
// shuts down (handlers, final state, lease release) and frees it.
#ifndef QUANTSHIFT_CORE_HPP
#define QUANTSHIFT_CORE_HPP

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "quantshift_core.h"

namespace quantshift {

// The C statuses, same numbers.
enum class Status : std::uint32_t {
  Ok = QUANTSHIFT_STATUS_OK,
  NotPrimary = QUANTSHIFT_STATUS_NOT_PRIMARY,
  RedisUnavailable = QUANTSHIFT_STATUS_REDIS_UNAVAILABLE,
  InvalidInput = QUANTSHIFT_STATUS_INVALID_INPUT,
  CorruptData = QUANTSHIFT_STATUS_CORRUPT_DATA,
  NotReplicated = QUANTSHIFT_STATUS_NOT_REPLICATED,
  RedisError = QUANTSHIFT_STATUS_REDIS_ERROR,
  NullArgument = QUANTSHIFT_STATUS_NULL_ARGUMENT,
  InvalidUtf8 = QUANTSHIFT_STATUS_INVALID_UTF8,
  Panic = QUANTSHIFT_STATUS_PANIC,
};

inline const char *status_name(Status status) noexcept {
  return quantshift_status_name(static_cast<std::uint32_t>(status));
}

// A failed call: what() is the library's message, status() says what kind of failure.
class Error : public std::runtime_error {
 public:
  Error(Status status, const std::string &message)
      : std::runtime_error(message), status_(status) {}
  Status status() const noexcept { return status_; }

 private:
  Status status_;
};

namespace detail {

inline void check(quantshift_status status) {
  if (status != QUANTSHIFT_STATUS_OK) {
    // Read on this thread, right after the failing call: the C ABI's last-error rule.
    throw Error(static_cast<Status>(status), quantshift_last_error_message());
  }
}

// A C string argument; an embedded NUL would silently cut it, so it is refused.
inline const char *c_str(const std::string &text, const char *what) {
  if (text.find('\0') != std::string::npos) {
    throw Error(Status::InvalidInput, std::string(what) + " contains a NUL byte");
  }
  return text.c_str();
}

// Owns a char * returned by the library.
class OwnedString {
 public:
  OwnedString() = default;
  OwnedString(const OwnedString &) = delete;
  OwnedString &operator=(const OwnedString &) = delete;
  ~OwnedString() { quantshift_string_free(ptr_); }
  char **out() noexcept { return &ptr_; }
  bool is_null() const noexcept { return ptr_ == nullptr; }
  std::string str() const { return ptr_ ? std::string(ptr_) : std::string(); }
  std::optional<std::string> optional() const {
    return ptr_ ? std::optional<std::string>(ptr_) : std::nullopt;
  }

 private:
  char *ptr_ = nullptr;
};

inline std::uint64_t millis(std::chrono::milliseconds duration) {
  if (duration.count() < 0) {
    throw Error(Status::InvalidInput, "durations must not be negative");
  }
  return static_cast<std::uint64_t>(duration.count());
}

}  // namespace detail

// Options of a Manager: the library's defaults, changed with chained setters.
class Options {
 public:
  explicit Options(std::string bot_name) : bot_name_(std::move(bot_name)) {
    detail::check(quantshift_options_default(&raw_));
  }

  // Unset: QUANTSHIFT_REDIS_URL, else REDIS_URL, else redis://127.0.0.1:6379/0.
  Options &redis_url(std::string url) { redis_url_ = std::move(url); return *this; }
  Options &state_ttl(std::chrono::milliseconds d) { raw_.state_ttl_ms = detail::millis(d); return *this; }
  Options &position_ttl(std::chrono::milliseconds d) { raw_.position_ttl_ms = detail::millis(d); return *this; }
  Options &heartbeat_ttl(std::chrono::milliseconds d) { raw_.heartbeat_ttl_ms = detail::millis(d); return *this; }
  Options &lock_ttl(std::chrono::milliseconds d) { raw_.lock_ttl_ms = detail::millis(d); return *this; }
  Options &renew_deadline(std::chrono::milliseconds d) { raw_.renew_deadline_ms = detail::millis(d); return *this; }
  Options &poll_interval(std::chrono::milliseconds d) { raw_.poll_interval_ms = detail::millis(d); return *this; }
  Options &connect_timeout(std::chrono::milliseconds d) { raw_.connect_timeout_ms = detail::millis(d); return *this; }
  Options &command_timeout(std::chrono::milliseconds d) { raw_.command_timeout_ms = detail::millis(d); return *this; }
  Options &shutdown_timeout(std::chrono::milliseconds d) { raw_.shutdown_timeout_ms = detail::millis(d); return *this; }
  Options &max_payload_bytes(std::uint64_t bytes) { raw_.max_payload_bytes = bytes; return *this; }
  // false: the host handles SIGTERM / SIGINT itself and calls Manager::shutdown().
  Options &install_signal_handlers(bool install) { raw_.install_signal_handlers = install; return *this; }
  // Fast failover (default true); false: renewals every lock_ttl / 3, failover after
  // renew_deadline. failover_tolerance_ms: the longest Redis stall that never moves the lease.
  Options &fast_failover(bool enabled) { fast_failover_ = enabled; return *this; }
  bool fast_failover() const noexcept { return fast_failover_; }
  Options &failover_tolerance_ms(std::uint64_t ms) { failover_tolerance_ms_ = ms; return *this; }
  std::uint64_t failover_tolerance_ms() const noexcept { return failover_tolerance_ms_; }
  // How the bot's keys are named: "plain" (bot:<name>:state) or "hash_tagged"
  // (bot:{<name>}:state, one Redis Cluster slot per bot). Unset: hash_tagged with a
  // redis+cluster:// URL, plain otherwise. Checked when the Manager is made.
  Options &key_layout(std::string layout) { key_layout_ = std::move(layout); return *this; }
  const std::optional<std::string> &key_layout() const noexcept { return key_layout_; }

  // The C struct, pointing into this object's strings: valid while it lives, unchanged.
  quantshift_options raw() const {
    quantshift_options raw = raw_;
    raw.bot_name = detail::c_str(bot_name_, "bot_name");
    raw.redis_url = redis_url_ ? detail::c_str(*redis_url_, "redis_url") : nullptr;
    return raw;
  }

 private:
  std::string bot_name_;
  std::optional<std::string> redis_url_;
  quantshift_options raw_{};
  bool fast_failover_ = true;
  std::uint64_t failover_tolerance_ms_ = 200;
  std::optional<std::string> key_layout_;
};

// One bot instance's state, positions and primary/standby role in Redis. Move-only; the
// destructor shuts down and frees. Every const member may be called from several threads.
class Manager {
 public:
  using PromotedCallback = std::function<void(std::uint64_t epoch)>;
  using DemotedCallback = std::function<void(const std::string &reason)>;
  // A shutdown handler; an exception it throws is reported as a failure and the next
  // handler still runs.
  using ShutdownHandler = std::function<void()>;

  explicit Manager(const Options &options) : callbacks_(std::make_unique<Callbacks>()) {
    // The growable options (quantshift_options_builder): the v1 struct plus later options.
    const quantshift_options raw = options.raw();
    // Checked before the builder exists (c_str throws on a NUL byte). NULL: automatic.
    const char *key_layout =
        options.key_layout() ? detail::c_str(*options.key_layout(), "key_layout") : nullptr;
    quantshift_options_builder *builder = nullptr;
    detail::check(quantshift_options_builder_new(&raw, &builder));
    quantshift_status status = quantshift_options_builder_set_fast_failover(builder, options.fast_failover());
    if (status == QUANTSHIFT_STATUS_OK)
      status = quantshift_options_builder_set_failover_tolerance_ms(builder, options.failover_tolerance_ms());
    if (status == QUANTSHIFT_STATUS_OK) status = quantshift_options_builder_set_key_layout(builder, key_layout);
    if (status == QUANTSHIFT_STATUS_OK) status = quantshift_manager_new_with_builder(builder, &handle_);
    quantshift_options_builder_free(builder);
    detail::check(status);
  }

  Manager(const Manager &) = delete;
  Manager &operator=(const Manager &) = delete;
  Manager(Manager &&other) noexcept
      : handle_(std::exchange(other.handle_, nullptr)), callbacks_(std::move(other.callbacks_)) {}
  Manager &operator=(Manager &&other) noexcept {
    if (this != &other) {
      quantshift_manager_free(handle_);
      handle_ = std::exchange(other.handle_, nullptr);
      callbacks_ = std::move(other.callbacks_);
    }
    return *this;
  }
  // Shuts down (errors ignored: call shutdown() to see them) and frees. The callbacks are
  // destroyed after the library guarantees none runs any more.
  ~Manager() { quantshift_manager_free(handle_); }

  // The C handle, for calls this wrapper does not cover. Still owned by this object.
  quantshift_manager *get() const noexcept { return handle_; }

  bool is_primary() const {
    bool primary = false;
    detail::check(quantshift_manager_is_primary(live(), &primary));
    return primary;
  }

  // Blocks until primary or the timeout passes; std::nullopt waits for ever.
  bool wait_until_primary(std::optional<std::chrono::milliseconds> timeout = std::nullopt) const {
    bool primary = false;
    const std::int64_t ms = timeout ? static_cast<std::int64_t>(detail::millis(*timeout)) : -1;
    detail::check(quantshift_manager_wait_until_primary(live(), ms, &primary));
    return primary;
  }

  // The fencing epoch while primary, std::nullopt otherwise.
  std::optional<std::uint64_t> epoch() const {
    std::uint64_t epoch = 0;
    const quantshift_status status = quantshift_manager_epoch(live(), &epoch);
    if (status == QUANTSHIFT_STATUS_NOT_PRIMARY) {
      return std::nullopt;
    }
    detail::check(status);
    return epoch;
  }

  std::string instance_id() const {
    detail::OwnedString out;
    detail::check(quantshift_manager_instance_id(live(), out.out()));
    return out.str();
  }

  std::string bot_name() const {
    detail::OwnedString out;
    detail::check(quantshift_manager_bot_name(live(), out.out()));
    return out.str();
  }

  // A JSON array of strings.
  std::string startup_warnings() const {
    detail::OwnedString out;
    detail::check(quantshift_manager_startup_warnings(live(), out.out()));
    return out.str();
  }

  // The lease thread's stall meter (local: no network): counts, and durations in
  // microseconds, of its late wake-ups and its lease round trips, beside the tolerance.
  quantshift_lease_stalls lease_stalls() const {
    quantshift_lease_stalls stalls{};
    detail::check(quantshift_manager_lease_stalls(live(), &stalls));
    return stalls;
  }

  void heartbeat() const { detail::check(quantshift_manager_heartbeat(live())); }

  // Returns the state as saved, with last_update.
  std::string save_state(const std::string &state_json) const {
    detail::OwnedString out;
    detail::check(quantshift_manager_save_state(live(), detail::c_str(state_json, "state_json"),
                                                out.out()));
    return out.str();
  }

  std::string update_state(const std::string &changes_json) const {
    detail::OwnedString out;
    detail::check(quantshift_manager_update_state(
        live(), detail::c_str(changes_json, "changes_json"), out.out()));
    return out.str();
  }

  std::optional<std::string> load_state() const {
    detail::OwnedString out;
    detail::check(quantshift_manager_load_state(live(), out.out()));
    return out.optional();
  }

  std::string save_position(const std::string &symbol, const std::string &data_json) const {
    detail::OwnedString out;
    detail::check(quantshift_manager_save_position(live(), detail::c_str(symbol, "symbol"),
                                                   detail::c_str(data_json, "data_json"),
                                                   out.out()));
    return out.str();
  }

  // {symbol: position, ...}
  std::string load_positions() const {
    detail::OwnedString out;
    detail::check(quantshift_manager_load_positions(live(), out.out()));
    return out.str();
  }

  // Whether it existed.
  bool clear_position(const std::string &symbol) const {
    bool existed = false;
    detail::check(
        quantshift_manager_clear_position(live(), detail::c_str(symbol, "symbol"), &existed));
    return existed;
  }

  // The position after the fill, std::nullopt when flat.
  std::optional<std::string> apply_fill(const std::string &symbol, double quantity, double price,
                                        const std::optional<std::string> &fill_id =
                                            std::nullopt) const {
    detail::OwnedString out;
    detail::check(quantshift_manager_apply_fill(
        live(), detail::c_str(symbol, "symbol"), quantity, price,
        fill_id ? detail::c_str(*fill_id, "fill_id") : nullptr, out.out()));
    return out.optional();
  }

  // The report: {"inserted", "updated", "deleted", "unchanged", "differences"}.
  std::string sync_positions(const std::string &broker_json) const {
    detail::OwnedString out;
    detail::check(quantshift_manager_sync_positions(
        live(), detail::c_str(broker_json, "broker_json"), out.out()));
    return out.str();
  }

  // Callbacks run on a library thread; exceptions they throw are swallowed (promoted,
  // demoted) or reported as a handler failure (shutdown).
  void on_promoted(PromotedCallback callback) {
    auto *stored = keep(callbacks_->promoted, std::move(callback));
    detail::check(quantshift_manager_on_promoted(
        live(),
        [](void *userdata, std::uint64_t epoch) {
          try {
            (*static_cast<PromotedCallback *>(userdata))(epoch);
          } catch (...) {
          }
        },
        stored));
  }

  void on_demoted(DemotedCallback callback) {
    auto *stored = keep(callbacks_->demoted, std::move(callback));
    detail::check(quantshift_manager_on_demoted(
        live(),
        [](void *userdata, const char *reason) {
          try {
            (*static_cast<DemotedCallback *>(userdata))(std::string(reason));
          } catch (...) {
          }
        },
        stored));
  }

  void register_shutdown_handler(ShutdownHandler handler) {
    auto *stored = keep(callbacks_->shutdown, std::move(handler));
    detail::check(quantshift_manager_register_shutdown_handler(
        live(),
        [](void *userdata) -> int {
          try {
            (*static_cast<ShutdownHandler *>(userdata))();
            return 0;
          } catch (...) {
            return 1;
          }
        },
        stored));
  }

  bool is_closed() const {
    bool closed = false;
    detail::check(quantshift_manager_is_closed(live(), &closed));
    return closed;
  }

  // Optional: route the library's log records (1 error ... 5 trace) to a C callback; see
  // quantshift_set_log_callback in quantshift_core.h (process-wide, not per manager).

  // Handlers, final state, lease released; the object stays usable for reads.
  void shutdown() const { detail::check(quantshift_manager_shutdown(live())); }

 private:
  // Heap-allocated so their addresses (the userdata) survive moves of the Manager.
  struct Callbacks {
    std::mutex lock;
    std::vector<std::unique_ptr<PromotedCallback>> promoted;
    std::vector<std::unique_ptr<DemotedCallback>> demoted;
    std::vector<std::unique_ptr<ShutdownHandler>> shutdown;
  };

  template <typename F>
  F *keep(std::vector<std::unique_ptr<F>> &store, F callback) {
    if (!callback) {
      throw Error(Status::NullArgument, "empty std::function callback");
    }
    std::lock_guard<std::mutex> guard(callbacks_->lock);
    store.push_back(std::make_unique<F>(std::move(callback)));
    return store.back().get();
  }

  quantshift_manager *live() const {
    if (handle_ == nullptr) {
      throw Error(Status::NullArgument, "use of a moved-from quantshift::Manager");
    }
    return handle_;
  }

  quantshift_manager *handle_ = nullptr;
  std::unique_ptr<Callbacks> callbacks_;
};

}  // namespace quantshift

#endif  // QUANTSHIFT_CORE_HPP
