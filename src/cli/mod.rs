//! `quantshift-state`: the operator tool. Status, positions, planned handover and a live
//! view of the bots kept in one Redis, and the move of a stopped bot's keys between key
//! layouts. A thin front end over [`crate::Inspector`]: it parses arguments, formats what the
//! inspector returns and maps errors to exit codes; it sends no Redis command of its own,
//! except `layout move` (src/cli/layout.rs), an offline migration through the library's store.
//!
//! One implementation for every way it is started: the `quantshift-state` binary
//! (src/bin/quantshift-state.rs) and the Python package's entry points (the
//! `quantshift-state` console script and `python -m quantshift_core`) call
//! [`main_with_args`].

mod args;
mod layout;
mod metrics;
mod view;

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser};
use serde_json::{Map, Value};

use crate::config::Config;
use crate::error::{Error, ErrorKind};
use crate::inspect::Inspector;
use crate::keys::KeyLayout;
use crate::positions::JsonObject;
use args::{Cli, Command, LayoutCommand};
use view::{epoch, human_duration, Health};

pub const TOOL: &str = "quantshift-state";

// Exit codes, documented in `--help` and the README.
pub const EXIT_OK: u8 = 0;
pub const EXIT_STANDBY_MISSING: u8 = 1;
pub const EXIT_NO_PRIMARY: u8 = 2;
/// The operation could not be done: Redis unreachable, bad URL or bot name, corrupt data.
pub const EXIT_ERROR: u8 = 3;
/// A handover was refused, or nobody took over in time.
pub const EXIT_HANDOVER_FAILED: u8 = 4;
/// A layout move was refused: an instance of the bot holds its lease.
pub const EXIT_LAYOUT_REFUSED: u8 = 5;
/// The command line is wrong (sysexits' EX_USAGE).
pub const EXIT_USAGE: u8 = 64;

/// Bound on connecting and on each Redis command of the tool.
const REDIS_TIMEOUT: Duration = Duration::from_secs(3);
/// How often `handover` looks at the lease while it waits.
const HANDOVER_POLL: Duration = Duration::from_millis(1);

/// A failure that ends the tool with a message and an exit code.
struct Failure {
    code: u8,
    message: String,
    hint: Option<String>,
}

impl Failure {
    /// An exit code whose explanation is already printed.
    fn silent(code: u8) -> Self {
        Failure {
            code,
            message: String::new(),
            hint: None,
        }
    }

    fn handover(message: impl Into<String>) -> Self {
        Failure {
            code: EXIT_HANDOVER_FAILED,
            message: message.into(),
            hint: None,
        }
    }
}

impl From<Error> for Failure {
    fn from(err: Error) -> Self {
        let hint = match err.kind() {
            ErrorKind::RedisUnavailable => Some(
                "check that Redis runs, and the URL (--url, $QUANTSHIFT_REDIS_URL or \
                 $REDIS_URL) and password"
                    .to_owned(),
            ),
            ErrorKind::CorruptData => {
                Some("a key holds something quantshift-core did not write".to_owned())
            }
            _ => None,
        };
        Failure {
            code: EXIT_ERROR,
            message: err.message().to_owned(),
            hint,
        }
    }
}

type Outcome = Result<u8, Failure>;

/// Runs the tool on a command line (`args[0]` is the program name, as in `std::env::args_os`)
/// and returns its exit code. Output goes to the process's stdout and stderr, flushed on return.
pub fn main_with_args(args: Vec<OsString>) -> i32 {
    let code = match parse(args).and_then(run) {
        Ok(code) => code,
        Err(failure) => {
            if !failure.message.is_empty() {
                eprintln!("{TOOL}: error: {}", failure.message);
            }
            if let Some(hint) = failure.hint {
                eprintln!("{TOOL}: {hint}");
            }
            failure.code
        }
    };
    let _ = std::io::stdout().flush();
    i32::from(code)
}

/// The command line, or the exit code when clap already answered it (help, version) or
/// found it wrong (printed with clap's explanation and usage, exit [`EXIT_USAGE`]).
fn parse(args: Vec<OsString>) -> Result<Cli, Failure> {
    use clap::error::ErrorKind as ClapKind;
    Cli::try_parse_from(args).map_err(|err| {
        let code = match err.kind() {
            ClapKind::DisplayHelp | ClapKind::DisplayVersion => {
                let _ = err.print();
                return Failure::silent(EXIT_OK);
            }
            // No command at all: the help, as a usage error.
            ClapKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                let _ = err.print();
                return Failure::silent(EXIT_USAGE);
            }
            _ => EXIT_USAGE,
        };
        let text = err.render().to_string();
        let message = text.strip_prefix("error: ").unwrap_or(&text).trim_end();
        Failure {
            code,
            message: message.to_owned(),
            hint: None,
        }
    })
}

