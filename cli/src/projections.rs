//! `annals projections`: the read models in Postgres — list them, show where each
//! partition stands, replay, rebuild blue-green, and deal with parked poison events.
//!
//! Commands that only touch the framework's tables (list, status, replay, abort-rebuild,
//! drop-version, dead-letters list and skip) work from any binary. Rebuild and retry run
//! a projection's own code, which a generic binary does not have: they need the
//! projection in the registry given to [`crate::run_with`], as an application's admin
//! binary does (the bank's `bank-admin`).

use std::collections::BTreeSet;
use std::time::Duration;

use annals_kafka_store::KafkaStoreOptions;
use annals_projections::dead_letters::{self, DeadLetterState};
use annals_projections::ops::{self, PartitionStatus, ProjectionStatus, ReplayFrom};
use annals_projections::{Database, Projection, ProjectionError, Projections, ProjectorOptions};
use chrono::{SecondsFormat, Utc};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};

use crate::exit::{Code, Failure};

/// Shown after `annals projections --help`.
pub(crate) const AFTER_HELP: &str = "\
Examples:
  annals projections status account_balances
  annals projections replay transaction_history --from time:2024-05-01T00:00:00Z
  annals projections dead-letters account_balances skip 17
  bank-admin projections rebuild account_balances

Rebuild and dead-letter retry run the projection's own code: use your application's admin
binary (its main calls annals_cli::run_with with its projections), such as the bank's
bank-admin. Everything else works from any binary.

Exit codes: 0 success, 1 refused or failed (a retry failed again, a live version cannot be
dropped ...), 2 bad usage (malformed --from, no DATABASE_URL), 3 Postgres or Kafka
unreachable, 4 unknown projection, dead letter or rebuild, or no code for the projection.";

/// Projection commands.
#[derive(Debug, Subcommand)]
pub(crate) enum ProjectionsCommand {
    /// List the projections registered in the database: kind, live version, a rebuild
    /// in progress, the versions kept, parked events, topics, and whether this binary
    /// has their code (CODE `here`: it can rebuild them and retry their dead letters).
    List,
    /// Where each partition of a projection stands: the stored offset (the next event
    /// to apply), the head of the partition, the lag between them, events per second,
    /// when the offset last moved, and the last error the projection stopped with.
    ///
    /// Without NAME, every projection. Heads come from the brokers; when they do not
    /// answer, the offsets are still shown and the command exits with 3.
    Status {
        /// The projection (`account_balances`); every one when left out.
        name: Option<String>,
    },
    /// Make the running projectors apply events again from a point of the log, on top
    /// of the live read model (handlers see `is_replaying()`, so side effects are
    /// suppressed). The offsets of the live version are reset in one transaction;
    /// running projectors notice within their refresh interval and seek.
    ///
    /// For a read model built from scratch without downtime, use `rebuild`.
    Replay {
        /// The projection.
        name: String,
        /// Where to start in every partition: `earliest`, `offset:N`, or
        /// `time:RFC3339` (the first event at or after that time, such as
        /// `time:2024-05-01T12:00:00Z`).
        #[arg(long, value_name = "earliest|offset:N|time:RFC3339", value_parser = parse_from)]
        from: ReplayFrom,
    },
    /// Rebuild a read model blue-green: build its next version beside the live one from
    /// the first event, then switch readers to it in one transaction. Readers keep
    /// seeing the old complete model until the switch; running projectors follow it.
    ///
    /// Shows a progress bar (offsets, events/s, ETA) and prints a report. Interrupting
    /// it is safe: run it again to resume where it stopped, or `abort-rebuild`. The
    /// old version stays until `drop-version`. Needs the projection's code: run it from
    /// your application's admin binary.
    Rebuild {
        /// The projection.
        name: String,
        /// Most events per transaction.
        #[arg(long, default_value_t = 500)]
        batch_size: usize,
    },
    /// Abort a rebuild in progress: drop the version being built. A `rebuild` still
    /// running stops with an error.
    AbortRebuild {
        /// The projection.
        name: String,
    },
    /// Drop an old version of a read model (one a rebuild switched away from).
    DropVersion {
        /// The projection.
        name: String,
        /// The version (`list` shows the versions kept).
        #[arg(value_name = "VERSION")]
        number: i32,
    },
    /// List a projection's parked poison events; `retry ID` applies one (and those
    /// parked behind it) once the cause is fixed, `skip ID` gives up on one for good.
    DeadLetters {
        /// The projection.
        name: String,
        /// Also list retried and skipped events.
        #[arg(long)]
        all: bool,
        #[command(subcommand)]
        action: Option<DeadLetterAction>,
    },
}

