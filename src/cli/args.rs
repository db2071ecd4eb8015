//! The command line, declared with `clap` (derive): help texts, and parsing into a [`Cli`]
//! checked before any connection is made. A new command is one more [`Command`] variant (with
//! its own `Args` struct) and one more arm in `run` (src/cli/mod.rs).

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use clap_complete::Shell;

use crate::keys::KeyLayout;

/// The usage lines of every command, shown by `quantshift-state --help` (and by `-h` in front
/// of a command).
const MAIN_USAGE: &str = "\
quantshift-state [--url URL] status [BOT...] [--json] [--check]
       quantshift-state [--url URL] positions BOT [--json]
       quantshift-state [--url URL] handover BOT [--timeout SECS] [--force]
       quantshift-state [--url URL] watch BOT [--interval SECS] [--count N] [--json]
       quantshift-state [--url URL] metrics [--listen ADDRESS:PORT] [BOT...]
       quantshift-state [--url URL] layout move BOT --to hash_tagged|plain [--dry-run]
       quantshift-state completions bash|zsh|fish|elvish|powershell

Global options: --url URL, --key-layout plain|hash_tagged";

const EXIT_CODES: &str = "\
Exit codes:
  0   success (status --check: every bot healthy)
  1   status --check: a bot has a primary but no live standby
  2   status --check: a bot has no primary (or no bot was found)
  3   error: Redis unreachable, invalid URL or bot name, unreadable data
  4   handover refused (no primary, no live standby) or nobody took over in time
  5   layout move refused: an instance of the bot holds its lease
  64  wrong command line

Help on one command: quantshift-state COMMAND --help (or quantshift-state help COMMAND).";

const URL_HELP: &str = "\
Redis URL: redis://[[user]:password@]host[:port][/db], rediss://... (TLS),
unix:///path/to/socket,
redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db], or
redis+cluster://[[user]:password@]host[:port][,host[:port]...] (rediss+cluster:// with TLS):
seed nodes of a Redis or Valkey Cluster.
Without it: $QUANTSHIFT_REDIS_URL, else $REDIS_URL, else redis://127.0.0.1:6379/0.
The password may also come from $REDIS_PASSWORD; it is never printed.
Sentinel credentials, TLS files: the library's variables
($QUANTSHIFT_SENTINEL_PASSWORD, $QUANTSHIFT_TLS_CA_FILE, ...).";

const KEY_LAYOUT_HELP: &str = "\
How the bots' keys are named, as the bots were configured (their key_layout option):
  plain        bot:NAME:state, bot:NAME:position:SYMBOL, ... (the default on one server)
  hash_tagged  bot:{NAME}:state, ...: every key of a bot in one Redis Cluster hash slot
               (the default, and the only layout, with a redis+cluster:// URL)
A bot whose keys are in the other layout is not seen. `layout move` carries a stopped bot's
keys from one layout to the other.";

/// quantshift-state: inspect the bots kept in Redis by quantshift-core, and hand the primary
/// role over for planned maintenance.
#[derive(Parser, Debug)]
#[command(
    name = "quantshift-state",
    version,
    override_usage = MAIN_USAGE,
    after_help = EXIT_CODES,
    arg_required_else_help = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Redis URL (default: $QUANTSHIFT_REDIS_URL, else $REDIS_URL, else
    /// redis://127.0.0.1:6379/0)
    #[arg(long, global = true, value_name = "URL", long_help = URL_HELP)]
    pub url: Option<String>,

    /// How the bots' keys are named: plain (bot:NAME:state) or hash_tagged
    /// (bot:{NAME}:state); default: hash_tagged with a redis+cluster:// URL, plain otherwise
    #[arg(
        long,
        global = true,
        value_name = "LAYOUT",
        value_parser = key_layout,
        long_help = KEY_LAYOUT_HELP
    )]
    pub key_layout: Option<KeyLayout>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// primary, lease, epoch, heartbeat, state age, positions and standbys of each bot (all
    /// bots found when none is named), and the Redis node's role
    #[command(
        override_usage = "quantshift-state [--url URL] status [BOT...] [--json] [--check]",
        long_about = "\
The state of one or more bots.

For each bot (every bot found in Redis when none is named): the primary (instance id,
hostname:pid), how long ago it renewed its lease and when its deadline falls (by the Redis
server's clock), the fencing epoch, the heartbeat age, the age of the saved state (its
last_update), the number of positions, the live standbys (instances seen within about a
second and a half; a closed one leaves at once) and the health; then each live instance's
lease-thread stall meter (how late it woke, its lease round trips, beside its tolerance), the
Redis node's role and warnings about its configuration."
    )]
    Status(StatusArgs),

    /// the bot's positions
    #[command(
        override_usage = "quantshift-state [--url URL] positions BOT [--json]",
        long_about = "\
The positions a bot keeps in Redis.

