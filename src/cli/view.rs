//! Formatting: health, durations, tables and JSON documents of what the inspector returned.

use std::time::Duration;

use crate::error::Error;
use crate::inspect::{BotStatus, Inspector, ServerStatus};
use serde_json::{Map, Value};

use super::{EXIT_NO_PRIMARY, EXIT_OK, EXIT_STANDBY_MISSING, TOOL};

/// A bot's health as `status --check` reports it; ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Health {
    Healthy,
    StandbyMissing,
    NoPrimary,
}

impl Health {
    pub fn of(status: &BotStatus) -> Self {
        if status.holder.is_none() {
            Health::NoPrimary
        } else if status.standbys().is_empty() {
            Health::StandbyMissing
        } else {
            Health::Healthy
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Health::Healthy => "ok",
            Health::StandbyMissing => "standby missing",
            Health::NoPrimary => "no primary",
        }
    }

    pub fn exit_code(self) -> u8 {
        match self {
            Health::Healthy => EXIT_OK,
            Health::StandbyMissing => EXIT_STANDBY_MISSING,
            Health::NoPrimary => EXIT_NO_PRIMARY,
        }
    }
}

/// Nothing of the bot is in Redis: most likely a misspelled name or the wrong database.
pub fn has_no_keys(status: &BotStatus) -> bool {
    status.holder.is_none()
        && status.epoch.is_none()
        && status.heartbeat.is_none()
        && status.state_last_update.is_none()
        && status.positions == 0
        && status.instances.is_empty()
}

/// `850ms`, `2.7s`, `4m05s`, `3h12m`, `2d04h`.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else if secs < 60 {
        format!("{:.1}s", d.as_secs_f64())
    } else if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else if secs < 86_400 {
        format!("{}h{:02}m", secs / 3600, secs % 3600 / 60)
    } else {
        format!("{}d{:02}h", secs / 86_400, secs % 86_400 / 3600)
    }
}

/// A stall or round trip: `0.4ms`, `150.0ms`, past a second as [`human_duration`].
pub fn stall_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{:.1}ms", d.as_secs_f64() * 1000.0)
    } else {
        human_duration(d)
    }
}

/// When the holder's deadline falls: `in 288ms`, `passed 1.2s ago`, `-`.
pub fn deadline(status: &BotStatus) -> String {
    match status.deadline_in_ms {
        None => "-".to_owned(),
        Some(ms) if ms > 0 => format!("in {}", human_duration(Duration::from_millis(ms as u64))),
        Some(ms) => format!(
            "passed {} ago",
            human_duration(Duration::from_millis(ms.unsigned_abs()))
        ),
    }
}

pub fn age(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_owned(), |d| format!("{} ago", human_duration(d)))
}

pub fn dash(value: Option<String>) -> String {
    value.unwrap_or_else(|| "-".to_owned())
}

pub fn epoch(status: &BotStatus) -> String {
    dash(status.epoch.map(|e| e.to_string()))
}

fn standbys(status: &BotStatus) -> String {
    let standbys = status.standbys();
    if standbys.is_empty() {
        "-".to_owned()
    } else {
        standbys.join(", ")
    }
}

/// Left-aligned columns two spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            line.push_str(&" ".repeat(widths[i] - cell.chars().count() + 2));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub fn server_json(inspector: &Inspector, server: &ServerStatus) -> Value {
    let mut out = Map::new();
    out.insert("url".into(), Value::from(inspector.redacted_url()));
    out.insert("role".into(), Value::from(server.role.clone()));
    out.insert("warnings".into(), Value::from(server.warnings.clone()));
    Value::Object(out)
}

pub fn bot_json(status: &BotStatus) -> Value {
    let mut out = status.to_json();
    out.insert("health".into(), Value::from(Health::of(status).label()));
    Value::Object(out)
}

pub fn server_lines(inspector: &Inspector, server: &ServerStatus) -> String {
    let mut out = format!(
        "Redis {} (role: {})\n",
        inspector.redacted_url(),
        server.role
    );
    for warning in &server.warnings {
        out.push_str(&format!("WARNING: {warning}\n"));
    }
    out
}

pub fn status_table(statuses: &[BotStatus]) -> String {
    let rows: Vec<Vec<String>> = statuses
        .iter()
        .map(|status| {
            vec![
                status.bot.clone(),
                Health::of(status).label().to_owned(),
                dash(status.holder.clone()),
                epoch(status),
                age(status.renewal_age),
                deadline(status),
                age(status.heartbeat_age),
                age(status.state_age),
                status.positions.to_string(),
                standbys(status),
            ]
        })
        .collect();
    table(
        &[
            "BOT",
            "HEALTH",
            "PRIMARY",
            "EPOCH",
            "RENEWED",
            "DEADLINE",
            "HEARTBEAT",
            "STATE UPDATED",
            "POSITIONS",
            "STANDBYS",
        ],
        &rows,
    )
}

/// The role of a live instance in `status`.
fn role(status: &BotStatus, instance: &str) -> &'static str {
    if status.holder.as_deref() == Some(instance) {
        "primary"
    } else {
        "standby"
    }
}