/// What to do with a dead letter.
#[derive(Debug, Subcommand)]
pub(crate) enum DeadLetterAction {
    /// Apply the parked event, and every event parked behind it under the same key, in
    /// one transaction: each exactly once. Needs the projection's code.
    Retry {
        /// The dead letter's id (first column of the list).
        id: i64,
    },
    /// Never apply the parked event. Events parked behind it stay parked until retried.
    Skip {
        /// The dead letter's id.
        id: i64,
    },
}

/// `--from`, refusing a time in the future here, so that it is a usage error (exit 2).
fn parse_from(s: &str) -> Result<ReplayFrom, String> {
    let from: ReplayFrom = s.parse()?;
    if let ReplayFrom::Time(t) = from
        && t > Utc::now()
    {
        return Err(format!("`{s}`: the time is in the future"));
    }
    Ok(from)
}

/// The exit code of a projections error.
fn code_of(error: &ProjectionError) -> Code {
    match error {
        ProjectionError::UnknownProjection { .. }
        | ProjectionError::DeadLetterNotFound { .. }
        | ProjectionError::NoRebuild { .. } => Code::NotFound,
        ProjectionError::DatabaseUnavailable { .. }
        | ProjectionError::Kafka { .. }
        | ProjectionError::Source { .. } => Code::Unavailable,
        _ => Code::CheckFailed,
    }
}

fn fail(error: ProjectionError) -> Failure {
    Failure::new(code_of(&error), error)
}

/// Runs a projections command against the database at `database_url`.
pub(crate) async fn run(
    command: ProjectionsCommand,
    kafka: &KafkaStoreOptions,
    database_url: &str,
    registry: &Projections,
) -> Result<(), Failure> {
    let db = Database::connect(database_url).await.map_err(fail)?;
    match command {
        ProjectionsCommand::List => list(&db, registry).await,
        ProjectionsCommand::Status { name } => status(&db, kafka, name.as_deref()).await,
        ProjectionsCommand::Replay { name, from } => replay(&db, kafka, &name, from).await,
        ProjectionsCommand::Rebuild { name, batch_size } => {
            let projection = code_for(&db, registry, &name, "rebuild").await?;
            // The rebuild's consumer group has this one member: a short session (6 s,
            // the brokers' usual minimum) saves most of the wait on joining and leaving
            // that the services' long default costs.
            let kafka = kafka.clone().session_timeout(Duration::from_secs(6));
            rebuild(&db, &kafka, projection, batch_size).await
        }
        ProjectionsCommand::AbortRebuild { name } => {
            let version = ops::abort_rebuild(&db, &name).await.map_err(fail)?;
            println!("aborted the rebuild of {name}: v{version} dropped, readers unaffected");
            Ok(())
        }
        ProjectionsCommand::DropVersion { name, number } => {
            let version = number;
            ops::drop_version(&db, &name, version).await.map_err(fail)?;
            println!("dropped {name} v{version}");
            Ok(())
        }
        ProjectionsCommand::DeadLetters { name, all, action } => match action {
            None => list_dead_letters(&db, &name, all).await,
            Some(DeadLetterAction::Retry { id }) => {
                let projection = code_for(&db, registry, &name, "retry dead letters of").await?;
                let applied =
                    dead_letters::retry_dead_letter(&db, projection, id, &ProjectorOptions::new())
                        .await
                        .map_err(fail)?;
                let ids: Vec<String> = applied.iter().map(|i| format!("#{i}")).collect();
                println!(
                    "retried dead letter #{id} of {name}: applied {} ({})",
                    ids.len(),
                    ids.join(", ")
                );
                Ok(())
            }
            Some(DeadLetterAction::Skip { id }) => {
                dead_letters::skip_dead_letter(&db, &name, id)
                    .await
                    .map_err(fail)?;
                println!("skipped dead letter #{id} of {name}: it will never be applied");
                Ok(())
            }
        },
    }
}

