//! `KafkaEventStore`: the `EventStore` port on Kafka topics.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Mutex;

use annals_core::hash::ChainVerifier;
use annals_core::partition::partition_for;
use annals_core::{
    AggregateId, AggregateRef, Error, EventStore, EventStream, ExpectedVersion, Offset, Partition,
    RawEnvelope, UncommittedEvent, Version,
};
use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio::sync::{OnceCell, mpsc, oneshot};

use crate::error::KafkaStoreError;
use crate::options::KafkaStoreOptions;
use crate::reader::read_to_end;
use crate::topics::{TopicKind, ensure_topic};
use crate::wire;
use crate::writer::{AppendRequest, WriterHandle};

/// Kafka topics as an event store: one topic per aggregate type, keyed by aggregate id.
///
/// Appends go through this process's single writer of the aggregate's partition, which
/// holds the partition's transactional id (fencing any other process that held it) and
/// checks expected versions against the heads it restored from the log. Reads consume the
/// topic directly (`read_committed`) and verify sequences and hash chains.
///
/// For many processes sharing partitions without fencing each other back and forth, send
/// commands through the command bus (`CommandProcessor`), whose partition ownership
/// follows the consumer group.
pub struct KafkaEventStore {
    options: KafkaStoreOptions,
    topics: Mutex<HashMap<String, std::sync::Arc<OnceCell<u32>>>>,
    writers: Mutex<HashMap<(String, u32), WriterHandle>>,
}

impl std::fmt::Debug for KafkaEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaEventStore")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl KafkaEventStore {
    /// Connects: checks that the brokers answer a metadata request.
    pub async fn connect(options: KafkaStoreOptions) -> Result<Self, KafkaStoreError> {
        let probe = options.clone();
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = probe
                .reader_config()
                .create()
                .map_err(|e| KafkaStoreError::kafka("creating a client", e))?;
            consumer
                .fetch_metadata(None, probe.operation_timeout)
                .map(|_| ())
                .map_err(|e| {
                    KafkaStoreError::kafka(format!("brokers `{}` do not answer", probe.brokers), e)
                })
        })
        .await
        .map_err(|e| KafkaStoreError::Config {
            key: "runtime".into(),
            reason: e.to_string(),
        })??;
        Ok(Self {
            options,
            topics: Mutex::new(HashMap::new()),
            writers: Mutex::new(HashMap::new()),
        })
    }

    /// The options in use.
    pub fn options(&self) -> &KafkaStoreOptions {
        &self.options
    }

    /// Creates and verifies the event topic of `aggregate_type` (once per process) and
    /// returns its partition count.
    pub async fn ensure_aggregate(&self, aggregate_type: &str) -> Result<u32, KafkaStoreError> {
        let cell = {
            let mut topics = self
                .topics
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            topics.entry(aggregate_type.to_owned()).or_default().clone()
        };
        let topic = self.options.events_topic(aggregate_type);
        cell.get_or_try_init(|| ensure_topic(&self.options, &topic, TopicKind::Events))
            .await
            .copied()
    }

    fn submit(&self, partition: u32, aggregate_type: &str, request: AppendRequest) {
        let topic = self.options.events_topic(aggregate_type);
        let mut writers = self
            .writers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (aggregate_type.to_owned(), partition);
        let mut request = request;
        // At most two tries: a writer whose thread ended is replaced once.
        for _ in 0..2 {
            let handle = match writers.get(&key) {
                Some(h) if h.is_alive() => h,
                _ => match WriterHandle::spawn(
                    self.options.clone(),
                    aggregate_type.to_owned(),
                    topic.clone(),
                    partition,
                ) {
                    Ok(h) => {
                        writers.insert(key.clone(), h);
                        &writers[&key]
                    }
                    Err(e) => {
                        let _ = request.reply.send(Err(e));
                        return;
                    }
                },
            };
            match handle.submit(request) {
                Ok(()) => return,
                Err(back) => {
                    writers.remove(&key);
                    request = back;
                }
            }
        }
        let _ = request
            .reply
            .send(Err(Error::NotOwner { topic, partition }));
    }

    fn spawn_read(
        &self,
        topic: String,
        partition: u32,
        from: Offset,
        mut filter: impl FnMut(RawEnvelope) -> Option<Result<RawEnvelope, Error>> + Send + 'static,
    ) -> mpsc::Receiver<Result<RawEnvelope, Error>> {
        let (tx, rx) = mpsc::channel(1024);
        let options = self.options.clone();
        tokio::task::spawn_blocking(move || {
            let result = read_to_end(&options, &topic, partition, from, |message| {
                let item = match wire::decode(message).map(&mut filter) {
                    Ok(None) => return Ok(ControlFlow::Continue(())),
                    Ok(Some(item)) => item,
                    Err(e) => Err(e),
                };
                let failed = item.is_err();
                // Stop at the first error, or when the reader hung up.
                if tx.blocking_send(item).is_err() || failed {
                    return Ok(ControlFlow::Break(()));
                }
                Ok(ControlFlow::Continue(()))
            });
            if let Err(e) = result {
                let _ = tx.blocking_send(Err(e));
            }
        });
        rx
    }
}

