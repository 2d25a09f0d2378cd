//! The command processor: a member of the aggregate type's consumer group that owns the
//! partitions the group assigns it and runs one worker per owned partition.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use annals_core::{
    Aggregate, Clock, Codec, IdGenerator, JsonCodec, SystemClock, Upcasters, UuidV7,
};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;

use super::reactions::Reactions;
use super::runtime::Runtime;
use super::worker::{Worker, WorkerMsg};
use crate::error::KafkaStoreError;
use crate::options::KafkaStoreOptions;
use crate::topics::{TopicKind, ensure_topic};

/// Processes the commands of aggregate type `A` for the partitions this instance owns.
///
/// Ownership follows the consumer group `{app}.{aggregate}.processor`: start more
/// instances and Kafka spreads the partitions; stop one and its partitions move. Each
/// owned partition gets a transactional producer that fences the previous owner, restores
/// the partition's aggregates (snapshot, then the log) and only then processes commands.
///
/// ```no_run
/// # use annals_core::prelude::*;
/// # async fn demo<A: Aggregate>() -> Result<(), annals_kafka_store::KafkaStoreError> {
/// use annals_kafka_store::{CommandProcessor, KafkaStoreOptions};
/// let handle = CommandProcessor::<A>::new(KafkaStoreOptions::new("127.0.0.1:9092"))
///     .start()
///     .await?;
/// // ... serve ...
/// handle.shutdown().await;
/// # Ok(()) }
/// ```
pub struct CommandProcessor<A> {
    options: KafkaStoreOptions,
    codec: Arc<dyn Codec>,
    upcasters: Arc<Upcasters>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
    dedupe_window: usize,
    reactions: Option<Arc<dyn Reactions<A>>>,
    aggregate: PhantomData<fn() -> A>,
}

impl<A: Aggregate> CommandProcessor<A> {
    /// A processor with the JSON codec, the system clock and UUID v7 event ids.
    pub fn new(options: KafkaStoreOptions) -> Self {
        Self {
            options,
            codec: Arc::new(JsonCodec),
            upcasters: Arc::new(Upcasters::new()),
            clock: Arc::new(SystemClock),
            ids: Arc::new(UuidV7),
            dedupe_window: 10_000,
            reactions: None,
            aggregate: PhantomData,
        }
    }

    /// Makes the aggregate drive others: the commands its events imply are sent in the
    /// same transaction, answers come back to it, and it is woken when it asks to be
    /// (see [`Reactions`]; sagas use this).
    #[must_use]
    pub fn with_reactions(mut self, reactions: Arc<dyn Reactions<A>>) -> Self {
        self.reactions = Some(reactions);
        self
    }

    /// Uses another codec.
    #[must_use]
    pub fn with_codec(mut self, codec: Arc<dyn Codec>) -> Self {
        self.codec = codec;
        self
    }

    /// Applies these upcasters when restoring.
    #[must_use]
    pub fn with_upcasters(mut self, upcasters: Arc<Upcasters>) -> Self {
        self.upcasters = upcasters;
        self
    }

    /// Reads time from this clock.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Takes event ids from this generator.
    #[must_use]
    pub fn with_ids(mut self, ids: Arc<dyn IdGenerator>) -> Self {
        self.ids = ids;
        self
    }

    /// How many recent commands per partition are remembered to answer retries with
    /// their first outcome (default 10,000).
    #[must_use]
    pub fn dedupe_window(mut self, commands: usize) -> Self {
        self.dedupe_window = commands.max(1);
        self
    }

    /// Creates the topics, joins the group and starts processing.
    pub async fn start(self) -> Result<ProcessorHandle, KafkaStoreError> {
        let o = &self.options;
        let events_topic = o.events_topic(A::TYPE);
        let commands_topic = o.commands_topic(A::TYPE);
        let replies_topic = o.replies_topic(A::TYPE);
        let snapshots_topic = o.snapshots_topic(A::TYPE);
        let partitions = ensure_topic(o, &events_topic, TopicKind::Events).await?;
        let command_partitions = ensure_topic(o, &commands_topic, TopicKind::Commands).await?;
        ensure_topic(o, &replies_topic, TopicKind::Replies).await?;
        let snapshot_partitions = ensure_topic(o, &snapshots_topic, TopicKind::Snapshots).await?;
        if command_partitions != partitions || snapshot_partitions != partitions {
            return Err(KafkaStoreError::Topic {
                topic: commands_topic,
                reason: format!(
                    "has {command_partitions} partitions and the snapshots {snapshot_partitions}, but the event topic has {partitions}: they must be partitioned alike"
                ),
            });
        }
        let mut targets = std::collections::HashMap::new();
        if let Some(reactions) = &self.reactions {
            for target in reactions.targets() {
                let topic = o.commands_topic(&target);
                let n = ensure_topic(o, &topic, TopicKind::Commands).await?;
                targets.insert(target, (topic, n));
            }
        }
        let replies = o
            .client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .create()
            .map_err(|e| KafkaStoreError::kafka("creating the reply producer", e))?;
        let runtime = Arc::new(Runtime::<A> {
            options: self.options.clone(),
            codec: self.codec,
            upcasters: self.upcasters,
            clock: self.clock,
            ids: self.ids,
            dedupe_window: self.dedupe_window,
            events_topic,
            commands_topic: commands_topic.clone(),
            replies_topic,
            snapshots_topic,
            replies,
            errors: Mutex::new(BTreeMap::new()),
            reactions: self.reactions,
            targets,
            aggregate: PhantomData,
        });
        let live = Arc::new(Mutex::new(BTreeSet::new()));
        let context = ProcessorContext {
            runtime: Arc::clone(&runtime),
            workers: Mutex::new(HashMap::new()),
            live: Arc::clone(&live),
        };
        let consumer: BaseConsumer<ProcessorContext<A>> = self
            .options
            .client_config()
            .set("group.id", self.options.processor_group(A::TYPE))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            // Commands wait for their processor: fetch again soon rather than after
            // librdkafka's default 500 ms when a fetch comes back empty.
            .set("fetch.wait.max.ms", "10")
            .set("auto.offset.reset", "earliest")
            .set(
                "session.timeout.ms",
                self.options.session_timeout.as_millis().to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (self.options.session_timeout.as_millis() / 6)
                    .max(100)
                    .to_string(),
            )
            .create_with_context(context)
            .map_err(|e| KafkaStoreError::kafka("creating the processor's consumer", e))?;
        consumer
            .subscribe(&[&commands_topic])
            .map_err(|e| KafkaStoreError::kafka(format!("subscribing to `{commands_topic}`"), e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(format!("annals-processor-{}", A::TYPE))
            .spawn(move || poll_loop(&consumer, &thread_stop))
            .map_err(|e| KafkaStoreError::Config {
                key: "threads".into(),
                reason: format!("cannot start the processor thread: {e}"),
            })?;
        let errors = Arc::clone(&runtime);
        Ok(ProcessorHandle {
            stop,
            thread: Some(thread),
            partitions,
            live,
            errors: Box::new(move || {
                errors
                    .errors
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
            }),
        })
    }
}

fn poll_loop<A: Aggregate>(consumer: &BaseConsumer<ProcessorContext<A>>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                let partition = u32::try_from(message.partition()).unwrap_or(0);
                let workers = consumer
                    .context()
                    .workers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if let Some(w) = workers.get(&partition) {
                    let _ = w.tx.send(WorkerMsg::Command(message.detach()));
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "processor consumer error"),
            None => {}
        }
    }
    // Leaving the group revokes every partition, which stops the workers first.
    consumer.unsubscribe();
    let _ = consumer.poll(Duration::from_millis(0));
    consumer.context().stop_all();
}

