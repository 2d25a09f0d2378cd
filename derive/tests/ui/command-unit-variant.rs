use annals_core::Command;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Command)]
enum AccountCommand {
    Open(#[aggregate_id] String),
    CloseAll,
}

fn main() {}
