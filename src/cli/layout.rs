//! `quantshift-state layout move BOT --to LAYOUT`: carries every key of a stopped bot from one
//! key layout to the other (plain `bot:<name>:…` ⇄ hash-tagged `bot:{<name>}:…`), on one
//! Redis server (or a Sentinel-monitored master).
//!
//! Each key goes with its value and its remaining TTL: `DUMP` and `PTTL` under `WATCH`, then
//! `MULTI; RESTORE dst ttl payload REPLACE; DEL src; EXEC`, so a key is at exactly one of its
//! two names at every moment. The keys: [`Keys::fixed_keys`] and every position, named by the
//! positions set of either layout or found by a `SCAN` of either layout's position keys
//! (positions written by the predecessor, which kept no set). Positions go first and the
//! fixed keys (the set among them) last, so a run cut short leaves the set where a second run
//! looks. A second run finishes the job: a key only at its destination is left as it is; a
//! key at both names is taken from the source (no bot ran since, so it is the newer).
//!
//! Refused while a lease is held in either layout (the lock key exists, or the lease record
//! names a token): a running bot keeps writing under the names it started with, and whatever
//! it acknowledged after its key moved would be lost. The check is repeated inside each key's
//! transaction (the lease keys are watched), so a bot that starts during the move stops it.

use std::fmt::Write as _;
use std::time::Duration;

use redis::{Connection, RedisResult};

use super::args::LayoutMoveArgs;
use super::{Failure, Outcome, EXIT_LAYOUT_REFUSED, EXIT_OK};
use crate::config::{ClusterUrl, Config};
use crate::error::Error;
use crate::keys::{validate_bot_name_for, KeyLayout, Keys};
use crate::store::Store;

/// What happened (or, in a dry run, would happen) to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyMove {
    /// Moved from `src` to `dst`, with this TTL (`None`: no expiry).
    Moved {
        src: String,
        dst: String,
        ttl: Option<Duration>,
    },
    /// Only at its destination already (an earlier run moved it): left as it is.
    AlreadyThere { dst: String },
    /// The fencing epoch at both names, the destination's higher: kept (an epoch never goes
    /// back), the old name removed.
    HigherEpochKept { src: String, dst: String },
}

/// Who holds the bot's lease in one layout, if anyone.
struct Holder {
    layout: KeyLayout,
    token: String,
}

/// `GET lock`, `HGET lease_record token` of the source layout, then the destination's.
type LeaseReplies = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);
/// The lease replies, then `DUMP src`, `PTTL src`, `EXISTS dst`.
type MoveReplies = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<Vec<u8>>,
    i64,
    bool,
);

/// Attempts at one key whose watched keys keep changing (something writes them: a bot).
const MAX_ATTEMPTS: u32 = 50;

/// A key move stopped by a lease taken meanwhile.
enum Step {
    Done(Option<KeyMove>),
    Held(Holder),
}