struct WorkerHandle {
    tx: Sender<WorkerMsg>,
    thread: JoinHandle<()>,
}

struct ProcessorContext<A: Aggregate> {
    runtime: Arc<Runtime<A>>,
    workers: Mutex<HashMap<u32, WorkerHandle>>,
    live: Arc<Mutex<BTreeSet<u32>>>,
}

impl<A: Aggregate> ProcessorContext<A> {
    fn stop(&self, partitions: impl IntoIterator<Item = u32>) {
        let stopped: Vec<WorkerHandle> = {
            let mut workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
            partitions
                .into_iter()
                .filter_map(|p| workers.remove(&p))
                .collect()
        };
        for w in &stopped {
            let _ = w.tx.send(WorkerMsg::Stop);
        }
        for w in stopped {
            let _ = w.thread.join();
        }
    }

    fn stop_all(&self) {
        let all: Vec<u32> = self
            .workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .copied()
            .collect();
        self.stop(all);
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

impl<A: Aggregate> ClientContext for ProcessorContext<A> {}

impl<A: Aggregate> ConsumerContext for ProcessorContext<A> {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let partitions: Vec<u32> = tpl
                .elements()
                .iter()
                .filter_map(|e| u32::try_from(e.partition()).ok())
                .collect();
            tracing::info!(aggregate = A::TYPE, ?partitions, "partitions revoked");
            // Stop writing before the partitions go to another owner.
            self.stop(partitions.iter().copied());
            let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
            for p in partitions {
                live.remove(&p);
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(tpl) = rebalance else {
            return;
        };
        let mut workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        for element in tpl.elements() {
            let Ok(partition) = u32::try_from(element.partition()) else {
                continue;
            };
            if workers.contains_key(&partition) {
                continue;
            }
            let Some(group) = consumer.group_metadata() else {
                tracing::error!(partition, "assigned a partition without group metadata");
                continue;
            };
            let (tx, rx) = channel();
            let worker = Worker {
                runtime: Arc::clone(&self.runtime),
                partition,
                group,
                live_partitions: Arc::clone(&self.live),
            };
            match std::thread::Builder::new()
                .name(format!("annals-{}-{partition}", A::TYPE))
                .spawn(move || worker.run(rx))
            {
                Ok(thread) => {
                    workers.insert(partition, WorkerHandle { tx, thread });
                }
                Err(e) => tracing::error!(partition, error = %e, "cannot start a worker"),
            }
        }
        tracing::info!(aggregate = A::TYPE, partitions = ?workers.keys().collect::<Vec<_>>(), "partitions assigned");
    }
}

/// A running processor.
pub struct ProcessorHandle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    partitions: u32,
    live: Arc<Mutex<BTreeSet<u32>>>,
    errors: Box<dyn Fn() -> BTreeMap<u32, String> + Send + Sync>,
}

impl std::fmt::Debug for ProcessorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessorHandle")
            .field("live", &self.live_partitions())
            .finish_non_exhaustive()
    }
}

impl ProcessorHandle {
    /// The partitions this instance owns and has restored: it processes their commands.
    pub fn live_partitions(&self) -> BTreeSet<u32> {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many partitions the aggregate type's topics have.
    pub fn partition_count(&self) -> u32 {
        self.partitions
    }

    /// The last error per partition that kept a worker from going live.
    pub fn partition_errors(&self) -> BTreeMap<u32, String> {
        (self.errors)()
    }

    /// Waits until `check(live partitions)` holds, polling every 20 ms up to `timeout`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        check: impl Fn(&BTreeSet<u32>) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if check(&self.live_partitions()) {
                return true;
            }
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Leaves the group (its partitions move to the other instances) and waits for the
    /// workers to stop.
    pub async fn shutdown(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for ProcessorHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
