//! Consuming event topics as a consumer-group member that decides itself where each
//! assigned partition starts: the building block of projectors, whose offsets live in
//! their own database.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use annals_core::{Error, Offset, RawEnvelope};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset as KOffset, TopicPartitionList};
use tokio::sync::mpsc;

use crate::error::KafkaStoreError;
use crate::options::KafkaStoreOptions;
use crate::reader::partition_i32;
use crate::wire;

/// One partition of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
}

/// Told about partitions as the group moves them. Called on the subscription's thread;
/// it may block (to read offsets from a database, say).
pub trait AssignmentListener: Send + Sync + 'static {
    /// The group assigned these partitions to this member; return where to start reading
    /// each (the offset of the next record to read), in the same order.
    fn assigned(&self, partitions: &[TopicPartition]) -> Result<Vec<Offset>, Error>;

    /// These partitions were taken away; records of them may still be in flight.
    fn revoked(&self, partitions: &[TopicPartition]);
}

/// What a subscription delivers.
#[derive(Debug)]
pub enum Delivery {
    /// Events, in offset order per partition.
    Events(Vec<RawEnvelope>),
    /// The member has read everything the partition held when it reached it.
    CaughtUp(TopicPartition),
    /// A record could not be read (it is not an annals event). The subscription goes on;
    /// the receiver decides whether to halt, since skipping it silently is never right.
    Malformed(Error),
    /// The subscription cannot continue (for example the listener failed).
    Failed(Error),
}

