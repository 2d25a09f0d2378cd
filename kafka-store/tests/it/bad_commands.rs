//! Bad commands through the real broker: commands to aggregates that do not exist,
//! duplicate command ids (concurrent, from two buses, with another body, across a
//! restart), events too big for a Kafka record, commands too big for the broker, and
//! garbage on the command topic. Each gets a typed answer; nothing is written twice;
//! the partition keeps working.

use std::sync::Arc;
use std::time::{Duration, Instant};

use annals_core::partition::partition_for;
use annals_core::{
    Aggregate, AggregateId, Command, CommandContext, CommandError, DomainEvent, Error, EventStore,
    Version,
};
use annals_kafka_store::{CommandBus, CommandProcessor, KafkaEventStore, KafkaStoreOptions};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::harness::{annals_thread_panics, fault_options, meta, produce_raw};
use crate::support::brokers;

/// An aggregate that exists only once opened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
pub(crate) enum VaultEvent {
    #[event(name = "VaultOpened", version = 1)]
    Opened,
    #[event(name = "VaultFilled", version = 1)]
    Filled { content: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, Command)]
pub(crate) enum VaultCommand {
    Open {
        #[aggregate_id]
        id: String,
    },
    /// Stores `size` bytes: a small command with an event of any size.
    Fill {
        #[aggregate_id]
        id: String,
        size: usize,
    },
    /// Carries `text` (a command of any size) and stores nothing of it.
    Knock {
        #[aggregate_id]
        id: String,
        text: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub(crate) enum VaultRejection {
    #[error("no such vault")]
    NotOpened,
    #[error("the vault is open already")]
    AlreadyOpen,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "vault", command = VaultCommand, event = VaultEvent, rejection = VaultRejection)]
pub(crate) struct Vault {
    open: bool,
    stored: usize,
}

impl Vault {
    fn handle(
        &self,
        command: &VaultCommand,
        _: &CommandContext,
    ) -> Result<Vec<VaultEvent>, VaultRejection> {
        match command {
            VaultCommand::Open { .. } if self.open => Err(VaultRejection::AlreadyOpen),
            VaultCommand::Open { .. } => Ok(vec![VaultEvent::Opened]),
            _ if !self.open => Err(VaultRejection::NotOpened),
            VaultCommand::Fill { size, .. } => Ok(vec![VaultEvent::Filled {
                content: "x".repeat(*size),
            }]),
            VaultCommand::Knock { .. } => Ok(vec![]),
        }
    }

