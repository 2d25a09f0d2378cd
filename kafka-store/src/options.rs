//! Options of the Kafka store, with a raw escape hatch for any librdkafka setting.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;

/// How the Kafka store connects and lays out its topics.
///
/// ```
/// use annals_kafka_store::KafkaStoreOptions;
/// let options = KafkaStoreOptions::new("127.0.0.1:9092")
///     .topic_prefix("bank")
///     .app_id("bank-accounts")
///     .partitions(12)
///     .set("security.protocol", "ssl");
/// assert_eq!(options.events_topic("account"), "bank.account.events");
/// ```
#[derive(Debug, Clone)]
pub struct KafkaStoreOptions {
    pub(crate) brokers: String,
    pub(crate) prefix: String,
    pub(crate) app_id: String,
    pub(crate) partitions: u32,
    pub(crate) replication_factor: i32,
    pub(crate) allow_finite_retention: bool,
    pub(crate) allow_unverified_topic_config: bool,
    pub(crate) operation_timeout: Duration,
    pub(crate) transaction_timeout: Duration,
    pub(crate) max_batch: usize,
    pub(crate) max_payload_bytes: usize,
    pub(crate) session_timeout: Duration,
    pub(crate) command_timeout: Duration,
    pub(crate) raw: BTreeMap<String, String>,
}

impl KafkaStoreOptions {
    /// Options for the brokers in `brokers` (`host:port[,host:port]`, the
    /// `KAFKA_BROKERS` convention), with topic prefix `annals`, app id `annals`, 8
    /// partitions and replication factor 1.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            prefix: "annals".to_owned(),
            app_id: "annals".to_owned(),
            partitions: 8,
            replication_factor: 1,
            allow_finite_retention: false,
            allow_unverified_topic_config: false,
            operation_timeout: Duration::from_secs(30),
            transaction_timeout: Duration::from_secs(60),
            max_batch: 512,
            max_payload_bytes: 1_000_000,
            session_timeout: Duration::from_secs(45),
            command_timeout: Duration::from_secs(30),
            raw: BTreeMap::new(),
        }
    }

    /// Options from `KAFKA_BROKERS`, if it is set.
    pub fn from_env() -> Option<Self> {
        std::env::var("KAFKA_BROKERS")
            .ok()
            .filter(|b| !b.trim().is_empty())
            .map(Self::new)
    }

    /// Prefix of every topic name: `{prefix}.{aggregate}.events`.
    #[must_use]
    pub fn topic_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The application's id; transactional ids are `{app_id}.{aggregate}.{partition}`, so
    /// two deployments with the same app id fence each other, as they must.
    #[must_use]
    pub fn app_id(mut self, app_id: impl Into<String>) -> Self {
        self.app_id = app_id.into();
        self
    }

    /// Partitions of topics the store creates (existing topics keep theirs).
    #[must_use]
    pub fn partitions(mut self, partitions: u32) -> Self {
        self.partitions = partitions.max(1);
        self
    }

    /// Replication factor of topics the store creates. Use 3 in production.
    #[must_use]
    pub fn replication_factor(mut self, factor: i32) -> Self {
        self.replication_factor = factor;
        self
    }

    /// Accepts event topics whose retention is finite. Off by default: an event topic
    /// that deletes old events loses the source of truth.
    #[must_use]
    pub fn allow_finite_retention(mut self, allow: bool) -> Self {
        self.allow_finite_retention = allow;
        self
    }

    /// Accepts an existing event topic whose retention and cleanup policy the broker does
    /// not report. Off by default: such a topic is refused, since nothing shows that it
    /// keeps its events. Apache Kafka reports every topic's configuration; some brokers
    /// report only what was set when the topic was created (Tansu; docs/kafka-brokers.md),
    /// so a topic created without settings, or auto-created, cannot be verified there.
    /// Topics the store creates itself always carry their settings.
    #[must_use]
    pub fn allow_unverified_topic_config(mut self, allow: bool) -> Self {
        self.allow_unverified_topic_config = allow;
        self
    }

    /// Timeout of each broker operation (init, commit, metadata).
    #[must_use]
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// `transaction.timeout.ms`: how long the broker waits before aborting the open
    /// transaction of a writer that vanished.
    #[must_use]
    pub fn transaction_timeout(mut self, timeout: Duration) -> Self {
        self.transaction_timeout = timeout;
        self
    }

    /// Most appends batched into one transaction.
    #[must_use]
    pub fn max_batch(mut self, appends: usize) -> Self {
        self.max_batch = appends.max(1);
        self
    }

    /// Largest record accepted, in bytes: an event's payload with its key and headers
    /// ([`crate::wire::record_size`]), or a command (default 1,000,000, librdkafka's
    /// default `message.max.bytes`). Larger appends and commands are refused before
    /// anything is written. Raise it only together with the client's
    /// `message.max.bytes` and the broker's and topics' limits.
    #[must_use]
    pub fn max_payload_bytes(mut self, bytes: usize) -> Self {
        self.max_payload_bytes = bytes;
        self
    }

    /// `session.timeout.ms` of the processors' consumer group: how long a vanished
    /// processor keeps its partitions. Rebalances take a fraction of it.
    #[must_use]
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// How long `CommandBus::send` waits for an outcome before it reports a timeout.
    #[must_use]
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// Any librdkafka setting, passed through to every client (TLS, SASL, tuning).
    #[must_use]
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.raw.insert(key.into(), value.into());
        self
    }

    /// The topic prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The brokers.
    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// The event topic of an aggregate type.
    pub fn events_topic(&self, aggregate_type: &str) -> String {
        format!("{}.{aggregate_type}.events", self.prefix)
    }

    /// The command topic of an aggregate type.
    pub fn commands_topic(&self, aggregate_type: &str) -> String {
        format!("{}.{aggregate_type}.commands", self.prefix)
    }

    /// The reply topic of an aggregate type.
    pub fn replies_topic(&self, aggregate_type: &str) -> String {
        format!("{}.{aggregate_type}.replies", self.prefix)
    }

    /// The compacted snapshot topic of an aggregate type.
    pub fn snapshots_topic(&self, aggregate_type: &str) -> String {
        format!("{}.{aggregate_type}.snapshots", self.prefix)
    }

    /// The transactional id of the writer of one partition.
    pub fn transactional_id(&self, aggregate_type: &str, partition: u32) -> String {
        format!("{}.{aggregate_type}.{partition}", self.app_id)
    }

    /// The consumer group of the command processors of an aggregate type.
    pub fn processor_group(&self, aggregate_type: &str) -> String {
        format!("{}.{aggregate_type}.processor", self.app_id)
    }

    /// A client configuration with the brokers and every raw setting.
    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        c.set("client.id", format!("annals-{}", self.app_id));
        for (k, v) in &self.raw {
            c.set(k, v);
        }
        c
    }

    /// A consumer configuration that reads committed records only and reports the end
    /// of each partition (the portable "caught up" signal).
    pub(crate) fn reader_config(&self) -> ClientConfig {
        let mut c = self.client_config();
        c.set("group.id", format!("{}.reader", self.app_id))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest")
            // Callers wait on these reads (replies, restores): poll again soon.
            .set("fetch.wait.max.ms", "10");
        for (k, v) in &self.raw {
            c.set(k, v);
        }
        c
    }
}