/// A running group subscription.
pub struct Subscription {
    rx: mpsc::Receiver<Delivery>,
    seek_tx: std::sync::mpsc::Sender<(TopicPartition, Offset)>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

impl Subscription {
    /// Joins `group` on `topic`. Partitions start where `listener` says; deliveries are
    /// batched up to `max_batch` events. One topic per subscription, so that the
    /// end-of-partition signal (which librdkafka reports by partition number only) is
    /// unambiguous: a reader of several topics runs one subscription each.
    pub fn start(
        options: &KafkaStoreOptions,
        group: &str,
        topic: &str,
        listener: Arc<dyn AssignmentListener>,
        max_batch: usize,
    ) -> Result<Self, KafkaStoreError> {
        let (tx, rx) = mpsc::channel(16);
        let context = SubscriptionContext {
            listener,
            tx: tx.clone(),
        };
        let consumer: BaseConsumer<SubscriptionContext> = options
            .client_config()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "range,roundrobin")
            .set(
                "session.timeout.ms",
                options.session_timeout.as_millis().to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (options.session_timeout.as_millis() / 6)
                    .max(100)
                    .to_string(),
            )
            .create_with_context(context)
            .map_err(|e| KafkaStoreError::kafka("creating a subscription consumer", e))?;
        consumer
            .subscribe(&[topic])
            .map_err(|e| KafkaStoreError::kafka(format!("subscribing to `{topic}`"), e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (seek_tx, seek_rx) = std::sync::mpsc::channel();
        let thread_stop = Arc::clone(&stop);
        let max_batch = max_batch.max(1);
        let timeout = options.operation_timeout;
        let topic = topic.to_owned();
        let thread = std::thread::Builder::new()
            .name(format!("annals-subscription-{group}"))
            .spawn(move || {
                poll_loop(
                    &consumer,
                    &topic,
                    &tx,
                    &seek_rx,
                    &thread_stop,
                    max_batch,
                    timeout,
                );
            })
            .map_err(|e| KafkaStoreError::Config {
                key: "threads".into(),
                reason: format!("cannot start the subscription thread: {e}"),
            })?;
        Ok(Self {
            rx,
            seek_tx,
            stop,
            thread: Some(thread),
        })
    }

    /// The next delivery; `None` once the subscription stopped.
    pub async fn next(&mut self) -> Option<Delivery> {
        self.rx.recv().await
    }

    /// Moves an assigned partition's position (after its stored offset changed under
    /// the reader, for a replay). Records already delivered are not taken back.
    pub fn seek(&self, partition: TopicPartition, offset: Offset) {
        let _ = self.seek_tx.send((partition, offset));
    }

    /// Leaves the group and waits for the thread to end.
    pub async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.rx.close();
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn poll_loop(
    consumer: &BaseConsumer<SubscriptionContext>,
    topic: &str,
    tx: &mpsc::Sender<Delivery>,
    seeks: &std::sync::mpsc::Receiver<(TopicPartition, Offset)>,
    stop: &AtomicBool,
    max_batch: usize,
    timeout: Duration,
) {
    let mut batch: Vec<RawEnvelope> = Vec::new();
    let send = |d: Delivery| tx.blocking_send(d).is_ok();
    while !stop.load(Ordering::Relaxed) {
        while let Ok((tp, offset)) = seeks.try_recv() {
            let to = KOffset::Offset(i64::try_from(offset.0).unwrap_or(i64::MAX));
            if let Err(e) = consumer.seek(&tp.topic, partition_i32(tp.partition), to, timeout) {
                tracing::warn!(topic = tp.topic, partition = tp.partition, error = %e, "seek failed");
            }
        }
        match consumer.poll(Duration::from_millis(50)) {
            Some(Ok(message)) => match wire::decode(&message) {
                Ok(event) => {
                    batch.push(event);
                    if batch.len() >= max_batch
                        && !send(Delivery::Events(std::mem::take(&mut batch)))
                    {
                        break;
                    }
                }
                Err(e) => {
                    if (!batch.is_empty() && !send(Delivery::Events(std::mem::take(&mut batch))))
                        || !send(Delivery::Malformed(e))
                    {
                        break;
                    }
                }
            },
            Some(Err(KafkaError::PartitionEOF(p))) => {
                if !batch.is_empty() && !send(Delivery::Events(std::mem::take(&mut batch))) {
                    break;
                }
                if !send(Delivery::CaughtUp(TopicPartition {
                    topic: topic.to_owned(),
                    partition: u32::try_from(p).unwrap_or(0),
                })) {
                    break;
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "subscription consumer error"),
            None => {
                if !batch.is_empty() && !send(Delivery::Events(std::mem::take(&mut batch))) {
                    break;
                }
            }
        }
    }
    consumer.unsubscribe();
}

struct SubscriptionContext {
    listener: Arc<dyn AssignmentListener>,
    tx: mpsc::Sender<Delivery>,
}

impl ClientContext for SubscriptionContext {}

impl ConsumerContext for SubscriptionContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let partitions: Vec<TopicPartition> = tpl
            .elements()
            .iter()
            .map(|e| TopicPartition {
                topic: e.topic().to_owned(),
                partition: u32::try_from(e.partition()).unwrap_or(0),
            })
            .collect();
        match RDKafkaErrorCode::from(err) {
            RDKafkaErrorCode::AssignPartitions => {
                let result = self.listener.assigned(&partitions).and_then(|offsets| {
                    let mut assignment = TopicPartitionList::new();
                    for (tp, offset) in partitions.iter().zip(offsets) {
                        let at = KOffset::Offset(i64::try_from(offset.0).unwrap_or(i64::MAX));
                        assignment
                            .add_partition_offset(&tp.topic, partition_i32(tp.partition), at)
                            .map_err(|e| Error::backend("building an assignment", e))?;
                    }
                    consumer
                        .assign(&assignment)
                        .map_err(|e| Error::backend("assigning partitions", e))
                });
                if let Err(e) = result {
                    let _ = consumer.assign(&TopicPartitionList::new());
                    let _ = self.tx.blocking_send(Delivery::Failed(e));
                }
            }
            RDKafkaErrorCode::RevokePartitions => {
                self.listener.revoked(&partitions);
                let _ = consumer.unassign();
            }
            other => tracing::warn!(error = %other, "rebalance error"),
        }
    }
}

/// The offsets of the first record at or after `time` in each partition of `topic`
/// (the end of the partition when there is none).
pub fn offsets_for_time(
    options: &KafkaStoreOptions,
    topic: &str,
    partitions: u32,
    time: chrono::DateTime<chrono::Utc>,
) -> Result<HashMap<u32, Offset>, KafkaStoreError> {
    let consumer: BaseConsumer = options
        .reader_config()
        .create()
        .map_err(|e| KafkaStoreError::kafka("creating a client", e))?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(
            topic,
            partition_i32(p),
            KOffset::Offset(time.timestamp_millis()),
        )
        .map_err(|e| KafkaStoreError::kafka("building a time query", e))?;
    }
    let found = consumer
        .offsets_for_times(tpl, options.operation_timeout)
        .map_err(|e| {
            KafkaStoreError::kafka(format!("looking up offsets of `{topic}` by time"), e)
        })?;
    let mut out = HashMap::new();
    for e in found.elements() {
        let p = u32::try_from(e.partition()).unwrap_or(0);
        let offset = match e.offset() {
            KOffset::Offset(o) => Offset(u64::try_from(o).unwrap_or(0)),
            other => {
                return Err(KafkaStoreError::Topic {
                    topic: topic.to_owned(),
                    reason: format!("partition {p} has no offset for {time}: {other:?}"),
                });
            }
        };
        out.insert(p, offset);
    }
    Ok(out)
}