fn receiver_stream<'a>(rx: mpsc::Receiver<Result<RawEnvelope, Error>>) -> EventStream<'a> {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .boxed()
}

fn error_stream<'a>(e: Error) -> EventStream<'a> {
    futures::stream::once(async move { Err(e) }).boxed()
}

#[async_trait]
impl EventStore for KafkaEventStore {
    async fn append(
        &self,
        aggregate_type: &str,
        aggregate_id: &AggregateId,
        expected: ExpectedVersion,
        events: Vec<UncommittedEvent>,
    ) -> Result<Vec<RawEnvelope>, Error> {
        let aggregate = AggregateRef::new(aggregate_type, aggregate_id.clone());
        let invalid = |reason: String| Error::InvalidRequest {
            aggregate: aggregate.clone(),
            reason,
        };
        AggregateRef::validate_type(aggregate_type).map_err(&invalid)?;
        if let Err(reason) = aggregate_id.validate() {
            return Err(invalid(reason.to_owned()));
        }
        if events.is_empty() {
            return Err(invalid("append of no events".to_owned()));
        }
        if let Some(big) = events
            .iter()
            .find(|e| e.payload.bytes.len() > self.options.max_payload_bytes)
        {
            return Err(invalid(format!(
                "payload of `{}` is {} bytes, more than the limit of {}",
                big.event_type,
                big.payload.bytes.len(),
                self.options.max_payload_bytes
            )));
        }
        let partitions = self.ensure_aggregate(aggregate_type).await?;
        let partition = partition_for(aggregate_id.as_bytes(), partitions);
        let (reply, outcome) = oneshot::channel();
        self.submit(
            partition,
            aggregate_type,
            AppendRequest {
                aggregate,
                expected,
                events,
                reply,
            },
        );
        outcome
            .await
            .map_err(|_| Error::backend("appending", "the writer stopped without answering"))?
    }

    fn read_aggregate<'a>(
        &'a self,
        aggregate_type: &'a str,
        aggregate_id: &'a AggregateId,
        from: Version,
    ) -> EventStream<'a> {
        let id = aggregate_id.clone();
        let topic = self.options.events_topic(aggregate_type);
        async move {
            let partitions = match self.ensure_aggregate(aggregate_type).await {
                Ok(p) => p,
                Err(e) => return error_stream(e.into()),
            };
            let partition = partition_for(id.as_bytes(), partitions);
            let mut verifier = ChainVerifier::from_start();
            let rx = self.spawn_read(topic, partition, Offset(0), move |event| {
                if event.aggregate_id != id {
                    return None;
                }
                match verifier.verify(&event) {
                    Err(e) => Some(Err(e)),
                    Ok(()) if event.sequence >= from => Some(Ok(event)),
                    Ok(()) => None,
                }
            });
            receiver_stream(rx)
        }
        .flatten_stream()
        .boxed()
    }

    fn read_partition<'a>(
        &'a self,
        aggregate_type: &'a str,
        partition: Partition,
        from: Offset,
    ) -> EventStream<'a> {
        let topic = self.options.events_topic(aggregate_type);
        async move {
            if let Err(e) = self.ensure_aggregate(aggregate_type).await {
                return error_stream(e.into());
            }
            let mut verifiers: HashMap<AggregateId, ChainVerifier> = HashMap::new();
            let rx = self.spawn_read(topic, partition.0, from, move |event| {
                let verifier = verifiers
                    .entry(event.aggregate_id.clone())
                    .or_insert_with(|| {
                        if from == Offset(0) {
                            ChainVerifier::from_start()
                        } else {
                            ChainVerifier::anchored_at_first_seen()
                        }
                    });
                Some(verifier.verify(&event).map(|()| event))
            });
            receiver_stream(rx)
        }
        .flatten_stream()
        .boxed()
    }

    async fn partition_count(&self, aggregate_type: &str) -> Result<u32, Error> {
        Ok(self.ensure_aggregate(aggregate_type).await?)
    }

    fn topic_for(&self, aggregate_type: &str) -> String {
        self.options.events_topic(aggregate_type)
    }
}