    fn apply(&mut self, event: &VaultEvent) {
        match event {
            VaultEvent::Opened => self.open = true,
            VaultEvent::Filled { content } => self.stored += content.len(),
        }
    }
}

async fn vault_events(store: &KafkaEventStore, id: &str) -> Vec<annals_core::RawEnvelope> {
    store
        .read_aggregate("vault", &AggregateId::new(id), Version(1))
        .try_collect()
        .await
        .expect("the vault's stream verifies")
}

async fn start(options: &KafkaStoreOptions) -> annals_kafka_store::ProcessorHandle {
    let processor = CommandProcessor::<Vault>::new(options.clone())
        .start()
        .await
        .expect("processor starts");
    assert!(
        processor
            .wait_for(Duration::from_secs(30), |live| live.len() == 3)
            .await,
        "{:?}",
        processor.partition_errors()
    );
    processor
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_aggregates_and_duplicate_command_ids_get_their_first_outcome_once() {
    let Some(brokers) = brokers() else { return };
    let options = fault_options(&brokers).command_timeout(Duration::from_secs(10));
    let processor = start(&options).await;
    let bus = Arc::new(
        CommandBus::<Vault>::connect(options.clone())
            .await
            .expect("bus"),
    );
    let store = KafkaEventStore::connect(options.clone())
        .await
        .expect("store");

    // A command to an aggregate that was never created: the domain refuses it.
    let ghost = bus
        .send_expecting(
            VaultCommand::Fill {
                id: "v-ghost".into(),
                size: 3,
            },
            meta(),
            None,
        )
        .await
        .expect_err("no such vault");
    assert!(
        matches!(ghost, CommandError::Rejected(VaultRejection::NotOpened)),
        "{ghost:?}"
    );
    assert!(vault_events(&store, "v-ghost").await.is_empty());

    bus.send_expecting(VaultCommand::Open { id: "v-1".into() }, meta(), None)
        .await
        .expect("opens");

    // The same command id, sent concurrently from this bus and from a second one.
    let other_bus = Arc::new(
        CommandBus::<Vault>::connect(options.clone())
            .await
            .expect("second bus"),
    );
    let m = meta();
    let fill = |size| VaultCommand::Fill {
        id: "v-1".into(),
        size,
    };
    let mut sends = Vec::new();
    for i in 0..6 {
        let bus = Arc::clone(if i % 3 == 2 { &other_bus } else { &bus });
        let (m, command) = (m.clone(), fill(10));
        sends.push(tokio::spawn(async move {
            bus.send_expecting(command, m, None).await
        }));
    }
    let mut event_ids = Vec::new();
    for s in sends {
        let done = s
            .await
            .expect("task")
            .expect("every duplicate gets the outcome");
        assert_eq!(done.version, Version(2));
        event_ids.push(done.events[0].event_id);
    }
    event_ids.dedup();
    assert_eq!(
        event_ids.len(),
        1,
        "all duplicates answer with the one event"
    );

    // The same id with another body: the first outcome, no second effect.
    let again = bus
        .send_expecting(fill(20), m.clone(), None)
        .await
        .expect("first outcome");
    assert_eq!(again.events[0].event_id, event_ids[0]);
    assert_eq!(
        again.events[0].payload,
        VaultEvent::Filled {
            content: "x".repeat(10)
        }
    );

    // And after a restart: the new processor knows the command from the log.
    processor.shutdown().await;
    let processor = start(&options).await;
    let after_restart = bus
        .send_expecting(fill(10), m.clone(), None)
        .await
        .expect("first outcome after a restart");
    assert_eq!(after_restart.events[0].event_id, event_ids[0]);
    assert_eq!(after_restart.version, Version(2));

    let stored = vault_events(&store, "v-1").await;
    assert_eq!(stored.len(), 2, "opened and filled once");
    assert_eq!(
        stored
            .iter()
            .filter(|e| e.metadata.command_id == m.command_id)
            .count(),
        1
    );
    processor.shutdown().await;
    assert_eq!(annals_thread_panics(), 0, "no annals thread panicked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_commands_too_big_for_kafka_are_refused_and_the_partition_goes_on() {
    let Some(brokers) = brokers() else { return };
    let options = fault_options(&brokers).command_timeout(Duration::from_secs(10));
    let processor = start(&options).await;
    let bus = CommandBus::<Vault>::connect(options.clone())
        .await
        .expect("bus");
    bus.send_expecting(VaultCommand::Open { id: "v-big".into() }, meta(), None)
        .await
        .expect("opens");

    // An event whose payload is under the payload limit (1,000,000 bytes) but whose
    // record (payload, key and headers) is over Kafka's default record limit.
    let started = Instant::now();
    let big = bus
        .send_expecting(
            VaultCommand::Fill {
                id: "v-big".into(),
                size: 999_900,
            },
            meta(),
            None,
        )
        .await
        .expect_err("too big for a record");
    println!("event too big: {big:?} after {:?}", started.elapsed());
    assert!(
        matches!(&big, CommandError::Store(Error::InvalidRequest { reason, .. }) if reason.contains("limit")),
        "{big:?}"
    );

    // The same aggregate's partition still works, and nothing was written for it.
    let next = bus
        .send_expecting(
            VaultCommand::Fill {
                id: "v-big".into(),
                size: 5,
            },
            meta(),
            None,
        )
        .await
        .expect("the partition goes on");
    assert_eq!(next.version, Version(2));

    // A command over the broker's record limit, allowed by a raised payload limit: the
    // producer refuses it with a typed error, promptly.
    let raised = options.clone().max_payload_bytes(4_000_000);
    let raised_bus = CommandBus::<Vault>::connect(raised).await.expect("bus");
    let started = Instant::now();
    let huge = raised_bus
        .send_expecting(
            VaultCommand::Knock {
                id: "v-big".into(),
                text: "y".repeat(2_000_000),
            },
            meta(),
            None,
        )
        .await
        .expect_err("too big for the broker");
    println!("command too big: {huge:?} after {:?}", started.elapsed());
    assert!(
        matches!(
            &huge,
            CommandError::Store(Error::Backend { .. } | Error::InvalidRequest { .. })
        ),
        "{huge:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    let store = KafkaEventStore::connect(options.clone())
        .await
        .expect("store");
    let stored = vault_events(&store, "v-big").await;
    assert_eq!(stored.len(), 2, "opened and the small fill only");
    processor.shutdown().await;
    assert_eq!(annals_thread_panics(), 0, "no annals thread panicked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_command_topic_is_skipped_and_the_partition_goes_on() {
    let Some(brokers) = brokers() else { return };
    let options = fault_options(&brokers).command_timeout(Duration::from_secs(10));
    let processor = start(&options).await;
    let bus = CommandBus::<Vault>::connect(options.clone())
        .await
        .expect("bus");
    let id = "v-garbage";
    let partition = partition_for(id.as_bytes(), 3);
    let topic = options.commands_topic("vault");
    produce_raw(
        &brokers,
        &topic,
        partition,
        id.as_bytes(),
        b"\x00not json",
        None,
    )
    .await;
    produce_raw(
        &brokers,
        &topic,
        partition,
        id.as_bytes(),
        br#"{"v":1,"metadata":{},"command":{"Unknown":{}}}"#,
        None,
    )
    .await;
    let opened = bus
        .send_expecting(VaultCommand::Open { id: id.into() }, meta(), None)
        .await
        .expect("a good command after garbage is processed");
    assert_eq!(opened.version, Version(1));
    assert!(processor.partition_errors().is_empty());
    processor.shutdown().await;
    assert_eq!(annals_thread_panics(), 0, "no annals thread panicked");
}
