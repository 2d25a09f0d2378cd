//! The event store port: what every store (in-memory, Kafka) provides.

use std::fmt;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::envelope::{RawEnvelope, UncommittedEvent};
use crate::error::Error;
use crate::ids::{AggregateId, Offset, Partition, Version};

/// What a writer expects the stream's version to be before its append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// Append whatever the version is.
    Any,
    /// The aggregate must not exist yet.
    NoStream,
    /// The aggregate must be at exactly this version.
    Exact(Version),
}

impl ExpectedVersion {
    /// Whether a stream at `actual` satisfies the expectation.
    pub fn admits(self, actual: Version) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == Version::INITIAL,
            ExpectedVersion::Exact(v) => v == actual,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any version"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::Exact(v) => write!(f, "version {v}"),
        }
    }
}

/// A stream of stored events, verified as they are read.
pub type EventStream<'a> = BoxStream<'a, Result<RawEnvelope, Error>>;

/// An append-only store of per-aggregate event streams laid out on partitions.
///
/// Guarantees every implementation gives (and the conformance suite checks):
/// - the events of one `append` are stored atomically, in order, or not at all;
/// - sequences of an aggregate start at 1 and have no gaps; appends check the expected
///   version against the authoritative current version and fail with
///   [`Error::Conflict`];
/// - an aggregate's events all live on partition `partition_for(id, partitions)`;
/// - reads verify sequences and the hash chain and fail loudly when either is broken.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends events to one aggregate's stream and returns them as stored (sequence,
    /// hashes and position filled in).
    async fn append(
        &self,
        aggregate_type: &str,
        aggregate_id: &AggregateId,
        expected: ExpectedVersion,
        events: Vec<UncommittedEvent>,
    ) -> Result<Vec<RawEnvelope>, Error>;

    /// The events of one aggregate with `sequence >= from`, in order. The whole chain is
    /// verified, including the events before `from`.
    fn read_aggregate<'a>(
        &'a self,
        aggregate_type: &'a str,
        aggregate_id: &'a AggregateId,
        from: Version,
    ) -> EventStream<'a>;

    /// The events of one partition from offset `from` up to the partition's end when the
    /// read started, in offset order.
    fn read_partition<'a>(
        &'a self,
        aggregate_type: &'a str,
        partition: Partition,
        from: Offset,
    ) -> EventStream<'a>;

    /// How many partitions the event topic of `aggregate_type` has.
    async fn partition_count(&self, aggregate_type: &str) -> Result<u32, Error>;

    /// The name of the topic that holds `aggregate_type`'s events.
    fn topic_for(&self, aggregate_type: &str) -> String;
}