pub(super) fn run(url: Option<&str>, timeout: Duration, args: &LayoutMoveArgs) -> Outcome {
    let bot = args.bot.as_str();
    let to = args.to;
    let from = match to {
        KeyLayout::Plain => KeyLayout::HashTagged,
        KeyLayout::HashTagged => KeyLayout::Plain,
    };
    validate_bot_name_for(bot, KeyLayout::HashTagged)?;
    let mut config = Config::new(bot)
        .connect_timeout(timeout)
        .command_timeout(timeout);
    if let Some(url) = url {
        config = config.redis_url(url);
    }
    if ClusterUrl::is_cluster(&config.effective_url()) {
        return Err(Error::invalid(
            "layout move works on one Redis server (redis://, rediss://, unix://, \
             redis+sentinel://), not on a cluster URL: move the keys on the old server with \
             --to hash_tagged, then copy them to the cluster (docs/deployment.md, \"Moving from one \
             Redis to a cluster\")",
        )
        .into());
    }
    config = config.key_layout(to);
    config.validate()?;
    let store = Store::open(&config)?;
    let src = Keys::with_layout(bot, from);
    let dst = Keys::with_layout(bot, to);
    let mover = Mover {
        store: &store,
        src: &src,
        dst: &dst,
        dry_run: args.dry_run,
    };

    println!(
        "{}layout move of bot {bot:?}: {from} -> {to} on {}",
        if args.dry_run { "dry run: " } else { "" },
        store.redacted_url()
    );
    // Checked once up front (a clear refusal before anything moves), then again with every key.
    if let Some(holder) = mover.holder()? {
        return Err(refusal(bot, &holder, 0));
    }
    let mut outcomes = Vec::new();
    for (src_key, dst_key) in mover.pairs()? {
        match mover.move_key(&src_key, &dst_key)? {
            Step::Done(Some(outcome)) => {
                println!("  {}", describe(&outcome, args.dry_run));
                outcomes.push(outcome);
            }
            Step::Done(None) => {}
            Step::Held(holder) => {
                let moved = outcomes
                    .iter()
                    .filter(|o| matches!(o, KeyMove::Moved { .. }))
                    .count();
                return Err(refusal(bot, &holder, moved));
            }
        }
    }
    println!("{}", summary(&outcomes, &src, to, args.dry_run));
    if !args.dry_run {
        let left = mover.source_keys_left()?;
        if !left.is_empty() {
            // A bot wrote under the old names meanwhile (it would have been refused above
            // unless it ran without a lease, e.g. an older library): say so, never hide it.
            println!(
                "warning: {} key(s) of the {from} layout appeared during the move: {}; run \
                 the command again once every instance of the bot is stopped",
                left.len(),
                left.join(", ")
            );
        }
    }
    Ok(EXIT_OK)
}

fn refusal(bot: &str, holder: &Holder, moved: usize) -> Failure {
    // The instance id: the token without its nonce.
    let who = match holder.token.rsplit_once(':') {
        Some((instance, _nonce)) => instance,
        None => &holder.token,
    };
    let progress = if moved == 0 {
        "nothing was moved".to_owned()
    } else {
        format!(
            "{moved} key(s) were moved before the lease was taken; run the command again once \
             the bot is stopped to finish"
        )
    };
    Failure {
        code: EXIT_LAYOUT_REFUSED,
        message: format!(
            "bot {bot:?} holds its lease in the {} layout (instance {who}): a running bot \
             keeps writing under the names it started with, so moving its keys under it would \
             lose writes it acknowledged; stop every instance of the bot first ({progress})",
            holder.layout
        ),
        hint: Some(
            "a bot that crashed leaves its token in the lease record: start one instance and \
             stop it cleanly (SIGTERM), which releases the lease, then run the move"
                .to_owned(),
        ),
    }
}

fn describe(outcome: &KeyMove, dry_run: bool) -> String {
    match outcome {
        KeyMove::Moved { src, dst, ttl } => {
            let ttl = match ttl {
                Some(ttl) => format!("ttl {:.3} s", ttl.as_secs_f64()),
                None => "no ttl".to_owned(),
            };
            let verb = if dry_run { "would move" } else { "moved" };
            format!("{verb} {src} -> {dst} ({ttl})")
        }
        KeyMove::AlreadyThere { dst } => format!("already moved: {dst} (left as it is)"),
        KeyMove::HigherEpochKept { src, dst } => {
            let verb = if dry_run { "would keep" } else { "kept" };
            format!("{verb} {dst}, a higher fencing epoch than {src} (which goes)")
        }
    }
}

fn summary(outcomes: &[KeyMove], src: &Keys, to: KeyLayout, dry_run: bool) -> String {
    let mut moved = 0;
    let mut positions = 0;
    let mut already = 0;
    for outcome in outcomes {
        match outcome {
            KeyMove::Moved { src: key, .. } => {
                moved += 1;
                if src.symbol_of(key).is_some() {
                    positions += 1;
                }
            }
            KeyMove::AlreadyThere { .. } | KeyMove::HigherEpochKept { .. } => already += 1,
        }
    }
    let from = src.layout();
    if moved == 0 && already == 0 {
        return "nothing to move: no key of this bot in either layout (check the name and the URL)"
            .to_owned();
    }
    if moved == 0
        && !outcomes
            .iter()
            .any(|o| matches!(o, KeyMove::HigherEpochKept { .. }))
    {
        return format!(
            "nothing left to move: {already} key(s) already in the {to} layout, none in the \
             {from} layout"
        );
    }
    let mut out = format!(
        "{} {moved} key(s) from {from} to {to} ({positions} position(s))",
        if dry_run { "would move" } else { "moved" }
    );
    if already > 0 {
        let _ = write!(
            out,
            "; {already} already in the {to} layout, left as they are"
        );
    }
    if dry_run {
        out.push_str("; nothing was written (dry run)");
    } else {
        let _ = write!(
            out,
            "; start the bots with key_layout \"{to}\"{}",
            if to == KeyLayout::HashTagged {
                " (or a redis+cluster:// URL once the keys are on the cluster)"
            } else {
                ""
            }
        );
    }
    out
}

