//! Reading one partition from an offset up to its end, the way restores and catch-up
//! reads need it.
//!
//! "The end" is the end-of-partition event librdkafka emits once the consumer position
//! reaches the last stable offset. Watermarks are not used: transaction markers take
//! offsets, and some brokers report them wrongly (docs/kafka-brokers.md).

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use annals_core::{Error, Offset};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset as KOffset, TopicPartitionList};

use crate::kafka::backend;
use crate::options::KafkaStoreOptions;

/// Reads `topic`/`partition` from `from` to the end, handing each record to `visit`.
/// Stops early when `visit` breaks. Returns the offset after the last record read (or
/// `from` when there was none).
///
/// Blocking: call it from a writer thread or `spawn_blocking`.
pub(crate) fn read_to_end(
    options: &KafkaStoreOptions,
    topic: &str,
    partition: u32,
    from: Offset,
    visit: impl FnMut(&BorrowedMessage<'_>) -> Result<ControlFlow<()>, Error>,
) -> Result<Offset, Error> {
    read_until_end(options, topic, partition, from, visit).map(|end| end.next)
}

/// Like [`read_to_end`] from the partition's start, for a new owner that has just fenced
/// every earlier writer of the partition: the end counts only once no transaction is
/// pending past it.
///
/// After `init_transactions` no transaction of the partition's own writer can still be
/// open. On Apache Kafka, whose `init_transactions` also waits until the previous
/// transaction's markers are written, nothing is pending then and this costs one empty
/// look. Tansu answers a commit before the transaction's records are readable: it keeps
/// them back from `read_committed` readers while another transaction that wrote to one of
/// the same partitions is open (docs/kafka-brokers.md). A restore that stopped there
/// would miss committed events and fork the stream. So: read to the end, look past it
/// with `read_uncommitted`, and while records are there, wait and read on from the end.
///
/// Blocking: call it from a writer thread.
pub(crate) fn read_to_stable_end(
    options: &KafkaStoreOptions,
    topic: &str,
    partition: u32,
    mut visit: impl FnMut(&BorrowedMessage<'_>) -> Result<ControlFlow<()>, Error>,
) -> Result<(), Error> {
    let deadline = Instant::now() + options.operation_timeout;
    let mut from = Offset(0);
    loop {
        let end = read_until_end(options, topic, partition, from, &mut visit)?;
        if end.stopped || !records_after(options, topic, partition, end.position)? {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Timeout {
                operation: format!(
                    "waiting for the transactions pending on {topic}/{partition} after offset {} to end",
                    end.position
                ),
                after: options.operation_timeout,
            });
        }
        tracing::debug!(topic, partition, position = %end.position, "records pending past the stable end; waiting");
        std::thread::sleep(Duration::from_millis(50));
        from = end.position;
    }
}

/// Where a read ended.
struct End {
    /// The offset after the last record read.
    next: Offset,
    /// The consumer's position at the end (past transaction markers too).
    position: Offset,
    /// Whether `visit` stopped the read.
    stopped: bool,
}

fn read_until_end(
    options: &KafkaStoreOptions,
    topic: &str,
    partition: u32,
    from: Offset,
    mut visit: impl FnMut(&BorrowedMessage<'_>) -> Result<ControlFlow<()>, Error>,
) -> Result<End, Error> {
    let consumer = assigned_reader(options.reader_config(), topic, partition, from)?;
    let mut next = from;
    let idle_limit = options.operation_timeout;
    let mut last_progress = Instant::now();
    loop {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                let flow = visit(&message)?;
                next = Offset(u64::try_from(message.offset()).unwrap_or(0) + 1);
                last_progress = Instant::now();
                if flow.is_break() {
                    return Ok(End {
                        next,
                        position: next,
                        stopped: true,
                    });
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => {
                let position = consumer
                    .position()
                    .ok()
                    .and_then(|tpl| {
                        tpl.find_partition(topic, partition_i32(partition))
                            .map(|e| e.offset())
                    })
                    .and_then(|o| o.to_raw())
                    .and_then(|o| u64::try_from(o).ok())
                    .map_or(next, |o| Offset(o).max(next));
                return Ok(End {
                    next,
                    position,
                    stopped: false,
                });
            }
            Some(Err(e)) => {
                return Err(backend(format!("reading {topic}/{partition} at {next}"), e));
            }
            None if last_progress.elapsed() > idle_limit => {
                return Err(Error::Timeout {
                    operation: format!("reading {topic}/{partition} to its end from {next}"),
                    after: idle_limit,
                });
            }
            None => {}
        }
    }
}

/// Whether a `read_uncommitted` reader finds any record at or after `from`.
fn records_after(
    options: &KafkaStoreOptions,
    topic: &str,
    partition: u32,
    from: Offset,
) -> Result<bool, Error> {
    let mut config = options.reader_config();
    config.set("isolation.level", "read_uncommitted");
    let consumer = assigned_reader(config, topic, partition, from)?;
    let started = Instant::now();
    loop {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => return Ok(true),
            Some(Err(KafkaError::PartitionEOF(_))) => return Ok(false),
            Some(Err(e)) => {
                return Err(backend(format!("reading {topic}/{partition} at {from}"), e));
            }
            None if started.elapsed() > options.operation_timeout => {
                return Err(Error::Timeout {
                    operation: format!("looking past {topic}/{partition}@{from}"),
                    after: options.operation_timeout,
                });
            }
            None => {}
        }
    }
}

fn assigned_reader(
    config: rdkafka::ClientConfig,
    topic: &str,
    partition: u32,
    from: Offset,
) -> Result<BaseConsumer, Error> {
    let consumer: BaseConsumer = config
        .create()
        .map_err(|e| backend(format!("creating a reader of {topic}/{partition}"), e))?;
    let mut tpl = TopicPartitionList::new();
    let start = i64::try_from(from.0).unwrap_or(i64::MAX);
    tpl.add_partition_offset(topic, partition_i32(partition), KOffset::Offset(start))
        .map_err(|e| backend("building an assignment", e))?;
    consumer
        .assign(&tpl)
        .map_err(|e| backend(format!("assigning {topic}/{partition}"), e))?;
    Ok(consumer)
}

pub(crate) fn partition_i32(partition: u32) -> i32 {
    i32::try_from(partition).unwrap_or(i32::MAX)
}
