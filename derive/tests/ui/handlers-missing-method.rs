use annals_core::DomainEvent;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, DomainEvent)]
#[event(handlers = ApplyAccountEvent)]
enum AccountEvent {
    #[event(name = "AccountOpened", version = 1)]
    AccountOpened { owner: String },
    #[event(name = "MoneyDeposited", version = 1)]
    Deposited(u64),
}

#[derive(Default)]
struct Account {
    owner: String,
}

impl ApplyAccountEvent for Account {
    fn account_opened(&mut self, owner: &String) {
        self.owner.clone_from(owner);
    }
}

fn main() {}
