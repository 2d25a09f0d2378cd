//! The `Transfer` saga: verify the target, debit the source, credit the target; if the
//! credit is refused or its deadline passes, refund the source.

use annals_saga::{BuildError, Outgoing, RetryPolicy, Saga, Step};
use chrono::TimeDelta;
use serde::{Deserialize, Serialize};

use super::account::{Account, AccountCommand};
use super::money::Money;

/// A request to move money between two accounts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferRequest {
    /// The account debited.
    pub from: String,
    /// The account credited.
    pub to: String,
    /// How much.
    pub amount: Money,
}

/// Why a transfer request is refused before any money moves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum InvalidTransfer {
    /// Source and target are the same account.
    #[error("cannot transfer from an account to itself")]
    SameAccount,
    /// A zero or negative amount.
    #[error("amount must be positive, got {minor} minor units")]
    NonPositiveAmount {
        /// The amount given.
        minor: i64,
    },
    /// An empty account id.
    #[error("account ids must not be empty")]
    EmptyAccount,
}

/// The transfer saga.
#[derive(Debug, Clone, Copy)]
pub struct Transfer;

/// How long each step of a transfer may take.
pub const STEP_DEADLINE: TimeDelta = TimeDelta::seconds(10);

fn verify_target(t: &TransferRequest) -> Result<Outgoing, BuildError> {
    Outgoing::to::<Account>(&AccountCommand::VerifyCanReceive {
        account: t.to.clone(),
        currency: t.amount.currency,
    })
}

fn debit(t: &TransferRequest) -> Result<Outgoing, BuildError> {
    Outgoing::to::<Account>(&AccountCommand::Withdraw {
        account: t.from.clone(),
        amount: t.amount,
    })
}

fn refund(t: &TransferRequest) -> Result<Outgoing, BuildError> {
    Outgoing::to::<Account>(&AccountCommand::Deposit {
        account: t.from.clone(),
        amount: t.amount,
    })
}

fn credit(t: &TransferRequest) -> Result<Outgoing, BuildError> {
    Outgoing::to::<Account>(&AccountCommand::Deposit {
        account: t.to.clone(),
        amount: t.amount,
    })
}

static STEPS: [Step<TransferRequest>; 3] = [
    Step {
        name: "verify-target",
        action: verify_target,
        compensation: None,
        retry: RetryPolicy::DEFAULT,
        deadline: Some(STEP_DEADLINE),
    },
    Step {
        name: "debit",
        action: debit,
        compensation: Some(refund),
        retry: RetryPolicy::DEFAULT,
        deadline: Some(STEP_DEADLINE),
    },
    Step {
        name: "credit",
        action: credit,
        compensation: None,
        retry: RetryPolicy::DEFAULT,
        deadline: Some(STEP_DEADLINE),
    },
];

impl Saga for Transfer {
    const NAME: &'static str = "transfer";
    type Input = TransferRequest;
    type Invalid = InvalidTransfer;

    fn participants() -> &'static [&'static str] {
        &["account"]
    }

    fn validate(t: &TransferRequest) -> Result<(), InvalidTransfer> {
        if t.from.trim().is_empty() || t.to.trim().is_empty() {
            return Err(InvalidTransfer::EmptyAccount);
        }
        if t.from == t.to {
            return Err(InvalidTransfer::SameAccount);
        }
        if t.amount.minor <= 0 {
            return Err(InvalidTransfer::NonPositiveAmount {
                minor: t.amount.minor,
            });
        }
        Ok(())
    }

    fn steps() -> &'static [Step<TransferRequest>] {
        &STEPS
    }
}
