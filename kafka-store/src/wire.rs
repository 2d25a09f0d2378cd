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

/// How many bytes an event's record counts against Kafka's record size limits (the
/// client's `message.max.bytes`, the broker's `max.message.bytes`): key, value and
/// headers, with the headers' length prefixes at their largest. Batch and record framing
/// come on top; Kafka's defaults leave room for them above 1,000,000 bytes.
pub fn record_size(event: &RawEnvelope) -> usize {
    let headers = encode_headers(event);
    let header_bytes: usize = headers
        .iter()
        .map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len) + 10)
        .sum();
    event.aggregate_id.as_bytes().len() + event.payload.bytes.len() + header_bytes
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

#[cfg(test)]
mod tests {
    //! Proves `docs/wire-format.md` sufficient: events sealed by `annals_core` and encoded
    //! by [`encode_headers`] are dumped as JSON and verified by
    //! `scripts/wire-format-check.py`, which is written from the spec alone.

    use std::path::Path;
    use std::process::{Command, Output};
    use std::sync::atomic::{AtomicUsize, Ordering};

    use annals_core::partition::partition_for;
    use annals_core::{AggregateRef, ExpectedVersion, UncommittedEvent};
    use rdkafka::Timestamp;
    use rdkafka::message::OwnedMessage;
    use serde_json::{Value, json};

    use super::*;
    use crate::command::protocol::{
        CommandRecord, Outcome, PROTOCOL_VERSION, ReplyRecord, SnapshotRecord,
    };
    use crate::options::KafkaStoreOptions;

    /// Partitions of the event topic in the dump.
    const PARTITIONS: u32 = 3;

    /// The hash of the worked example of `docs/wire-format.md` (the first event of
    /// `konto-jürgen-€`). If this changes, the spec's example is wrong.
    const WORKED_EXAMPLE_HASH: &str =
        "d1e6b25e65c1f11a74d0f3fa763225adf0322fbc06540699721138105fff6a57";

    fn id(text: &str) -> Uuid {
        Uuid::parse_str(text).expect("a valid UUID literal")
    }

