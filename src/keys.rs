//! The key schema of docs/contract.md §1 and the validation that keeps one bot out of another's keys.
//!
//! Two layouts name the same keys. The plain layout (the default, what deployed bots use) is
//! `bot:<name>:state`, … The hash-tagged layout puts the name in braces, `bot:{<name>}:state`,
//! so that Redis Cluster hashes every key of a bot to one slot: a script may then touch them
//! all, and one node serves the bot. A cluster URL uses the hash-tagged layout.
//!
//! | key (plain layout; `{bot}` is the name) | what |
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
//! | `bot:{bot}:lease_stalls` | hash: per live instance id, `<until ms> <JSON>`, a summary of its lease thread's stall meter, published every second (a few seconds' TTL) for `quantshift-state` |

use crate::error::{Error, Result};

/// The message prefix an operator publishes on the lease channel to ask the primary to
/// hand the lease over.
pub use quantshift_lease::protocol::HANDOVER_REQUEST;

/// Longest bot name or symbol accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// Separates a symbol from a fill id in the fills set; control characters are
/// refused in both, so the pair is unambiguous.
pub(crate) const FILL_SEPARATOR: char = '\u{1f}';

/// How a bot's keys are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyLayout {
    /// `bot:<name>:state`: the layout of the original document, the default on one server.
    #[default]
    Plain,
    /// `bot:{<name>}:state`: every key of a bot in one Redis Cluster hash slot; required on a
    /// cluster, available anywhere. Names with `{` or `}` are refused in it.
    HashTagged,
}

impl KeyLayout {
    /// `plain` or `hash_tagged`: the spelling every front end accepts.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyLayout::Plain => "plain",
            KeyLayout::HashTagged => "hash_tagged",
        }
    }

    /// Parses [`as_str`](Self::as_str)'s spellings (`tagged` and `hash-tagged` too).
    pub fn parse(text: &str) -> Result<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "plain" => Ok(KeyLayout::Plain),
            "hash_tagged" | "hash-tagged" | "tagged" => Ok(KeyLayout::HashTagged),
            other => Err(Error::invalid(format!(
                "unknown key layout {other:?}: expected \"plain\" or \"hash_tagged\""
            ))),
        }
    }

    /// The start of every key of `bot_name`, up to its own name.
    fn base(self, bot_name: &str) -> String {
        match self {
            KeyLayout::Plain => format!("bot:{bot_name}:"),
            KeyLayout::HashTagged => format!("bot:{{{bot_name}}}:"),
        }
    }

    /// The bot whose key `key` is, when `key` is one of the keys of the schema in this
    /// layout (a fixed key or a position): what an operator's listing of bots reads.
    pub fn bot_of(self, key: &str) -> Option<&str> {
        let rest = key.strip_prefix("bot:")?;
        let (bot, suffix) = match self {
            KeyLayout::Plain => rest.split_once(':')?,
            // A tagged name holds no brace: the first one closes the tag.
            KeyLayout::HashTagged => rest.strip_prefix('{')?.split_once("}:")?,
        };
        let known = FIXED_SUFFIXES.contains(&suffix) || suffix.starts_with(POSITION_SUFFIX);
        known.then_some(bot)
    }
}

/// The names after a bot's part of its fixed keys, in the order of [`Keys::fixed_keys`].
const FIXED_SUFFIXES: [&str; 9] = [
    "state",
    "heartbeat",
    "primary_lock",
    "epoch",
    "positions",
    "fills",
    "instances",
    "lease_record",
    "lease_stalls",
];
/// What a position key's symbol follows.
const POSITION_SUFFIX: &str = "position:";

impl std::fmt::Display for KeyLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    /// Hash of the instances' stall meter summaries (field: instance id), for operators.
    pub lease_stalls: String,
    /// Prefix of the liveness channels of earlier versions (fast failover no longer uses
    /// them); kept so programs that read it still build.
    #[deprecated(note = "no channel of this prefix is used since the key-only lease")]
    pub liveness_prefix: String,
    layout: KeyLayout,
    bot_name: String,
    position_prefix: String,
}

impl Keys {
    /// Keys of a bot whose name has already passed [`validate_bot_name`], plain layout.
    pub fn new(bot_name: &str) -> Self {
        Self::with_layout(bot_name, KeyLayout::Plain)
    }

