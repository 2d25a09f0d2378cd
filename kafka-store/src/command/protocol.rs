//! The records of the command bus: commands on `{prefix}.{aggregate}.commands`, outcomes
//! on `{prefix}.{aggregate}.replies`, snapshots on `{prefix}.{aggregate}.snapshots`. All
//! JSON; `docs/wire-format.md` specifies them.

use annals_core::hash::EventHash;
use annals_core::{CommandId, ExpectedVersion, Metadata, RawEnvelope, Version};
use serde::{Deserialize, Serialize};

/// Protocol version written in every command, reply and snapshot.
pub const PROTOCOL_VERSION: u32 = 1;

/// Header of a command record naming the topic its reply goes to, when not the
/// aggregate type's reply topic (a saga has answers delivered to its own command topic).
pub const REPLY_TOPIC_HEADER: &str = "annals-reply-topic";

/// Header of a reply record carrying the answered command's correlation id, so that the
/// aggregate receiving the answer (a saga) records it in the same correlation.
pub const REPLY_CORRELATION_HEADER: &str = "annals-correlation-id";

/// Header of a command record naming the key of its reply record, when not the command
/// id (a saga's id, so that the answer names the saga instance).
pub const REPLY_KEY_HEADER: &str = "annals-reply-key";

/// A command on its way to the processor that owns its aggregate's partition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommandRecord<C> {
    /// Protocol version ([`PROTOCOL_VERSION`]).
    pub v: u32,
    /// Who sent it, with the command id that deduplicates retries.
    pub metadata: Metadata,
    /// The version the sender expects the aggregate to be at, if it cares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<ExpectedVersion>,
    /// The reply partition the sender listens on; no reply when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<u32>,
    /// The command.
    pub command: C,
}

/// How a command ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The events were stored (also the answer to a duplicate of a stored command).
    Committed {
        /// The stored events.
        events: Vec<RawEnvelope>,
        /// The aggregate's version after them.
        version: Version,
        /// Whether this answers a retry of a command already stored.
        #[serde(default)]
        duplicate: bool,
    },
    /// The aggregate refused; the rejection as its serde document.
    Rejected {
        /// The rejection.
        rejection: serde_json::Value,
    },
    /// The aggregate was not at the expected version.
    Conflict {
        /// What the sender expected.
        expected: ExpectedVersion,
        /// The actual version.
        actual: Version,
    },
    /// The command could not be processed (malformed, unknown aggregate state ...).
    Failed {
        /// What went wrong.
        reason: String,
    },
}

/// The answer to one command.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplyRecord {
    /// Protocol version.
    pub v: u32,
    /// The command answered.
    pub command_id: CommandId,
    /// How it ended.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// The state of one aggregate after a committed transaction.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotRecord<S> {
    /// Protocol version.
    pub v: u32,
    /// The version the state is at.
    pub version: Version,
    /// The hash of the event at that version; a snapshot whose hash differs from the
    /// log's is ignored.
    pub hash: EventHash,
    /// The aggregate state.
    pub state: S,
}
