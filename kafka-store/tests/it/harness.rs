//! Tooling of the behaviour and fault tests: options with fast rebalances, polling with
//! deadlines, raw Kafka clients (to do what the framework never does), reading and
//! checking a whole counter log, and private broker instances for tests that stop or
//! kill a broker.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Output};
use std::time::{Duration, Instant};

use annals_core::repository::{decode_event, encode_event};
use annals_core::{
    Actor, AggregateId, AggregateRef, CommandId, Envelope, Error, EventId, EventStore, JsonCodec,
    Metadata, Offset, Partition, RawEnvelope, UncommittedEvent, Upcasters, Version,
};
use annals_kafka_store::{KafkaEventStore, KafkaStoreOptions};
use futures::TryStreamExt;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, FutureProducer, FutureRecord, Producer};

use crate::model::CounterEvent;
use crate::support::isolated_options;

/// Session timeout of every processor in these tests: Tansu rebalances take about half
/// of it (docs/kafka-brokers.md, quirk 3).
pub(crate) const SESSION: Duration = Duration::from_secs(2);

/// Isolated options (own topics, own app id) with fast rebalances.
pub(crate) fn fault_options(brokers: &str) -> KafkaStoreOptions {
    tuned(isolated_options(brokers))
}

/// Fast rebalances and short fetch waits. Each command crosses two consumers (command,
/// reply), so shorter fetch waits keep the suite fast; neither changes a guarantee.
pub(crate) fn tuned(options: KafkaStoreOptions) -> KafkaStoreOptions {
    options
        .session_timeout(SESSION)
        .set("fetch.wait.max.ms", "20")
}

/// Metadata of a new command.
pub(crate) fn meta() -> Metadata {
    Metadata::new(
        Actor::new("user:fault-test"),
        CommandId(uuid::Uuid::now_v7()),
    )
}

/// Polls `condition` every 50 ms until it holds; false once `timeout` has passed.
pub(crate) async fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A small deterministic pseudo-random sequence (xorshift64*), seeded per run and
/// printed, so a failing run can be told apart from a passing one.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn from_clock(label: &str) -> Self {
        let seed = u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock after 1970")
                .as_nanos()
                % u128::from(u64::MAX),
        )
        .expect("fits")
            | 1;
        println!("{label}: random seed {seed}");
        Self(seed)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// Every event of every partition of `aggregate_type`, read and verified by the store
/// (sequence and hash chain of each aggregate from its first event).
pub(crate) async fn read_log(
    store: &KafkaEventStore,
    aggregate_type: &str,
) -> Result<Vec<RawEnvelope>, Error> {
    let partitions = store.partition_count(aggregate_type).await?;
    let mut all = Vec::new();
    for p in 0..partitions {
        let mut events: Vec<RawEnvelope> = store
            .read_partition(aggregate_type, Partition(p), Offset(0))
            .try_collect()
            .await?;
        all.append(&mut events);
    }
    Ok(all)
}

/// One counter as its log tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CounterHistory {
    /// Its last sequence.
    pub(crate) version: Version,
    /// The total of its last event.
    pub(crate) total: u64,
    /// The sum of every event's `by`.
    pub(crate) sum: u64,
}

/// A counter log, checked.
pub(crate) struct CounterLog {
    /// The event each command produced.
    pub(crate) by_command: HashMap<CommandId, Envelope<CounterEvent>>,
    /// Each counter's history.
    pub(crate) counters: BTreeMap<AggregateId, CounterHistory>,
}

