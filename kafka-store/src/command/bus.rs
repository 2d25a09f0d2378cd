//! The caller's side of the command bus: send a command to the partition of its
//! aggregate, wait for the outcome on a reply partition.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use annals_core::partition::partition_for;
use annals_core::repository::decode_event;
use annals_core::{
    Aggregate, AggregateRef, Codec, Command, CommandError, CommandGateway, CommandId, Committed,
    Error, ExpectedVersion, JsonCodec, Metadata, Upcasters,
};
use async_trait::async_trait;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset as KOffset, TopicPartitionList};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::protocol::{CommandRecord, Outcome, PROTOCOL_VERSION, ReplyRecord};
use crate::error::KafkaStoreError;
use crate::options::KafkaStoreOptions;
use crate::reader::partition_i32;
use crate::topics::{TopicKind, ensure_topic};

/// The callers waiting for a reply, by command id. Several callers may wait for the same
/// command (a resend racing the original); each gets the reply, tagged by a token so that
/// a caller that gives up removes only itself.
type Pending = Arc<Mutex<HashMap<CommandId, Vec<(u64, oneshot::Sender<ReplyRecord>)>>>>;

/// Sends commands of aggregate type `A` to their processors and returns the outcome.
///
/// Delivery is at-least-once and processing exactly-once per command id: a command sent
/// again with the same id (after a timeout, say) is answered with its first outcome and
/// has no second effect.
pub struct CommandBus<A> {
    options: KafkaStoreOptions,
    producer: FutureProducer,
    commands_topic: String,
    partitions: u32,
    reply_partition: u32,
    pending: Pending,
    listener: JoinHandle<()>,
    codec: Arc<dyn Codec>,
    upcasters: Arc<Upcasters>,
    aggregate_type: String,
    aggregate: PhantomData<fn() -> A>,
}

impl<A> Drop for CommandBus<A> {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl<A: Aggregate> CommandBus<A> {
    /// Connects: creates the command and reply topics if needed and starts listening on
    /// one reply partition.
    pub async fn connect(options: KafkaStoreOptions) -> Result<Self, KafkaStoreError> {
        Self::connect_as(options, A::TYPE).await
    }

    /// Connects to the topics of `aggregate_type` rather than `A::TYPE`: for tools that
    /// send commands of a type known only at run time, using a stand-in `A` whose
    /// commands and events serialize like the real ones (the CLI does this for sagas).
    pub async fn connect_as(
        options: KafkaStoreOptions,
        aggregate_type: &str,
    ) -> Result<Self, KafkaStoreError> {
        let commands_topic = options.commands_topic(aggregate_type);
        let replies_topic = options.replies_topic(aggregate_type);
        let partitions = ensure_topic(&options, &commands_topic, TopicKind::Commands).await?;
        let reply_partitions = ensure_topic(&options, &replies_topic, TopicKind::Replies).await?;
        // Spread callers over the reply partitions; replies for others are ignored.
        let reply_partition =
            u32::try_from(uuid::Uuid::now_v7().as_u128() % u128::from(reply_partitions))
                .unwrap_or(0);

        let consumer: StreamConsumer = options
            .reader_config()
            .set("enable.partition.eof", "false")
            .create()
            .map_err(|e| KafkaStoreError::kafka("creating the reply consumer", e))?;
        let start = {
            let (topic, p, timeout) = (
                replies_topic.clone(),
                partition_i32(reply_partition),
                options.operation_timeout,
            );
            let probe: rdkafka::consumer::BaseConsumer = options
                .reader_config()
                .create()
                .map_err(|e| KafkaStoreError::kafka("creating a client", e))?;
            tokio::task::spawn_blocking(move || probe.fetch_watermarks(&topic, p, timeout))
                .await
                .map_err(|e| KafkaStoreError::Config {
                    key: "runtime".into(),
                    reason: e.to_string(),
                })?
                .map_err(|e| KafkaStoreError::kafka("reading the reply partition's end", e))?
                .1
        };
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(
            &replies_topic,
            partition_i32(reply_partition),
            KOffset::Offset(start),
        )
        .map_err(|e| KafkaStoreError::kafka("building the reply assignment", e))?;
        consumer
            .assign(&tpl)
            .map_err(|e| KafkaStoreError::kafka("assigning the reply partition", e))?;
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let listener = tokio::spawn(listen(consumer, Arc::clone(&pending)));

        let producer: FutureProducer = options
            .client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .create()
            .map_err(|e| KafkaStoreError::kafka("creating the command producer", e))?;
        Ok(Self {
            options,
            producer,
            commands_topic,
            partitions,
            reply_partition,
            pending,
            listener,
            codec: Arc::new(JsonCodec),
            upcasters: Arc::new(Upcasters::new()),
            aggregate_type: aggregate_type.to_owned(),
            aggregate: PhantomData,
        })
    }

    /// Decodes events with these upcasters.
    #[must_use]
    pub fn with_upcasters(mut self, upcasters: Arc<Upcasters>) -> Self {
        self.upcasters = upcasters;
        self
    }

    /// Uses another codec (it must match the processor's).
    #[must_use]
    pub fn with_codec(mut self, codec: Arc<dyn Codec>) -> Self {
        self.codec = codec;
        self
    }

