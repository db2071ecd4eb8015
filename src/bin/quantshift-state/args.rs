//! The command line: help texts, and parsing into a [`Command`] checked before any
//! connection is made.

use std::collections::HashMap;
use std::time::Duration;

use crate::{Failure, EXIT_USAGE, TOOL};

pub const MAIN_HELP: &str = "\
quantshift-state: inspect the bots kept in Redis by quantshift-core, and hand the primary
role over for planned maintenance.

Usage: quantshift-state [--url URL] <COMMAND> [ARGS] [OPTIONS]

Commands:
  status [BOT...]   primary, lease, epoch, heartbeat, state age, positions and standbys of
                    each bot (all bots found when none is named), and the Redis node's role
  positions BOT     the bot's positions
  handover BOT      ask the primary to step down so a standby takes over; waits for it
  watch BOT         a live view of one bot, refreshed every second until Ctrl-C

Global options:
  --url URL         Redis URL: redis://[[user]:password@]host[:port][/db], rediss://...
                    (TLS), unix:///path/to/socket, or
                    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]
                    Without it: $QUANTSHIFT_REDIS_URL, else $REDIS_URL, else
                    redis://127.0.0.1:6379/0. The password may also come from
                    $REDIS_PASSWORD; it is never printed. Sentinel credentials, TLS files:
                    the library's variables ($QUANTSHIFT_SENTINEL_PASSWORD,
                    $QUANTSHIFT_TLS_CA_FILE, ...).
  -h, --help        help (also after any command: quantshift-state handover --help)
  -V, --version     the version

Exit codes:
  0   success (status --check: every bot healthy)
  1   status --check: a bot has a primary but no live standby
  2   status --check: a bot has no primary (or no bot was found)
  3   error: Redis unreachable, invalid URL or bot name, unreadable data
  4   handover refused (no primary, no live standby) or nobody took over in time
  64  wrong command line
";

pub const STATUS_HELP: &str = "\
quantshift-state status: the state of one or more bots.

Usage: quantshift-state [--url URL] status [BOT...] [--json] [--check]

For each bot (every bot found in Redis when none is named): the primary (instance id,
hostname:pid), the time left on its lease, the fencing epoch, the heartbeat age, the age of
the saved state (its last_update), the number of positions, the live standbys and the
health; then the Redis node's role and warnings about its configuration.

Options:
  --json      one JSON object: {\"redis\": {...}, \"bots\": [{...}, ...]}
  --check     exit with the health, for monitoring (with several bots, the worst):
                0  healthy: a primary and at least one live standby
                1  standby missing: a primary, but no live standby to take over
                2  no primary (also when no bot is named and none is found)
                3  the status could not be read (e.g. Redis unreachable)
  --url URL   see quantshift-state --help
";

pub const POSITIONS_HELP: &str = "\
quantshift-state positions: the positions a bot keeps in Redis.

Usage: quantshift-state [--url URL] positions BOT [--json]

A table with one row per symbol and one column per field; positions written by older bots
(without an index entry) are included.

Options:
  --json      a JSON object {symbol: position, ...}, symbols sorted
  --url URL   see quantshift-state --help
";

pub const HANDOVER_HELP: &str = "\
quantshift-state handover: planned handover of the primary role.

Usage: quantshift-state [--url URL] handover BOT [--timeout SECS] [--force]

Asks the bot's primary to step down: it finishes its in-flight write, releases its lease and
leaves it to a standby (it does not compete for the lease again for one poll interval). The
command waits until another instance holds the lease and prints who leads now and how long
the handover took.

It refuses (exit 4) when the bot has no primary, or when no standby is live, because the
bot would then run without a primary until the old one takes the lease back; --force sends
the request anyway.

Options:
  --timeout SECS  how long to wait for the new primary (default 10); exit 4 if nobody took
                  over in that time
  --force         hand over even when no live standby is seen
  --url URL       see quantshift-state --help
";

pub const WATCH_HELP: &str = "\
quantshift-state watch: a live view of one bot.

Usage: quantshift-state [--url URL] watch BOT [--interval SECS] [--count N] [--json]

Shows the bot's status, refreshed every interval, with changes of primary as they happen.
Ctrl-C (or SIGTERM) ends it with exit code 0. A failed read (Redis down) is shown in the
view and retried at the next refresh.

Options:
  --interval SECS  refresh period (default 1, at least 0.05)
  --count N        stop after N refreshes (default: until interrupted)
  --json           one JSON object per line and refresh instead of the screen view
  --url URL        see quantshift-state --help
";

/// What the user asked for, with every option checked.
pub enum Command {
    Help(&'static str),
    Version,
    Status {
        bots: Vec<String>,
        json: bool,
        check: bool,
    },
    Positions {
        bot: String,
        json: bool,
    },
    Handover {
        bot: String,
        timeout: Duration,
        force: bool,
    },
    Watch {
        bot: String,
        interval: Duration,
        count: Option<u64>,
        json: bool,
    },
}

/// The parsed command line: the command and the `--url` option (if given).
pub struct Invocation {
    pub url: Option<String>,
    pub command: Command,
    /// Exit code after printing help: 0 when asked for, `EXIT_USAGE` when no command was given.
    pub help_exit: u8,
}

/// What one command accepts besides its positional arguments.
struct Spec {
    name: &'static str,
    help: &'static str,
    flags: &'static [&'static str],
    options: &'static [&'static str],
    /// Whether it takes any number of BOTs (else exactly one).
    many_bots: bool,
}