A table with one row per symbol and one column per field; positions written by older bots
(without an index entry) are included."
    )]
    Positions(PositionsArgs),

    /// ask the primary to step down so a standby takes over; waits for it
    #[command(
        override_usage = "quantshift-state [--url URL] handover BOT [--timeout SECS] [--force]",
        long_about = "\
Planned handover of the primary role.

Asks the bot's primary to step down: it finishes its in-flight write, releases its lease and
leaves it to a standby (it does not compete for the lease again for one poll interval). The
command waits until another instance holds the lease and prints who leads now and how long
the handover took.

It refuses (exit 4) when the bot has no primary, or when no standby is live, because the
bot would then run without a primary until the old one takes the lease back; --force sends
the request anyway."
    )]
    Handover(HandoverArgs),

    /// a live view of one bot, refreshed every second until Ctrl-C
    #[command(
        override_usage = "quantshift-state [--url URL] watch BOT [--interval SECS] [--count N] [--json]",
        long_about = "\
A live view of one bot.

Shows the bot's status, refreshed every interval, with changes of primary as they happen.
Ctrl-C (or SIGTERM) ends it with exit code 0. A failed read (Redis down) is shown in the
view and retried at the next refresh."
    )]
    Watch(WatchArgs),

    /// serve the bots' status as Prometheus metrics on http://127.0.0.1:9464/metrics until
    /// Ctrl-C
    #[command(
        override_usage = "quantshift-state [--url URL] metrics [--listen ADDRESS:PORT] [BOT...]",
        long_about = "\
A Prometheus exporter.

Serves /metrics in the Prometheus text format; each scrape reads the bots named (every bot
found in Redis at that scrape when none is named), one consistent read per bot:
quantshift_bot_has_primary, quantshift_bot_standbys, quantshift_bot_epoch,
quantshift_bot_lease_ttl_seconds, quantshift_bot_lease_renewal_age_seconds,
quantshift_bot_lease_deadline_seconds, quantshift_bot_heartbeat_age_seconds,
quantshift_bot_state_age_seconds, quantshift_bot_positions (label bot), the stall meter of
each live instance: the histograms quantshift_lease_wake_late_seconds and
quantshift_lease_round_trip_seconds, quantshift_lease_tolerance_seconds and
quantshift_lease_dropped_records_total (labels bot, instance_id), quantshift_redis_up and
quantshift_redis_warning (label kind). A value that does not exist (no heartbeat, no
state, no lease) has no series. When Redis is unreachable the scrape still answers, with
quantshift_redis_up 0. Runs until Ctrl-C (or SIGTERM), exit code 0.

Example rules and a Grafana dashboard: examples/monitoring/ in the source tree."
    )]
    Metrics(MetricsArgs),

    /// move a stopped bot's keys between the plain and the hash-tagged key layout
    #[command(subcommand)]
    Layout(LayoutCommand),

    /// print a shell completion script (e.g. quantshift-state completions bash >
    /// ~/.local/share/bash-completion/completions/quantshift-state)
    #[command(
        override_usage = "quantshift-state completions bash|zsh|fish|elvish|powershell",
        long_about = "\
Prints the completion script of a shell to standard output. For example:

  bash: quantshift-state completions bash > ~/.local/share/bash-completion/completions/quantshift-state
  zsh:  quantshift-state completions zsh > ~/.zfunc/_quantshift-state  (with fpath+=~/.zfunc)
  fish: quantshift-state completions fish > ~/.config/fish/completions/quantshift-state.fish"
    )]
    Completions {
        /// the shell
        #[arg(value_enum)]
        shell: Shell,
    },
}

#[derive(Subcommand, Debug)]
pub enum LayoutCommand {
    /// move every key of a stopped bot to the other key layout (e.g. before moving to a
    /// Redis Cluster)
    #[command(
        override_usage = "quantshift-state [--url URL] layout move BOT --to hash_tagged|plain [--dry-run]",
        long_about = LAYOUT_MOVE_ABOUT
    )]
    Move(LayoutMoveArgs),
}

const LAYOUT_MOVE_ABOUT: &str = "\
Moves every key of a bot to the other key layout: from plain (bot:NAME:state, ...) to
hash_tagged (bot:{NAME}:state, ..., the layout of a Redis Cluster), or back.

