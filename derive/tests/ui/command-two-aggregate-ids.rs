use annals_core::Command;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Command)]
enum AccountCommand {
    Transfer {
        #[aggregate_id]
        from: String,
        #[aggregate_id]
        to: String,
        amount: u64,
    },
}

fn main() {}
