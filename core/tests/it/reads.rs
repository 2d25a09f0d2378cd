//! Bad stored data is reported as typed errors that say what and where.

use std::sync::Arc;

use annals_core::conformance::event;
use annals_core::hash::ChainVerifier;
use annals_core::repository::decode_event;
use annals_core::upcast::Upcasters;
use annals_core::{
    AggregateId, ChainBreak, DomainEvent, Error, EventStore, ExpectedVersion, JsonCodec,
    MemoryEventStore, Offset, Partition, RawEnvelope, Version,
};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum Tick {
    #[event(name = "Ticked", version = 2)]
    Ticked { n: u32, unit: String },
}

async fn store_with_three_events() -> (Arc<MemoryEventStore>, AggregateId, Vec<RawEnvelope>) {
    let store = Arc::new(MemoryEventStore::new().with_partitions(1));
    let id = AggregateId::new("clock-1");
    let stored = store
        .append(
            "clock",
            &id,
            ExpectedVersion::NoStream,
            vec![event(1), event(2), event(3)],
        )
        .await
        .expect("append");
    (store, id, stored)
}

async fn read(store: &MemoryEventStore, id: &AggregateId) -> Result<Vec<RawEnvelope>, Error> {
    store
        .read_aggregate("clock", id, Version(1))
        .try_collect()
        .await
}

fn position_of(e: &RawEnvelope) -> (Partition, Offset) {
    let p = e.position.as_ref().expect("stored");
    (p.partition, p.offset)
}

#[tokio::test]
async fn a_changed_payload_breaks_the_hash_chain_at_that_event() {
    let (store, id, stored) = store_with_three_events().await;
    assert!(store.tamper_with("clock", position_of(&stored[1]), |e| {
        e.payload.bytes = b"{\"n\":999}".to_vec();
    }));
    let err = read(&store, &id).await.expect_err("tampering is detected");
    match err {
        Error::HashChain { at, kind } => {
            assert_eq!(at.aggregate.aggregate_id, id);
            assert_eq!(at.sequence, Version(2));
            assert_eq!(at.position, stored[1].position);
            let ChainBreak::ContentChanged {
                stored: kept,
                computed,
            } = kind
            else {
                panic!("expected changed content, got {kind:?}");
            };
            assert_eq!(kept, stored[1].hash, "the stored hash is the original one");
            assert_ne!(computed, kept);
        }
        other => panic!("expected a hash-chain error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_rehashed_forgery_still_breaks_the_link_to_its_successor() {
    let (store, id, stored) = store_with_three_events().await;
    // A careful forger recomputes the forged event's own hash; the next event still
    // links to the original.
    store.tamper_with("clock", position_of(&stored[1]), |e| {
        e.payload.bytes = b"{\"n\":999}".to_vec();
        e.hash = annals_core::EventHash::of(e);
    });
    let err = read(&store, &id).await.expect_err("forgery is detected");
    match err {
        Error::HashChain {
            at,
            kind:
                ChainBreak::LinkBroken {
                    expected_prev,
                    stored_prev,
                },
        } => {
            assert_eq!(at.sequence, Version(3));
            assert_eq!(stored_prev, stored[1].hash);
            assert_ne!(expected_prev, stored_prev);
        }
        other => panic!("expected a broken link, got {other:?}"),
    }
}

#[tokio::test]
async fn a_dropped_event_is_a_sequence_gap() {
    let (store, id, stored) = store_with_three_events().await;
    assert!(store.tamper_remove("clock", position_of(&stored[1])));
    match read(&store, &id).await.expect_err("gap is detected") {
        Error::SequenceGap { at, expected } => {
            assert_eq!(expected, Version(2));
            assert_eq!(at.sequence, Version(3));
        }
        other => panic!("expected a sequence gap, got {other:?}"),
    }
}

#[tokio::test]
async fn reordered_events_are_detected() {
    let (_, _, stored) = store_with_three_events().await;
    let mut verifier = ChainVerifier::from_start();
    verifier.verify(&stored[0]).expect("first is fine");
    let err = verifier
        .verify(&stored[2])
        .expect_err("third before second");
    assert!(
        matches!(
            err,
            Error::SequenceGap {
                expected: Version(2),
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_partition_read_stops_at_the_first_tampered_event() {
    let (store, _, stored) = store_with_three_events().await;
    store.tamper_with("clock", position_of(&stored[2]), |e| {
        e.metadata.actor = annals_core::Actor::new("user:mallory")
    });
    let results: Vec<_> = futures::StreamExt::collect::<Vec<_>>(store.read_partition(
        "clock",
        Partition(0),
        Offset(0),
    ))
    .await;
    assert_eq!(
        results.len(),
        3,
        "two good events, then the error, then nothing"
    );
    assert!(results[0].is_ok() && results[1].is_ok());
    assert!(matches!(results[2], Err(Error::HashChain { .. })));
}

fn raw(event_type: &str, version: u32, payload: &[u8]) -> RawEnvelope {
    let mut e = event(1).seal(
        &annals_core::AggregateRef::new("clock", AggregateId::new("c")),
        Version(1),
        annals_core::EventHash::ZERO,
    );
    e.event_type = event_type.to_owned();
    e.schema_version = version;
    e.payload.bytes = payload.to_vec();
    e
}

#[test]
fn an_unknown_event_type_is_a_typed_error() {
    let err = decode_event::<Tick>(raw("Exploded", 1, b"{}"), &JsonCodec, &Upcasters::new())
        .expect_err("unknown type");
    assert!(
        matches!(&err, Error::UnknownEventType { event_type, schema_version: 1, at } if event_type == "Exploded" && at.sequence == Version(1)),
        "{err:?}"
    );
}

#[test]
fn an_old_version_without_upcaster_is_a_typed_error() {
    let err = decode_event::<Tick>(
        raw("Ticked", 1, b"{\"n\":1}"),
        &JsonCodec,
        &Upcasters::new(),
    )
    .expect_err("no upcaster from v1");
    assert!(
        matches!(
            &err,
            Error::UnknownEventType {
                schema_version: 1,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn upcasters_bring_old_payloads_to_the_current_schema() {
    let ups = Upcasters::new().with_fn("Ticked", 1, |mut doc| {
        doc["unit"] = serde_json::json!("s");
        Ok(doc)
    });
    let decoded =
        decode_event::<Tick>(raw("Ticked", 1, b"{\"n\":7}"), &JsonCodec, &ups).expect("upcast");
    assert_eq!(
        decoded.payload,
        Tick::Ticked {
            n: 7,
            unit: "s".into()
        }
    );
    assert_eq!(decoded.schema_version, 2);
}

#[test]
fn a_corrupt_payload_is_a_typed_error_naming_the_event() {
    for bytes in [
        &b"{\"n\":"[..],
        b"\xff\xfe",
        b"{\"n\":\"seven\",\"unit\":\"s\"}",
    ] {
        let err = decode_event::<Tick>(raw("Ticked", 2, bytes), &JsonCodec, &Upcasters::new())
            .expect_err("corrupt");
        assert!(
            matches!(&err, Error::CorruptPayload { event_type, .. } if event_type == "Ticked"),
            "{err:?}"
        );
        assert!(err.to_string().contains("clock/c sequence 1"), "{err}");
    }
}
