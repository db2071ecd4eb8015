//! `quantshift-state metrics`: a Prometheus exporter. Each scrape of `/metrics` reads the
//! bots through [`Inspector::statuses`] (one atomic script call per bot, all in one round
//! trip) and the Redis node's role and warnings through [`Inspector::server`] (one pipeline),
//! and answers in the Prometheus text format (version 0.0.4), encoded by `prometheus-client`.
//! `tiny_http` serves it, one request at a time: a scrape is two round trips (plus the `SCAN`
//! when no bot is named), and Prometheus does not scrape in parallel.
//!
//! Values that do not exist (a bot without heartbeat, state or lease) have no series rather
//! than a made-up 0; an unreachable Redis is `quantshift_redis_up 0` in a normal answer, so
//! the exporter itself stays up and alerting can tell "Redis down" from "exporter down".

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use super::args::MetricsArgs;
use super::{interrupt_flag, Failure, Outcome, EXIT_ERROR, EXIT_OK, TOOL};
use crate::error::Error;
use crate::inspect::warning_kind;
use crate::inspect::{BotStatus, Inspector};
use crate::lease::meter::{HistogramSnapshot, BUCKET_BOUNDS_MS};

/// The path Prometheus scrapes; any other answers 404.
const METRICS_PATH: &str = "/metrics";
/// How often the serving loop looks at the interrupt flag while no request comes.
const INTERRUPT_POLL: Duration = Duration::from_millis(100);

