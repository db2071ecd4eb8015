//! The seed's bot usage, from Rust. Needs a Redis: `QUANTSHIFT_REDIS_URL=redis://127.0.0.1:PORT/0
//! cargo run --example basic`.

use std::time::Duration;

use quantshift_core::{Config, StateManager};
use serde_json::json;

fn object(value: serde_json::Value) -> quantshift_core::JsonObject {
    value.as_object().cloned().unwrap_or_default()
}

fn main() -> Result<(), quantshift_core::Error> {
    env_logger::init();
    let state = StateManager::new(Config::new("equity-bot"))?;
    state.register_shutdown_handler(|| {
        println!("closing positions safely");
        Ok(())
    });
    state.on_promoted(|epoch| println!("promoted: now primary with epoch {epoch}"));
    state.on_demoted(|reason| println!("demoted: {reason}"));

    if !state.wait_until_primary(Some(Duration::from_secs(60))) {
        println!("another instance is primary; this one stays standby");
        return state.close();
    }
    if let Some(previous) = state.load_state()? {
        println!("recovered state from: {}", previous["last_update"]);
    }
    state.save_state(&mut object(json!({
        "strategy": "moving_average",
        "last_trade": "2025-12-24T22:00:00",
        "daily_pnl": 150.50
    })))?;
    state.save_position(
        "AAPL",
        &mut object(json!({"quantity": 10, "entry_price": 150.00, "stop_loss": 145.00, "take_profit": 160.00})),
    )?;
    // A fill of the broker, applied once even when delivered twice.
    state.apply_fill("AAPL", 5.0, 152.0, Some("broker-fill-1"))?;
    state.apply_fill("AAPL", 5.0, 152.0, Some("broker-fill-1"))?;
    for (symbol, data) in state.load_positions()? {
        println!(
            "{symbol}: {} shares @ ${}",
            data["quantity"], data["entry_price"]
        );
    }
    state.heartbeat()?;
    println!(
        "this instance is {} (epoch {:?})",
        if state.is_primary() {
            "primary"
        } else {
            "standby"
        },
        state.epoch()
    );
    state.close()
}