/// The projection's code from the registry, or why this binary cannot run it.
async fn code_for<'r>(
    db: &Database,
    registry: &'r Projections,
    name: &str,
    what: &str,
) -> Result<&'r Projection, Failure> {
    if let Some(projection) = registry.get(name) {
        return Ok(projection);
    }
    if !ops::exists(db, name).await.map_err(fail)? {
        return Err(fail(ProjectionError::UnknownProjection {
            name: name.to_owned(),
        }));
    }
    Err(Failure::new(
        Code::NotFound,
        anyhow::anyhow!(
            "this binary has no code for projection `{name}`, so it cannot {what} it: \
             the plain `annals` binary knows no application's projections. Run the same \
             command with your application's admin binary, one whose main calls \
             `annals_cli::run_with(registry)` with its projections (the bank example's \
             is `bank-admin`)"
        ),
    ))
}

async fn list(db: &Database, registry: &Projections) -> Result<(), Failure> {
    let all = ops::list(db).await.map_err(fail)?;
    if all.is_empty() {
        return Err(Failure::new(
            Code::NotFound,
            anyhow::anyhow!(
                "no projections registered in this database (they register when a \
                 projector first starts; is DATABASE_URL the right database?)"
            ),
        ));
    }
    let width = all.iter().map(|p| p.name.len()).max().unwrap_or(4).max(4);
    println!(
        "{:<width$}  {:<8}  {:>4}  {:>8}  {:<8}  {:>6}  {:<4}  TOPICS",
        "NAME", "KIND", "LIVE", "BUILDING", "VERSIONS", "PARKED", "CODE"
    );
    for p in &all {
        let versions: Vec<String> = p.versions.iter().map(i32::to_string).collect();
        println!(
            "{:<width$}  {:<8}  {:>4}  {:>8}  {:<8}  {:>6}  {:<4}  {}",
            p.name,
            p.kind,
            format!("v{}", p.live_version),
            p.building_version
                .map_or_else(|| "-".to_owned(), |v| format!("v{v}")),
            versions.join(","),
            p.parked,
            if registry.get(&p.name).is_some() {
                "here"
            } else {
                "-"
            },
            p.topics.join(",")
        );
    }
    for p in &all {
        if let (Some(error), Some(at)) = (&p.last_error, p.last_error_at) {
            println!(
                "\n{} stopped on an error at {}: {error}",
                p.name,
                at.to_rfc3339_opts(SecondsFormat::Secs, true)
            );
        }
    }
    Ok(())
}

async fn status(
    db: &Database,
    kafka: &KafkaStoreOptions,
    name: Option<&str>,
) -> Result<(), Failure> {
    let names: Vec<String> = match name {
        Some(name) => vec![name.to_owned()],
        None => ops::list(db)
            .await
            .map_err(fail)?
            .into_iter()
            .map(|p| p.name)
            .collect(),
    };
    if names.is_empty() {
        return Err(Failure::new(
            Code::NotFound,
            anyhow::anyhow!("no projections registered in this database"),
        ));
    }
    let mut heads_error = None;
    for (i, name) in names.iter().enumerate() {
        let status = ops::status(db, Some(kafka), name).await.map_err(fail)?;
        if i > 0 {
            println!();
        }
        print_status(&status);
        if let Some(e) = &status.heads_error {
            heads_error = Some(e.clone());
        }
    }
    match heads_error {
        None => Ok(()),
        Some(e) => Err(Failure::new(
            Code::Unavailable,
            anyhow::anyhow!(
                "heads and lags are unknown (`?`): the brokers at {} did not answer: {e}",
                kafka.brokers()
            ),
        )),
    }
}

