//! Command-path benchmark: annals' `CommandProcessor` + `CommandBus` next to a raw
//! rdkafka consume → transact → reply loop that moves the same records the same way, in
//! the same run, so the report is a ratio that survives a noisy, shared machine.
//!
//! ```text
//! KAFKA_BROKERS=127.0.0.1:19092 cargo bench -p annals-kafka-store --bench command_path
//! KAFKA_BROKERS=... cargo bench -p annals-kafka-store --bench command_path -- \
//!     --levels 1,16,256 --commands 100,800,6000 --rounds 3 --raw-extras 1
//! ```
//!
//! `--help` (or `-- --help` through cargo) lists every option; each one can also be given
//! as an environment variable (`--raw-extras` = `BENCH_RAW_EXTRAS=1`). `docs/benchmarks.md`
//! explains what is measured and records results.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use annals_core::hash::EventHash;
use annals_core::repository::{decode_event, encode_event};
use annals_core::{
    Actor, Aggregate, AggregateId, AggregateRef, CommandContext, CommandGateway, CommandId,
    EventId, JsonCodec, Metadata, Offset, Partition, Position, RawEnvelope, Upcasters, Version,
    partition_for,
};
use annals_kafka_store::command::protocol::{
    CommandRecord, Outcome, PROTOCOL_VERSION, ReplyRecord, SnapshotRecord,
};
use annals_kafka_store::topics::{TopicKind, ensure_topic};
use annals_kafka_store::{CommandBus, CommandProcessor, KafkaStoreOptions, ProcessorHandle, wire};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Offset as KOffset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

// ---------------------------------------------------------------------------------------
// The aggregate under test: an account that takes deposits.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, annals_core::DomainEvent)]
enum AccountEvent {
    #[event(name = "MoneyDeposited", version = 1)]
    Deposited { amount: i64, balance: i64 },
}

#[derive(Debug, Clone, Serialize, Deserialize, annals_core::Command)]
enum AccountCommand {
    Deposit {
        #[aggregate_id]
        account: String,
        amount: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
enum AccountRejection {
    #[error("amount must be positive, got {0}")]
    NonPositive(i64),
}

#[derive(Debug, Default, Clone, Serialize, Deserialize, annals_core::Aggregate)]
#[aggregate(name = "account", command = AccountCommand, event = AccountEvent, rejection = AccountRejection)]
struct Account {
    balance: i64,
}

impl Account {
    fn handle(
        &self,
        command: &AccountCommand,
        _: &CommandContext,
    ) -> Result<Vec<AccountEvent>, AccountRejection> {
        let AccountCommand::Deposit { amount, .. } = command;
        if *amount <= 0 {
            return Err(AccountRejection::NonPositive(*amount));
        }
        Ok(vec![AccountEvent::Deposited {
            amount: *amount,
            balance: self.balance + amount,
        }])
    }

    fn apply(&mut self, event: &AccountEvent) {
        let AccountEvent::Deposited { balance, .. } = event;
        self.balance = *balance;
    }
}

// ---------------------------------------------------------------------------------------
// Configuration: arguments override environment variables override defaults.
// ---------------------------------------------------------------------------------------

const OPTIONS: &[(&str, &str, &str)] = &[
    ("levels", "1,16,256", "concurrent clients per level"),
    (
        "commands",
        "auto",
        "measured commands per level, system and round: `auto` (from --seconds), N for all levels, or one N per level",
    ),
    (
        "seconds",
        "8",
        "with `--commands auto`: the count that takes the slower system about this long, from the warm-up",
    ),
    (
        "warmup",
        "2",
        "warm-up commands before each measurement, per client (at least 10)",
    ),
    (
        "rounds",
        "2",
        "measurements per level and system, interleaved annals/raw then raw/annals",
    ),
    (
        "partitions",
        "3",
        "partitions of every topic (both systems)",
    ),
    (
        "accounts",
        "1000",
        "distinct aggregate ids, used round-robin",
    ),
    (
        "max-batch",
        "512",
        "most commands per transaction (both systems)",
    ),
    (
        "raw-extras",
        "0",
        "1 = also run `raw+`: the raw loop plus the processor's extra I/O (snapshot records, rdkafka's flush for the events' offsets)",
    ),
    (
        "raw-replies",
        "after-commit",
        "where the raw loops write replies: `after-commit` (a plain producer, as annals does) or `in-txn`",
    ),
    (
        "timeout",
        "30",
        "seconds a client waits for a reply (annals: `command_timeout`)",
    ),
    (
        "rdkafka",
        "",
        "librdkafka settings for every client of every system, `key=value,key=value`",
    ),
    (
        "keep-topics",
        "0",
        "1 = leave the run's topics on the broker (they are deleted by default)",
    ),
    (
        "cpu",
        "1",
        "1 = also time the framework's per-command CPU work in-process (no broker)",
    ),
];

#[derive(Debug, Clone)]
struct Config {
    brokers: String,
    levels: Vec<usize>,
    /// Empty: calibrated per level.
    commands: Vec<usize>,
    seconds: f64,
    warmup_per_client: usize,
    rounds: usize,
    partitions: u32,
    accounts: usize,
    max_batch: usize,
    raw_extras: bool,
    raw_replies_in_txn: bool,
    timeout: Duration,
    rdkafka: Vec<(String, String)>,
    keep_topics: bool,
    cpu: bool,
    /// The options as given (name → value), for the reproduction line.
    given: BTreeMap<String, String>,
}

fn env_name(option: &str) -> String {
    format!("BENCH_{}", option.to_uppercase().replace('-', "_"))
}

fn usage() -> String {
    let mut s = String::from(
        "command_path: annals command path vs a raw rdkafka loop (needs KAFKA_BROKERS)\n\n\
         usage: cargo bench -p annals-kafka-store --bench command_path -- [--option value]...\n\n",
    );
    for (name, default, help) in OPTIONS {
        let _ = writeln!(
            s,
            "  --{name:<11} {help}\n  {:<13} env {}, default {default}",
            "",
            env_name(name)
        );
    }
    s
}

fn parse_list(name: &str, value: &str) -> Result<Vec<usize>, String> {
    value
        .split(',')
        .map(|v| {
            v.trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("--{name}: `{v}` is not a positive number"))
        })
        .collect()
}

impl Config {
    fn load() -> Result<Config, String> {
        let mut given: BTreeMap<String, String> = BTreeMap::new();
        for (name, _, _) in OPTIONS {
            if let Ok(v) = std::env::var(env_name(name)) {
                given.insert((*name).to_owned(), v);
            }
        }
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            if arg == "--bench" {
                continue; // cargo bench passes it to every harness = false target
            }
            if arg == "--help" || arg == "-h" {
                return Err(usage());
            }
            let Some(flag) = arg.strip_prefix("--") else {
                return Err(format!("unexpected argument `{arg}`\n\n{}", usage()));
            };
            let (name, value) = match flag.split_once('=') {
                Some((n, v)) => (n.to_owned(), v.to_owned()),
                None => (
                    flag.to_owned(),
                    args.next()
                        .ok_or_else(|| format!("--{flag} needs a value"))?,
                ),
            };
            if !OPTIONS.iter().any(|(n, _, _)| *n == name) {
                return Err(format!("unknown option --{name}\n\n{}", usage()));
            }
            given.insert(name, value);
        }
        let get = |name: &str| -> String {
            given.get(name).cloned().unwrap_or_else(|| {
                OPTIONS
                    .iter()
                    .find(|(n, _, _)| *n == name)
                    .map(|(_, d, _)| (*d).to_owned())
                    .unwrap_or_default()
            })
        };
        let one = |name: &str| -> Result<usize, String> {
            let v = parse_list(name, &get(name))?;
            match v.as_slice() {
                [n] => Ok(*n),
                _ => Err(format!("--{name} takes one number")),
            }
        };
        let flag = |name: &str| -> Result<bool, String> {
            match get(name).as_str() {
                "1" | "true" | "yes" => Ok(true),
                "0" | "false" | "no" => Ok(false),
                v => Err(format!("--{name}: `{v}` is not 0 or 1")),
            }
        };
        let brokers = std::env::var("KAFKA_BROKERS")
            .ok()
            .filter(|b| !b.trim().is_empty())
            .ok_or_else(|| {
                "KAFKA_BROKERS is not set. This benchmark needs a Kafka-protocol broker:\n  \
                 bash scripts/kafka-dev.sh start && eval \"$(bash scripts/kafka-dev.sh env)\"\n  \
                 cargo bench -p annals-kafka-store --bench command_path"
                    .to_owned()
            })?;
        let levels = parse_list("levels", &get("levels"))?;
        let mut commands = Vec::new();
        if get("commands").trim() != "auto" {
            commands = parse_list("commands", &get("commands"))?;
            if commands.len() == 1 {
                commands = vec![commands[0]; levels.len()];
            }
            if commands.len() != levels.len() {
                return Err(format!(
                    "--commands has {} entries but --levels has {}",
                    commands.len(),
                    levels.len()
                ));
            }
        }
        let seconds = get("seconds")
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| *s > 0.0)
            .ok_or_else(|| "--seconds: not a positive number".to_owned())?;
        Ok(Config {
            brokers,
            levels,
            commands,
            seconds,
            warmup_per_client: one("warmup")?,
            rounds: one("rounds")?,
            partitions: u32::try_from(one("partitions")?).map_err(|e| e.to_string())?,
            accounts: one("accounts")?,
            max_batch: one("max-batch")?,
            raw_extras: flag("raw-extras")?,
            raw_replies_in_txn: match get("raw-replies").as_str() {
                "in-txn" => true,
                "after-commit" => false,
                v => {
                    return Err(format!(
                        "--raw-replies: `{v}` is not in-txn or after-commit"
                    ));
                }
            },
            timeout: Duration::from_secs(u64::try_from(one("timeout")?).unwrap_or(30)),
            rdkafka: get("rdkafka")
                .split(',')
                .filter(|kv| !kv.trim().is_empty())
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                        .ok_or_else(|| format!("--rdkafka: `{kv}` is not key=value"))
                })
                .collect::<Result<_, _>>()?,
            keep_topics: flag("keep-topics")?,
            cpu: flag("cpu")?,
            given,
        })
    }

    fn command_line(&self) -> String {
        let mut line = format!("KAFKA_BROKERS={} ", self.brokers);
        line.push_str("cargo bench -p annals-kafka-store --bench command_path");
        if !self.given.is_empty() {
            line.push_str(" --");
            for (k, v) in &self.given {
                let _ = write!(line, " --{k} {v}");
            }
        }
        line
    }

    fn warmup(&self, level: usize) -> usize {
        (self.warmup_per_client * level).max(10)
    }

    /// The measured commands at `level`: as given, or what the slower system does in
    /// `--seconds` at its warm-up rate (at least 40 and 4 per client, at most 200,000).
    fn commands(&self, index: usize, slowest_rate: f64) -> usize {
        self.commands.get(index).copied().unwrap_or_else(|| {
            let n = (self.seconds * slowest_rate).round() as usize;
            n.clamp(40.max(4 * self.levels[index]), 200_000)
        })
    }
}

