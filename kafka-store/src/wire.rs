//! The record format, version 1 (`docs/wire-format.md` is the normative spec): key =
//! aggregate id, value = codec payload, headers = envelope metadata and hash-chain fields,
//! all as UTF-8 text so any Kafka client can read them.

use std::collections::BTreeMap;

use annals_core::hash::EventHash;
use annals_core::{
    Actor, AggregateId, CausationId, CommandId, CorrelationId, Envelope, Error, EventId, Metadata,
    Offset, Partition, Position, RawEnvelope, RawPayload, Version,
};
use chrono::{DateTime, SecondsFormat, Utc};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use uuid::Uuid;

/// The wire-format version this code writes and reads.
pub const WIRE_VERSION: &str = "1";

/// Header names of the wire format.
pub mod header {
    /// Wire-format version (`1`).
    pub const WIRE_VERSION: &str = "annals-wire-version";
    /// Event id, UUID text.
    pub const EVENT_ID: &str = "annals-event-id";
    /// Event type name.
    pub const EVENT_TYPE: &str = "annals-event-type";
    /// Schema version of the payload, decimal.
    pub const SCHEMA_VERSION: &str = "annals-schema-version";
    /// Aggregate type.
    pub const AGGREGATE_TYPE: &str = "annals-aggregate-type";
    /// Aggregate id (equal to the record key).
    pub const AGGREGATE_ID: &str = "annals-aggregate-id";
    /// Per-aggregate sequence, decimal, from 1.
    pub const SEQUENCE: &str = "annals-sequence";
    /// RFC 3339 UTC time with microseconds.
    pub const OCCURRED_AT: &str = "annals-occurred-at";
    /// Who caused the event.
    pub const ACTOR: &str = "annals-actor";
    /// The command that produced the event, UUID text.
    pub const COMMAND_ID: &str = "annals-command-id";
    /// Correlation id, UUID text.
    pub const CORRELATION_ID: &str = "annals-correlation-id";
    /// Causation id, UUID text.
    pub const CAUSATION_ID: &str = "annals-causation-id";
    /// W3C traceparent, optional.
    pub const TRACE_CONTEXT: &str = "annals-trace-context";
    /// Prefix of application metadata entries (`annals-ext-tenant`).
    pub const EXTENSION_PREFIX: &str = "annals-ext-";
    /// Content type of the value (`application/json`).
    pub const CONTENT_TYPE: &str = "annals-content-type";
    /// Hash of the aggregate's previous event, 64 lowercase hex digits.
    pub const PREV_HASH: &str = "annals-prev-hash";
    /// Hash of this event, 64 lowercase hex digits.
    pub const HASH: &str = "annals-hash";
}

/// The headers of a sealed event.
pub fn encode_headers(event: &RawEnvelope) -> OwnedHeaders {
    let occurred_at = event
        .occurred_at
        .to_rfc3339_opts(SecondsFormat::Micros, true);
    let m = &event.metadata;
    let mut h = OwnedHeaders::new_with_capacity(18 + m.extensions.len());
    let mut put = |key: &str, value: &str| {
        h = std::mem::take(&mut h).insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    };
    put(header::WIRE_VERSION, WIRE_VERSION);
    put(header::EVENT_ID, &event.event_id.to_string());
    put(header::EVENT_TYPE, &event.event_type);
    put(header::SCHEMA_VERSION, &event.schema_version.to_string());
    put(header::AGGREGATE_TYPE, &event.aggregate_type);
    put(header::AGGREGATE_ID, event.aggregate_id.as_str());
    put(header::SEQUENCE, &event.sequence.to_string());
    put(header::OCCURRED_AT, &occurred_at);
    put(header::ACTOR, m.actor.as_str());
    put(header::COMMAND_ID, &m.command_id.to_string());
    put(header::CORRELATION_ID, &m.correlation_id.to_string());
    put(header::CAUSATION_ID, &m.causation_id.to_string());
    if let Some(t) = &m.trace_context {
        put(header::TRACE_CONTEXT, t);
    }
    for (k, v) in &m.extensions {
        put(&format!("{}{k}", header::EXTENSION_PREFIX), v);
    }
    put(header::CONTENT_TYPE, &event.payload.content_type);
    put(header::PREV_HASH, &event.prev_hash.to_hex());
    put(header::HASH, &event.hash.to_hex());
    h
}