fn print_status(status: &ProjectionStatus) {
    let s = &status.summary;
    let building = s
        .building_version
        .map_or_else(String::new, |v| format!(", building v{v}"));
    println!(
        "{} ({}): live v{}{building}, {:.1} events/s, {} parked",
        s.name, s.kind, s.live_version, status.events_per_sec, s.parked
    );
    match (&s.last_error, s.last_error_at) {
        (Some(error), Some(at)) => println!(
            "last error ({}): {error}",
            at.to_rfc3339_opts(SecondsFormat::Secs, true)
        ),
        _ => println!("last error: none"),
    }
    let width = status
        .partitions
        .iter()
        .map(|p| p.topic.len())
        .max()
        .unwrap_or(5)
        .max(5);
    println!(
        "{:<7}  {:<width$}  {:>9}  {:>10}  {:>10}  {:>10}  {:>9}  UPDATED",
        "VERSION", "TOPIC", "PARTITION", "STORED", "HEAD", "LAG", "EVENTS/S"
    );
    for p in &status.partitions {
        print_partition(p, width);
    }
}

fn print_partition(p: &PartitionStatus, width: usize) {
    let or_unknown = |v: Option<u64>| v.map_or_else(|| "?".to_owned(), |v| v.to_string());
    println!(
        "{:<7}  {:<width$}  {:>9}  {:>10}  {:>10}  {:>10}  {:>9.1}  {}",
        format!("v{}", p.version),
        p.topic,
        p.partition,
        p.next_offset
            .map_or_else(|| "-".to_owned(), |v| v.to_string()),
        or_unknown(p.head),
        or_unknown(p.lag),
        p.events_per_sec,
        p.updated_at.map_or_else(
            || "-".to_owned(),
            |t| t.to_rfc3339_opts(SecondsFormat::Secs, true)
        ),
    );
}

async fn replay(
    db: &Database,
    kafka: &KafkaStoreOptions,
    name: &str,
    from: ReplayFrom,
) -> Result<(), Failure> {
    let report = ops::replay(db, kafka, name, from).await.map_err(fail)?;
    let how = match report.time_lookup {
        Some(ops::TimeLookup::ScannedEvents) => " (offsets found by scanning the events)",
        _ => "",
    };
    println!(
        "replaying {name} v{} from {}{how}:",
        report.version,
        describe(from)
    );
    let width = report
        .partitions
        .iter()
        .map(|p| p.0.len())
        .max()
        .unwrap_or(5)
        .max(5);
    println!(
        "{:<width$}  {:>9}  {:>10}  {:>10}",
        "TOPIC", "PARTITION", "BEFORE", "AFTER"
    );
    for (topic, partition, before, after) in &report.partitions {
        println!(
            "{topic:<width$}  {partition:>9}  {:>10}  {after:>10}",
            before.map_or_else(|| "-".to_owned(), |b| b.to_string())
        );
    }
    println!("running projectors seek within their refresh interval and apply the events again");
    Ok(())
}

fn describe(from: ReplayFrom) -> String {
    match from {
        ReplayFrom::Earliest => "the earliest event".to_owned(),
        ReplayFrom::Offset(n) => format!("offset {n}"),
        ReplayFrom::Time(t) => t.to_rfc3339_opts(SecondsFormat::Secs, true),
    }
}