/// What one scrape read.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// `None`: Redis was unreachable (or became so during the scrape).
    pub redis: Option<RedisReading>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RedisReading {
    /// The kinds of the warnings the `status` command reports for this node.
    pub warning_kinds: Vec<&'static str>,
    pub bots: Vec<BotStatus>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BotLabel {
    bot: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WarningLabel {
    kind: String,
}

/// A live instance of a bot. Not `instance`: Prometheus gives that label to the scrape
/// target (the exporter), and would rename ours to `exported_instance`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabel {
    bot: String,
    instance_id: String,
}

/// Histograms read from the instances' published stall meters (not observed here): one
/// series per instance, with the meter's fixed buckets ([`BUCKET_BOUNDS_MS`]).
#[derive(Debug, Default)]
struct PublishedHistograms(Vec<(InstanceLabel, HistogramSnapshot)>);

impl EncodeMetric for PublishedHistograms {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (label, histogram) in &self.0 {
            let mut buckets: Vec<(f64, u64)> = BUCKET_BOUNDS_MS
                .iter()
                .map(|ms| *ms as f64 / 1000.0)
                .chain([f64::INFINITY])
                .zip(histogram.buckets.iter().copied())
                .collect();
            // A summary read back always has every bucket; the +Inf one is the count anyway.
            buckets.truncate(BUCKET_BOUNDS_MS.len() + 1);
            encoder
                .encode_family(label)?
                .encode_histogram::<NoLabelSet>(
                    histogram.sum.as_secs_f64(),
                    histogram.count,
                    &buckets,
                    None,
                )?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

type SecondsGauge = Gauge<f64, AtomicU64>;

/// Reads the named bots (every bot found when none is named). A bot whose keys cannot be
/// interpreted (another Redis type, invalid JSON) is left out with a message on stderr, so
/// one damaged bot does not blind the monitoring of the others.
pub fn read(inspector: &Inspector, named: &[String]) -> Result<RedisReading, Error> {
    let server = inspector.server()?;
    let bots = if named.is_empty() {
        inspector.bots()?
    } else {
        named.to_vec()
    };
    let mut statuses = Vec::with_capacity(bots.len());
    for (bot, status) in bots.iter().zip(inspector.statuses(&bots)?) {
        match status {
            Ok(status) => statuses.push(status),
            Err(err) => eprintln!("{TOOL}: metrics: bot {bot:?} left out of the scrape: {err}"),
        }
    }
    Ok(RedisReading {
        warning_kinds: server.warning_kinds,
        bots: statuses,
    })
}

/// The Prometheus text (version 0.0.4) of a reading.
pub fn encode(reading: &Reading) -> String {
    let mut registry = Registry::with_prefix("quantshift");
    let redis_up = Gauge::<i64>::default();
    registry.register(
        "redis_up",
        "1 when this scrape read Redis, 0 when Redis was unreachable (then no other series)",
        redis_up.clone(),
    );
    let warnings = Family::<WarningLabel, Gauge>::default();
    registry.register(
        "redis_warning",
        "1 when the Redis node has this configuration problem (as quantshift-state status \
         warns), else 0: eviction_policy, eviction_policy_unreadable, persistence_off, \
         persistence_unreadable, not_master, role_unreadable, split_brain_unguarded",
        warnings.clone(),
    );
    let has_primary: Family<BotLabel, Gauge> = register_family(
        &mut registry,
        "bot_has_primary",
        "1 when an instance holds the bot's primary lease, else 0",
    );
    let standbys: Family<BotLabel, Gauge> = register_family(
        &mut registry,
        "bot_standbys",
        "Live instances of the bot other than the primary (standbys ready to take over)",
    );
    let epoch: Family<BotLabel, Gauge> = register_family(
        &mut registry,
        "bot_epoch",
        "The bot's fencing epoch: it grows by one at each change of primary",
    );
    let positions: Family<BotLabel, Gauge> = register_family(
        &mut registry,
        "bot_positions",
        "Positions the bot keeps in Redis (counted through its index)",
    );
    let lease_ttl: Family<BotLabel, SecondsGauge> = register_family(
        &mut registry,
        "bot_lease_ttl_seconds",
        "Time left on the primary's lock key as Redis counts it (its TTL; when the primary's \
         deadline falls is bot_lease_deadline_seconds; no series without a primary)",
    );
    let heartbeat_age: Family<BotLabel, SecondsGauge> = register_family(
        &mut registry,
        "bot_heartbeat_age_seconds",
        "Age of the bot's last heartbeat against the exporter's UTC clock (no series without \
         a heartbeat)",
    );
    let state_age: Family<BotLabel, SecondsGauge> = register_family(
        &mut registry,
        "bot_state_age_seconds",
        "Age of the bot's saved state (its last_update) against the exporter's UTC clock (no \
         series without a state)",
    );
    let renewal_age: Family<BotLabel, SecondsGauge> = register_family(
        &mut registry,
        "bot_lease_renewal_age_seconds",
        "How long ago the primary last renewed its lease, by the Redis server's clock (no \
         series without a primary)",
    );
    let deadline: Family<BotLabel, SecondsGauge> = register_family(
        &mut registry,
        "bot_lease_deadline_seconds",
        "Time until the primary's deadline (its last renewal plus its declared deadline, by the \
         Redis server's clock); negative once it passed: the holder is then standby unless it \
         renews at once (no series without a primary)",
    );
    let tolerance = Family::<InstanceLabel, SecondsGauge>::default();
    registry.register(
        "lease_tolerance_seconds",
        "How late a live instance's lease renewals may come before it demotes itself \
         (failover_tolerance with fast failover): the scale of its stall histograms",
        tolerance.clone(),
    );
    let dropped = Family::<InstanceLabel, Counter>::default();
    registry.register(
        "lease_dropped_records",
        "Role events and log records a live instance's lease threads dropped because the \
         thread that delivers them was behind (a callback or a logger that blocks)",
        dropped.clone(),
    );

    let Some(redis) = &reading.redis else {
        redis_up.set(0);
        return text_of(&registry);
    };
    let mut wake_late = PublishedHistograms::default();
    let mut round_trip = PublishedHistograms::default();
    redis_up.set(1);
    for kind in warning_kind::EVERY {
        let present = redis.warning_kinds.contains(&kind);
        warnings
            .get_or_create(&WarningLabel {
                kind: kind.to_owned(),
            })
            .set(i64::from(present));
    }
    for status in &redis.bots {
        let label = BotLabel {
            bot: status.bot.clone(),
        };
        has_primary
            .get_or_create(&label)
            .set(i64::from(status.holder.is_some()));
        standbys
            .get_or_create(&label)
            .set(count(status.standbys().len()));
        positions.get_or_create(&label).set(count(status.positions));
        if let Some(value) = status.epoch {
            epoch
                .get_or_create(&label)
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        }
        for (family, value) in [
            (&lease_ttl, status.lease_ttl),
            (&heartbeat_age, status.heartbeat_age),
            (&state_age, status.state_age),
            (&renewal_age, status.renewal_age),
        ] {
            if let Some(value) = value {
                family.get_or_create(&label).set(value.as_secs_f64());
            }
        }
        if let Some(ms) = status.deadline_in_ms {
            deadline.get_or_create(&label).set(ms as f64 / 1000.0);
        }
        for (instance, stalls) in &status.lease_stalls {
            let label = InstanceLabel {
                bot: status.bot.clone(),
                instance_id: instance.clone(),
            };
            tolerance
                .get_or_create(&label)
                .set(stalls.tolerance.as_secs_f64());
            dropped.get_or_create(&label).inc_by(stalls.dropped_records);
            wake_late.0.push((label.clone(), stalls.wake_late.clone()));
            round_trip.0.push((label, stalls.round_trip.clone()));
        }
    }
    registry.register(
        "lease_wake_late_seconds",
        "How much later than asked a live instance's lease thread woke (the host did not \
         schedule it), since the instance started: a stall past the tolerance demotes a live \
         primary",
        wake_late,
    );
    registry.register(
        "lease_round_trip_seconds",
        "Each lease command's round trip (send to reply) of a live instance, since it started",
        round_trip,
    );
    text_of(&registry)
}

/// A gauge family with one series per bot, registered under `quantshift_{name}`.
fn register_family<M>(registry: &mut Registry, name: &str, help: &str) -> Family<BotLabel, M>
where
    M: EncodeMetric + TypedMetric + Default + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    let family = Family::<BotLabel, M>::default();
    registry.register(name, help, family.clone());
    family
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn text_of(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_text::encode(&mut text, registry)
        .expect("writing to a String cannot fail and the metric names are valid");
    text
}

/// Serves `/metrics` until SIGINT or SIGTERM.
pub fn serve(inspector: &Inspector, args: &MetricsArgs) -> Outcome {
    for bot in &args.bots {
        crate::keys::validate_bot_name(bot)?;
    }
    let interrupted = interrupt_flag()?;
    interrupted.store(false, Ordering::SeqCst);
    let server = tiny_http::Server::http(args.listen).map_err(|err| Failure {
        code: EXIT_ERROR,
        message: format!("cannot listen on {}: {err}", args.listen),
        hint: Some("--listen ADDRESS:PORT (e.g. 127.0.0.1:9464) of a free port".to_owned()),
    })?;
    let address = server.server_addr().to_ip().map_or_else(
        || args.listen.to_string(),
        |addr: SocketAddr| addr.to_string(),
    );
    let bots = if args.bots.is_empty() {
        "every bot found at each scrape".to_owned()
    } else {
        format!("bots {}", args.bots.join(", "))
    };
    eprintln!(
        "{TOOL}: serving Prometheus metrics at http://{address}{METRICS_PATH} for Redis {} \
         ({bots}); Ctrl-C to stop",
        inspector.redacted_url()
    );
    let mut redis_was_up = true;
    while !interrupted.load(Ordering::SeqCst) {
        let request = match server.recv_timeout(INTERRUPT_POLL) {
            Ok(Some(request)) => request,
            Ok(None) => continue,
            Err(err) => {
                eprintln!("{TOOL}: metrics: cannot receive a request: {err}");
                std::thread::sleep(INTERRUPT_POLL);
                continue;
            }
        };
        let path = request.url().split('?').next().unwrap_or_default();
        let response = if path != METRICS_PATH {
            text_response(
                404,
                format!("not found: the metrics are at {METRICS_PATH}\n"),
            )
        } else if !matches!(
            request.method(),
            tiny_http::Method::Get | tiny_http::Method::Head
        ) {
            text_response(405, "only GET and HEAD\n".to_owned())
                .with_header(header("Allow", "GET, HEAD"))
        } else {
            let reading = Reading {
                redis: match read(inspector, &args.bots) {
                    Ok(redis) => Some(redis),
                    Err(err) => {
                        if redis_was_up {
                            eprintln!(
                                "{TOOL}: metrics: Redis unreachable, reporting \
                                 quantshift_redis_up 0: {err}"
                            );
                        }
                        None
                    }
                },
            };
            if reading.redis.is_some() && !redis_was_up {
                eprintln!("{TOOL}: metrics: Redis reachable again");
            }
            redis_was_up = reading.redis.is_some();
            tiny_http::Response::from_string(encode(&reading))
                .with_header(header("Content-Type", prometheus_text::CONTENT_TYPE))
        };
        // A scraper that went away is no concern of ours.
        let _ = request.respond(response);
    }
    Ok(EXIT_OK)
}

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes())
        .expect("the header names and values are ASCII")
}

fn text_response(status: u16, text: String) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    tiny_http::Response::from_string(text)
        .with_status_code(status)
        .with_header(header("Content-Type", "text/plain; charset=utf-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bot(name: &str) -> BotStatus {
        BotStatus {
            bot: name.to_owned(),
            holder: None,
            lease_ttl: None,
            epoch: None,
            heartbeat: None,
            heartbeat_age: None,
            state_last_update: None,
            state_age: None,
            positions: 0,
            instances: Vec::new(),
            renewal_age: None,
            deadline_in_ms: None,
            lease_stalls: Vec::new(),
        }
    }

    /// The sample lines (not comments), sorted: the order of series within a family is
    /// not part of the format.
    fn samples(text: &str) -> Vec<&str> {
        let mut lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        lines.sort_unstable();
        lines
    }

    #[test]
    fn a_reading_is_encoded_as_prometheus_text_with_missing_values_left_out() {
        let mut led = bot("alpha");
        led.holder = Some("host:1".to_owned());
        led.instances = vec!["host:1".to_owned(), "host:2".to_owned()];
        led.epoch = Some(7);
        led.lease_ttl = Some(Duration::from_millis(2500));
        led.heartbeat = Some("2026-01-01T00:00:00".to_owned());
        led.heartbeat_age = Some(Duration::from_millis(250));
        led.positions = 3;
        led.renewal_age = Some(Duration::from_millis(40));
        led.deadline_in_ms = Some(-1500);
        let h = crate::lease::meter::Histogram::default();
        for ms in [0, 3, 120] {
            h.record(Duration::from_millis(ms));
        }
        led.lease_stalls = vec![(
            "host:1".to_owned(),
            crate::LeaseStalls {
                wake_late: h.snapshot(),
                round_trip: crate::lease::meter::Histogram::default().snapshot(),
                tolerance: Duration::from_millis(200),
                dropped_records: 2,
            },
        )];
        let text = encode(&Reading {
            redis: Some(RedisReading {
                warning_kinds: vec![warning_kind::PERSISTENCE_OFF],
                bots: vec![led, bot("ghost")],
            }),
        });
        let mut not_buckets = samples(&text);
        not_buckets.retain(|line| !line.contains("_bucket{"));
        assert_eq!(
            not_buckets,
            vec![
                r#"quantshift_bot_epoch{bot="alpha"} 7"#,
                r#"quantshift_bot_has_primary{bot="alpha"} 1"#,
                r#"quantshift_bot_has_primary{bot="ghost"} 0"#,
                r#"quantshift_bot_heartbeat_age_seconds{bot="alpha"} 0.25"#,
                r#"quantshift_bot_lease_deadline_seconds{bot="alpha"} -1.5"#,
                r#"quantshift_bot_lease_renewal_age_seconds{bot="alpha"} 0.04"#,
                r#"quantshift_bot_lease_ttl_seconds{bot="alpha"} 2.5"#,
                r#"quantshift_bot_positions{bot="alpha"} 3"#,
                r#"quantshift_bot_positions{bot="ghost"} 0"#,
                r#"quantshift_bot_standbys{bot="alpha"} 1"#,
                r#"quantshift_bot_standbys{bot="ghost"} 0"#,
                r#"quantshift_lease_dropped_records_total{bot="alpha",instance_id="host:1"} 2"#,
                r#"quantshift_lease_round_trip_seconds_count{bot="alpha",instance_id="host:1"} 0"#,
                r#"quantshift_lease_round_trip_seconds_sum{bot="alpha",instance_id="host:1"} 0.0"#,
                r#"quantshift_lease_tolerance_seconds{bot="alpha",instance_id="host:1"} 0.2"#,
                r#"quantshift_lease_wake_late_seconds_count{bot="alpha",instance_id="host:1"} 3"#,
                r#"quantshift_lease_wake_late_seconds_sum{bot="alpha",instance_id="host:1"} 0.123"#,
                r#"quantshift_redis_up 1"#,
                r#"quantshift_redis_warning{kind="eviction_policy"} 0"#,
                r#"quantshift_redis_warning{kind="eviction_policy_unreadable"} 0"#,
                r#"quantshift_redis_warning{kind="not_master"} 0"#,
                r#"quantshift_redis_warning{kind="persistence_off"} 1"#,
                r#"quantshift_redis_warning{kind="persistence_unreadable"} 0"#,
                r#"quantshift_redis_warning{kind="role_unreadable"} 0"#,
                r#"quantshift_redis_warning{kind="split_brain_unguarded"} 0"#,
            ],
            "{text}"
        );
        // The meter's own buckets, cumulative, in seconds.
        for line in [
            r#"quantshift_lease_wake_late_seconds_bucket{bot="alpha",instance_id="host:1",le="0.001"} 1"#,
            r#"quantshift_lease_wake_late_seconds_bucket{bot="alpha",instance_id="host:1",le="0.1"} 2"#,
            r#"quantshift_lease_wake_late_seconds_bucket{bot="alpha",instance_id="host:1",le="0.15"} 3"#,
            r#"quantshift_lease_wake_late_seconds_bucket{bot="alpha",instance_id="host:1",le="+Inf"} 3"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line}: {text}");
        }
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("quantshift_lease_round_trip_seconds_bucket"))
                .count(),
            crate::BUCKET_BOUNDS_MS.len() + 1
        );
        assert!(text.contains("# TYPE quantshift_lease_wake_late_seconds histogram"));
        // A family without a series is left out whole, its HELP and TYPE too.
        assert!(!text.contains("state_age"), "{text}");
        assert!(text.contains("# HELP quantshift_bot_has_primary 1 when an instance holds"));
    }

    #[test]
    fn an_unreachable_redis_is_redis_up_0_and_nothing_else() {
        let text = encode(&Reading { redis: None });
        assert_eq!(samples(&text), vec!["quantshift_redis_up 0"], "{text}");
    }
}