struct Mover<'a> {
    store: &'a Store,
    src: &'a Keys,
    dst: &'a Keys,
    dry_run: bool,
}

impl Mover<'_> {
    /// The lease keys of both layouts, watched with each key moved.
    fn lease_keys(&self) -> [&str; 4] {
        [
            &self.src.lock,
            &self.src.lease_record,
            &self.dst.lock,
            &self.dst.lease_record,
        ]
    }

    /// Who holds the lease in either layout, from the replies to [`lease_reads`]
    /// (`GET lock, HGET lease_record token` of the source, then of the destination).
    fn holder_of(&self, replies: LeaseReplies) -> Option<Holder> {
        let (src_lock, src_token, dst_lock, dst_token) = replies;
        [
            (self.src.layout(), src_lock, src_token),
            (self.dst.layout(), dst_lock, dst_token),
        ]
        .into_iter()
        .find_map(|(layout, lock, token)| {
            let token = lock.or(token.filter(|t| !t.is_empty()))?;
            Some(Holder { layout, token })
        })
    }

    fn lease_reads(&self, pipe: &mut redis::Pipeline) {
        for keys in [self.src, self.dst] {
            pipe.get(&keys.lock).hget(&keys.lease_record, "token");
        }
    }

    fn holder(&self) -> Result<Option<Holder>, Failure> {
        let mut pipe = redis::pipe();
        self.lease_reads(&mut pipe);
        let replies: LeaseReplies = self.store.run(|conn| pipe.query(conn))?;
        Ok(self.holder_of(replies))
    }

    /// Every (source, destination) pair to look at: the positions first, then the fixed keys.
    fn pairs(&self) -> Result<Vec<(String, String)>, Failure> {
        let (src_index, dst_index): (Vec<String>, Vec<String>) = self.store.run(|conn| {
            redis::pipe()
                .smembers(&self.src.positions_index)
                .smembers(&self.dst.positions_index)
                .query(conn)
        })?;
        let mut symbols: Vec<String> = src_index.into_iter().chain(dst_index).collect();
        // Positions without a set entry, at either name (the destination's for the report of
        // a run again).
        for keys in [self.src, self.dst] {
            for key in self.scan(&keys.position_pattern())? {
                if let Some(symbol) = keys.symbol_of(&key) {
                    symbols.push(symbol.to_owned());
                }
            }
        }
        symbols.sort();
        symbols.dedup();
        let mut pairs: Vec<(String, String)> = symbols
            .iter()
            .map(|symbol| (self.src.position(symbol), self.dst.position(symbol)))
            .collect();
        pairs.extend(
            self.src
                .fixed_keys()
                .into_iter()
                .zip(self.dst.fixed_keys())
                .map(|(s, d)| (s.to_owned(), d.to_owned())),
        );
        Ok(pairs)
    }

    fn scan(&self, pattern: &str) -> Result<Vec<String>, Failure> {
        Ok(self.store.scan_keys(pattern)?)
    }

    /// Keys of the source layout that exist now (after a move: should be none).
    fn source_keys_left(&self) -> Result<Vec<String>, Failure> {
        let mut left = self.scan(&self.src.position_pattern())?;
        let fixed = self.src.fixed_keys();
        let exists: Vec<bool> = self.store.run(|conn| {
            let mut pipe = redis::pipe();
            for key in fixed {
                pipe.exists(key);
            }
            pipe.query(conn)
        })?;
        left.extend(
            fixed
                .iter()
                .zip(exists)
                .filter(|(_, e)| *e)
                .map(|(k, _)| (*k).to_owned()),
        );
        left.sort();
        Ok(left)
    }

    /// Moves one key (or says what a dry run would do), unless a lease is held.
    fn move_key(&self, src: &str, dst: &str) -> Result<Step, Failure> {
        let lease_keys = self.lease_keys();
        Ok(self.store.run(|conn| {
            // A watched key that changes between the reads and EXEC makes EXEC do nothing:
            // then read again.
            for _ in 0..MAX_ATTEMPTS {
                if let Some(step) = self.try_move(conn, src, dst, &lease_keys)? {
                    return Ok(step);
                }
            }
            Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "the key keeps changing while it is moved",
                format!("{src}: is an instance of the bot running?"),
            )))
        })?)
    }

    /// One attempt: `None` when EXEC found a watched key changed.
    fn try_move(
        &self,
        conn: &mut Connection,
        src: &str,
        dst: &str,
        lease_keys: &[&str; 4],
    ) -> RedisResult<Option<Step>> {
        let mut watch = redis::cmd("WATCH");
        watch.arg(src).arg(dst).arg(&lease_keys[..]);
        watch.query::<()>(conn)?;
        let mut pipe = redis::pipe();
        self.lease_reads(&mut pipe);
        pipe.cmd("DUMP").arg(src).cmd("PTTL").arg(src).exists(dst);
        let (sl, st, dl, dt, payload, pttl, dst_exists): MoveReplies = pipe.query(conn)?;
        if let Some(holder) = self.holder_of((sl, st, dl, dt)) {
            redis::cmd("UNWATCH").query::<()>(conn)?;
            return Ok(Some(Step::Held(holder)));
        }
        let (Some(payload), -1 | 0..) = (payload, pttl) else {
            // Not at the source (or expired between the two reads).
            redis::cmd("UNWATCH").query::<()>(conn)?;
            let outcome = dst_exists.then(|| KeyMove::AlreadyThere {
                dst: dst.to_owned(),
            });
            return Ok(Some(Step::Done(outcome)));
        };
        if src == self.src.epoch && dst_exists {
            if let Some(step) = self.keep_higher_epoch(conn, src, dst)? {
                return Ok(step);
            }
        }
        let ttl = u64::try_from(pttl).ok().map(Duration::from_millis);
        let outcome = KeyMove::Moved {
            src: src.to_owned(),
            dst: dst.to_owned(),
            ttl,
        };
        if self.dry_run {
            redis::cmd("UNWATCH").query::<()>(conn)?;
            return Ok(Some(Step::Done(Some(outcome))));
        }
        // RESTORE's TTL 0 is "no expiry"; a key about to expire keeps at least 1 ms.
        let restore_ttl = u64::try_from(pttl).map_or(0, |ms| ms.max(1));
        let done: Option<((), i64)> = redis::pipe()
            .atomic()
            .cmd("RESTORE")
            .arg(dst)
            .arg(restore_ttl)
            .arg(payload)
            .arg("REPLACE")
            .del(src)
            .query(conn)?;
        Ok(done.map(|_| Step::Done(Some(outcome))))
    }

    /// The epoch at both names (under `WATCH`): when the destination's is the higher, it stays
    /// and the source goes, since a fencing epoch never goes back. `Some(None)`: EXEC found a
    /// watched key changed; `None`: the source's is not lower, it moves as any key.
    fn keep_higher_epoch(
        &self,
        conn: &mut Connection,
        src: &str,
        dst: &str,
    ) -> RedisResult<Option<Option<Step>>> {
        let (old, new): (Option<String>, Option<String>) =
            redis::pipe().get(src).get(dst).query(conn)?;
        let number = |value: Option<String>| value.and_then(|v| v.parse::<u64>().ok());
        let (Some(old), Some(new)) = (number(old), number(new)) else {
            return Ok(None);
        };
        if new <= old {
            return Ok(None);
        }
        let outcome = KeyMove::HigherEpochKept {
            src: src.to_owned(),
            dst: dst.to_owned(),
        };
        if self.dry_run {
            redis::cmd("UNWATCH").query::<()>(conn)?;
            return Ok(Some(Some(Step::Done(Some(outcome)))));
        }
        let done: Option<(i64,)> = redis::pipe().atomic().del(src).query(conn)?;
        Ok(Some(done.map(|_| Step::Done(Some(outcome)))))
    }
}