Every key goes with its value and its remaining TTL (DUMP, then RESTORE and DEL of the old
name in one transaction): the state, heartbeat, fencing epoch, lease record, fills, instances,
the stall meter summaries, the positions set and every position, also positions written by older versions without an
entry in the set. Each line printed is one key; a summary ends the output.

Stop every instance of the bot first. The move is refused (exit 5) while an instance holds the
bot's lease in either layout (its lock key exists, or its lease record names a token), checked
again with every key: a running bot keeps writing under the names it started with, so moving
its keys under it would lose writes it acknowledged. A bot that crashed leaves its token in the
lease record: start one instance and stop it cleanly (SIGTERM), then move.

It can be run again: a run cut short is finished by the next one. A key already at its new name
only is left as it is; a key at both names is taken from the old one (no bot ran since).
--dry-run lists what would move and writes nothing.

Afterwards start the bots with the new layout (key_layout \"hash_tagged\", or a
redis+cluster:// URL, which implies it).

It works on one Redis server (redis://, rediss://, unix://, redis+sentinel://). To move to a
Redis Cluster: stop the bots, move with --to hash_tagged on the old server, copy the keys to the
cluster (redis-cli --cluster import, or DUMP / RESTORE), then start the bots with the
redis+cluster:// URL (docs/deployment.md, \"Moving from one Redis to a cluster\").";

#[derive(Args, Debug)]
pub struct LayoutMoveArgs {
    /// the bot
    #[arg(value_name = "BOT")]
    pub bot: String,
    /// the layout to move the keys to (from the other one)
    #[arg(long, value_name = "LAYOUT", value_parser = key_layout)]
    pub to: KeyLayout,
    /// list what would move, write nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// the bots (default: every bot found in Redis)
    #[arg(value_name = "BOT")]
    pub bots: Vec<String>,
    /// one JSON object: {"redis": {...}, "bots": [{...}, ...]}
    #[arg(long)]
    pub json: bool,
    /// exit with the health, for monitoring (with several bots, the worst)
    #[arg(
        long,
        long_help = "\
exit with the health, for monitoring (with several bots, the worst):
  0  healthy: a primary and at least one live standby
  1  standby missing: a primary, but no live standby to take over
  2  no primary (also when no bot is named and none is found)
  3  the status could not be read (e.g. Redis unreachable)"
    )]
    pub check: bool,
}

#[derive(Args, Debug)]
pub struct PositionsArgs {
    /// the bot
    #[arg(value_name = "BOT")]
    pub bot: String,
    /// a JSON object {symbol: position, ...}, symbols sorted
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct HandoverArgs {
    /// the bot
    #[arg(value_name = "BOT")]
    pub bot: String,
    /// how long to wait for the new primary; exit 4 if nobody took over in that time
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = handover_timeout)]
    pub timeout: Duration,
    /// hand over even when no live standby is seen
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// the bot
    #[arg(value_name = "BOT")]
    pub bot: String,
    /// refresh period, at least 0.05
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = watch_interval)]
    pub interval: Duration,
    /// stop after N refreshes (default: until interrupted)
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = positive_count)]
    pub count: Option<u64>,
    /// one JSON object per line and refresh instead of the screen view
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct MetricsArgs {
    /// the bots (default: every bot found in Redis at each scrape)
    #[arg(value_name = "BOT")]
    pub bots: Vec<String>,
    /// the address and port to serve on (0.0.0.0:9464 for every interface; port 0: any free
    /// port, printed at start)
    #[arg(long, value_name = "ADDRESS:PORT", default_value = "127.0.0.1:9464")]
    pub listen: SocketAddr,
}

/// A number of seconds from `min` to one day.
fn seconds(text: &str, min: f64) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs.is_finite() && (min..=86_400.0).contains(&secs) => {
            Ok(Duration::from_secs_f64(secs))
        }
        _ => Err(format!("must be a number of seconds from {min} to 86400")),
    }
}

/// `plain` or `hash_tagged` (also `hash-tagged`, `tagged`).
fn key_layout(text: &str) -> Result<KeyLayout, String> {
    KeyLayout::parse(text).map_err(|err| err.message().to_owned())
}

fn handover_timeout(text: &str) -> Result<Duration, String> {
    seconds(text, 0.001)
}

fn watch_interval(text: &str) -> Result<Duration, String> {
    seconds(text, 0.05)
}

fn positive_count(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("must be a positive whole number".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_declaration_is_consistent() {
        Cli::command().debug_assert();
    }
}
