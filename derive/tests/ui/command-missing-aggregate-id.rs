use annals_core::Command;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Command)]
enum AccountCommand {
    Open {
        #[aggregate_id]
        account: String,
    },
    Deposit {
        account: String,
        amount: u64,
    },
}

fn main() {}