/// Checks what every counter log must satisfy whatever happened to the processors, and
/// panics naming the offending event otherwise: each aggregate's sequences are 1, 2, 3 ...
/// in log order; each command id appears in exactly one event (a counter command makes
/// at most one); every event's total is the previous total plus its `by` (each decision
/// was taken on the state the log had before it).
pub(crate) fn check_counter_log(events: Vec<RawEnvelope>) -> CounterLog {
    let mut by_command: HashMap<CommandId, Envelope<CounterEvent>> = HashMap::new();
    let mut counters: BTreeMap<AggregateId, CounterHistory> = BTreeMap::new();
    for raw in events {
        let event = decode_event::<CounterEvent>(raw, &JsonCodec, &Upcasters::new())
            .expect("every event decodes");
        let history = counters
            .entry(event.aggregate_id.clone())
            .or_insert(CounterHistory {
                version: Version(0),
                total: 0,
                sum: 0,
            });
        assert_eq!(
            event.sequence,
            history.version.next(),
            "sequence gap or duplicate at {:?}",
            event.position
        );
        let CounterEvent::Added { by, total } = event.payload;
        assert_eq!(
            total,
            history.total + u64::from(by),
            "{} decided on a state the log does not have (at {:?})",
            event.aggregate_id,
            event.position
        );
        *history = CounterHistory {
            version: event.sequence,
            total,
            sum: history.sum + u64::from(by),
        };
        if let Some(first) = by_command.insert(event.metadata.command_id, event.clone()) {
            panic!(
                "command {} took effect twice: at {:?} and at {:?}",
                event.metadata.command_id, first.position, event.position
            );
        }
    }
    CounterLog {
        by_command,
        counters,
    }
}

/// A client configuration for raw clients (no framework in between).
pub(crate) fn raw_config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c
}

/// Creates a topic with exactly these settings, as an operator (or another tool) would.
pub(crate) async fn create_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
    config: &[(&str, &str)],
) {
    let admin: AdminClient<DefaultClientContext> =
        raw_config(brokers).create().expect("admin client");
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (k, v) in config {
        new = new.set(k, v);
    }
    let results = admin
        .create_topics([&new], &AdminOptions::new())
        .await
        .expect("create_topics answers");
    for r in results {
        r.unwrap_or_else(|(t, code)| panic!("creating {t}: {code}"));
    }
}

/// Writes one record with a plain (non-transactional) producer and returns its offset.
pub(crate) async fn produce_raw(
    brokers: &str,
    topic: &str,
    partition: u32,
    key: &[u8],
    payload: &[u8],
    headers: Option<OwnedHeaders>,
) -> Offset {
    let producer: FutureProducer = raw_config(brokers)
        .set("acks", "all")
        .set("message.timeout.ms", "10000")
        .create()
        .expect("raw producer");
    let mut record = FutureRecord::to(topic)
        .partition(i32::try_from(partition).expect("fits"))
        .key(key)
        .payload(payload);
    if let Some(h) = headers {
        record = record.headers(h);
    }
    let delivery = producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .expect("raw record delivered");
    Offset(u64::try_from(delivery.offset).expect("offset"))
}

/// Whether the broker hides records of aborted transactions from `read_committed`
/// consumers, as Apache Kafka does (Tansu does not: docs/kafka-brokers.md, quirk 1).
/// Probed on a topic of its own with a raw transactional producer. Blocking.
pub(crate) fn broker_hides_aborted_records(brokers: &str) -> bool {
    let unique = uuid::Uuid::now_v7().simple().to_string();
    let topic = format!("probe-aborted-{unique}");
    let producer: BaseProducer = raw_config(brokers)
        .set("transactional.id", format!("probe-aborted-{unique}"))
        .set("enable.idempotence", "true")
        .create()
        .expect("transactional producer");
    let t = Duration::from_secs(20);
    producer.init_transactions(t).expect("init_transactions");
    producer.begin_transaction().expect("begin");
    producer
        .send(
            BaseRecord::to(&topic)
                .partition(0)
                .key("k")
                .payload("aborted"),
        )
        .map_err(|(e, _)| e)
        .expect("send");
    producer.flush(t).expect("flush");
    producer.abort_transaction(t).expect("abort");
    producer.begin_transaction().expect("begin");
    producer
        .send(
            BaseRecord::to(&topic)
                .partition(0)
                .key("k")
                .payload("committed"),
        )
        .map_err(|(e, _)| e)
        .expect("send");
    producer.commit_transaction(t).expect("commit");

    let payloads = read_raw(brokers, &topic, 0);
    assert!(
        payloads.iter().any(|p| p == b"committed"),
        "the probe's committed record must be readable: {payloads:?}"
    );
    let hides = !payloads.iter().any(|p| p == b"aborted");
    println!(
        "\n*** BROKER PROBE: read_committed consumers {} records of aborted transactions ***\n",
        if hides {
            "DO NOT SEE (Apache Kafka semantics)"
        } else {
            "SEE (Tansu quirk 1)"
        }
    );
    hides
}