// ---------------------------------------------------------------------------------------
// Shared pieces.
// ---------------------------------------------------------------------------------------

/// Headers the raw client adds to its command records so the raw loop can route the reply
/// without parsing JSON (the payload is byte-for-byte what the command bus sends).
const H_REPLY_TO: &str = "bench-reply-to";
const H_COMMAND_ID: &str = "bench-command-id";

fn metadata(command_id: CommandId) -> Metadata {
    Metadata::new(Actor::new("user:bench"), command_id)
}

fn deposit(account: String) -> AccountCommand {
    AccountCommand::Deposit { account, amount: 1 }
}

fn account_name(n: usize, accounts: usize) -> String {
    format!("acct-{:05}", n % accounts)
}

/// librdkafka settings of `--rdkafka`, given to every client of both systems.
static EXTRA_CONFIG: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();

/// A client configuration built like annals' own: brokers, client id, then the settings
/// every client gets (`--rdkafka`); the caller's specific settings follow.
fn client_config(brokers: &str, client_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("client.id", client_id);
    for (k, v) in EXTRA_CONFIG.get().into_iter().flatten() {
        c.set(k, v);
    }
    c
}

/// A sealed event as the processor would write it: the raw loop clones this template
/// (so its event records carry the same headers and payload sizes as annals').
fn event_template() -> RawEnvelope {
    let command_id = CommandId(uuid::Uuid::now_v7());
    let aggregate = AggregateRef::new(Account::TYPE, AggregateId::new(account_name(0, 1)));
    let event = AccountEvent::Deposited {
        amount: 1,
        balance: 1_000,
    };
    let uncommitted = encode_event(
        &event,
        &aggregate,
        &JsonCodec,
        EventId(uuid::Uuid::now_v7()),
        chrono::Utc::now(),
        &metadata(command_id),
    )
    .expect("the bench event encodes");
    uncommitted.seal(&aggregate, Version(1_000), EventHash::ZERO)
}

/// The reply annals sends for one deposit, as bytes (the raw loop sends a filler of the
/// same length: same bytes on the wire, no JSON work).
fn reply_template(event: &RawEnvelope) -> Vec<u8> {
    let mut event = event.clone();
    event.position = Some(Position {
        topic: "bench0123456789abcdef0123456789abcdef.account.events".into(),
        partition: Partition(1),
        offset: Offset(12_345),
    });
    serde_json::to_vec(&ReplyRecord {
        v: PROTOCOL_VERSION,
        command_id: event.metadata.command_id,
        outcome: Outcome::Committed {
            events: vec![event],
            version: Version(1_000),
            duplicate: false,
        },
    })
    .expect("the reply encodes")
}

fn snapshot_template() -> Vec<u8> {
    serde_json::to_vec(&SnapshotRecord {
        v: PROTOCOL_VERSION,
        version: Version(1_000),
        hash: EventHash::ZERO,
        state: Account { balance: 1_000 },
    })
    .expect("the snapshot encodes")
}

