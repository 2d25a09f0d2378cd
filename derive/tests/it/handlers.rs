//! `#[event(handlers = Trait)]`: one required method per event variant.

use annals_core::DomainEvent;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
#[event(handlers = ApplyLedgerEvent)]
pub(crate) enum LedgerEvent {
    #[event(name = "LedgerOpened", version = 1)]
    LedgerOpened { owner: String, limit: u64 },
    #[event(name = "AmountBooked", version = 1)]
    Booked(String, i64),
    #[event(name = "HTTPSyncFailed", version = 1)]
    HTTPSyncFailed,
}

#[derive(Default)]
struct Recorder {
    calls: Vec<String>,
}

impl ApplyLedgerEvent for Recorder {
    fn ledger_opened(&mut self, owner: &String, limit: &u64) {
        self.calls.push(format!("opened {owner} {limit}"));
    }

    // The trait names tuple fields `_0`, `_1`; an impl picks its own names.
    fn booked(&mut self, account: &String, amount: &i64) {
        self.calls.push(format!("booked {account} {amount}"));
    }

    fn http_sync_failed(&mut self) {
        self.calls.push("sync failed".to_owned());
    }
}

#[test]
fn apply_event_calls_the_method_of_each_variant() {
    let mut recorder = Recorder::default();
    recorder.apply_event(&LedgerEvent::LedgerOpened {
        owner: "ann".into(),
        limit: 10,
    });
    recorder.apply_event(&LedgerEvent::Booked("rent".into(), -5));
    recorder.apply_event(&LedgerEvent::HTTPSyncFailed);
    assert_eq!(
        recorder.calls,
        ["opened ann 10", "booked rent -5", "sync failed"]
    );
}
