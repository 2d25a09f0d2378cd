//! A transactional producer for one partition's single writer.

use std::time::Duration;

use annals_core::{Error, RawEnvelope};
use rdkafka::TopicPartitionList;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use crate::kafka::{backend, is_fenced, is_fenced_code};
use crate::options::KafkaStoreOptions;
use crate::reader::partition_i32;
use crate::wire;

/// Why a transaction did not commit.
#[derive(Debug)]
pub(crate) enum TxnError {
    /// Another writer owns the transactional id now; this producer must stop.
    Fenced(KafkaError),
    /// Anything else; whether the transaction committed may be unknown.
    Failed(KafkaError),
}

/// A producer holding the transactional id of one partition. Creating it fences every
/// earlier holder of the id and aborts the transaction such a holder left open.
pub(crate) struct TxnProducer {
    producer: FutureProducer,
    timeout: Duration,
}

impl TxnProducer {
    /// Creates the producer and initialises its transactions (blocking).
    pub(crate) fn open(options: &KafkaStoreOptions, transactional_id: &str) -> Result<Self, Error> {
        let producer: FutureProducer = options
            .client_config()
            .set("transactional.id", transactional_id)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "transaction.timeout.ms",
                options.transaction_timeout.as_millis().to_string(),
            )
            .set("linger.ms", "1")
            .create()
            .map_err(|e| backend(format!("creating producer `{transactional_id}`"), e))?;
        producer
            .init_transactions(options.operation_timeout)
            .map_err(|e| {
                backend(
                    format!("initialising transactions of `{transactional_id}`"),
                    e,
                )
            })?;
        Ok(Self {
            producer,
            timeout: options.operation_timeout,
        })
    }

    pub(crate) fn begin(&self) -> Result<(), TxnError> {
        self.producer
            .begin_transaction()
            .map_err(|e| self.classify(e))
    }

    /// Queues an event record; the future resolves with its offset once it is written.
    pub(crate) fn send_event(
        &self,
        topic: &str,
        partition: u32,
        event: &RawEnvelope,
    ) -> Result<DeliveryFuture, TxnError> {
        let headers = wire::encode_headers(event);
        self.send(
            topic,
            partition,
            event.aggregate_id.as_bytes(),
            &event.payload.bytes,
            headers,
            Some(wire::record_timestamp(event)),
        )
    }

    /// Queues any record.
    pub(crate) fn send(
        &self,
        topic: &str,
        partition: u32,
        key: &[u8],
        payload: &[u8],
        headers: OwnedHeaders,
        timestamp: Option<i64>,
    ) -> Result<DeliveryFuture, TxnError> {
        let mut record = FutureRecord::to(topic)
            .partition(partition_i32(partition))
            .key(key)
            .payload(payload)
            .headers(headers);
        if let Some(ts) = timestamp {
            record = record.timestamp(ts);
        }
        self.producer
            .send_result(record)
            .map_err(|(e, _)| self.classify(e))
    }

    /// Commits consumed offsets with the transaction (exactly-once consume-process-produce).
    pub(crate) fn send_offsets(
        &self,
        offsets: &TopicPartitionList,
        group: &ConsumerGroupMetadata,
    ) -> Result<(), TxnError> {
        self.producer
            .send_offsets_to_transaction(offsets, group, self.timeout)
            .map_err(|e| self.classify(e))
    }

    /// Waits until every queued record is written (offsets known), still uncommitted.
    /// Commits the open transaction.
    ///
    /// It first waits until every queued record is acknowledged: librdkafka flushes before
    /// committing, and rdkafka's flush polls in fixed 100 ms steps whenever anything is
    /// still in flight, so committing with records in flight costs 100 ms even when the
    /// broker answers in one. Waiting here, in short steps, costs what the broker takes.
    pub(crate) fn commit(&self) -> Result<(), TxnError> {
        let deadline = std::time::Instant::now() + self.timeout;
        while self.producer.in_flight_count() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(200));
        }
        self.producer
            .commit_transaction(self.timeout)
            .map_err(|e| self.classify(e))
    }

    /// The offset a delivered record got, once the broker has acknowledged it (blocking).
    pub(crate) fn delivered_offset(&self, future: DeliveryFuture) -> Result<u64, TxnError> {
        match futures::executor::block_on(future) {
            Ok(Ok(delivery)) => Ok(u64::try_from(delivery.offset).unwrap_or(0)),
            Ok(Err((e, _))) => Err(self.classify(e)),
            Err(_) => Err(self.classify(KafkaError::Canceled)),
        }
    }

    /// Whether an error means this producer was fenced. Besides the fencing errors
    /// themselves this covers their consequences: once fenced, librdkafka purges the
    /// queued records, whose deliveries then fail with `PurgeQueue` only, while the
    /// producer's fatal error says `Fenced`. Taking those for "outcome unknown" would make
    /// a zombie re-initialise and fence the new owner back.
    fn classify(&self, e: KafkaError) -> TxnError {
        let fenced = is_fenced(&e)
            || self
                .producer
                .client()
                .fatal_error()
                .is_some_and(|(code, _)| is_fenced_code(code));
        if fenced {
            TxnError::Fenced(e)
        } else {
            TxnError::Failed(e)
        }
    }

    /// Aborts the open transaction, if the producer still can.
    pub(crate) fn abort(&self) {
        if let Err(e) = self.producer.abort_transaction(self.timeout) {
            tracing::warn!(error = %e, "aborting a transaction failed; the broker will time it out");
        }
    }
}