    fn time(secs: i64, nanos: u32) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, nanos).expect("a valid time")
    }

    fn json_bytes(value: &Value) -> Vec<u8> {
        serde_json::to_vec(value).expect("JSON encodes")
    }

    fn event(
        event_id: &str,
        event_type: &str,
        schema_version: u32,
        occurred_at: DateTime<Utc>,
        metadata: &Metadata,
        payload: &Value,
    ) -> UncommittedEvent {
        UncommittedEvent {
            event_id: EventId(id(event_id)),
            event_type: event_type.to_owned(),
            schema_version,
            occurred_at,
            metadata: metadata.clone(),
            payload: RawPayload {
                content_type: "application/json".to_owned(),
                bytes: json_bytes(payload),
            },
        }
    }

    /// Seals `events` as the next of `aggregate`'s stream, after `head`.
    fn seal_all(
        aggregate: &AggregateRef,
        head: &mut (Version, EventHash),
        events: Vec<UncommittedEvent>,
    ) -> Vec<RawEnvelope> {
        events
            .into_iter()
            .map(|e| {
                let sealed = e.seal(aggregate, head.0.next(), head.1);
                *head = (sealed.sequence, sealed.hash);
                sealed
            })
            .collect()
    }

    /// The accounts `konto-jürgen-€` (multi-byte UTF-8 key; partition 2 of 3) and `acc-1`
    /// (partition 0), sealed in four transactions as a writer would seal them.
    fn transactions() -> Vec<Vec<RawEnvelope>> {
        let jurgen = AggregateRef::new("account", AggregateId::new("konto-jürgen-€"));
        let other = AggregateRef::new("account", AggregateId::new("acc-1"));
        let (mut head_j, mut head_o) = (
            (Version::INITIAL, EventHash::ZERO),
            (Version::INITIAL, EventHash::ZERO),
        );

        let open = Metadata::new(
            Actor::new("user:alice"),
            CommandId(id("01900f4e-6a1b-7c3d-8e4f-5a6b7c8d9e01")),
        )
        .with_trace_context("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .with_extension("tenant", "acme")
        .with_extension("channel", "web");
        let t1 = time(1_718_011_800, 123_456_000); // 2024-06-10T09:30:00.123456Z
        let tx1 = seal_all(
            &jurgen,
            &mut head_j,
            vec![
                event(
                    "01900f4e-6a1b-7c3d-8e4f-5a6b7c8d9e02",
                    "AccountOpened",
                    1,
                    t1,
                    &open,
                    &json!({"owner": "Jürgen Groß", "currency": "EUR"}),
                ),
                event(
                    "01900f4e-6a1b-7c3d-8e4f-5a6b7c8d9e03",
                    "MoneyDeposited",
                    1,
                    t1,
                    &open,
                    &json!({"amount": {"minor": 10000, "currency": "EUR"}, "balance_after": 10000}),
                ),
            ],
        );

        // Before 1970 and with nanoseconds: the header and the hash keep whole
        // microseconds (rounded down), the record timestamp whole milliseconds (down).
        let bob = Metadata::new(
            Actor::new("service:importer"),
            CommandId(id("01900f4e-6a1b-7c3d-8e4f-5a6b7c8d9e04")),
        );
        let tx2 = seal_all(
            &other,
            &mut head_o,
            vec![event(
                "01900f4e-6a1b-7c3d-8e4f-5a6b7c8d9e05",
                "AccountOpened",
                1,
                time(-1, 999_999_500),
                &bob,
                &json!({"owner": "Bob \"the builder\"\n", "currency": "USD"}),
            )],
        );

        // Caused by the first command: same correlation, other causation, no trace.
        let mut close = open.caused_by(
            CommandId(id("01900f4e-6a1b-7c3d-8e4f-5a6b7c8d9e06")),
            CausationId(id("01900f4e-6a1b-7c3d-8e4f-5a6b7c8d9e03")),
        );
        close.trace_context = None;
        let tx3 = seal_all(
            &jurgen,
            &mut head_j,
            vec![event(
                "01900f4e-6a1b-7c3d-8e4f-5a6b7c8d9e07",
                "AccountClosed",
                1,
                time(1_718_015_400, 0),
                &close,
                &Value::Null,
            )],
        );

        // Schema version 2, an upper-case extension key (sorts before lower case).
        let deposit = Metadata::new(
            Actor::new("user:bob"),
            CommandId(id("01900f4e-6a1b-7c3d-8e4f-5a6b7c8d9e08")),
        )
        .with_extension("Region", "eu-west");
        let tx4 = seal_all(
            &other,
            &mut head_o,
            vec![event(
                "01900f4e-6a1b-7c3d-8e4f-5a6b7c8d9e09",
                "MoneyDeposited",
                2,
                time(1_718_011_860, 500_000_789),
                &deposit,
                &json!({"amount": {"minor": 250, "currency": "USD"}, "balance_after": 250, "memo": "ü"}),
            )],
        );
        vec![tx1, tx2, tx3, tx4]
    }

    /// One stored record: where it is and the event in it.
    struct Stored {
        topic: String,
        partition: u32,
        offset: u64,
        event: RawEnvelope,
    }

    /// Places the transactions as the writers would: murmur2 partition, consecutive
    /// offsets within a transaction, and one offset taken by each commit marker.
    fn store() -> Vec<Stored> {
        let topic = KafkaStoreOptions::new("unused:9092").events_topic("account");
        let mut next_offset = [0u64; PARTITIONS as usize];
        let mut stored = Vec::new();
        for tx in transactions() {
            let partition = partition_for(tx[0].aggregate_id.as_bytes(), PARTITIONS);
            let next = &mut next_offset[partition as usize];
            for event in tx {
                stored.push(Stored {
                    topic: topic.clone(),
                    partition,
                    offset: *next,
                    event,
                });
                *next += 1;
            }
            *next += 1; // the commit marker
        }
        stored
    }

    fn base64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    fn header_map(headers: &OwnedHeaders) -> serde_json::Map<String, Value> {
        headers
            .iter()
            .map(|h| {
                let value = std::str::from_utf8(h.value.expect("every header has a value"))
                    .expect("every header is UTF-8");
                (h.key.to_owned(), Value::String(value.to_owned()))
            })
            .collect()
    }

    /// The dump the checker reads: one JSON object per record.
    fn dump(stored: &[Stored]) -> Value {
        let records = stored
            .iter()
            .map(|s| {
                json!({
                    "topic": s.topic,
                    "partition": s.partition,
                    "offset": s.offset,
                    "key": s.event.aggregate_id.as_str(),
                    "headers": header_map(&encode_headers(&s.event)),
                    "value": base64(&s.event.payload.bytes),
                    "timestamp": record_timestamp(&s.event),
                })
            })
            .collect();
        Value::Array(records)
    }

    /// Runs the checker on `dump`; the dump file is removed afterwards.
    fn check(dump: &Value) -> Output {
        static RUN: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "annals-wire-dump-{}-{}.json",
            std::process::id(),
            RUN.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(
            &path,
            serde_json::to_vec_pretty(dump).expect("dump encodes"),
        )
        .expect("dump written");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/wire-format-check.py");
        let output = Command::new("python3")
            .arg(&script)
            .arg(&path)
            .args(["--partitions", &PARTITIONS.to_string()])
            .output()
            .expect("python3 runs scripts/wire-format-check.py");
        let _ = std::fs::remove_file(&path);
        output
    }

    fn text(output: &Output) -> String {
        format!(
            "status {}\nstdout:\n{}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    }

    #[test]
    fn wire_records_round_trip_through_decode() {
        for s in store() {
            let message = OwnedMessage::new(
                Some(s.event.payload.bytes.clone()),
                Some(s.event.aggregate_id.as_bytes().to_vec()),
                s.topic.clone(),
                Timestamp::CreateTime(record_timestamp(&s.event)),
                i32::try_from(s.partition).expect("small partition"),
                i64::try_from(s.offset).expect("small offset"),
                Some(encode_headers(&s.event)),
            );
            let decoded = decode(&message).expect("decodes");
            let mut expected = s.event.clone();
            // The wire carries whole microseconds; the hash never saw more.
            expected.occurred_at = annals_core::clock::truncate_to_micros(expected.occurred_at);
            expected.position = Some(Position {
                topic: s.topic.clone(),
                partition: Partition(s.partition),
                offset: Offset(s.offset),
            });
            assert_eq!(decoded, expected);
            assert_eq!(EventHash::of(&decoded), decoded.hash);
        }
    }

    #[test]
    fn checker_written_from_the_spec_verifies_real_records() {
        let stored = store();
        let partitions: std::collections::BTreeSet<u32> =
            stored.iter().map(|s| s.partition).collect();
        assert_eq!(partitions.len(), 2, "the aggregates share a partition");
        let output = check(&dump(&stored));
        assert!(output.status.success(), "{}", text(&output));
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("OK: 5 record(s) of 2 aggregate(s)"),
            "{}",
            text(&output)
        );
    }

    #[test]
    fn checker_names_the_record_whose_payload_was_tampered_with() {
        let stored = store();
        let mut dump = dump(&stored);
        // `"minor":10000` becomes `"minor":90000`: still JSON, no longer what was hashed.
        let victim = stored
            .iter()
            .position(|s| {
                s.event.aggregate_id.as_str() == "konto-jürgen-€" && s.event.sequence == Version(2)
            })
            .expect("the deposit is stored");
        let mut bytes = stored[victim].event.payload.bytes.clone();
        let at = bytes
            .windows(5)
            .position(|w| w == b"10000")
            .expect("the amount is in the payload");
        bytes[at] = b'9';
        dump[victim]["value"] = Value::String(base64(&bytes));

        let output = check(&dump);
        let s = &stored[victim];
        let name = format!("{}/{}@{}", s.topic, s.partition, s.offset);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{}", text(&output));
        assert!(
            stderr.contains(&format!(
                "{name} (account/konto-jürgen-€ sequence 2): hash mismatch"
            )),
            "the failure must name {name}: {}",
            text(&output)
        );
        assert_eq!(
            stderr.matches("hash mismatch").count(),
            1,
            "{}",
            text(&output)
        );
    }

    #[test]
    fn checker_reports_a_missing_event_as_a_sequence_gap() {
        let stored = store();
        let mut dump = dump(&stored);
        let gone = stored
            .iter()
            .position(|s| {
                s.event.aggregate_id.as_str() == "konto-jürgen-€" && s.event.sequence == Version(2)
            })
            .expect("stored");
        dump.as_array_mut().expect("a list").remove(gone);
        let output = check(&dump);
        assert_eq!(output.status.code(), Some(1), "{}", text(&output));
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("sequence gap: expected 2"),
            "{}",
            text(&output)
        );
    }

    #[test]
    fn checker_reports_a_record_on_the_wrong_partition() {
        let stored = store();
        let mut dump = dump(&stored);
        let wrong = (stored[0].partition + 1) % PARTITIONS;
        dump[0]["partition"] = json!(wrong);
        let output = check(&dump);
        assert_eq!(output.status.code(), Some(1), "{}", text(&output));
        assert!(
            String::from_utf8_lossy(&output.stderr).contains(&format!(
                "misplaced: key `konto-jürgen-€` belongs on partition {} of 3, found on {wrong}",
                stored[0].partition
            )),
            "{}",
            text(&output)
        );
    }

    /// The worked example of `docs/wire-format.md`, pinned. `cargo test -p
    /// annals-kafka-store --lib wire::tests::worked_example -- --nocapture` prints it.
    #[test]
    fn worked_example() {
        let stored = store();
        let s = &stored[0];
        let headers: Vec<(String, String)> = encode_headers(&s.event)
            .iter()
            .map(|h| {
                let value = String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned();
                (h.key.to_owned(), value)
            })
            .collect();
        println!("{}/{}@{}", s.topic, s.partition, s.offset);
        println!("key {}", s.event.aggregate_id);
        println!("timestamp {}", record_timestamp(&s.event));
        for (name, value) in &headers {
            println!("{name}: {value}");
        }
        println!("value {}", String::from_utf8_lossy(&s.event.payload.bytes));
        for s in &stored {
            println!(
                "{}/{}@{} {} {} prev {} hash {}",
                s.topic,
                s.partition,
                s.offset,
                s.event.aggregate_id,
                s.event.sequence,
                s.event.prev_hash,
                s.event.hash
            );
        }

        assert_eq!(s.event.hash.to_hex(), WORKED_EXAMPLE_HASH);
        assert_eq!(
            (s.topic.as_str(), s.partition, s.offset),
            ("annals.account.events", 2, 0)
        );
        assert_eq!(
            s.event.aggregate_id.as_bytes(),
            b"konto-j\xc3\xbcrgen-\xe2\x82\xac"
        );
        assert_eq!(
            annals_core::murmur2(s.event.aggregate_id.as_bytes()),
            2_043_713_054
        );
        assert_eq!(record_timestamp(&s.event), 1_718_011_800_123);
        assert_eq!(
            s.event.payload.bytes,
            "{\"currency\":\"EUR\",\"owner\":\"Jürgen Groß\"}".as_bytes()
        );
        let expected: Vec<(String, String)> = [
            ("annals-wire-version", "1"),
            ("annals-event-id", "01900f4e-6a1b-7c3d-8e4f-5a6b7c8d9e02"),
            ("annals-event-type", "AccountOpened"),
            ("annals-schema-version", "1"),
            ("annals-aggregate-type", "account"),
            ("annals-aggregate-id", "konto-jürgen-€"),
            ("annals-sequence", "1"),
            ("annals-occurred-at", "2024-06-10T09:30:00.123456Z"),
            ("annals-actor", "user:alice"),
            ("annals-command-id", "01900f4e-6a1b-7c3d-8e4f-5a6b7c8d9e01"),
            (
                "annals-correlation-id",
                "01900f4e-6a1b-7c3d-8e4f-5a6b7c8d9e01",
            ),
            (
                "annals-causation-id",
                "01900f4e-6a1b-7c3d-8e4f-5a6b7c8d9e01",
            ),
            (
                "annals-trace-context",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("annals-ext-channel", "web"),
            ("annals-ext-tenant", "acme"),
            ("annals-content-type", "application/json"),
            ("annals-prev-hash", &"0".repeat(64)),
            ("annals-hash", WORKED_EXAMPLE_HASH),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        assert_eq!(headers, expected);
        // The chain summary table of the spec: offsets skip the commit markers.
        let chain: Vec<(u32, u64, &str, u64, String)> = stored
            .iter()
            .map(|s| {
                let id = s.event.aggregate_id.as_str();
                (
                    s.partition,
                    s.offset,
                    id,
                    s.event.sequence.0,
                    s.event.hash.to_hex(),
                )
            })
            .collect();
        let hashes = [
            WORKED_EXAMPLE_HASH,
            "1d6c0a2ff55fc20bc1a04aa2dc1191c9c8fbee98c6cc99886a35f66a5455cb8a",
            "546c2b598d39692743c170d5bd2ba3610a5f91d449676308b89dc75dd28e519a",
            "0721b5edaeffe095fe4c8022f06d70129c283ac1f6ff964883ba5760c8c2aa80",
            "ca0b9888bf17c5e6e1aa534de4d060045ee313f34d55a675e051b20cbe3bbf9f",
        ];
        let places = [
            (2, 0, "konto-jürgen-€", 1),
            (2, 1, "konto-jürgen-€", 2),
            (0, 0, "acc-1", 1),
            (2, 3, "konto-jürgen-€", 3),
            (0, 2, "acc-1", 2),
        ];
        let expected: Vec<(u32, u64, &str, u64, String)> = places
            .iter()
            .zip(hashes)
            .map(|(&(p, o, id, seq), h)| (p, o, id, seq, h.to_owned()))
            .collect();
        assert_eq!(chain, expected);
    }

    fn to_json(value: &impl serde::Serialize) -> Value {
        serde_json::to_value(value).expect("encodes")
    }

    /// The JSON shapes of the command bus records, exactly as the spec shows them.
    #[test]
    fn command_bus_records_serialize_as_documented() {
        let stored = store();
        let metadata = stored[0].event.metadata.clone();
        let metadata_json = json!({
            "actor": "user:alice",
            "command_id": "01900f4e-6a1b-7c3d-8e4f-5a6b7c8d9e01",
            "correlation_id": "01900f4e-6a1b-7c3d-8e4f-5a6b7c8d9e01",
            "causation_id": "01900f4e-6a1b-7c3d-8e4f-5a6b7c8d9e01",
            "trace_context": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "extensions": {"channel": "web", "tenant": "acme"}
        });
        let command = CommandRecord {
            v: PROTOCOL_VERSION,
            metadata: metadata.clone(),
            expected: Some(ExpectedVersion::Exact(Version(2))),
            reply_to: Some(1),
            command: json!({"Deposit": {"account": "konto-jürgen-€", "amount": {"minor": 500, "currency": "EUR"}}}),
        };
        assert_eq!(
            to_json(&command),
            json!({
                "v": 1,
                "metadata": metadata_json,
                "expected": {"Exact": 2},
                "reply_to": 1,
                "command": {"Deposit": {"account": "konto-jürgen-€", "amount": {"currency": "EUR", "minor": 500}}}
            })
        );
        let bare = CommandRecord {
            v: PROTOCOL_VERSION,
            metadata: Metadata::new(Actor::system(), metadata.command_id),
            expected: None,
            reply_to: None,
            command: json!("Freeze"),
        };
        assert_eq!(
            to_json(&bare),
            json!({
                "v": 1,
                "metadata": {
                    "actor": "system",
                    "command_id": "01900f4e-6a1b-7c3d-8e4f-5a6b7c8d9e01",
                    "correlation_id": "01900f4e-6a1b-7c3d-8e4f-5a6b7c8d9e01",
                    "causation_id": "01900f4e-6a1b-7c3d-8e4f-5a6b7c8d9e01"
                },
                "command": "Freeze"
            })
        );
        for (expected, text) in [
            (ExpectedVersion::Any, json!("Any")),
            (ExpectedVersion::NoStream, json!("NoStream")),
            (ExpectedVersion::Exact(Version(7)), json!({"Exact": 7})),
        ] {
            assert_eq!(serde_json::to_value(expected).expect("encodes"), text);
        }

        let mut event = stored[0].event.clone();
        event.position = Some(Position {
            topic: stored[0].topic.clone(),
            partition: Partition(stored[0].partition),
            offset: Offset(stored[0].offset),
        });
        let reply = |outcome| ReplyRecord {
            v: PROTOCOL_VERSION,
            command_id: metadata.command_id,
            outcome,
        };
        let command_id = "01900f4e-6a1b-7c3d-8e4f-5a6b7c8d9e01";
        assert_eq!(
            to_json(&reply(Outcome::Committed {
                events: vec![event],
                version: Version(1),
                duplicate: false,
            })),
            json!({
                "v": 1,
                "command_id": command_id,
                "outcome": "committed",
                "events": [{
                    "event_id": "01900f4e-6a1b-7c3d-8e4f-5a6b7c8d9e02",
                    "aggregate_type": "account",
                    "aggregate_id": "konto-jürgen-€",
                    "sequence": 1,
                    "event_type": "AccountOpened",
                    "schema_version": 1,
                    "occurred_at": "2024-06-10T09:30:00.123456Z",
                    "metadata": metadata_json,
                    "position": {"topic": "annals.account.events", "partition": 2, "offset": 0},
                    "prev_hash": "0".repeat(64),
                    "hash": WORKED_EXAMPLE_HASH,
                    "payload": {
                        "content_type": "application/json",
                        // The stored bytes as an array of numbers 0..=255.
                        "bytes": stored[0].event.payload.bytes,
                    }
                }],
                "version": 1,
                "duplicate": false
            })
        );
        assert_eq!(
            to_json(&reply(Outcome::Rejected {
                rejection: json!({"InsufficientFunds": {"balance": 100}}),
            })),
            json!({"v": 1, "command_id": command_id, "outcome": "rejected",
                   "rejection": {"InsufficientFunds": {"balance": 100}}})
        );
        assert_eq!(
            to_json(&reply(Outcome::Conflict {
                expected: ExpectedVersion::Exact(Version(2)),
                actual: Version(3),
            })),
            json!({"v": 1, "command_id": command_id, "outcome": "conflict",
                   "expected": {"Exact": 2}, "actual": 3})
        );
        assert_eq!(
            to_json(&reply(Outcome::Failed {
                reason: "aggregate id is empty".to_owned(),
            })),
            json!({"v": 1, "command_id": command_id, "outcome": "failed",
                   "reason": "aggregate id is empty"})
        );
        // `duplicate` may be absent on input.
        let read: ReplyRecord = serde_json::from_value(json!({
            "v": 1, "command_id": command_id, "outcome": "committed", "events": [], "version": 4
        }))
        .expect("decodes");
        assert!(matches!(
            read.outcome,
            Outcome::Committed {
                duplicate: false,
                ..
            }
        ));

        let snapshot = SnapshotRecord {
            v: PROTOCOL_VERSION,
            version: stored[1].event.sequence,
            hash: stored[1].event.hash,
            state: json!({"owner": "Jürgen Groß", "balance": 10000}),
        };
        assert_eq!(
            to_json(&snapshot),
            json!({
                "v": 1,
                "version": 2,
                "hash": "1d6c0a2ff55fc20bc1a04aa2dc1191c9c8fbee98c6cc99886a35f66a5455cb8a",
                "state": {"balance": 10000, "owner": "Jürgen Groß"}
            })
        );
    }
}
