use annals_core::DomainEvent;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, DomainEvent)]
enum AccountEvent {
    #[event(name = "AccountOpened", version = 1)]
    Opened { owner: String },
    #[event(name = "AccountOpened", version = 2)]
    Reopened { owner: String },
}

fn main() {}