fn run(cli: Cli) -> Outcome {
    match &cli.command {
        // Needs no Redis.
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), TOOL, &mut script);
            // A closed pipe (`| head`) is not an error.
            let _ = std::io::stdout().write_all(&script);
            return Ok(EXIT_OK);
        }
        Command::Layout(LayoutCommand::Move(a)) => {
            if cli.key_layout.is_some() {
                return Err(Failure {
                    code: EXIT_USAGE,
                    message: "--key-layout does not apply to `layout move`: the keys move to \
                              the layout given by --to, from the other one"
                        .to_owned(),
                    hint: None,
                });
            }
            return layout::run(cli.url.as_deref(), REDIS_TIMEOUT, a);
        }
        _ => {}
    }
    let layout = key_layout(cli.url.as_deref(), cli.key_layout)?;
    // Starts while Redis is down too: that is quantshift_redis_up 0, not an error.
    if let Command::Metrics(a) = &cli.command {
        let inspector = Inspector::open(cli.url.as_deref(), REDIS_TIMEOUT)?.key_layout(layout);
        return metrics::serve(&inspector, a);
    }
    let inspector = Inspector::connect(cli.url.as_deref(), REDIS_TIMEOUT)?.key_layout(layout);
    match cli.command {
        Command::Status(a) => status(&inspector, a.bots, a.json, a.check),
        Command::Positions(a) => positions(&inspector, &a.bot, a.json),
        Command::Handover(a) => handover(&inspector, &a.bot, a.timeout, a.force),
        Command::Watch(a) => watch(&inspector, layout, &a.bot, a.interval, a.count, a.json),
        Command::Completions { .. } | Command::Metrics(_) | Command::Layout(_) => {
            unreachable!("handled above")
        }
    }
}

/// The key layout the bots are read in: the one given, else the URL's (hash-tagged for a
/// cluster URL, plain otherwise). Plain with a cluster URL is an error.
fn key_layout(url: Option<&str>, given: Option<KeyLayout>) -> Result<KeyLayout, Error> {
    let mut config = Config::new(TOOL);
    if let Some(url) = url {
        config = config.redis_url(url);
    }
    if let Some(layout) = given {
        config = config.key_layout(layout);
    }
    config.effective_key_layout()
}

fn status(inspector: &Inspector, bots: Vec<String>, json: bool, check: bool) -> Outcome {
    let bots = if bots.is_empty() {
        inspector.bots()?
    } else {
        bots
    };
    let statuses = inspector
        .statuses(&bots)?
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let server = inspector.server()?;
    for status in statuses.iter().filter(|s| view::has_no_keys(s)) {
        eprintln!(
            "{TOOL}: note: bot {:?} has no keys in this database (check the name and the URL)",
            status.bot
        );
    }
    if json {
        let mut out = Map::new();
        out.insert("redis".into(), view::server_json(inspector, &server));
        out.insert(
            "bots".into(),
            Value::Array(statuses.iter().map(view::bot_json).collect()),
        );
        println!("{}", Value::Object(out));
    } else {
        print!("{}", view::server_lines(inspector, &server));
        if statuses.is_empty() {
            println!("no bots found (no bot:* keys in this Redis database)");
        } else {
            println!();
            print!("{}", view::status_table(&statuses));
            let stalls = view::stalls_table(&statuses);
            if !stalls.is_empty() {
                println!();
                println!("Lease threads (stall meter of each live instance, since it started):");
                print!("{stalls}");
            }
        }
    }
    if !check {
        return Ok(EXIT_OK);
    }
    // No bot at all: nothing leads.
    let worst = statuses
        .iter()
        .map(Health::of)
        .max()
        .unwrap_or(Health::NoPrimary);
    Ok(worst.exit_code())
}

fn positions(inspector: &Inspector, bot: &str, json: bool) -> Outcome {
    let positions = inspector.positions(bot)?;
    if json {
        let out: JsonObject = positions
            .into_iter()
            .map(|(symbol, data)| (symbol, Value::Object(data)))
            .collect();
        println!("{}", Value::Object(out));
    } else if positions.is_empty() {
        println!("bot {bot:?} has no positions");
    } else {
        print!("{}", view::positions_table(&positions));
        let n = positions.len();
        println!("{n} position{}", if n == 1 { "" } else { "s" });
    }
    Ok(EXIT_OK)
}