    /// Keys of a bot whose name has already passed [`validate_bot_name_for`] for `layout`.
    pub fn with_layout(bot_name: &str, layout: KeyLayout) -> Self {
        let base = layout.base(bot_name);
        let [state, heartbeat, lock, epoch, positions_index, fills, instances, lease_record, lease_stalls] =
            FIXED_SUFFIXES.map(|suffix| format!("{base}{suffix}"));
        #[allow(deprecated)]
        Keys {
            layout,
            bot_name: bot_name.to_owned(),
            state,
            heartbeat,
            lock,
            epoch,
            positions_index,
            fills,
            instances,
            lease_channel: format!("{base}lease"),
            lease_record,
            lease_stalls,
            liveness_prefix: format!("{base}alive:"),
            position_prefix: format!("{base}{POSITION_SUFFIX}"),
        }
    }

    pub fn layout(&self) -> KeyLayout {
        self.layout
    }

    /// The name of the bot these keys belong to.
    pub fn bot_name(&self) -> &str {
        &self.bot_name
    }

    /// Every key of the bot except its positions (named by the positions set), in a fixed
    /// order: what a layout move carries over.
    pub fn fixed_keys(&self) -> [&str; 9] {
        [
            &self.state,
            &self.heartbeat,
            &self.lock,
            &self.epoch,
            &self.positions_index,
            &self.fills,
            &self.instances,
            &self.lease_record,
            &self.lease_stalls,
        ]
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

/// A bot name valid in `layout`: [`validate_bot_name`], and in the hash-tagged layout no `{`
/// or `}` (the hash tag would end early, and the keys scatter over slots).
pub fn validate_bot_name_for(name: &str, layout: KeyLayout) -> Result<()> {
    validate_bot_name(name)?;
    if layout == KeyLayout::HashTagged && name.contains(['{', '}']) {
        return Err(Error::invalid(format!(
            "bot name {name:?} contains '{{' or '}}', which the hash-tagged key layout (Redis \
             Cluster) reserves for the hash tag"
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
    fn the_hash_tagged_layout_puts_every_key_in_one_tag() {
        let keys = Keys::with_layout("alpha", KeyLayout::HashTagged);
        assert_eq!(keys.state, "bot:{alpha}:state");
        assert_eq!(keys.position("BTC/USD"), "bot:{alpha}:position:BTC/USD");
        assert_eq!(keys.lease_channel, "bot:{alpha}:lease");
        assert_eq!(keys.bot_name(), "alpha");
        for key in keys.fixed_keys() {
            assert!(key.starts_with("bot:{alpha}:"), "{key}");
        }
        assert_eq!(Keys::new("alpha").state, "bot:alpha:state");
        assert!(validate_bot_name_for("a{b", KeyLayout::HashTagged).is_err());
        assert!(validate_bot_name_for("a}b", KeyLayout::HashTagged).is_err());
        validate_bot_name_for("a{b}", KeyLayout::Plain).unwrap();
        assert_eq!(
            KeyLayout::parse("hash_tagged").unwrap(),
            KeyLayout::HashTagged
        );
        assert_eq!(KeyLayout::parse(" Plain ").unwrap(), KeyLayout::Plain);
        assert!(KeyLayout::parse("cluster").is_err());
    }

    #[test]
    fn every_key_of_the_schema_names_its_bot_and_nothing_else_does() {
        for layout in [KeyLayout::Plain, KeyLayout::HashTagged] {
            let keys = Keys::with_layout("alpha", layout);
            for key in keys.fixed_keys() {
                assert_eq!(layout.bot_of(key), Some("alpha"), "{key}");
            }
            assert_eq!(layout.bot_of(&keys.position("ES:FUT")), Some("alpha"));
            for other in [
                "bot:alpha",
                "bot:alpha:unknown",
                "robot:alpha:state",
                "alpha:state",
            ] {
                assert_eq!(layout.bot_of(other), None, "{other}");
            }
        }
        assert_eq!(
            KeyLayout::Plain.bot_of("bot:{alpha}:state"),
            Some("{alpha}")
        );
        assert_eq!(KeyLayout::HashTagged.bot_of("bot:alpha:state"), None);
    }

    #[test]
    fn patterns_escape_glob_characters() {
        let keys = Keys::new(r"b*t?[1]\");
        assert_eq!(keys.position_pattern(), r"bot:b\*t\?\[1\]\\:position:*");
        assert_eq!(keys.symbol_of(&keys.position("ES:FUT")), Some("ES:FUT"));
    }
}
