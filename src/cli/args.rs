//! The command line, declared with `clap` (derive): help texts, and parsing into a [`Cli`]
//! checked before any connection is made. A new command is one more [`Command`] variant (with
//! its own `Args` struct) and one more arm in `run` (src/cli/mod.rs).

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use clap_complete::Shell;

/// The usage lines of every command, shown by `quantshift-state --help` (and by `-h` in front
/// of a command).
const MAIN_USAGE: &str = "\
quantshift-state [--url URL] status [BOT...] [--json] [--check]
       quantshift-state [--url URL] positions BOT [--json]
       quantshift-state [--url URL] handover BOT [--timeout SECS] [--force]
       quantshift-state [--url URL] watch BOT [--interval SECS] [--count N] [--json]
       quantshift-state [--url URL] metrics [--listen ADDRESS:PORT] [BOT...]
       quantshift-state completions bash|zsh|fish|elvish|powershell";

const EXIT_CODES: &str = "\
Exit codes:
  0   success (status --check: every bot healthy)
  1   status --check: a bot has a primary but no live standby
  2   status --check: a bot has no primary (or no bot was found)
  3   error: Redis unreachable, invalid URL or bot name, unreadable data
  4   handover refused (no primary, no live standby) or nobody took over in time
  64  wrong command line

Help on one command: quantshift-state COMMAND --help (or quantshift-state help COMMAND).";

const URL_HELP: &str = "\
Redis URL: redis://[[user]:password@]host[:port][/db], rediss://... (TLS),
unix:///path/to/socket, or
redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]
Without it: $QUANTSHIFT_REDIS_URL, else $REDIS_URL, else redis://127.0.0.1:6379/0.
The password may also come from $REDIS_PASSWORD; it is never printed.
Sentinel credentials, TLS files: the library's variables
($QUANTSHIFT_SENTINEL_PASSWORD, $QUANTSHIFT_TLS_CA_FILE, ...).";

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
hostname:pid), the time left on its lease, the fencing epoch, the heartbeat age, the age of
the saved state (its last_update), the number of positions, the live standbys and the
health; then the Redis node's role and warnings about its configuration."
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
quantshift_bot_lease_ttl_seconds, quantshift_bot_heartbeat_age_seconds,
quantshift_bot_state_age_seconds, quantshift_bot_positions (label bot), quantshift_redis_up
and quantshift_redis_warning (label kind). A value that does not exist (no heartbeat, no
state, no lease) has no series. When Redis is unreachable the scrape still answers, with
quantshift_redis_up 0. Runs until Ctrl-C (or SIGTERM), exit code 0.

Example rules and a Grafana dashboard: examples/monitoring/ in the source tree."
    )]
    Metrics(MetricsArgs),

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
