//! `#[derive(Command)]`: the target aggregate and the command type name.

use annals_core::{AggregateId, Command};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Command)]
enum AccountCommand {
    Open {
        #[aggregate_id]
        account: String,
        owner: String,
    },
    #[command(name = "DepositMoney")]
    Deposit(u64, #[aggregate_id] u32),
    r#Close {
        #[aggregate_id]
        id: AggregateId,
    },
}

#[test]
fn enum_commands_name_their_aggregate_by_the_marked_field() {
    let open = AccountCommand::Open {
        account: "acc-1".into(),
        owner: "ann".into(),
    };
    assert_eq!(open.aggregate_id(), AggregateId::new("acc-1"));
    assert_eq!(
        AccountCommand::Deposit(10, 42).aggregate_id(),
        AggregateId::new("42")
    );
    let close = AccountCommand::Close {
        id: AggregateId::new("acc-9"),
    };
    assert_eq!(close.aggregate_id(), AggregateId::new("acc-9"));
}

#[test]
fn command_type_defaults_to_the_variant_name() {
    let open = AccountCommand::Open {
        account: "acc-1".into(),
        owner: "ann".into(),
    };
    assert_eq!(open.command_type(), "Open");
    assert_eq!(
        AccountCommand::Deposit(10, 42).command_type(),
        "DepositMoney"
    );
    let close = AccountCommand::Close {
        id: AggregateId::new("acc-9"),
    };
    assert_eq!(close.command_type(), "Close");
}

#[derive(Debug, Serialize, Deserialize, Command)]
#[command(name = "RenameAccount")]
struct Rename {
    #[aggregate_id]
    account: u64,
    name: String,
}

#[derive(Debug, Serialize, Deserialize, Command)]
struct Freeze(#[aggregate_id] String);

#[test]
fn struct_commands() {
    let rename = Rename {
        account: 7,
        name: "savings".into(),
    };
    assert_eq!(rename.aggregate_id(), AggregateId::new("7"));
    assert_eq!(rename.command_type(), "RenameAccount");

    let freeze = Freeze("acc-3".into());
    assert_eq!(freeze.aggregate_id(), AggregateId::new("acc-3"));
    assert_eq!(freeze.command_type(), "Freeze");
}