/// One row per live instance that published its stall meter: how late its lease thread
/// woke and how long its lease round trips took, beside its tolerance. Empty when none did.
pub fn stalls_table(statuses: &[BotStatus]) -> String {
    let rows: Vec<Vec<String>> = statuses
        .iter()
        .flat_map(|status| {
            status.lease_stalls.iter().map(move |(instance, stalls)| {
                vec![
                    status.bot.clone(),
                    instance.clone(),
                    role(status, instance).to_owned(),
                    stall_duration(stalls.wake_late.max),
                    stall_duration(stalls.wake_late.quantile(0.99)),
                    stall_duration(stalls.round_trip.quantile(0.99)),
                    stall_duration(stalls.round_trip.max),
                    human_duration(stalls.tolerance),
                    stalls.dropped_records.to_string(),
                ]
            })
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    table(
        &[
            "BOT",
            "INSTANCE",
            "ROLE",
            "WOKE LATE MAX",
            "WOKE LATE P99",
            "ROUND TRIP P99",
            "ROUND TRIP MAX",
            "TOLERANCE",
            "DROPPED",
        ],
        &rows,
    )
}

/// One instance's stall meter on one line (`watch`).
fn stalls_line(status: &BotStatus, instance: &str, stalls: &crate::LeaseStalls) -> String {
    format!(
        "{instance} ({}): woke late max {} p99 {}, round trip p99 {} max {}, tolerance {}{}",
        role(status, instance),
        stall_duration(stalls.wake_late.max),
        stall_duration(stalls.wake_late.quantile(0.99)),
        stall_duration(stalls.round_trip.quantile(0.99)),
        stall_duration(stalls.round_trip.max),
        human_duration(stalls.tolerance),
        if stalls.dropped_records > 0 {
            format!(", {} records dropped", stalls.dropped_records)
        } else {
            String::new()
        }
    )
}

fn cell(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

/// One row per symbol, one column per field in order of first appearance, `last_update` last.
pub fn positions_table(positions: &[(String, Map<String, Value>)]) -> String {
    let mut fields: Vec<&str> = Vec::new();
    for (_, data) in positions {
        for field in data.keys() {
            if field != "last_update" && !fields.contains(&field.as_str()) {
                fields.push(field);
            }
        }
    }
    if positions.iter().any(|(_, d)| d.contains_key("last_update")) {
        fields.push("last_update");
    }
    let mut header = vec!["SYMBOL"];
    header.extend(fields.iter().copied());
    let rows: Vec<Vec<String>> = positions
        .iter()
        .map(|(symbol, data)| {
            let mut row = vec![symbol.clone()];
            row.extend(
                fields
                    .iter()
                    .map(|f| data.get(*f).map_or_else(|| "-".to_owned(), cell)),
            );
            row
        })
        .collect();
    table(&header, &rows)
}

/// One screen of `watch`.
pub fn watch_frame(
    inspector: &Inspector,
    bot: &str,
    now: &chrono::DateTime<chrono::Utc>,
    reading: &Result<(BotStatus, ServerStatus), Error>,
    events: &[String],
) -> String {
    let mut out = format!(
        "{TOOL} watch {bot}   {} UTC   (Ctrl-C to quit)\n",
        now.format("%Y-%m-%d %H:%M:%S")
    );
    let line = |out: &mut String, label: &str, value: &str| {
        out.push_str(&format!("{label:<11}{value}\n"));
    };
    match reading {
        Err(err) => {
            line(&mut out, "Redis", inspector.redacted_url());
            line(&mut out, "ERROR", err.message());
        }
        Ok((status, server)) => {
            line(
                &mut out,
                "Redis",
                &format!("{} (role: {})", inspector.redacted_url(), server.role),
            );
            line(&mut out, "health", Health::of(status).label());
            line(&mut out, "primary", &dash(status.holder.clone()));
            line(&mut out, "epoch", &epoch(status));
            line(&mut out, "renewed", &age(status.renewal_age));
            line(&mut out, "deadline", &deadline(status));
            line(&mut out, "standbys", &standbys(status));
            line(&mut out, "heartbeat", &age(status.heartbeat_age));
            line(&mut out, "state", &age(status.state_age));
            line(&mut out, "positions", &status.positions.to_string());
            for (instance, stalls) in &status.lease_stalls {
                line(&mut out, "stalls", &stalls_line(status, instance, stalls));
            }
            for warning in &server.warnings {
                line(&mut out, "WARNING", warning);
            }
        }
    }
    for event in events {
        line(&mut out, "change", event);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(human_duration(Duration::from_millis(2740)), "2.7s");
        assert_eq!(human_duration(Duration::from_secs(245)), "4m05s");
        assert_eq!(human_duration(Duration::from_secs(3 * 3600 + 720)), "3h12m");
        assert_eq!(
            human_duration(Duration::from_secs(2 * 86_400 + 4 * 3600)),
            "2d04h"
        );
        assert_eq!(age(None), "-");
    }

    #[test]
    fn tables_align_columns_by_characters() {
        let out = table(
            &["A", "B"],
            &[
                vec!["é€".into(), "1".into()],
                vec!["xyz".into(), "22".into()],
            ],
        );
        assert_eq!(out, "A    B\né€   1\nxyz  22\n");
    }
}
