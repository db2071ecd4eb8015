// The bot usage of STATE_MANAGEMENT.md with the C++17 wrapper.
//
// Build (see README "Use from C/C++"), then run with the Redis URL in the environment:
//   QUANTSHIFT_REDIS_URL=redis://127.0.0.1:6379/0 ./bot_example_cpp
#include <chrono>
#include <iostream>

#include "quantshift_core.hpp"

int main() {
  try {
    // Initialize the state manager (URL from QUANTSHIFT_REDIS_URL / REDIS_URL).
    quantshift::Manager state(quantshift::Options("equity-bot-cpp"));

    // Register a shutdown handler.
    state.register_shutdown_handler([] { std::cout << "closing positions" << std::endl; });
    state.on_promoted([](std::uint64_t epoch) {
      std::cout << "promoted, epoch " << epoch << std::endl;
    });

    if (!state.wait_until_primary(std::chrono::seconds(10))) {
      std::cerr << "another instance is primary; this one stays standby" << std::endl;
      return 1;
    }

    // Load state on startup.
    if (auto previous = state.load_state()) {
      std::cout << "Recovered state: " << *previous << std::endl;
    }

    // A write is refused (NotPrimary) once this instance lost the lease, e.g. after a stall
    // past failover_tolerance: it must stop trading and leave the orders to the new primary.
    try {
      // Save bot state.
      state.save_state(R"({"strategy": "moving_average", "last_trade": "2025-12-24T22:00:00",
                           "daily_pnl": 150.50})");

      // Save a position, and apply a fill (tag orders with the fencing epoch).
      state.save_position("AAPL", R"({"quantity": 10, "entry_price": 150.00,
                                      "stop_loss": 145.00, "take_profit": 160.00})");
      state.apply_fill("MSFT", 5, 410.25, std::string("fill-1"));

      // Load all positions.
      std::cout << "Positions: " << state.load_positions() << std::endl;

      // Send a heartbeat; check if primary.
      state.heartbeat();
    } catch (const quantshift::Error &err) {
      if (err.status() != quantshift::Status::NotPrimary) {
        throw;
      }
      std::cerr << "lost the primary role, stopped trading: " << err.what() << std::endl;
    }
    std::cout << (state.is_primary() ? "This instance is primary" : "This instance is standby")
              << ", epoch " << state.epoch().value_or(0) << std::endl;

    state.shutdown();
    return 0;
  } catch (const quantshift::Error &err) {
    std::cerr << "quantshift error " << quantshift::status_name(err.status()) << ": "
              << err.what() << std::endl;
    return 1;
  }
}
