//! Who, why and when: the metadata every event carries for audit and tracing.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{CausationId, CommandId, CorrelationId};

/// Who caused an event: a person (`user:alice`), a service (`service:transfers`) or the
/// system itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Actor(String);

impl Actor {
    /// An actor by name. By convention `kind:name`, such as `user:alice`.
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    /// The framework acting on its own behalf (replays, timers).
    pub fn system() -> Self {
        Self("system".to_owned())
    }

    /// The actor's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The metadata of one command and of every event it produces.
///
/// `correlation_id` ties together everything one business request caused;
/// `causation_id` names the command or event that directly caused this one; the
/// `command_id` lets stores deduplicate retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Who asked for it.
    pub actor: Actor,
    /// The command that produced the events.
    pub command_id: CommandId,
    /// The business request all of this belongs to.
    pub correlation_id: CorrelationId,
    /// The command or event that directly caused this.
    pub causation_id: CausationId,
    /// A W3C `traceparent`, when the caller is traced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_context: Option<String>,
    /// Application-defined entries (tenant, channel, ...). Sorted, so the hash chain sees
    /// one canonical order.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extensions: BTreeMap<String, String>,
}

impl Metadata {
    /// The extension that carries a command's deadline (RFC 3339). Stores refuse a
    /// command handled after it, so a sender that waited past the deadline can learn for
    /// certain, by sending the same command id again, whether the command took effect.
    pub const DEADLINE: &'static str = "annals.deadline";

    /// Sets the deadline after which the command must not take effect.
    #[must_use]
    pub fn with_deadline(self, deadline: chrono::DateTime<chrono::Utc>) -> Self {
        self.with_extension(
            Self::DEADLINE,
            deadline.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        )
    }

    /// The command's deadline, if it has a readable one.
    pub fn deadline(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.extensions
            .get(Self::DEADLINE)
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|d| d.with_timezone(&chrono::Utc))
    }

    /// Metadata for a new request: the command starts its own correlation and causes
    /// itself.
    pub fn new(actor: Actor, command_id: CommandId) -> Self {
        Self {
            actor,
            command_id,
            correlation_id: CorrelationId(command_id.0),
            causation_id: CausationId(command_id.0),
            trace_context: None,
            extensions: BTreeMap::new(),
        }
    }

    /// Metadata for a command caused by an earlier command or event in the same request.
    pub fn caused_by(&self, command_id: CommandId, cause: CausationId) -> Self {
        Self {
            actor: self.actor.clone(),
            command_id,
            correlation_id: self.correlation_id,
            causation_id: cause,
            trace_context: self.trace_context.clone(),
            extensions: self.extensions.clone(),
        }
    }

    /// Adds an application-defined entry.
    #[must_use]
    pub fn with_extension(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.extensions.insert(key.into(), value.into());
        self
    }

    /// Sets the W3C trace context.
    #[must_use]
    pub fn with_trace_context(mut self, traceparent: impl Into<String>) -> Self {
        self.trace_context = Some(traceparent.into());
        self
    }
}
