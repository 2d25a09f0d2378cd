use annals_core::DomainEvent;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, DomainEvent)]
enum AccountEvent {
    #[event(name = "AccountOpened", version = 1)]
    Opened { owner: String },
    #[event(version = 1)]
    Deposited { amount: u64 },
}

fn main() {}