/// Pending replies of one client, by command id.
type Pending = Arc<Mutex<HashMap<uuid::Uuid, oneshot::Sender<()>>>>;

fn header<'a>(m: &'a OwnedMessage, name: &str) -> Option<&'a [u8]> {
    m.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
}

// ---------------------------------------------------------------------------------------
// The raw baseline: the same path with nothing but rdkafka calls.
// ---------------------------------------------------------------------------------------

/// What the raw loop needs to write the same records annals writes.
struct RawSpec {
    brokers: String,
    app: String,
    commands_topic: String,
    events_topic: String,
    replies_topic: String,
    snapshots_topic: String,
    /// Also write a snapshot per touched aggregate and use rdkafka's `flush` to learn the
    /// events' offsets, as annals' processor does.
    extras: bool,
    /// Replies inside the transaction; otherwise after the commit, by `replies`.
    replies_in_txn: bool,
    /// The plain idempotent producer of replies sent after the commit (one per
    /// processor, shared by its partitions, as in annals).
    replies: FutureProducer,
    max_batch: usize,
    session_timeout: Duration,
    template: RawEnvelope,
    reply: Vec<u8>,
    snapshot: Vec<u8>,
    batches: AtomicU64,
    batched_commands: AtomicU64,
    /// Nanoseconds spent per step, summed over the workers (see [`STEPS`]).
    steps: [AtomicU64; STEPS.len()],
}

/// The steps of the raw loop that it times.
const STEPS: [&str; 5] = [
    "begin + queue records",
    "send_offsets_to_transaction",
    "deliveries (raw+: flush)",
    "commit_transaction",
    "replies after the commit",
];