async fn rebuild(
    db: &Database,
    kafka: &KafkaStoreOptions,
    projection: &Projection,
    batch_size: usize,
) -> Result<(), Failure> {
    let name = projection.name();
    // The heads bound the bar; without them it is a spinner (the rebuild itself only
    // needs the brokers' end-of-partition events, not watermarks).
    let total: Option<u64> = match ops::status(db, Some(kafka), name).await {
        Ok(status) if status.heads_error.is_none() => {
            let live = status.summary.live_version;
            Some(
                status
                    .partitions
                    .iter()
                    .filter(|p| p.version == live)
                    .filter_map(|p| p.head)
                    .sum(),
            )
        }
        Ok(_) => None,
        Err(e) => return Err(fail(e)),
    };
    let bar = match total {
        Some(total) => ProgressBar::new(total),
        None => ProgressBar::new_spinner(),
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg} {bar:30} {human_pos}/{human_len} offsets  {per_sec}  eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let options = ProjectorOptions::new().batch_size(batch_size);
    let report = ops::rebuild(db, kafka, projection, options, |progress| {
        let position: u64 = progress.partitions.values().map(|p| p.next_offset).sum();
        bar.set_position(position);
        bar.set_message(format!(
            "{name} v{}: {} events",
            progress.version, progress.applied
        ));
    })
    .await;
    bar.finish_and_clear();
    let report = report.map_err(fail)?;
    let rate = report.applied as f64 / report.elapsed.as_secs_f64().max(0.001);
    println!(
        "rebuilt {name} v{} ({}): {} events applied, {} parked, in {:.1?} ({rate:.0} events/s)",
        report.version,
        if report.resumed {
            "resumed"
        } else {
            "from scratch"
        },
        report.applied,
        report.parked,
        report.elapsed,
    );
    println!(
        "readers now see v{}; v{} is kept until `drop-version {name} {}`",
        report.version, report.previous, report.previous
    );
    Ok(())
}

async fn list_dead_letters(db: &Database, name: &str, all: bool) -> Result<(), Failure> {
    let letters = dead_letters::dead_letters(db, name, all)
        .await
        .map_err(fail)?;
    if letters.is_empty() {
        println!(
            "no {}dead letters for {name}",
            if all { "" } else { "parked " }
        );
        return Ok(());
    }
    println!(
        "{:>6}  {:>3}  {:<8}  {:<30}  {:<20}  {:<24}  {:>8}  ERROR",
        "ID", "V", "STATE", "POSITION", "KEY", "EVENT", "ATTEMPTS"
    );
    let mut keys = BTreeSet::new();
    for l in &letters {
        keys.insert(l.key.clone());
        let state = match l.state {
            DeadLetterState::Parked if l.behind => "behind",
            DeadLetterState::Parked => "parked",
            DeadLetterState::Retried => "retried",
            DeadLetterState::Skipped => "skipped",
        };
        println!(
            "{:>6}  {:>3}  {:<8}  {:<30}  {:<20}  {:<24}  {:>8}  {}",
            l.id,
            l.version,
            state,
            l.position.to_string(),
            l.key,
            format!("{} #{}", l.event_type, l.sequence),
            l.attempts,
            l.error
        );
    }
    eprintln!(
        "{} dead letters under {} keys; `retry ID` applies one and those behind it",
        letters.len(),
        keys.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory as _;
        crate::Cli::command().debug_assert();
    }

    #[test]
    fn from_accepts_the_three_forms_and_refuses_the_rest() {
        assert_eq!(parse_from("earliest"), Ok(ReplayFrom::Earliest));
        assert_eq!(parse_from("offset:42"), Ok(ReplayFrom::Offset(42)));
        assert!(matches!(
            parse_from("time:2024-05-01T12:00:00Z"),
            Ok(ReplayFrom::Time(_))
        ));
        for bad in [
            "latest",
            "offset:-1",
            "offset:x",
            "time:yesterday",
            "time:2999-01-01T00:00:00Z",
        ] {
            assert!(parse_from(bad).is_err(), "{bad} is refused");
        }
    }

    #[test]
    fn errors_map_to_the_documented_exit_codes() {
        let unknown = ProjectionError::UnknownProjection { name: "x".into() };
        assert_eq!(code_of(&unknown), Code::NotFound);
        let refused = ProjectionError::Version {
            projection: "x".into(),
            version: 1,
            reason: "is live",
        };
        assert_eq!(code_of(&refused), Code::CheckFailed);
    }
}