/// The record timestamp written with an event: its occurred-at time in milliseconds, so
/// time-based replay (`offsets_for_times`) finds it.
pub fn record_timestamp(event: &RawEnvelope) -> i64 {
    event.occurred_at.timestamp_millis()
}

/// Decodes a record of an event topic. Every problem is a [`Error::MalformedRecord`]
/// naming the position and the header or field at fault.
pub fn decode<M: Message>(message: &M) -> Result<RawEnvelope, Error> {
    let position = Position {
        topic: message.topic().to_owned(),
        partition: Partition(u32::try_from(message.partition()).unwrap_or(0)),
        offset: Offset(u64::try_from(message.offset()).unwrap_or(0)),
    };
    let bad = |reason: String| Error::MalformedRecord {
        position: position.clone(),
        reason,
    };
    let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
    let mut extensions = BTreeMap::new();
    if let Some(headers) = message.headers() {
        for Header { key, value } in headers.iter() {
            let value = value.ok_or_else(|| bad(format!("header `{key}` has no value")))?;
            let value = std::str::from_utf8(value)
                .map_err(|_| bad(format!("header `{key}` is not UTF-8")))?;
            if let Some(ext) = key.strip_prefix(header::EXTENSION_PREFIX) {
                extensions.insert(ext.to_owned(), value.to_owned());
            } else if fields.insert(key, value).is_some() {
                return Err(bad(format!("header `{key}` appears twice")));
            }
        }
    }
    let get = |key: &str| {
        fields
            .get(key)
            .copied()
            .ok_or_else(|| bad(format!("missing header `{key}`: not an annals event")))
    };
    let version = get(header::WIRE_VERSION)?;
    if version != WIRE_VERSION {
        return Err(bad(format!(
            "wire-format version `{version}` is not supported (this reader knows {WIRE_VERSION})"
        )));
    }
    let uuid = |key: &str| -> Result<Uuid, Error> {
        let v = get(key)?;
        Uuid::parse_str(v).map_err(|e| bad(format!("header `{key}` = `{v}` is not a UUID: {e}")))
    };
    let number = |key: &str| -> Result<u64, Error> {
        let v = get(key)?;
        v.parse::<u64>()
            .map_err(|_| bad(format!("header `{key}` = `{v}` is not a decimal number")))
    };
    let hash = |key: &str| -> Result<EventHash, Error> {
        let v = get(key)?;
        EventHash::from_hex(v).ok_or_else(|| bad(format!("header `{key}` is not 64 hex digits")))
    };
    let occurred = get(header::OCCURRED_AT)?;
    let occurred_at = DateTime::parse_from_rfc3339(occurred)
        .map_err(|e| {
            bad(format!(
                "header `{}` = `{occurred}`: {e}",
                header::OCCURRED_AT
            ))
        })?
        .with_timezone(&Utc);
    let aggregate_id = get(header::AGGREGATE_ID)?;
    if message.key() != Some(aggregate_id.as_bytes()) {
        return Err(bad(format!(
            "record key differs from header `{}` = `{aggregate_id}`",
            header::AGGREGATE_ID
        )));
    }
    let schema_version = u32::try_from(number(header::SCHEMA_VERSION)?).map_err(|_| {
        bad(format!(
            "header `{}` is out of range",
            header::SCHEMA_VERSION
        ))
    })?;
    let metadata = Metadata {
        actor: Actor::new(get(header::ACTOR)?),
        command_id: CommandId(uuid(header::COMMAND_ID)?),
        correlation_id: CorrelationId(uuid(header::CORRELATION_ID)?),
        causation_id: CausationId(uuid(header::CAUSATION_ID)?),
        trace_context: fields.get(header::TRACE_CONTEXT).map(|s| (*s).to_owned()),
        extensions,
    };
    Ok(Envelope {
        event_id: EventId(uuid(header::EVENT_ID)?),
        aggregate_type: get(header::AGGREGATE_TYPE)?.to_owned(),
        aggregate_id: AggregateId::new(aggregate_id),
        sequence: Version(number(header::SEQUENCE)?),
        event_type: get(header::EVENT_TYPE)?.to_owned(),
        schema_version,
        occurred_at,
        metadata,
        prev_hash: hash(header::PREV_HASH)?,
        hash: hash(header::HASH)?,
        payload: RawPayload {
            content_type: get(header::CONTENT_TYPE)?.to_owned(),
            bytes: message.payload().unwrap_or_default().to_vec(),
        },
        position: Some(position),
    })
}