fn add_step(spec: &RawSpec, step: usize, since: &mut Instant) {
    let now = Instant::now();
    spec.steps[step].fetch_add(
        u64::try_from((now - *since).as_nanos()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
    *since = now;
}

/// The raw loop: a consumer-group member polling the command topic on one thread and one
/// thread with its own transactional producer per partition, as annals' processor does.
struct RawProcessor {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    spec: Arc<RawSpec>,
}

impl RawProcessor {
    fn start(spec: RawSpec) -> Result<Self, KafkaError> {
        let spec = Arc::new(spec);
        let consumer: BaseConsumer = client_config(&spec.brokers, &format!("annals-{}", spec.app))
            .set("group.id", format!("{}.account.processor", spec.app))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            // As annals' processor: fetch again soon when a fetch comes back empty.
            .set("fetch.wait.max.ms", "10")
            .set("auto.offset.reset", "earliest")
            .set(
                "session.timeout.ms",
                spec.session_timeout.as_millis().to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (spec.session_timeout.as_millis() / 6).max(100).to_string(),
            )
            .create()?;
        consumer.subscribe(&[&spec.commands_topic])?;
        let stop = Arc::new(AtomicBool::new(false));
        let (thread_stop, thread_spec) = (Arc::clone(&stop), Arc::clone(&spec));
        let thread = std::thread::Builder::new()
            .name("raw-poll".into())
            .spawn(move || raw_poll_loop(&consumer, &thread_spec, &thread_stop))
            .expect("a thread starts");
        Ok(Self {
            stop,
            thread: Some(thread),
            spec,
        })
    }

    fn shutdown(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn raw_poll_loop(consumer: &BaseConsumer, spec: &Arc<RawSpec>, stop: &AtomicBool) {
    let mut workers: HashMap<i32, (Sender<OwnedMessage>, JoinHandle<()>)> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                let partition = message.partition();
                let tx = match workers.entry(partition) {
                    Entry::Occupied(worker) => &worker.into_mut().0,
                    Entry::Vacant(slot) => {
                        let Some(group) = consumer.group_metadata() else {
                            eprintln!("raw loop: a message before the group metadata");
                            continue;
                        };
                        let (tx, rx) = channel();
                        let spec = Arc::clone(spec);
                        let thread = std::thread::Builder::new()
                            .name(format!("raw-{partition}"))
                            .spawn(move || raw_worker(&spec, partition, &group, &rx))
                            .expect("a thread starts");
                        &slot.insert((tx, thread)).0
                    }
                };
                let _ = tx.send(message.detach());
            }
            Some(Err(e)) => eprintln!("raw loop: consumer error: {e}"),
            None => {}
        }
    }
    for (_, (tx, thread)) in workers {
        drop(tx);
        let _ = thread.join();
    }
    consumer.unsubscribe();
}

fn raw_worker(
    spec: &RawSpec,
    partition: i32,
    group: &ConsumerGroupMetadata,
    rx: &Receiver<OwnedMessage>,
) {
    let timeout = Duration::from_secs(30);
    let producer: FutureProducer = client_config(&spec.brokers, &format!("annals-{}", spec.app))
        .set(
            "transactional.id",
            format!("{}.account.{partition}", spec.app),
        )
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("transaction.timeout.ms", "60000")
        .set("linger.ms", "1")
        .create()
        .expect("the raw transactional producer is created");
    producer
        .init_transactions(timeout)
        .expect("the raw producer initialises transactions");
    let mut sequences: HashMap<Vec<u8>, u64> = HashMap::new();
    let mut batch: Vec<OwnedMessage> = Vec::with_capacity(spec.max_batch);
    while let Ok(first) = rx.recv() {
        let mut since = Instant::now();
        batch.push(first);
        while batch.len() < spec.max_batch {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        if let Err(e) = raw_transaction(
            spec,
            &producer,
            partition,
            group,
            &batch,
            &mut sequences,
            &mut since,
        ) {
            // No recovery in the baseline: a failure here is a broken run, said loudly.
            eprintln!("raw loop: partition {partition}: transaction failed: {e}");
            let _ = producer.abort_transaction(timeout);
        }
        spec.batches.fetch_add(1, Ordering::Relaxed);
        spec.batched_commands
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        batch.clear();
    }
}

fn raw_transaction(
    spec: &RawSpec,
    producer: &FutureProducer,
    partition: i32,
    group: &ConsumerGroupMetadata,
    batch: &[OwnedMessage],
    sequences: &mut HashMap<Vec<u8>, u64>,
    since: &mut Instant,
) -> Result<(), KafkaError> {
    let timeout = Duration::from_secs(30);
    producer.begin_transaction()?;
    let now = chrono::Utc::now();
    let mut deliveries = Vec::with_capacity(2 * batch.len());
    let mut routes = Vec::with_capacity(batch.len());
    let mut touched: Vec<&[u8]> = Vec::new();
    for m in batch {
        let key = m.key().unwrap_or_default();
        let (Some(command_id), Some(reply_to)) = (header(m, H_COMMAND_ID), header(m, H_REPLY_TO))
        else {
            eprintln!("raw loop: a command without routing headers");
            continue;
        };
        let command_id = std::str::from_utf8(command_id)
            .ok()
            .and_then(|s| uuid::Uuid::parse_str(s).ok())
            .unwrap_or_default();
        let reply_to: i32 = std::str::from_utf8(reply_to)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let sequence = sequences.entry(key.to_vec()).or_insert(0);
        *sequence += 1;
        let mut event = spec.template.clone();
        event.event_id = EventId(uuid::Uuid::now_v7());
        event.aggregate_id = AggregateId::new(String::from_utf8_lossy(key));
        event.sequence = Version(*sequence);
        event.occurred_at = now;
        event.metadata = metadata(CommandId(command_id));
        let headers = wire::encode_headers(&event);
        let delivery = producer
            .send_result(
                FutureRecord::to(&spec.events_topic)
                    .partition(partition)
                    .key(key)
                    .payload(&event.payload.bytes)
                    .headers(headers)
                    .timestamp(wire::record_timestamp(&event)),
            )
            .map_err(|(e, _)| e)?;
        routes.push((command_id, reply_to));
        if spec.extras {
            if !touched.contains(&key) {
                touched.push(key);
            }
        } else {
            deliveries.push(delivery);
            if spec.replies_in_txn {
                deliveries.push(raw_reply(spec, producer, command_id, reply_to)?);
            }
        }
    }
    add_step(spec, 0, since);
    if spec.extras {
        // As the processor does: rdkafka's `flush` to learn the events' offsets, then
        // the snapshots (and replies, when they are in the transaction);
        // `commit_transaction` flushes those again.
        producer.flush(timeout)?;
        add_step(spec, 2, since);
        for key in touched {
            let _delivery = producer
                .send_result(
                    FutureRecord::to(&spec.snapshots_topic)
                        .partition(partition)
                        .key(key)
                        .payload(&spec.snapshot)
                        .headers(OwnedHeaders::new()),
                )
                .map_err(|(e, _)| e)?;
        }
        if spec.replies_in_txn {
            for (command_id, reply_to) in &routes {
                raw_reply(spec, producer, *command_id, *reply_to)?;
            }
        }
        add_step(spec, 0, since);
    }
    if let Some(last) = batch.last() {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(
            &spec.commands_topic,
            partition,
            KOffset::Offset(last.offset() + 1),
        )?;
        producer.send_offsets_to_transaction(&tpl, group, timeout)?;
    }
    add_step(spec, 1, since);
    // Wait for the delivery reports before committing. rdkafka's `commit_transaction`
    // (like its `flush`) first calls `flush`, which, with anything still queued, polls
    // for 100 ms: `BaseProducer::poll` returns at its deadline, not at the first event.
    // A fixed 100 ms per call, unless nothing is in flight any more.
    for delivery in deliveries {
        match futures::executor::block_on(delivery) {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(e),
            Err(_) => return Err(KafkaError::Canceled),
        }
    }
    // The future resolves inside the delivery callback, a moment before librdkafka
    // forgets the record; wait for that moment rather than for 100 ms.
    if !spec.extras {
        let deadline = Instant::now() + Duration::from_millis(100);
        while producer.in_flight_count() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    add_step(spec, 2, since);
    producer.commit_transaction(timeout)?;
    add_step(spec, 3, since);
    if !spec.replies_in_txn {
        // As annals: replies go out once the transaction has committed, by a plain
        // idempotent producer, not awaited.
        for (command_id, reply_to) in routes {
            if let Err(e) = raw_reply(spec, &spec.replies, command_id, reply_to) {
                eprintln!("raw loop: reply not sent: {e}");
            }
        }
        add_step(spec, 4, since);
    }
    Ok(())
}

fn raw_reply(
    spec: &RawSpec,
    producer: &FutureProducer,
    command_id: uuid::Uuid,
    reply_to: i32,
) -> Result<DeliveryFuture, KafkaError> {
    let key = command_id.to_string();
    // annals' replies carry the command's correlation id (here the command id).
    let headers = OwnedHeaders::new().insert(Header {
        key: "annals-correlation-id",
        value: Some(key.as_bytes()),
    });
    producer
        .send_result(
            FutureRecord::to(&spec.replies_topic)
                .partition(reply_to)
                .key(key.as_bytes())
                .payload(&spec.reply)
                .headers(headers),
        )
        .map_err(|(e, _)| e)
}

/// The raw client: the same producer settings as the command bus, the same command bytes,
/// and a listener on one reply partition that matches replies by key.
struct RawClient {
    producer: FutureProducer,
    commands_topic: String,
    partitions: u32,
    reply_partition: i32,
    timeout: Duration,
    pending: Pending,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for RawClient {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl RawClient {
    fn connect(
        brokers: &str,
        app: &str,
        commands_topic: String,
        replies_topic: &str,
        partitions: u32,
        timeout: Duration,
    ) -> Result<Self, KafkaError> {
        let reply_partition =
            i32::try_from(uuid::Uuid::now_v7().as_u128() % u128::from(partitions)).unwrap_or(0);
        let mut reader = client_config(brokers, &format!("annals-{app}"));
        reader
            .set("group.id", format!("{app}.reader"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "10");
        // Like annals' reader configuration: the settings for every client come last.
        for (k, v) in EXTRA_CONFIG.get().into_iter().flatten() {
            reader.set(k, v);
        }
        let consumer: StreamConsumer = reader.create()?;
        let mut tpl = TopicPartitionList::new();
        // A fresh topic: nothing before offset 0 to skip.
        tpl.add_partition_offset(replies_topic, reply_partition, KOffset::Offset(0))?;
        consumer.assign(&tpl)?;
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let listener_pending = Arc::clone(&pending);
        let listener = tokio::spawn(async move {
            loop {
                match consumer.recv().await {
                    Ok(m) => {
                        let Some(id) = m
                            .key()
                            .and_then(|k| std::str::from_utf8(k).ok())
                            .and_then(|k| uuid::Uuid::parse_str(k).ok())
                        else {
                            continue;
                        };
                        let waiter = listener_pending
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .remove(&id);
                        if let Some(tx) = waiter {
                            let _ = tx.send(());
                        }
                    }
                    Err(e) => eprintln!("raw client: reply consumer error: {e}"),
                }
            }
        });
        let producer: FutureProducer = client_config(brokers, &format!("annals-{app}"))
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .create()?;
        Ok(Self {
            producer,
            commands_topic,
            partitions,
            reply_partition,
            timeout,
            pending,
            listener,
        })
    }

    async fn send(&self, account: String) -> Result<(), String> {
        let command_id = CommandId(uuid::Uuid::now_v7());
        let record = CommandRecord {
            v: PROTOCOL_VERSION,
            metadata: metadata(command_id),
            expected: None,
            reply_to: u32::try_from(self.reply_partition).ok(),
            command: deposit(account.clone()),
        };
        let payload = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(command_id.0, tx);
        let partition = partition_for(account.as_bytes(), self.partitions);
        let id_text = command_id.0.to_string();
        let reply_to = self.reply_partition.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: H_COMMAND_ID,
                value: Some(id_text.as_bytes()),
            })
            .insert(Header {
                key: H_REPLY_TO,
                value: Some(reply_to.as_bytes()),
            });
        let sent = self
            .producer
            .send(
                FutureRecord::to(&self.commands_topic)
                    .partition(i32::try_from(partition).unwrap_or(0))
                    .key(account.as_bytes())
                    .payload(&payload)
                    .headers(headers),
                self.timeout,
            )
            .await;
        let result = match sent {
            Err((e, _)) => Err(format!("sending: {e}")),
            Ok(_) => match tokio::time::timeout(self.timeout, rx).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err("the reply listener stopped".into()),
                Err(_) => Err(format!("no reply within {:?}", self.timeout)),
            },
        };
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&command_id.0);
        result
    }
}

// ---------------------------------------------------------------------------------------
// The systems under test and the load generator.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum System {
    Annals,
    Raw,
    RawExtras,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Annals => "annals",
            System::Raw => "raw",
            System::RawExtras => "raw+",
        }
    }
}