const COMMANDS: &[Spec] = &[
    Spec {
        name: "status",
        help: STATUS_HELP,
        flags: &["--json", "--check"],
        options: &[],
        many_bots: true,
    },
    Spec {
        name: "positions",
        help: POSITIONS_HELP,
        flags: &["--json"],
        options: &[],
        many_bots: false,
    },
    Spec {
        name: "handover",
        help: HANDOVER_HELP,
        flags: &["--force"],
        options: &["--timeout"],
        many_bots: false,
    },
    Spec {
        name: "watch",
        help: WATCH_HELP,
        flags: &["--json"],
        options: &["--interval", "--count"],
        many_bots: false,
    },
];

/// `--name=value` split into its parts.
fn split_option(arg: &str) -> (&str, Option<&str>) {
    match arg.split_once('=') {
        Some((name, value)) if name.starts_with("--") => (name, Some(value)),
        _ => (arg, None),
    }
}

pub fn usage(command: Option<&str>, message: impl Into<String>) -> Failure {
    let help = match command {
        Some(command) => format!("{TOOL} {command} --help"),
        None => format!("{TOOL} --help"),
    };
    Failure {
        code: EXIT_USAGE,
        message: message.into(),
        hint: Some(format!("see '{help}'")),
    }
}

pub fn parse(args: &[String]) -> Result<Invocation, Failure> {
    let help = |text: &'static str, exit: u8| Invocation {
        url: None,
        command: Command::Help(text),
        help_exit: exit,
    };
    // The command is the first argument that is neither an option nor --url's value.
    let mut command_at = None;
    let mut i = 0;
    while i < args.len() {
        let (name, inline) = split_option(&args[i]);
        if name == "--" {
            break;
        }
        if name == "--url" && inline.is_none() {
            i += 2;
            continue;
        }
        if !args[i].starts_with('-') {
            command_at = Some(i);
            break;
        }
        i += 1;
    }
    let Some(command_at) = command_at else {
        if args.iter().any(|a| a == "-h" || a == "--help") {
            return Ok(help(MAIN_HELP, 0));
        }
        if args.iter().any(|a| a == "-V" || a == "--version") {
            return Ok(Invocation {
                url: None,
                command: Command::Version,
                help_exit: 0,
            });
        }
        if args.is_empty() {
            return Ok(help(MAIN_HELP, EXIT_USAGE));
        }
        return Err(usage(None, "no command given"));
    };
    let name = args[command_at].as_str();
    if name == "help" {
        let topic = args.get(command_at + 1).map(String::as_str);
        return Ok(
            match topic.and_then(|t| COMMANDS.iter().find(|spec| spec.name == t)) {
                Some(spec) => help(spec.help, 0),
                None => help(MAIN_HELP, 0),
            },
        );
    }
    let Some(spec) = COMMANDS.iter().find(|spec| spec.name == name) else {
        return Err(usage(
            None,
            format!("unknown command {name:?} (commands: status, positions, handover, watch)"),
        ));
    };
    let rest: Vec<&str> = args
        .iter()
        .enumerate()
        .filter(|(at, _)| *at != command_at)
        .map(|(_, arg)| arg.as_str())
        .collect();
    if rest
        .iter()
        .take_while(|a| **a != "--")
        .any(|a| *a == "-h" || *a == "--help")
    {
        return Ok(help(spec.help, 0));
    }
    parse_command(spec, &rest)
}

