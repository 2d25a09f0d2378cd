//! Identifier newtypes: aggregate ids, event and command ids, versions and positions.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The id of one aggregate instance, unique within its aggregate type.
///
/// It is the Kafka record key (UTF-8), so every client places the aggregate's events on
/// the same partition. Any `Display` value converts into one; stores reject an empty id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AggregateId(String);

impl AggregateId {
    /// Longest id accepted by the stores, in bytes.
    pub const MAX_LEN: usize = 1024;

    /// Wraps an id.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as the bytes of the Kafka key.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Checks that the id can be stored: not empty, at most [`Self::MAX_LEN`] bytes.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.0.is_empty() {
            Err("aggregate id is empty")
        } else if self.0.len() > Self::MAX_LEN {
            Err("aggregate id is longer than 1024 bytes")
        } else {
            Ok(())
        }
    }
}

impl fmt::Display for AggregateId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for AggregateId {
    fn from(id: String) -> Self {
        Self(id)
    }
}

impl From<&str> for AggregateId {
    fn from(id: &str) -> Self {
        Self(id.to_owned())
    }
}

impl From<Uuid> for AggregateId {
    fn from(id: Uuid) -> Self {
        Self(id.to_string())
    }
}

macro_rules! uuid_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// The wrapped UUID.
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }
    };
}

uuid_newtype!(
    /// The unique id of one stored event (UUID v7, so ids sort by creation time).
    EventId
);
uuid_newtype!(
    /// The id of one command. Retrying a command with the same id has no second effect on
    /// stores that deduplicate (the Kafka command bus does).
    CommandId
);
uuid_newtype!(
    /// Groups every event and command that one business request caused.
    CorrelationId
);
uuid_newtype!(
    /// The command or event that directly caused an event.
    CausationId
);

/// The version of an aggregate: the number of events in its stream.
///
/// An event's sequence is the version the aggregate has after applying it, so the first
/// event has sequence 1 and sequences have no gaps.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Version(pub u64);

impl Version {
    /// The version of an aggregate with no events.
    pub const INITIAL: Version = Version(0);

    /// The version after one more event.
    #[must_use]
    pub fn next(self) -> Version {
        Version(self.0 + 1)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A partition of an event topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Partition(pub u32);

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// An offset within a partition (Kafka's offsets; transaction markers also take offsets,
/// so offsets of events need not be consecutive).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Offset(pub u64);

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Where a stored event lives: topic, partition and offset.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Position {
    /// The event topic.
    pub topic: String,
    /// The partition within the topic.
    pub partition: Partition,
    /// The offset within the partition.
    pub offset: Offset,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.topic, self.partition, self.offset)
    }
}

/// An aggregate named by type and id, as errors report it (`account/acc-1`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AggregateRef {
    /// The aggregate type (`Aggregate::TYPE`).
    pub aggregate_type: String,
    /// The aggregate id.
    pub aggregate_id: AggregateId,
}

impl AggregateRef {
    /// Checks that an aggregate type can name topics: non-empty, `[a-z0-9_-]`, at most
    /// 100 bytes.
    pub fn validate_type(aggregate_type: &str) -> Result<(), String> {
        let ok = !aggregate_type.is_empty()
            && aggregate_type.len() <= 100
            && aggregate_type
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok {
            Ok(())
        } else {
            Err(format!(
                "aggregate type `{aggregate_type}` must be 1 to 100 characters of [a-z0-9_-]"
            ))
        }
    }

    /// Names an aggregate.
    pub fn new(aggregate_type: impl Into<String>, aggregate_id: AggregateId) -> Self {
        Self {
            aggregate_type: aggregate_type.into(),
            aggregate_id,
        }
    }
}

impl fmt::Display for AggregateRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.aggregate_type, self.aggregate_id)
    }
}
