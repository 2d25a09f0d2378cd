use annals_core::DomainEvent;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, DomainEvent)]
enum AccountEvent {
    #[event(name = "AccountOpened", version = 0)]
    Opened { owner: String },
}

fn main() {}
