//! The key schema of CONTRACT §1 and the validation that keeps one bot out of another's keys.
//!
//! | key | what |
//! |---|---|
//! | `bot:{bot}:state` | JSON state object (`state_ttl`) |
//! | `bot:{bot}:position:{symbol}` | JSON position object (`position_ttl`) |
//! | `bot:{bot}:heartbeat` | ISO-8601 UTC time of the last renewal (`heartbeat_ttl`) |
//! | `bot:{bot}:primary_lock` | lease holder's token `hostname:pid:nonce` (`lock_ttl`) |
//! | `bot:{bot}:epoch` | fencing counter, incremented on every acquisition (no TTL) |
//! | `bot:{bot}:positions` | set of the bot's position symbols, so loading never scans |
//! | `bot:{bot}:fills` | sorted set of applied `symbol\x1ffill_id`, scored by time applied |
//! | `bot:{bot}:instances` | sorted set of live instance ids, scored by when their presence lapses (ms) |
//! | `bot:{bot}:lease` | pub/sub channel: `released <id>` from a releasing primary, `handover <who>` from an operator |
//! | `bot:{bot}:lease_record` | hash (no TTL): the holder's `token` (empty once released), `seq` (moves on every renewal; standbys watch it), the holder's declared `deadline_ms`, `epoch`, server times `taken_at` and `renewed_at` (ms) |

use crate::error::{Error, Result};

/// The message prefix an operator publishes on the lease channel to ask the primary to
/// hand the lease over.
pub const HANDOVER_REQUEST: &str = "handover";

/// Longest bot name or symbol accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// Separates a symbol from a fill id in the fills set; control characters are
/// refused in both, so the pair is unambiguous.
pub(crate) const FILL_SEPARATOR: char = '\u{1f}';

#[derive(Debug, Clone)]
pub struct Keys {
    pub state: String,
    pub heartbeat: String,
    pub lock: String,
    pub epoch: String,
    pub positions_index: String,
    pub fills: String,
    pub instances: String,
    pub lease_channel: String,
    pub lease_record: String,
    /// Prefix of the liveness channels of earlier versions (fast failover no longer uses
    /// them); kept so programs that read it still build.
    pub liveness_prefix: String,
    position_prefix: String,
}

impl Keys {
    /// Keys of a bot whose name has already passed [`validate_bot_name`].
    pub fn new(bot_name: &str) -> Self {
        let base = format!("bot:{bot_name}:");
        Keys {
            state: format!("{base}state"),
            heartbeat: format!("{base}heartbeat"),
            lock: format!("{base}primary_lock"),
            epoch: format!("{base}epoch"),
            positions_index: format!("{base}positions"),
            fills: format!("{base}fills"),
            instances: format!("{base}instances"),
            lease_channel: format!("{base}lease"),
            lease_record: format!("{base}lease_record"),
            liveness_prefix: format!("{base}alive:"),
            position_prefix: format!("{base}position:"),
        }
    }

    pub fn position(&self, symbol: &str) -> String {
        format!("{}{symbol}", self.position_prefix)
    }

    pub fn position_prefix(&self) -> &str {
        &self.position_prefix
    }

    /// A SCAN pattern matching exactly this bot's position keys: the bot name
    /// is glob-escaped so `*`, `?`, `[` in it match only themselves.
    pub fn position_pattern(&self) -> String {
        format!("{}*", escape_glob(&self.position_prefix))
    }

    /// The symbol of one of this bot's position keys.
    pub fn symbol_of<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(&self.position_prefix)
    }
}

/// Escapes the glob characters of Redis patterns (`*`, `?`, `[`, `]`, `\`).
pub fn escape_glob(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

fn validate_name(what: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(format!("{what} must not be empty")));
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(Error::invalid(format!(
            "{what} is {} bytes long; at most {MAX_NAME_BYTES} are allowed",
            value.len()
        )));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(Error::invalid(format!(
            "{what} {value:?} contains the control character {c:?}"
        )));
    }
    Ok(())
}

/// A bot name: not empty, at most 256 bytes, no control characters and no `:`
/// (which would let one bot's keys reach into another's).
pub fn validate_bot_name(name: &str) -> Result<()> {
    validate_name("bot name", name)?;
    if name.contains(':') {
        return Err(Error::invalid(format!(
            "bot name {name:?} contains ':', the key separator"
        )));
    }
    Ok(())
}

/// A symbol: not empty, at most 256 bytes, no control characters. `/`, `:` and
/// non-ASCII are accepted and round-trip exactly.
pub fn validate_symbol(symbol: &str) -> Result<()> {
    validate_name("symbol", symbol)
}

/// A fill id: the same rules as a symbol.
pub fn validate_fill_id(fill_id: &str) -> Result<()> {
    validate_name("fill_id", fill_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_reach_other_keys_are_refused() {
        for bad in ["", "a:b", "tab\there", "nl\n", &"x".repeat(257)] {
            assert!(validate_bot_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["equity-bot", "bot*[x]?", "ünï", &"x".repeat(256)] {
            validate_bot_name(good).unwrap();
        }
        for good in ["BTC/USD", "ES:FUT", "日本株", "a*b"] {
            validate_symbol(good).unwrap();
        }
        assert!(validate_symbol("a\u{7f}").is_err());
    }

    #[test]
    fn patterns_escape_glob_characters() {
        let keys = Keys::new(r"b*t?[1]\");
        assert_eq!(keys.position_pattern(), r"bot:b\*t\?\[1\]\\:position:*");
        assert_eq!(keys.symbol_of(&keys.position("ES:FUT")), Some("ES:FUT"));
    }
}