/// The payloads of one partition as a `read_committed` consumer sees them. Blocking.
pub(crate) fn read_raw(brokers: &str, topic: &str, partition: i32) -> Vec<Vec<u8>> {
    read_raw_records(brokers, topic, partition)
        .into_iter()
        .map(|(_, _, payload)| payload)
        .collect()
}

/// `(offset, key, payload)` of every record of one partition as a `read_committed`
/// consumer sees them. Blocking.
pub(crate) fn read_raw_records(
    brokers: &str,
    topic: &str,
    partition: i32,
) -> Vec<(i64, Vec<u8>, Vec<u8>)> {
    let consumer: BaseConsumer = raw_config(brokers)
        .set("group.id", format!("raw-{}", uuid::Uuid::now_v7()))
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, rdkafka::Offset::Beginning)
        .expect("assignment");
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut records = Vec::new();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => records.push((
                m.offset(),
                m.key().unwrap_or_default().to_vec(),
                m.payload().unwrap_or_default().to_vec(),
            )),
            Some(Err(KafkaError::PartitionEOF(_))) => return records,
            Some(Err(e)) => panic!("reading {topic}/{partition}: {e}"),
            None => {}
        }
    }
    panic!("no end of {topic}/{partition} within 30 s");
}

/// A Tansu broker of the test's own, on a free port, in a temporary home: for tests that
/// stop or kill a broker (never the shared one). Killed when dropped.
pub(crate) struct OwnBroker {
    home: PathBuf,
    port: u16,
}

impl OwnBroker {
    /// Starts it with `scripts/kafka-dev.sh` (which waits for a Metadata round trip).
    /// The binary comes from the usual broker home when it is installed there (the
    /// script checks its digest again), otherwise the script downloads it.
    pub(crate) fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let home = std::env::temp_dir().join(format!("annals-broker-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(home.join("bin")).expect("broker home");
        seed_from_cache(&home);
        let broker = Self { home, port };
        let out = broker.script("start");
        assert!(
            out.status.success(),
            "own broker did not start on port {port}:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        broker
    }

    /// `host:port` of this broker.
    pub(crate) fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL: a crash. Its memory storage is lost.
    pub(crate) fn kill9(&self) {
        let out = self.script("kill9");
        assert!(
            out.status.success(),
            "kill9 of the own broker failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn script(&self, command: &str) -> Output {
        Process::new("bash")
            .arg(repo_root().join("scripts/kafka-dev.sh"))
            .arg(command)
            .env("ANNALS_KAFKA_PORT", self.port.to_string())
            .env("ANNALS_BROKER_HOME", &self.home)
            .env_remove("ANNALS_TANSU_BIN")
            .output()
            .expect("bash runs scripts/kafka-dev.sh")
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.script("kill9");
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate lives in the workspace")
        .to_path_buf()
}

/// Copies the installed broker (or its wheel) from the usual broker home, so that a
/// private home needs no download. The script verifies the digest either way.
fn seed_from_cache(home: &Path) {
    let cache = std::env::var_os("ANNALS_BROKER_HOME")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/annals/broker"))
        });
    let Some(cache) = cache else { return };
    let binary = cache.join("bin/tansu");
    if binary.is_file() {
        let target = home.join("bin/tansu");
        if std::fs::hard_link(&binary, &target).is_err() {
            let _ = std::fs::copy(&binary, &target);
        }
        return;
    }
    if let Ok(entries) = std::fs::read_dir(&cache) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().ends_with(".whl") {
                let _ = std::fs::copy(entry.path(), home.join(entry.file_name()));
            }
        }
    }
}

