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
    mut visit: impl FnMut(&BorrowedMessage<'_>) -> Result<ControlFlow<()>, Error>,
) -> Result<Offset, Error> {
    let consumer: BaseConsumer = options
        .reader_config()
        .create()
        .map_err(|e| backend(format!("creating a reader of {topic}/{partition}"), e))?;
    let mut tpl = TopicPartitionList::new();
    let start = i64::try_from(from.0).unwrap_or(i64::MAX);
    tpl.add_partition_offset(topic, partition_i32(partition), KOffset::Offset(start))
        .map_err(|e| backend("building an assignment", e))?;
    consumer
        .assign(&tpl)
        .map_err(|e| backend(format!("assigning {topic}/{partition}"), e))?;

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
                    return Ok(next);
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => return Ok(next),
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

pub(crate) fn partition_i32(partition: u32) -> i32 {
    i32::try_from(partition).unwrap_or(i32::MAX)
}
