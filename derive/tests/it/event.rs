//! `#[derive(DomainEvent)]`: event types, versions and payload documents.

use annals_core::{DomainEvent, EventTypeInfo};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum AccountEvent {
    #[event(name = "AccountOpened", version = 2)]
    Opened {
        owner: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nickname: Option<String>,
    },
    #[event(name = "MoneyDeposited", version = 1)]
    Deposited(u64),
    #[event(name = "MoneyMoved", version = 1)]
    Moved(String, u64),
    #[event(name = "AccountClosed", version = 1)]
    Closed,
    #[event(name = "AccountFrozen", version = 3)]
    Frozen {},
}

fn round_trip(event: &AccountEvent) -> Result<AccountEvent, serde_json::Error> {
    let document = event.to_document()?;
    AccountEvent::from_document(event.event_type(), document)
        .unwrap_or_else(|| panic!("{} is a known event type", event.event_type()))
}

#[test]
fn event_types_list_every_variant_in_order() {
    assert_eq!(
        AccountEvent::EVENT_TYPES,
        &[
            EventTypeInfo {
                name: "AccountOpened",
                version: 2
            },
            EventTypeInfo {
                name: "MoneyDeposited",
                version: 1
            },
            EventTypeInfo {
                name: "MoneyMoved",
                version: 1
            },
            EventTypeInfo {
                name: "AccountClosed",
                version: 1
            },
            EventTypeInfo {
                name: "AccountFrozen",
                version: 3
            },
        ]
    );
    assert_eq!(AccountEvent::current_version("AccountFrozen"), Some(3));
    assert_eq!(AccountEvent::current_version("Opened"), None);
}

#[test]
fn each_variant_reports_its_event_type_and_version() {
    let opened = AccountEvent::Opened {
        owner: "ann".into(),
        nickname: None,
    };
    assert_eq!(opened.event_type(), "AccountOpened");
    assert_eq!(opened.schema_version(), 2);
    assert_eq!(AccountEvent::Deposited(5).event_type(), "MoneyDeposited");
    assert_eq!(AccountEvent::Closed.event_type(), "AccountClosed");
    assert_eq!(AccountEvent::Frozen {}.schema_version(), 3);
}

#[test]
fn struct_variant_payload_is_its_fields() {
    let event = AccountEvent::Opened {
        owner: "ann".into(),
        nickname: None,
    };
    assert_eq!(event.to_document().unwrap(), json!({ "owner": "ann" }));
    assert_eq!(round_trip(&event).unwrap(), event);

    let named = AccountEvent::Opened {
        owner: "bob".into(),
        nickname: Some("b".into()),
    };
    assert_eq!(
        named.to_document().unwrap(),
        json!({ "owner": "bob", "nickname": "b" })
    );
    assert_eq!(round_trip(&named).unwrap(), named);
}

#[test]
fn tuple_variant_payload_is_its_value_or_array() {
    let deposited = AccountEvent::Deposited(100);
    assert_eq!(deposited.to_document().unwrap(), json!(100));
    assert_eq!(round_trip(&deposited).unwrap(), deposited);

    let moved = AccountEvent::Moved("acc-2".into(), 7);
    assert_eq!(moved.to_document().unwrap(), json!(["acc-2", 7]));
    assert_eq!(round_trip(&moved).unwrap(), moved);
}

#[test]
fn unit_variant_payload_is_null() {
    assert_eq!(AccountEvent::Closed.to_document().unwrap(), Value::Null);
    assert_eq!(
        round_trip(&AccountEvent::Closed).unwrap(),
        AccountEvent::Closed
    );

    assert_eq!(AccountEvent::Frozen {}.to_document().unwrap(), json!({}));
    assert_eq!(
        round_trip(&AccountEvent::Frozen {}).unwrap(),
        AccountEvent::Frozen {}
    );
}

#[test]
fn from_document_reads_the_stored_name_not_the_rust_name() {
    let event = AccountEvent::from_document("MoneyDeposited", json!(3));
    assert_eq!(event.unwrap().unwrap(), AccountEvent::Deposited(3));
    assert!(AccountEvent::from_document("Deposited", json!(3)).is_none());
    assert!(AccountEvent::from_document("AccountRenamed", json!({})).is_none());
}

#[test]
fn from_document_reports_a_payload_that_does_not_fit() {
    let result = AccountEvent::from_document("AccountOpened", json!({ "owner": 5 }));
    assert!(result.expect("a known event type").is_err());
}

/// A struct is a single event type; its payload is its whole serde document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
#[event(name = "Pinged", version = 4)]
#[serde(rename_all = "camelCase")]
struct Pinged {
    sent_at: u64,
}

#[test]
fn struct_event_round_trips() {
    assert_eq!(
        Pinged::EVENT_TYPES,
        &[EventTypeInfo {
            name: "Pinged",
            version: 4
        }]
    );
    let event = Pinged { sent_at: 9 };
    assert_eq!(event.event_type(), "Pinged");
    assert_eq!(event.schema_version(), 4);
    let document = event.to_document().unwrap();
    assert_eq!(document, json!({ "sentAt": 9 }));
    assert_eq!(
        Pinged::from_document("Pinged", document).unwrap().unwrap(),
        event
    );
    assert!(Pinged::from_document("Pinged2", json!({ "sentAt": 9 })).is_none());
}

/// Generic events get the serde bounds their impl needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum Wrapped<T: Send + Sync + 'static> {
    #[event(name = "Wrapped", version = 1)]
    Value { value: T },
}

#[test]
fn generic_event_round_trips() {
    let event = Wrapped::Value { value: 5_u8 };
    let document = event.to_document().unwrap();
    assert_eq!(document, json!({ "value": 5 }));
    assert_eq!(
        Wrapped::<u8>::from_document("Wrapped", document)
            .unwrap()
            .unwrap(),
        event
    );
}
