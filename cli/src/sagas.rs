//! `annals sagas`: list and inspect saga instances from their event topics.

use std::collections::BTreeMap;

use annals_core::repository::decode_event;
use annals_core::{
    Actor, Aggregate as _, AggregateId, CommandError, CommandGateway as _, CommandId, EventStore,
    JsonCodec, Metadata, Offset, Partition, Upcasters,
};
use annals_kafka_store::{CommandBus, KafkaEventStore, KafkaStoreOptions};
use annals_saga::{Saga, SagaCommand, SagaEvent, SagaInstance, SagaStatus, Step};
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
    /// Resume a stuck saga: it resends its pending command (same command id, so nothing
    /// happens twice) or continues compensating. Needs the saga's processor running.
    Retry {
        /// The saga type.
        saga: String,
        /// The instance id.
        id: String,
    },
    /// Give up on a saga that has not ended: it sends nothing more. Whatever it left
    /// half done must then be settled by hand; the trail says what that is.
    Abandon {
        /// The saga type.
        saga: String,
        /// The instance id.
        id: String,
        /// Why, for the audit trail.
        #[arg(long)]
        reason: String,
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

/// Sends an operator command to a saga through its processor.
async fn operate(
    options: &KafkaStoreOptions,
    saga: &str,
    command: SagaCommand<serde_json::Value>,
) -> Result<(), Failure> {
    let bus = CommandBus::<Instance>::connect_as(options.clone(), saga)
        .await
        .or_exit(Code::Unavailable)?;
    let metadata = Metadata::new(Actor::new("operator:cli"), CommandId(uuid::Uuid::now_v7()));
    match bus.send(command, metadata).await {
        Ok(done) => {
            for e in &done.events {
                println!(
                    "{}  {}",
                    e.event_type,
                    e.payload.describe::<serde_json::Value>(&[])
                );
            }
            Ok(())
        }
        Err(CommandError::Rejected(reason)) => Err(Failure::new(
            Code::CheckFailed,
            anyhow::anyhow!("refused: {reason}"),
        )),
        Err(CommandError::Store(e @ annals_core::Error::Timeout { .. })) => Err(Failure::new(
            Code::Unavailable,
            anyhow::Error::new(e).context(format!("is the {saga} processor running?")),
        )),
        Err(CommandError::Store(e)) => Err(Failure::new(Code::Unavailable, e)),
    }
}

pub(crate) async fn run(command: SagasCommand, options: &KafkaStoreOptions) -> Result<(), Failure> {
    match command {
        SagasCommand::Retry { saga, id } => {
            operate(
                options,
                &saga,
                SagaCommand::Retry {
                    saga_id: AggregateId::new(id),
                },
            )
            .await
        }
        SagasCommand::Abandon { saga, id, reason } => {
            operate(
                options,
                &saga,
                SagaCommand::Abandon {
                    saga_id: AggregateId::new(id),
                    reason,
                },
            )
            .await
        }
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
