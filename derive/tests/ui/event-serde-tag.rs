use annals_core::DomainEvent;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, DomainEvent)]
#[serde(tag = "type")]
enum AccountEvent {
    #[event(name = "AccountOpened", version = 1)]
    Opened { owner: String },
}

fn main() {}