enum Client {
    Annals(Box<CommandBus<Account>>),
    Raw(RawClient),
}

impl Client {
    async fn send(&self, account: String) -> Result<(), String> {
        match self {
            Client::Annals(bus) => bus
                .send(deposit(account), metadata(CommandId(uuid::Uuid::now_v7())))
                .await
                .map(|committed| {
                    debug_assert_eq!(committed.events.len(), 1);
                })
                .map_err(|e| e.to_string()),
            Client::Raw(raw) => raw.send(account).await,
        }
    }
}

/// One measured phase.
struct Phase {
    elapsed: Duration,
    latencies_us: Vec<u64>,
    failures: usize,
}

/// Runs `count` commands through `client` with `concurrency` tasks, each awaiting the
/// outcome of its command before sending the next.
async fn drive(
    client: &Arc<Client>,
    concurrency: usize,
    count: usize,
    accounts: usize,
    next_account: &Arc<AtomicUsize>,
    acked: &Arc<AtomicU64>,
) -> Phase {
    let issued = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (client, issued, next_account, acked) = (
            Arc::clone(client),
            Arc::clone(&issued),
            Arc::clone(next_account),
            Arc::clone(acked),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0;
            while issued.fetch_add(1, Ordering::Relaxed) < count {
                let account = account_name(next_account.fetch_add(1, Ordering::Relaxed), accounts);
                let sent = Instant::now();
                match client.send(account).await {
                    Ok(()) => {
                        latencies
                            .push(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX));
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        failures += 1;
                        if failures <= 3 {
                            eprintln!("command failed: {e}");
                        }
                    }
                }
            }
            (latencies, failures)
        }));
    }
    let mut latencies_us = Vec::with_capacity(count);
    let mut failures = 0;
    for t in tasks {
        let (l, f) = t.await.expect("a client task panicked");
        latencies_us.extend(l);
        failures += f;
    }
    Phase {
        elapsed: start.elapsed(),
        latencies_us,
        failures,
    }
}

/// Accumulated measurements of one system at one level.
#[derive(Default)]
struct Sample {
    commands: usize,
    elapsed: Duration,
    latencies_us: Vec<u64>,
    failures: usize,
    per_round: Vec<f64>,
    /// Events and transactions written during the level's phases (warm-up included).
    events: u64,
    transactions: u64,
}

impl Sample {
    fn add(&mut self, phase: Phase) {
        let ok = phase.latencies_us.len();
        self.per_round.push(ok as f64 / phase.elapsed.as_secs_f64());
        self.commands += ok;
        self.elapsed += phase.elapsed;
        self.latencies_us.extend(phase.latencies_us);
        self.failures += phase.failures;
    }

    fn throughput(&self) -> f64 {
        self.commands as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn percentile_ms(&mut self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        self.latencies_us.sort_unstable();
        let rank = ((p / 100.0) * self.latencies_us.len() as f64).ceil() as usize;
        let i = rank.clamp(1, self.latencies_us.len()) - 1;
        self.latencies_us[i] as f64 / 1000.0
    }
}

/// Follows an event topic between phases: how many events and transactions (commit
/// markers, which take an offset each) each phase wrote.
struct TailCounter {
    consumer: BaseConsumer,
    partitions: u32,
    position: HashMap<i32, i64>,
    records: u64,
}

impl TailCounter {
    fn new(brokers: &str, topic: &str, partitions: u32) -> Result<Self, String> {
        let consumer: BaseConsumer = client_config(brokers, "annals-bench-tail")
            .set("group.id", format!("bench-tail-{}", uuid::Uuid::now_v7()))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed")
            .create()
            .map_err(|e| e.to_string())?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, i32::try_from(p).unwrap_or(0), KOffset::Beginning)
                .map_err(|e| e.to_string())?;
        }
        consumer.assign(&tpl).map_err(|e| e.to_string())?;
        Ok(Self {
            consumer,
            partitions,
            position: HashMap::new(),
            records: 0,
        })
    }

    /// Reads at least up to `expected` events in all, then to the end of every partition:
    /// (events, transactions) since the last call. An end-of-partition event is only
    /// trusted after the last record (an old one may still be queued), and a partition
    /// without new records reports no new end, hence the idle limit.
    fn catch_up(&mut self, expected: u64) -> Result<(u64, u64), String> {
        let mut records = 0;
        let mut at_end: BTreeSet<i32> = BTreeSet::new();
        let mut idle = Instant::now();
        while self.records < expected || at_end.len() < self.partitions as usize {
            match self.consumer.poll(Duration::from_millis(50)) {
                Some(Ok(_)) => {
                    records += 1;
                    self.records += 1;
                    at_end.clear();
                    idle = Instant::now();
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    at_end.insert(p);
                }
                Some(Err(e)) => return Err(e.to_string()),
                None if idle.elapsed() > Duration::from_secs(2) => {
                    if self.records < expected {
                        return Err(format!(
                            "the event topic holds {} events, fewer than the {expected} commands acknowledged",
                            self.records
                        ));
                    }
                    break;
                }
                None => {}
            }
        }
        let mut offsets = 0;
        let positions = self.consumer.position().map_err(|e| e.to_string())?;
        for e in positions.elements() {
            if let KOffset::Offset(now) = e.offset() {
                let before = self.position.insert(e.partition(), now).unwrap_or(0);
                offsets += u64::try_from(now - before).unwrap_or(0);
            }
        }
        Ok((records, offsets.saturating_sub(records)))
    }
}

/// Counts the records of an event topic and checks each command id appears once; also
/// estimates the transactions per partition from the offsets the commit markers take.
struct TopicCount {
    records: u64,
    distinct_commands: usize,
    /// Offsets not held by a record (commit markers), summed over partitions.
    gaps: u64,
}

