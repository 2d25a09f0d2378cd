//! `annals sagas`: list and inspect saga instances from their event topics.

use std::collections::BTreeMap;

use annals_core::repository::decode_event;
use annals_core::{Aggregate as _, EventStore, JsonCodec, Offset, Partition, Upcasters};
use annals_kafka_store::{KafkaEventStore, KafkaStoreOptions};
use annals_saga::{Saga, SagaEvent, SagaInstance, SagaStatus, Step};
use clap::{Subcommand, ValueEnum};
use futures::StreamExt as _;

use crate::exit::{Code, Failure, OrExit as _};

/// Saga commands.
#[derive(Debug, Subcommand)]
pub(crate) enum SagasCommand {
    /// List the instances of a saga type with their status.
    List {
        /// The saga type (`transfer`): its topic is `{prefix}.{saga}.events`.
        saga: String,
        /// Only instances in this status.
        #[arg(long, value_enum)]
        status: Option<StatusFilter>,
    },
    /// Show one instance and its whole trail.
    Show {
        /// The saga type.
        saga: String,
        /// The instance id.
        id: String,
    },
}

/// Statuses to filter on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum StatusFilter {
    Running,
    Compensating,
    Completed,
    Compensated,
    Stuck,
    Abandoned,
}

impl StatusFilter {
    fn matches(self, s: SagaStatus) -> bool {
        matches!(
            (self, s),
            (StatusFilter::Running, SagaStatus::Running)
                | (StatusFilter::Compensating, SagaStatus::Compensating)
                | (StatusFilter::Completed, SagaStatus::Completed)
                | (StatusFilter::Compensated, SagaStatus::Compensated)
                | (StatusFilter::Stuck, SagaStatus::Stuck)
                | (StatusFilter::Abandoned, SagaStatus::Abandoned)
        )
    }
}

/// Any saga, read without its Rust types: the input stays a JSON document.
struct AnySaga;

/// Never produced: the CLI starts no sagas.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
enum NeverInvalid {}

impl std::error::Error for NeverInvalid {}

impl std::fmt::Display for NeverInvalid {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {}
    }
}

impl Saga for AnySaga {
    const NAME: &'static str = "any";
    type Input = serde_json::Value;
    type Invalid = NeverInvalid;
    fn participants() -> &'static [&'static str] {
        &[]
    }
    fn validate(_: &serde_json::Value) -> Result<(), NeverInvalid> {
        Ok(())
    }
    fn steps() -> &'static [Step<serde_json::Value>] {
        &[]
    }
}

type Instance = SagaInstance<AnySaga>;
type Trail = Vec<annals_core::Envelope<SagaEvent<serde_json::Value>>>;

async fn load_all(
    options: &KafkaStoreOptions,
    saga: &str,
) -> Result<BTreeMap<String, (Instance, Trail)>, Failure> {
    let store = KafkaEventStore::connect(options.clone())
        .await
        .or_exit(Code::Unavailable)?;
    let topic = store.topic_for(saga);
    let known = tokio::task::spawn_blocking({
        let options = options.clone();
        move || annals_kafka_store::inspect::list_topics(&options)
    })
    .await
    .or_exit(Code::Unavailable)?
    .or_exit(Code::Unavailable)?;
    let partitions = known
        .iter()
        .find(|t| t.name == topic)
        .map(|t| t.partitions)
        .ok_or_else(|| {
            Failure::new(
                Code::NotFound,
                anyhow::anyhow!("no saga topic `{topic}` (wrong --prefix or saga type?)"),
            )
        })?;
    let upcasters = Upcasters::new();
    let mut sagas: BTreeMap<String, (Instance, Trail)> = BTreeMap::new();
    for p in 0..partitions {
        let mut stream = store.read_partition(saga, Partition(p), Offset(0));
        while let Some(item) = stream.next().await {
            let raw = item.or_exit(Code::CheckFailed)?;
            let event = decode_event::<SagaEvent<serde_json::Value>>(raw, &JsonCodec, &upcasters)
                .or_exit(Code::CheckFailed)?;
            let entry = sagas
                .entry(event.aggregate_id.to_string())
                .or_default_pair();
            entry.0.apply(&event.payload);
            entry.1.push(event);
        }
    }
    Ok(sagas)
}

trait OrDefaultPair<'a> {
    fn or_default_pair(self) -> &'a mut (Instance, Trail);
}

impl<'a> OrDefaultPair<'a> for std::collections::btree_map::Entry<'a, String, (Instance, Trail)> {
    fn or_default_pair(self) -> &'a mut (Instance, Trail) {
        self.or_insert_with(|| (Instance::default(), Vec::new()))
    }
}

pub(crate) async fn run(command: SagasCommand, options: &KafkaStoreOptions) -> Result<(), Failure> {
    match command {
        SagasCommand::List { saga, status } => {
            let sagas = load_all(options, &saga).await?;
            println!("{:<38}  {:<12}  {:<25}  REASON", "ID", "STATUS", "UPDATED");
            let mut shown = 0;
            for (id, (instance, trail)) in &sagas {
                if status.is_some_and(|f| !f.matches(instance.status)) {
                    continue;
                }
                shown += 1;
                let updated = trail
                    .last()
                    .map(|e| {
                        e.occurred_at
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    })
                    .unwrap_or_default();
                println!(
                    "{id:<38}  {:<12}  {updated:<25}  {}",
                    format!("{:?}", instance.status).to_lowercase(),
                    instance.reason.as_deref().unwrap_or("")
                );
            }
            eprintln!("{shown} of {} {saga} sagas", sagas.len());
            Ok(())
        }
        SagasCommand::Show { saga, id } => {
            let sagas = load_all(options, &saga).await?;
            let Some((instance, trail)) = sagas.get(&id) else {
                return Err(Failure::new(
                    Code::NotFound,
                    anyhow::anyhow!("no {saga} saga `{id}`"),
                ));
            };
            println!("saga:   {saga} {id}");
            println!("status: {:?}", instance.status);
            if let Some(input) = &instance.input {
                println!("input:  {input}");
            }
            if let Some(reason) = &instance.reason {
                println!("reason: {reason}");
            }
            println!("trail:");
            for e in trail {
                println!(
                    "  {:>3}  {}  {:<28} {}  by {}",
                    e.sequence,
                    e.occurred_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    e.event_type,
                    e.payload.describe::<serde_json::Value>(&[]),
                    e.metadata.actor
                );
            }
            Ok(())
        }
    }
}
