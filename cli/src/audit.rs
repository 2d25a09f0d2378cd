//! `annals audit`: verify hash chains, export the trail.

use std::io::Write as _;
use std::time::Instant;

use annals_core::{Error, EventStore, Offset, Partition, RawEnvelope};
use annals_kafka_store::inspect::partition_ends;
use annals_kafka_store::{KafkaEventStore, KafkaStoreOptions};
use chrono::{DateTime, Utc};
use clap::{Subcommand, ValueEnum};
use futures::StreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};

use crate::exit::{Code, Failure, OrExit as _};

/// Audit commands.
#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Read every event of an aggregate type and verify each stream's sequences and hash
    /// chain. Exit code 1 names the first event that was changed, dropped or reordered.
    Verify {
        /// The aggregate type (`account`): its topic is `{prefix}.{aggregate}.events`.
        aggregate: String,
    },
    /// Export the audit trail (metadata and payload of each event) as JSON Lines or CSV.
    Export {
        /// The aggregate type.
        aggregate: String,
        /// Only this aggregate instance.
        #[arg(long)]
        id: Option<String>,
        /// Only events caused by this actor (`user:alice`).
        #[arg(long)]
        actor: Option<String>,
        /// Only events that occurred at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<DateTime<Utc>>,
        /// Only events that occurred before this time (RFC 3339).
        #[arg(long)]
        until: Option<DateTime<Utc>>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Jsonl)]
        format: Format,
    },
}

/// Export formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated values with a header row.
    Csv,
}

pub(crate) async fn run(command: AuditCommand, options: &KafkaStoreOptions) -> Result<(), Failure> {
    let store = KafkaEventStore::connect(options.clone())
        .await
        .or_exit(Code::Unavailable)?;
    match command {
        AuditCommand::Verify { aggregate } => verify(&store, options, &aggregate).await,
        AuditCommand::Export {
            aggregate,
            id,
            actor,
            since,
            until,
            format,
        } => {
            let filter = Filter {
                id,
                actor,
                since,
                until,
            };
            export(&store, &aggregate, &filter, format).await
        }
    }
}

async fn partitions(store: &KafkaEventStore, aggregate: &str) -> Result<u32, Failure> {
    let topic = store.topic_for(aggregate);
    let known = tokio::task::spawn_blocking({
        let options = store.options().clone();
        move || annals_kafka_store::inspect::list_topics(&options)
    })
    .await
    .or_exit(Code::Unavailable)?
    .or_exit(Code::Unavailable)?;
    known
        .iter()
        .find(|t| t.name == topic)
        .map(|t| t.partitions)
        .ok_or_else(|| {
            Failure::new(
                Code::NotFound,
                anyhow::anyhow!("no event topic `{topic}` (wrong --prefix or aggregate type?)"),
            )
        })
}

async fn verify(
    store: &KafkaEventStore,
    options: &KafkaStoreOptions,
    aggregate: &str,
) -> Result<(), Failure> {
    let partitions = partitions(store, aggregate).await?;
    let topic = store.topic_for(aggregate);
    let ends = tokio::task::spawn_blocking({
        let (options, topic) = (options.clone(), topic.clone());
        move || partition_ends(&options, &topic, partitions)
    })
    .await
    .or_exit(Code::Unavailable)?
    .or_exit(Code::Unavailable)?;
    let bar = progress(ends.iter().sum());
    let started = Instant::now();
    let mut events = 0u64;
    let mut aggregates = std::collections::HashSet::new();
    for p in 0..partitions {
        let mut stream = store.read_partition(aggregate, Partition(p), Offset(0));
        while let Some(item) = stream.next().await {
            match item {
                Ok(event) => {
                    events += 1;
                    aggregates.insert(event.aggregate_id);
                    bar.inc(1);
                }
                Err(
                    e @ (Error::HashChain { .. }
                    | Error::SequenceGap { .. }
                    | Error::MalformedRecord { .. }),
                ) => {
                    bar.abandon();
                    return Err(Failure::new(
                        Code::CheckFailed,
                        anyhow::anyhow!(
                            "{topic}: tampering or loss detected after {events} good events: {e}"
                        ),
                    ));
                }
                Err(e) => {
                    bar.abandon();
                    return Err(Failure::new(Code::Unavailable, e));
                }
            }
        }
    }
    bar.finish_and_clear();
    println!(
        "ok: {topic}: {events} events of {} aggregates in {partitions} partitions verified (sequences gapless, hash chains intact) in {:.1?}",
        aggregates.len(),
        started.elapsed()
    );
    Ok(())
}

fn progress(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {bar:40} {pos}/{len} events  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

struct Filter {
    id: Option<String>,
    actor: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
}

impl Filter {
    fn admits(&self, e: &RawEnvelope) -> bool {
        self.id
            .as_deref()
            .is_none_or(|id| e.aggregate_id.as_str() == id)
            && self
                .actor
                .as_deref()
                .is_none_or(|a| e.metadata.actor.as_str() == a)
            && self.since.is_none_or(|t| e.occurred_at >= t)
            && self.until.is_none_or(|t| e.occurred_at < t)
    }
}

async fn export(
    store: &KafkaEventStore,
    aggregate: &str,
    filter: &Filter,
    format: Format,
) -> Result<(), Failure> {
    let partitions = partitions(store, aggregate).await?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if let Format::Csv = format {
        writeln!(out, "occurred_at,aggregate_type,aggregate_id,sequence,event_type,schema_version,event_id,actor,command_id,correlation_id,causation_id,position,hash,payload")
            .or_exit(Code::CheckFailed)?;
    }
    let mut exported = 0u64;
    for p in 0..partitions {
        let mut stream = store.read_partition(aggregate, Partition(p), Offset(0));
        while let Some(item) = stream.next().await {
            let event = item.or_exit(Code::CheckFailed)?;
            if !filter.admits(&event) {
                continue;
            }
            exported += 1;
            let payload: serde_json::Value = serde_json::from_slice(&event.payload.bytes)
                .unwrap_or_else(|_| serde_json::Value::String("<not JSON>".into()));
            let position = event
                .position
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default();
            let line = match format {
                Format::Jsonl => serde_json::json!({
                    "occurred_at": event.occurred_at,
                    "aggregate_type": event.aggregate_type,
                    "aggregate_id": event.aggregate_id,
                    "sequence": event.sequence,
                    "event_type": event.event_type,
                    "schema_version": event.schema_version,
                    "event_id": event.event_id,
                    "metadata": event.metadata,
                    "position": position,
                    "prev_hash": event.prev_hash,
                    "hash": event.hash,
                    "payload": payload,
                })
                .to_string(),
                Format::Csv => [
                    event.occurred_at.to_rfc3339(),
                    event.aggregate_type.clone(),
                    event.aggregate_id.to_string(),
                    event.sequence.to_string(),
                    event.event_type.clone(),
                    event.schema_version.to_string(),
                    event.event_id.to_string(),
                    event.metadata.actor.to_string(),
                    event.metadata.command_id.to_string(),
                    event.metadata.correlation_id.to_string(),
                    event.metadata.causation_id.to_string(),
                    position,
                    event.hash.to_hex(),
                    payload.to_string(),
                ]
                .iter()
                .map(|f| csv_field(f))
                .collect::<Vec<_>>()
                .join(","),
            };
            writeln!(out, "{line}").or_exit(Code::CheckFailed)?;
        }
    }
    out.flush().or_exit(Code::CheckFailed)?;
    eprintln!("exported {exported} events");
    Ok(())
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}