fn handover(inspector: &Inspector, bot: &str, timeout: Duration, force: bool) -> Outcome {
    let before = inspector.status(bot)?;
    let Some(old) = before.holder.clone() else {
        return Err(Failure::handover(format!(
            "bot {bot:?} has no primary: there is nothing to hand over"
        )));
    };
    let standbys: Vec<String> = before.standbys().into_iter().map(str::to_owned).collect();
    if standbys.is_empty() && !force {
        return Err(Failure {
            code: EXIT_HANDOVER_FAILED,
            message: format!(
                "bot {bot:?} has no live standby: if its primary {old} stepped down, nobody \
                 would take over; start a standby first (nothing was changed)"
            ),
            hint: Some("--force sends the request anyway".to_owned()),
        });
    }
    println!(
        "handover of bot {bot:?}: primary {old} (epoch {}), standbys: {}",
        epoch(&before),
        if standbys.is_empty() {
            "none seen (--force)".to_owned()
        } else {
            standbys.join(", ")
        }
    );
    let started = Instant::now();
    let listeners = inspector.request_handover(bot)?;
    if listeners == 0 {
        return Err(Failure::handover(format!(
            "no instance of bot {bot:?} listens for handover requests; nothing was changed"
        )));
    }
    let give_up = started + timeout;
    let mut last_error: Option<Error>;
    loop {
        // One round trip per look, no scan: light on Redis and precise on the time.
        match inspector.lease_holder(bot) {
            Ok((holder, new_epoch)) => {
                last_error = None;
                if let Some(holder) = holder.filter(|h| *h != old) {
                    let took = started.elapsed();
                    println!(
                        "new primary: {holder} (epoch {}), handover took {:.1} ms",
                        view::dash(new_epoch.map(|e| e.to_string())),
                        took.as_secs_f64() * 1000.0
                    );
                    return Ok(EXIT_OK);
                }
            }
            Err(err) => last_error = Some(err),
        }
        if Instant::now() >= give_up {
            break;
        }
        std::thread::sleep(HANDOVER_POLL);
    }
    let now = match last_error {
        Some(err) => format!("the last read of the lease failed: {err}"),
        None => match inspector
            .lease_holder(bot)
            .ok()
            .and_then(|(holder, _)| holder)
        {
            Some(holder) if holder == old => format!("{old} holds the lease"),
            Some(holder) => format!("{holder} holds the lease now"),
            None => "nobody holds the lease".to_owned(),
        },
    };
    Err(Failure {
        code: EXIT_HANDOVER_FAILED,
        message: format!(
            "nobody took over bot {bot:?} within {}: {now}",
            human_duration(timeout)
        ),
        hint: Some(
            "the standbys listed may be unreachable from Redis or frozen; an instance that \
             stepped down competes again after one poll interval"
                .to_owned(),
        ),
    })
}

fn watch(
    inspector: &Inspector,
    layout: KeyLayout,
    bot: &str,
    interval: Duration,
    count: Option<u64>,
    json: bool,
) -> Outcome {
    // A bad bot name is an error now, not a message repeated every second.
    crate::keys::validate_bot_name_for(bot, layout)?;
    let interrupted = interrupt_flag()?;
    interrupted.store(false, Ordering::SeqCst);
    let mut stdout = std::io::stdout();
    let clear_screen = !json && stdout.is_terminal();
    let mut previous: Option<Option<String>> = None;
    let mut events: Vec<String> = Vec::new();
    let mut frames: u64 = 0;
    while !interrupted.load(Ordering::SeqCst) {
        let now = chrono::Utc::now();
        let reading = inspector
            .status(bot)
            .and_then(|status| Ok((status, inspector.server()?)));
        if let Ok((status, _)) = &reading {
            match &previous {
                Some(before) if *before != status.holder => {
                    events.push(format!(
                        "{} primary {} -> {}",
                        now.format("%H:%M:%S%.3f"),
                        before.as_deref().unwrap_or("none"),
                        status.holder.as_deref().unwrap_or("none"),
                    ));
                    if events.len() > 5 {
                        events.remove(0);
                    }
                }
                _ => {}
            }
            previous = Some(status.holder.clone());
        }
        let frame = if json {
            let mut out = Map::new();
            out.insert(
                "time".into(),
                Value::from(now.format("%Y-%m-%dT%H:%M:%S%.3f").to_string()),
            );
            match &reading {
                Ok((status, server)) => {
                    out.insert("redis".into(), view::server_json(inspector, server));
                    out.insert("bot".into(), view::bot_json(status));
                }
                Err(err) => {
                    out.insert("error".into(), Value::from(err.message()));
                }
            }
            format!("{}\n", Value::Object(out))
        } else {
            let text = view::watch_frame(inspector, bot, &now, &reading, &events);
            if clear_screen {
                format!("\x1b[H\x1b[2J{text}")
            } else {
                format!("{text}\n")
            }
        };
        // A closed pipe (`| head`) ends the view quietly.
        if stdout
            .write_all(frame.as_bytes())
            .and_then(|()| stdout.flush())
            .is_err()
        {
            return Ok(EXIT_OK);
        }
        frames += 1;
        if count.is_some_and(|n| frames >= n) {
            break;
        }
        let wake = Instant::now() + interval;
        while !interrupted.load(Ordering::SeqCst) && Instant::now() < wake {
            std::thread::sleep((wake - Instant::now()).min(Duration::from_millis(20)));
        }
    }
    Ok(EXIT_OK)
}

/// Set by SIGINT / SIGTERM once `watch` or `metrics` has installed its handler; the handler
/// is installed once per process (the Python entry point may run the tool more than once).
fn interrupt_flag() -> Result<&'static AtomicBool, Failure> {
    static INTERRUPTED: AtomicBool = AtomicBool::new(false);
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst))
                .map_err(|err| err.to_string())
        })
        .clone()
        .map_err(|err| Failure {
            code: EXIT_ERROR,
            message: format!("cannot install the Ctrl-C handler: {err}"),
            hint: None,
        })?;
    Ok(&INTERRUPTED)
}