/// Reads `topic` from the beginning to its end; `by_key` counts distinct keys instead of
/// distinct `annals-command-id` headers.
fn count_records(
    brokers: &str,
    topic: &str,
    partitions: u32,
    by_key: bool,
) -> Result<TopicCount, String> {
    let consumer: BaseConsumer = client_config(brokers, "annals-bench-verify")
        .set("group.id", format!("bench-verify-{}", uuid::Uuid::now_v7()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()
        .map_err(|e| e.to_string())?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, i32::try_from(p).unwrap_or(0), KOffset::Beginning)
            .map_err(|e| e.to_string())?;
    }
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    let mut at_end: BTreeSet<i32> = BTreeSet::new();
    let mut records = 0;
    let mut next_offset: HashMap<i32, i64> = HashMap::new();
    let mut per_partition: HashMap<i32, u64> = HashMap::new();
    let mut commands: HashSet<Vec<u8>> = HashSet::new();
    let mut idle = Instant::now();
    while at_end.len() < partitions as usize {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                idle = Instant::now();
                records += 1;
                *per_partition.entry(m.partition()).or_default() += 1;
                next_offset.insert(m.partition(), m.offset() + 1);
                let id = if by_key {
                    m.key()
                } else {
                    m.headers()
                        .and_then(|h| h.iter().find(|h| h.key == wire::header::COMMAND_ID))
                        .and_then(|h| h.value)
                };
                if let Some(id) = id {
                    commands.insert(id.to_vec());
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => return Err(format!("reading {topic}: {e}")),
            None if idle.elapsed() > Duration::from_secs(30) => {
                return Err(format!("reading {topic}: no progress for 30 s"));
            }
            None => {}
        }
    }
    let gaps = next_offset
        .iter()
        .map(|(p, next)| {
            u64::try_from(*next).unwrap_or(0) - per_partition.get(p).copied().unwrap_or(0)
        })
        .sum();
    Ok(TopicCount {
        records,
        distinct_commands: commands.len(),
        gaps,
    })
}

// ---------------------------------------------------------------------------------------
// The framework's CPU work per command, timed in-process (no broker).
// ---------------------------------------------------------------------------------------

fn cpu_breakdown() -> Vec<(&'static str, f64)> {
    const N: u32 = 20_000;
    let template = event_template();
    let mut results = Vec::new();
    let mut time = |name: &'static str, f: &mut dyn FnMut(u32)| {
        for i in 0..(N / 10) {
            f(i);
        }
        let start = Instant::now();
        for i in 0..N {
            f(i);
        }
        results.push((name, start.elapsed().as_secs_f64() * 1e6 / f64::from(N)));
    };
    let record = CommandRecord {
        v: PROTOCOL_VERSION,
        metadata: metadata(CommandId(uuid::Uuid::now_v7())),
        expected: None,
        reply_to: Some(1),
        command: deposit(account_name(7, 1000)),
    };
    let command_bytes = serde_json::to_vec(&record).expect("encodes");
    let reply_bytes = reply_template(&template);
    let aggregate = AggregateRef::new(Account::TYPE, AggregateId::new(account_name(7, 1000)));
    let mut sink = 0usize;
    time("client: CommandRecord to JSON", &mut |_| {
        sink += serde_json::to_vec(&record).map(|v| v.len()).unwrap_or(0);
    });
    time("processor: CommandRecord from JSON", &mut |_| {
        sink += serde_json::from_slice::<CommandRecord<AccountCommand>>(&command_bytes)
            .map(|r| r.v as usize)
            .unwrap_or(0);
    });
    time(
        "processor: handle + encode_event + seal (SHA-256)",
        &mut |i| {
            let state = Account { balance: 1_000 };
            let m = &record.metadata;
            let ctx = CommandContext::new(chrono::Utc::now(), m.clone());
            let events = state.handle(&record.command, &ctx).unwrap_or_default();
            for e in &events {
                if let Ok(u) = encode_event(
                    e,
                    &aggregate,
                    &JsonCodec,
                    EventId(uuid::Uuid::now_v7()),
                    ctx.now,
                    m,
                ) {
                    let sealed = u.seal(&aggregate, Version(u64::from(i) + 1), EventHash::ZERO);
                    sink += sealed.hash.0[0] as usize;
                }
            }
        },
    );
    time("processor: wire::encode_headers", &mut |_| {
        sink += wire::encode_headers(&template).count();
    });
    time("processor: SnapshotRecord to JSON", &mut |_| {
        sink += snapshot_template().len();
    });
    time("processor: ReplyRecord (1 event) to JSON", &mut |_| {
        sink += reply_template(&template).len();
    });
    time("client: ReplyRecord from JSON + decode_event", &mut |_| {
        if let Ok(reply) = serde_json::from_slice::<ReplyRecord>(&reply_bytes)
            && let Outcome::Committed { events, .. } = reply.outcome
        {
            for raw in events {
                sink += decode_event::<AccountEvent>(raw, &JsonCodec, &Upcasters::new())
                    .map(|e| e.sequence.0 as usize)
                    .unwrap_or(0);
            }
        }
    });
    std::hint::black_box(sink);
    results
}

// ---------------------------------------------------------------------------------------
// Main.
// ---------------------------------------------------------------------------------------

fn main() {
    let config = match Config::load() {
        Ok(c) => c,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(if message.starts_with("command_path:") {
                0
            } else {
                2
            });
        }
    };
    let _ = EXTRA_CONFIG.set(config.rdkafka.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    if let Err(e) = runtime.block_on(run(config)) {
        eprintln!("command_path benchmark failed: {e}");
        std::process::exit(1);
    }
}

struct Systems {
    processor: Option<ProcessorHandle>,
    raw: Vec<(System, RawProcessor)>,
    clients: BTreeMap<System, Arc<Client>>,
    events_topics: BTreeMap<System, String>,
    replies_topics: BTreeMap<System, String>,
    /// Every topic the run created, deleted at the end unless `--keep-topics 1`.
    topics: Vec<String>,
    acked: BTreeMap<System, Arc<AtomicU64>>,
}