    /// Sends a command and waits for its outcome, at most the command timeout.
    ///
    /// With `expected`, the command is refused with [`Error::Conflict`] unless the
    /// aggregate is at that version.
    pub async fn send_expecting(
        &self,
        command: A::Command,
        metadata: Metadata,
        expected: Option<ExpectedVersion>,
    ) -> Result<Committed<A::Event>, CommandError<A::Rejection>> {
        let id = command.aggregate_id();
        let aggregate = AggregateRef::new(self.aggregate_type.clone(), id.clone());
        if let Err(reason) = id.validate() {
            return Err(Error::InvalidRequest {
                aggregate,
                reason: reason.to_owned(),
            }
            .into());
        }
        let command_id = metadata.command_id;
        let record = CommandRecord {
            v: PROTOCOL_VERSION,
            metadata,
            expected,
            reply_to: Some(self.reply_partition),
            command,
        };
        let payload = serde_json::to_vec(&record).map_err(|e| Error::InvalidRequest {
            aggregate: aggregate.clone(),
            reason: format!("command does not serialize: {e}"),
        })?;
        if payload.len() > self.options.max_payload_bytes {
            return Err(Error::InvalidRequest {
                aggregate,
                reason: format!(
                    "command is {} bytes, more than the limit of {}",
                    payload.len(),
                    self.options.max_payload_bytes
                ),
            }
            .into());
        }
        let (tx, rx) = oneshot::channel();
        static TOKENS: AtomicU64 = AtomicU64::new(0);
        let token = TOKENS.fetch_add(1, Ordering::Relaxed);
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(command_id)
            .or_default()
            .push((token, tx));
        let _cleanup = Unregister {
            pending: &self.pending,
            id: command_id,
            token,
        };
        let partition = partition_for(id.as_bytes(), self.partitions);
        let key = id.as_str().to_owned();
        // One deadline for delivering the command and getting its outcome: a producer
        // that cannot reach the brokers would otherwise wait `message.timeout.ms` (five
        // minutes by default) before it gives up.
        let deadline = tokio::time::Instant::now() + self.options.command_timeout;
        let timed_out = || -> CommandError<A::Rejection> {
            Error::Timeout {
                operation: format!(
                    "command {command_id} to {aggregate} (it may still take effect; resend with the same command id)"
                ),
                after: self.options.command_timeout,
            }
            .into()
        };
        let sent = tokio::time::timeout_at(
            deadline,
            self.producer.send(
                FutureRecord::to(&self.commands_topic)
                    .partition(partition_i32(partition))
                    .key(&key)
                    .payload(&payload),
                self.options.command_timeout,
            ),
        )
        .await;
        match sent {
            Err(_) => return Err(timed_out()),
            Ok(Err((e, _))) => {
                return Err(Error::backend(format!("sending a command to {aggregate}"), e).into());
            }
            Ok(Ok(_)) => {}
        }
        let reply = match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => {
                return Err(
                    Error::backend("waiting for a reply", "the reply listener stopped").into(),
                );
            }
            Err(_) => return Err(timed_out()),
        };
        self.outcome(aggregate, expected, reply.outcome)
    }

    fn outcome(
        &self,
        aggregate: AggregateRef,
        expected: Option<ExpectedVersion>,
        outcome: Outcome,
    ) -> Result<Committed<A::Event>, CommandError<A::Rejection>> {
        match outcome {
            Outcome::Committed {
                events, version, ..
            } => {
                let events = events
                    .into_iter()
                    .map(|raw| decode_event(raw, self.codec.as_ref(), &self.upcasters))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Committed { events, version })
            }
            Outcome::Rejected { rejection } => match serde_json::from_value(rejection) {
                Ok(r) => Err(CommandError::Rejected(r)),
                Err(e) => Err(Error::backend(
                    format!("decoding the rejection of a command to {aggregate}"),
                    e,
                )
                .into()),
            },
            Outcome::Conflict {
                expected: e,
                actual,
            } => Err(Error::Conflict {
                aggregate,
                expected: expected.unwrap_or(e),
                actual,
            }
            .into()),
            Outcome::Failed { reason } => Err(Error::InvalidRequest { aggregate, reason }.into()),
        }
    }
}

struct Unregister<'a> {
    pending: &'a Pending,
    id: CommandId,
    token: u64,
}

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(waiters) = pending.get_mut(&self.id) {
            waiters.retain(|(token, _)| *token != self.token);
            if waiters.is_empty() {
                pending.remove(&self.id);
            }
        }
    }
}

async fn listen(consumer: StreamConsumer, pending: Pending) {
    loop {
        match consumer.recv().await {
            Ok(message) => {
                let Some(reply) = message
                    .payload()
                    .and_then(|p| serde_json::from_slice::<ReplyRecord>(p).ok())
                else {
                    continue;
                };
                let waiters = pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&reply.command_id)
                    .unwrap_or_default();
                for (_, tx) in waiters {
                    let _ = tx.send(reply.clone());
                }
            }
            Err(e) => tracing::warn!(error = %e, "reply consumer error"),
        }
    }
}

#[async_trait]
impl<A: Aggregate> CommandGateway<A> for CommandBus<A> {
    async fn send(
        &self,
        command: A::Command,
        metadata: Metadata,
    ) -> Result<Committed<A::Event>, CommandError<A::Rejection>> {
        self.send_expecting(command, metadata, None).await
    }
}
