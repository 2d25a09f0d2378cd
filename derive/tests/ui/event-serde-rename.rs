use annals_core::DomainEvent;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, DomainEvent)]
enum AccountEvent {
    #[event(name = "AccountOpened", version = 1)]
    #[serde(rename = "opened")]
    Opened { owner: String },
}

fn main() {}