/// A command the processor acknowledged.
#[derive(Debug, Clone)]
pub(crate) struct Ack {
    /// The command.
    pub(crate) command_id: annals_core::CommandId,
    /// Its counter.
    pub(crate) counter: AggregateId,
    /// What it added.
    pub(crate) by: u32,
    /// The event it stored.
    pub(crate) event_id: annals_core::EventId,
    /// The counter's version after it.
    pub(crate) version: Version,
    /// When the acknowledgement came.
    pub(crate) at: Instant,
    /// How often it was sent.
    pub(crate) attempts: u32,
}

/// Sends `add(counter, by)` until the processor acknowledges it, resending it with the
/// SAME metadata (command id) after every timeout or backend error, as a caller must.
/// `Err` with the command id once `give_up` has passed without an acknowledgement.
pub(crate) async fn send_until_acked(
    bus: &annals_kafka_store::CommandBus<crate::model::Counter>,
    counter: &str,
    by: u32,
    give_up: Instant,
) -> Result<Ack, annals_core::CommandId> {
    use annals_core::CommandError;
    let metadata = meta();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let command = crate::model::CounterCommand::Add {
            id: counter.to_owned(),
            by,
        };
        match bus.send_expecting(command, metadata.clone(), None).await {
            Ok(done) => {
                assert_eq!(done.events.len(), 1, "an add stores one event");
                return Ok(Ack {
                    command_id: metadata.command_id,
                    counter: AggregateId::new(counter),
                    by,
                    event_id: done.events[0].event_id,
                    version: done.version,
                    at: Instant::now(),
                    attempts,
                });
            }
            Err(CommandError::Store(Error::Timeout { .. } | Error::Backend { .. }))
                if Instant::now() < give_up => {}
            Err(CommandError::Store(Error::Timeout { .. } | Error::Backend { .. })) => {
                return Err(metadata.command_id);
            }
            Err(other) => panic!("add {by} to {counter}: unexpected outcome {other:?}"),
        }
    }
}

/// A counter event ready to append through the `EventStore` port.
pub(crate) fn added(counter: &str, by: u32, total: u64, metadata: &Metadata) -> UncommittedEvent {
    encode_event(
        &CounterEvent::Added { by, total },
        &AggregateRef::new("counter", AggregateId::new(counter)),
        &JsonCodec,
        EventId(uuid::Uuid::now_v7()),
        chrono::Utc::now(),
        metadata,
    )
    .expect("a counter event encodes")
}

/// Every record of one partition decoded as an event but NOT verified (no sequence or
/// hash checks), as a `read_committed` consumer sees them: to look for records that a
/// verified read would refuse. Blocking.
pub(crate) fn read_unverified(brokers: &str, topic: &str, partition: u32) -> Vec<RawEnvelope> {
    let consumer: BaseConsumer = raw_config(brokers)
        .set("group.id", format!("raw-{}", uuid::Uuid::now_v7()))
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(
        topic,
        i32::try_from(partition).expect("fits"),
        rdkafka::Offset::Beginning,
    )
    .expect("assignment");
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut events = Vec::new();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => events.push(annals_kafka_store::wire::decode(&m).expect("an event")),
            Some(Err(KafkaError::PartitionEOF(_))) => return events,
            Some(Err(e)) => panic!("reading {topic}/{partition}: {e}"),
            None => {}
        }
    }
    panic!("no end of {topic}/{partition} within 30 s");
}

/// [`broker_hides_aborted_records`], probed once per test run.
pub(crate) async fn hides_aborted(brokers: &str) -> bool {
    static PROBED: tokio::sync::OnceCell<bool> = tokio::sync::OnceCell::const_new();
    let brokers = brokers.to_owned();
    *PROBED
        .get_or_init(|| async move {
            tokio::task::spawn_blocking(move || broker_hides_aborted_records(&brokers))
                .await
                .expect("the probe runs")
        })
        .await
}

/// How many threads of the framework (named `annals-…`) have panicked in this test
/// binary so far. Counting starts with the first call; a panic hook records them and
/// hands on to the previous hook.
pub(crate) fn annals_thread_panics() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static PANICS: AtomicUsize = AtomicUsize::new(0);
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("annals-"))
            {
                PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
    PANICS.load(Ordering::SeqCst)
}
