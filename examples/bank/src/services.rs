//! The bank's deployable services. Each talks to the others only through Kafka:
//! `accounts` owns the account partitions, `transfers` runs the transfer sagas, `api`
//! serves HTTP in front of both.

use std::sync::Arc;
use std::time::Duration;

use annals_core::{AggregateId, AggregateRepository, CommandError, EventStore, Metadata};
use annals_kafka_store::{
    CommandBus, CommandProcessor, KafkaEventStore, KafkaStoreOptions, ProcessorHandle,
};
use annals_saga::kafka::SagaReactions;
use annals_saga::{SagaCommand, SagaInstance, SagaRejection};
use anyhow::Context as _;
use async_trait::async_trait;

use crate::domain::{Account, InvalidTransfer, Transfer, TransferRequest};
use crate::service::{Bank, TransferView, Transfers};

/// Starts the account service: the command processor of the `account` aggregate.
pub async fn accounts(options: &KafkaStoreOptions) -> anyhow::Result<ProcessorHandle> {
    CommandProcessor::<Account>::new(options.clone())
        .start()
        .await
        .context("starting the account processor")
}

/// Starts the transfer service: the processor of the `transfer` saga, which sends
/// account commands and receives their answers through Kafka.
pub async fn transfers(options: &KafkaStoreOptions) -> anyhow::Result<ProcessorHandle> {
    CommandProcessor::<SagaInstance<Transfer>>::new(options.clone())
        .with_reactions(Arc::new(SagaReactions::<Transfer>::new()))
        .start()
        .await
        .context("starting the transfer processor")
}

/// Waits until a processor owns and has restored every partition (it is the only
/// instance of its service).
pub async fn wait_live(handle: &ProcessorHandle, what: &str) -> anyhow::Result<()> {
    let partitions = handle.partition_count() as usize;
    let ready = handle
        .wait_for(Duration::from_secs(60), |live| live.len() == partitions)
        .await;
    anyhow::ensure!(
        ready,
        "the {what} processor did not take its partitions: {:?}",
        handle.partition_errors()
    );
    Ok(())
}

/// Transfers started through the command bus and read from the saga's stream.
pub struct KafkaTransfers {
    bus: CommandBus<SagaInstance<Transfer>>,
    sagas: AggregateRepository<SagaInstance<Transfer>>,
}

impl KafkaTransfers {
    /// Connects to the transfer saga's topics.
    pub async fn connect(options: &KafkaStoreOptions) -> anyhow::Result<Self> {
        let store: Arc<dyn EventStore> = Arc::new(KafkaEventStore::connect(options.clone()).await?);
        Ok(Self {
            bus: CommandBus::connect(options.clone()).await?,
            sagas: AggregateRepository::new(store),
        })
    }

    /// The saga instances' repository (reads).
    pub fn sagas(&self) -> &AggregateRepository<SagaInstance<Transfer>> {
        &self.sagas
    }
}

#[async_trait]
impl Transfers for KafkaTransfers {
    async fn start(
        &self,
        id: AggregateId,
        request: TransferRequest,
        metadata: Metadata,
    ) -> Result<TransferView, CommandError<SagaRejection<InvalidTransfer>>> {
        use annals_core::CommandGateway as _;
        self.bus
            .send(
                SagaCommand::Start {
                    saga_id: id.clone(),
                    input: request,
                },
                metadata,
            )
            .await?;
        Ok(self.get(&id).await?.unwrap_or_else(|| TransferView {
            id: id.to_string(),
            status: annals_saga::SagaStatus::Running,
            request: None,
            reason: None,
            trail: Vec::new(),
        }))
    }

    async fn get(&self, id: &AggregateId) -> Result<Option<TransferView>, annals_core::Error> {
        use annals_saga::Saga as _;
        let events = self.sagas.events(id).await?;
        if events.is_empty() {
            return Ok(None);
        }
        let mut state = SagaInstance::<Transfer>::default();
        for e in &events {
            annals_core::Aggregate::apply(&mut state, &e.payload);
        }
        Ok(Some(TransferView {
            id: id.to_string(),
            status: state.status,
            request: state.input.clone(),
            reason: state.reason.clone(),
            trail: events
                .iter()
                .map(|e| e.payload.describe(Transfer::steps()))
                .collect(),
        }))
    }
}

/// The bank on Kafka: account commands through the bus, consistent reads from the
/// streams, transfers through the saga.
pub async fn bank_on_kafka(options: &KafkaStoreOptions) -> anyhow::Result<Bank> {
    let store: Arc<dyn EventStore> = Arc::new(KafkaEventStore::connect(options.clone()).await?);
    Ok(Bank::new(
        Arc::new(CommandBus::<Account>::connect(options.clone()).await?),
        AggregateRepository::new(store),
        Arc::new(KafkaTransfers::connect(options).await?),
    ))
}