async fn delete_topics(brokers: &str, topics: &[String]) {
    let admin: Result<AdminClient<DefaultClientContext>, _> =
        client_config(brokers, "annals-bench-cleanup").create();
    let result = match admin {
        Ok(admin) => {
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            admin
                .delete_topics(&names, &AdminOptions::new())
                .await
                .map(|results| results.iter().filter(|r| r.is_err()).count())
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(0) => {}
        Ok(n) => eprintln!("{n} of the run's topics could not be deleted"),
        Err(e) => eprintln!("deleting the run's topics: {e}"),
    }
}

async fn setup(config: &Config, run_id: &str) -> Result<Systems, String> {
    let session = Duration::from_secs(2);
    let mut options = KafkaStoreOptions::new(&config.brokers)
        .topic_prefix(format!("bench{run_id}"))
        .app_id(format!("bench{run_id}"))
        .partitions(config.partitions)
        .max_batch(config.max_batch)
        .session_timeout(session)
        .operation_timeout(Duration::from_secs(30))
        .command_timeout(config.timeout);
    for (k, v) in &config.rdkafka {
        options = options.set(k, v);
    }
    let processor = CommandProcessor::<Account>::new(options.clone())
        .start()
        .await
        .map_err(|e| format!("starting the processor: {e}"))?;
    let bus = CommandBus::<Account>::connect(options.clone())
        .await
        .map_err(|e| format!("connecting the bus: {e}"))?;
    let mut clients = BTreeMap::new();
    let mut events_topics = BTreeMap::new();
    let mut replies_topics = BTreeMap::new();
    let mut topics = vec![
        options.events_topic(Account::TYPE),
        options.commands_topic(Account::TYPE),
        options.replies_topic(Account::TYPE),
        options.snapshots_topic(Account::TYPE),
    ];
    let mut raw = Vec::new();
    clients.insert(System::Annals, Arc::new(Client::Annals(Box::new(bus))));
    events_topics.insert(System::Annals, options.events_topic(Account::TYPE));
    replies_topics.insert(System::Annals, options.replies_topic(Account::TYPE));

    let template = event_template();
    let mut raw_systems = vec![(System::Raw, "raw")];
    if config.raw_extras {
        raw_systems.push((System::RawExtras, "rawx"));
    }
    for (system, tag) in raw_systems {
        let app = format!("bench{run_id}{tag}");
        let o = options.clone().topic_prefix(&app).app_id(&app);
        let (commands_topic, events_topic, replies_topic, snapshots_topic) = (
            o.commands_topic(Account::TYPE),
            o.events_topic(Account::TYPE),
            o.replies_topic(Account::TYPE),
            o.snapshots_topic(Account::TYPE),
        );
        topics.extend([
            events_topic.clone(),
            commands_topic.clone(),
            replies_topic.clone(),
            snapshots_topic.clone(),
        ]);
        // The same topic kinds (and so configurations) the framework creates.
        for (topic, kind) in [
            (&events_topic, TopicKind::Events),
            (&commands_topic, TopicKind::Commands),
            (&replies_topic, TopicKind::Replies),
            (&snapshots_topic, TopicKind::Snapshots),
        ] {
            let n = ensure_topic(&o, topic, kind)
                .await
                .map_err(|e| format!("creating {topic}: {e}"))?;
            if n != config.partitions {
                return Err(format!(
                    "{topic} has {n} partitions, not {}",
                    config.partitions
                ));
            }
        }
        let processor = RawProcessor::start(RawSpec {
            brokers: config.brokers.clone(),
            app: app.clone(),
            commands_topic: commands_topic.clone(),
            events_topic: events_topic.clone(),
            replies_topic: replies_topic.clone(),
            snapshots_topic,
            extras: system == System::RawExtras,
            replies_in_txn: config.raw_replies_in_txn,
            replies: client_config(&config.brokers, &format!("annals-{app}"))
                .set("enable.idempotence", "true")
                .set("acks", "all")
                .set("linger.ms", "1")
                .create()
                .map_err(|e| format!("creating the raw reply producer: {e}"))?,
            max_batch: config.max_batch,
            session_timeout: session,
            template: template.clone(),
            reply: vec![b'x'; reply_template(&template).len()],
            snapshot: snapshot_template(),
            batches: AtomicU64::new(0),
            batched_commands: AtomicU64::new(0),
            steps: Default::default(),
        })
        .map_err(|e| format!("starting the raw loop: {e}"))?;
        let client = RawClient::connect(
            &config.brokers,
            &app,
            commands_topic,
            &replies_topic,
            config.partitions,
            config.timeout,
        )
        .map_err(|e| format!("connecting the raw client: {e}"))?;
        raw.push((system, processor));
        clients.insert(system, Arc::new(Client::Raw(client)));
        events_topics.insert(system, events_topic);
        replies_topics.insert(system, replies_topic);
    }
    let live = processor
        .wait_for(Duration::from_secs(60), |live| {
            live.len() == config.partitions as usize
        })
        .await;
    if !live {
        return Err(format!(
            "the annals processor did not own all {} partitions within 60 s: {:?}",
            config.partitions,
            processor.partition_errors()
        ));
    }
    let acked = clients
        .keys()
        .map(|s| (*s, Arc::new(AtomicU64::new(0))))
        .collect();
    Ok(Systems {
        processor: Some(processor),
        raw,
        clients,
        events_topics,
        replies_topics,
        topics,
        acked,
    })
}

async fn run(config: Config) -> Result<(), String> {
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    let started = Instant::now();
    println!("command_path benchmark (run {run_id})");
    println!("command: {}", config.command_line());
    println!(
        "levels {:?}, measured commands per level/system/round {}, warm-up {}/client (min 10), \
         {} round(s), {} partitions, {} accounts, max batch {}, raw replies {}, {} cores",
        config.levels,
        if config.commands.is_empty() {
            format!("auto (~{} s of the slower system)", config.seconds)
        } else {
            format!("{:?}", config.commands)
        },
        config.warmup_per_client,
        config.rounds,
        config.partitions,
        config.accounts,
        config.max_batch,
        if config.raw_replies_in_txn {
            "in the transaction"
        } else {
            "after the commit"
        },
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
    );

    let mut systems = setup(&config, &run_id).await?;
    println!("setup: {:.1} s", started.elapsed().as_secs_f64());
    let order: Vec<System> = systems.clients.keys().copied().collect();
    let next_account = Arc::new(AtomicUsize::new(0));
    let mut tails = BTreeMap::new();
    for system in &order {
        tails.insert(
            *system,
            TailCounter::new(
                &config.brokers,
                &systems.events_topics[system],
                config.partitions,
            )?,
        );
    }
    let mut samples: BTreeMap<(usize, System), Sample> = BTreeMap::new();
    let mut total_failures = 0;
    // Every transactional producer starts (and each system's first batches run) before
    // anything is measured.
    for system in &order {
        let client = &systems.clients[system];
        let acked = &systems.acked[system];
        let prime = drive(
            client,
            8,
            8 * config.partitions as usize * 4,
            config.accounts,
            &next_account,
            acked,
        )
        .await;
        let tail = tails.get_mut(system).expect("a tail per system");
        let expected = acked.load(Ordering::Relaxed);
        tokio::task::block_in_place(|| tail.catch_up(expected))?;
        if prime.failures > 0 {
            eprintln!(
                "{}: {} command(s) failed while priming",
                system.name(),
                prime.failures
            );
            total_failures += prime.failures;
        }
    }
    for (index, &level) in config.levels.iter().enumerate() {
        // Warm every system up at this level; the slower one's rate sets the count.
        let mut slowest = f64::INFINITY;
        for system in &order {
            let warm = drive(
                &systems.clients[system],
                level,
                config.warmup(level),
                config.accounts,
                &next_account,
                &systems.acked[system],
            )
            .await;
            total_failures += warm.failures;
            slowest = slowest.min(warm.latencies_us.len() as f64 / warm.elapsed.as_secs_f64());
        }
        let count = config.commands(index, slowest);
        for round in 0..config.rounds {
            let mut this_round = order.clone();
            if round % 2 == 1 {
                this_round.reverse();
            }
            for system in this_round {
                let client = &systems.clients[&system];
                let acked = &systems.acked[&system];
                let warm = drive(
                    client,
                    level,
                    config.warmup(level),
                    config.accounts,
                    &next_account,
                    acked,
                )
                .await;
                let phase =
                    drive(client, level, count, config.accounts, &next_account, acked).await;
                eprintln!(
                    "  level {level:>4} round {} {:<6} {:>8.0} cmd/s  ({} warm-up, {} measured, {} failed)",
                    round + 1,
                    system.name(),
                    phase.latencies_us.len() as f64 / phase.elapsed.as_secs_f64(),
                    warm.latencies_us.len(),
                    phase.latencies_us.len(),
                    phase.failures + warm.failures,
                );
                total_failures += phase.failures + warm.failures;
                let tail = tails.get_mut(&system).expect("a tail per system");
                let expected = acked.load(Ordering::Relaxed);
                let (events, transactions) =
                    tokio::task::block_in_place(|| tail.catch_up(expected))?;
                let sample = samples.entry((level, system)).or_default();
                sample.events += events;
                sample.transactions += transactions;
                sample.add(phase);
            }
        }
    }
    let measured = started.elapsed();

    // Verification: every acknowledged command wrote exactly one event, no more.
    let mut verify = String::new();
    let mut ok = true;
    let mut batch_sizes: BTreeMap<System, f64> = BTreeMap::new();
    // Let in-flight transactions of failed commands (if any) settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for system in &order {
        let topic = systems.events_topics[system].clone();
        let brokers = config.brokers.clone();
        let partitions = config.partitions;
        let count =
            tokio::task::spawn_blocking(move || count_records(&brokers, &topic, partitions, false))
                .await
                .map_err(|e| e.to_string())??;
        let (topic, brokers) = (
            systems.replies_topics[system].clone(),
            config.brokers.clone(),
        );
        let replies =
            tokio::task::spawn_blocking(move || count_records(&brokers, &topic, partitions, true))
                .await
                .map_err(|e| e.to_string())??;
        let acked = systems.acked[system].load(Ordering::Relaxed);
        let good = count.records == acked
            && count.distinct_commands as u64 == count.records
            && replies.distinct_commands as u64 == count.records;
        ok &= good;
        if count.gaps > 0 {
            batch_sizes.insert(*system, count.records as f64 / count.gaps as f64);
        }
        let _ = writeln!(
            verify,
            "  {:<6} acknowledged {acked:>7}, events {:>7}, distinct command ids {:>7}, commit markers {:>6}, replies in topic {:>7} -> {}",
            system.name(),
            count.records,
            count.distinct_commands,
            count.gaps,
            replies.distinct_commands,
            if good { "OK" } else { "MISMATCH" }
        );
    }
    if total_failures > 0 {
        ok = false;
        let _ = writeln!(verify, "  {total_failures} command(s) FAILED (see stderr)");
    }
    if let Some(p) = &systems.processor {
        let errors = p.partition_errors();
        if !errors.is_empty() {
            ok = false;
            let _ = writeln!(verify, "  annals processor partition errors: {errors:?}");
        }
    }

    // Report.
    println!();
    println!(
        "{:>7} {:<6} {:>8} {:>8} {:>8} {:>8} {:>7}  {:<15} {:>7} {:>7} {:>7}",
        "clients",
        "system",
        "commands",
        "cmd/s",
        "p50 ms",
        "p99 ms",
        "cmd/txn",
        "cmd/s by round",
        "thr ×",
        "p50 ×",
        "p99 ×"
    );
    let mut summary = Vec::new();
    for &level in &config.levels {
        let (raw_thr, raw_p50, raw_p99) = {
            let s = samples.get_mut(&(level, System::Raw)).expect("raw ran");
            (s.throughput(), s.percentile_ms(50.0), s.percentile_ms(99.0))
        };
        for system in &order {
            let s = samples.get_mut(&(level, *system)).expect("ran");
            let (thr, p50, p99) = (s.throughput(), s.percentile_ms(50.0), s.percentile_ms(99.0));
            let rounds = s
                .per_round
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join("/");
            let ratios = if *system == System::Raw {
                format!("{:>7} {:>7} {:>7}", "1", "1", "1")
            } else {
                format!(
                    "{:>7.2} {:>7.2} {:>7.2}",
                    thr / raw_thr,
                    p50 / raw_p50,
                    p99 / raw_p99
                )
            };
            let per_txn = if s.transactions > 0 {
                format!("{:.1}", s.events as f64 / s.transactions as f64)
            } else {
                "?".to_owned()
            };
            println!(
                "{level:>7} {:<6} {:>8} {thr:>8.0} {p50:>8.1} {p99:>8.1} {per_txn:>7}  {rounds:<15} {ratios}{}",
                system.name(),
                s.commands,
                if s.failures > 0 {
                    format!("  ({} FAILED)", s.failures)
                } else {
                    String::new()
                }
            );
            if *system == System::Annals {
                summary.push((level, thr / raw_thr, p50 / raw_p50, p99 / raw_p99));
            }
        }
    }
    println!();
    println!(
        "× = ratio to raw at the same level. cmd/txn counts the level's warm-up too (events / commit markers)."
    );
    println!(
        "ratio annals/raw: throughput (1.0 = the raw limit, lower is slower), latency (1.0 = the raw limit, higher is slower)"
    );
    for (level, thr, p50, p99) in &summary {
        println!(
            "  {level:>4} clients: throughput x{thr:.2}, p50 latency x{p50:.2}, p99 latency x{p99:.2}"
        );
    }
    println!();
    println!(
        "verification (events written == commands acknowledged, each command once, each answered):"
    );
    print!("{verify}");
    if !batch_sizes.is_empty() {
        let sizes = batch_sizes
            .iter()
            .map(|(s, b)| format!("{} {b:.1}", s.name()))
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "mean commands per transaction over the whole run (events / commit markers): {sizes}"
        );
    }
    for (system, raw) in &systems.raw {
        let b = raw.spec.batches.load(Ordering::Relaxed);
        let c = raw.spec.batched_commands.load(Ordering::Relaxed);
        if b > 0 {
            println!(
                "  {} loop's own count: {c} commands in {b} transactions = {:.1} per transaction; ms per transaction:",
                system.name(),
                c as f64 / b as f64
            );
            let line = STEPS
                .iter()
                .zip(&raw.spec.steps)
                .map(|(name, ns)| {
                    format!(
                        "{name} {:.1}",
                        ns.load(Ordering::Relaxed) as f64 / 1e6 / b as f64
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            println!("    {line}");
        }
    }
    if config.cpu {
        println!();
        println!(
            "framework CPU per command, in-process, single thread (µs; noisy on a shared machine):"
        );
        for (name, us) in cpu_breakdown() {
            println!("  {us:>7.2}  {name}");
        }
    }
    println!();
    println!(
        "total {:.0} s (measurements {:.0} s)",
        started.elapsed().as_secs_f64(),
        measured.as_secs_f64()
    );

    // Shut down: clients first (their listeners), then the loops. No consumer of the
    // run's topics may outlive this: deleting a topic under an assigned consumer crashes
    // librdkafka (docs/kafka-brokers.md).
    drop(tails);
    systems.clients.clear();
    for (_, raw) in systems.raw.drain(..) {
        tokio::task::spawn_blocking(move || raw.shutdown())
            .await
            .map_err(|e| e.to_string())?;
    }
    if let Some(p) = systems.processor.take() {
        p.shutdown().await;
    }
    if config.keep_topics {
        println!("kept topics: {}", systems.topics.join(" "));
    } else {
        // The broker keeps everything in memory and is shared: give the space back once
        // no client of this run is left (aborted listeners drop on their next poll).
        tokio::time::sleep(Duration::from_secs(1)).await;
        delete_topics(&config.brokers, &systems.topics).await;
    }
    if ok {
        Ok(())
    } else {
        Err("verification failed: see above".into())
    }
}