fn parse_command(spec: &Spec, args: &[&str]) -> Result<Invocation, Failure> {
    let usage = |message: String| usage(Some(spec.name), message);
    let mut url = None;
    let mut bots: Vec<String> = Vec::new();
    let mut flags: Vec<&str> = Vec::new();
    let mut options: HashMap<&str, String> = HashMap::new();
    let mut only_positionals = false;
    let mut i = 0;
    while i < args.len() {
        let arg = args[i];
        i += 1;
        if only_positionals || !arg.starts_with('-') || arg == "-" {
            bots.push(arg.to_owned());
            continue;
        }
        if arg == "--" {
            only_positionals = true;
            continue;
        }
        let (name, inline) = split_option(arg);
        if let Some(flag) = spec.flags.iter().find(|f| **f == name) {
            if inline.is_some() {
                return Err(usage(format!("{name} takes no value")));
            }
            flags.push(flag);
        } else if let Some(option) = ["--url"]
            .iter()
            .chain(spec.options.iter())
            .find(|o| **o == name)
        {
            let value = match inline {
                Some(value) => value.to_owned(),
                None => {
                    let Some(value) = args.get(i) else {
                        return Err(usage(format!("{name} needs a value")));
                    };
                    i += 1;
                    (*value).to_owned()
                }
            };
            if *option == "--url" {
                url = Some(value);
            } else {
                options.insert(option, value);
            }
        } else {
            return Err(usage(format!("unknown option {name:?} for {}", spec.name)));
        }
    }
    if !spec.many_bots && bots.len() != 1 {
        return Err(usage(if bots.is_empty() {
            format!("{} needs a BOT name", spec.name)
        } else {
            format!(
                "{} takes one BOT, got {}: {}",
                spec.name,
                bots.len(),
                bots.join(" ")
            )
        }));
    }
    let flag = |name: &str| flags.contains(&name);
    let seconds = |name: &str, default: f64, min: f64| -> Result<Duration, Failure> {
        let Some(text) = options.get(name) else {
            return Ok(Duration::from_secs_f64(default));
        };
        match text.parse::<f64>() {
            Ok(secs) if secs.is_finite() && (min..=86_400.0).contains(&secs) => {
                Ok(Duration::from_secs_f64(secs))
            }
            _ => Err(usage(format!(
                "{name} must be a number of seconds from {min} to 86400, got {text:?}"
            ))),
        }
    };
    let first = || bots[0].clone();
    let command = match spec.name {
        "status" => Command::Status {
            bots: bots.clone(),
            json: flag("--json"),
            check: flag("--check"),
        },
        "positions" => Command::Positions {
            bot: first(),
            json: flag("--json"),
        },
        "handover" => Command::Handover {
            bot: first(),
            timeout: seconds("--timeout", 10.0, 0.001)?,
            force: flag("--force"),
        },
        "watch" => Command::Watch {
            bot: first(),
            interval: seconds("--interval", 1.0, 0.05)?,
            count: match options.get("--count") {
                None => None,
                Some(text) => match text.parse::<u64>() {
                    Ok(n) if n > 0 => Some(n),
                    _ => {
                        return Err(usage(format!(
                            "--count must be a positive whole number, got {text:?}"
                        )))
                    }
                },
            },
            json: flag("--json"),
        },
        _ => unreachable!("every command in COMMANDS is parsed"),
    };
    Ok(Invocation {
        url,
        command,
        help_exit: 0,
    })
}
