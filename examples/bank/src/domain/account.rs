//! The `Account` aggregate: open, deposit, withdraw, freeze, close.
//!
//! Rules: amounts are positive and in the account's currency; no overdraft; a frozen or
//! closed account accepts no money movements; only an empty account can be closed.

use annals_core::{Aggregate, Command, CommandContext, DomainEvent};
use serde::{Deserialize, Serialize};

use super::money::{Currency, Money};

/// The commands an account decides on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Command)]
pub enum AccountCommand {
    /// Opens a new account.
    Open {
        /// The new account's id.
        #[aggregate_id]
        account: String,
        /// Who owns it.
        owner: String,
        /// The only currency it holds.
        currency: Currency,
    },
    /// Puts money in.
    Deposit {
        /// The account.
        #[aggregate_id]
        account: String,
        /// How much.
        amount: Money,
    },
    /// Takes money out.
    Withdraw {
        /// The account.
        #[aggregate_id]
        account: String,
        /// How much.
        amount: Money,
    },
    /// Stops all money movements.
    Freeze {
        /// The account.
        #[aggregate_id]
        account: String,
        /// Why, for the audit trail.
        reason: String,
    },
    /// Lifts a freeze.
    Unfreeze {
        /// The account.
        #[aggregate_id]
        account: String,
    },
    /// Checks, without changing anything, that the account can receive this currency
    /// (a transfer's first step, so that no money moves toward an account that cannot
    /// take it).
    VerifyCanReceive {
        /// The account.
        #[aggregate_id]
        account: String,
        /// The currency that would arrive.
        currency: Currency,
    },
    /// Closes an empty account for good.
    Close {
        /// The account.
        #[aggregate_id]
        account: String,
    },
}

/// What happened to an account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
#[event(handlers = ApplyAccountEvent)]
pub enum AccountEvent {
    /// The account was opened.
    #[event(name = "AccountOpened", version = 1)]
    Opened {
        /// Who owns it.
        owner: String,
        /// Its currency.
        currency: Currency,
    },
    /// Money was deposited.
    #[event(name = "MoneyDeposited", version = 1)]
    Deposited {
        /// How much.
        amount: Money,
        /// The balance afterwards, in minor units.
        balance_after: i64,
    },
    /// Money was withdrawn.
    #[event(name = "MoneyWithdrawn", version = 1)]
    Withdrawn {
        /// How much.
        amount: Money,
        /// The balance afterwards, in minor units.
        balance_after: i64,
    },
    /// The account was frozen.
    #[event(name = "AccountFrozen", version = 1)]
    Frozen {
        /// Why.
        reason: String,
    },
    /// The account was closed.
    #[event(name = "AccountClosed", version = 1)]
    Closed,
    /// A freeze was lifted.
    #[event(name = "AccountUnfrozen", version = 1)]
    Unfrozen,
}

/// Why an account refused a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AccountError {
    /// `Open` on an account that exists.
    #[error("account already exists")]
    AlreadyOpen,
    /// Any command but `Open` on an account that does not exist.
    #[error("account does not exist")]
    NotOpen,
    /// The owner's name is empty.
    #[error("owner must not be empty")]
    EmptyOwner,
    /// A zero or negative amount.
    #[error("amount must be positive, got {minor} minor units")]
    NonPositiveAmount {
        /// The amount given.
        minor: i64,
    },
    /// An amount in another currency than the account's.
    #[error("account holds {account}, not {given}")]
    CurrencyMismatch {
        /// The account's currency.
        account: Currency,
        /// The amount's currency.
        given: Currency,
    },
    /// A withdrawal larger than the balance.
    #[error("insufficient funds: balance {balance}, requested {requested} minor units")]
    InsufficientFunds {
        /// The balance.
        balance: i64,
        /// The amount requested.
        requested: i64,
    },
    /// A deposit that would overflow the balance.
    #[error("balance would overflow")]
    BalanceOverflow,
    /// The account is frozen.
    #[error("account is frozen")]
    Frozen,
    /// The account is closed.
    #[error("account is closed")]
    Closed,
    /// `Unfreeze` of an account that is not frozen.
    #[error("account is not frozen")]
    NotFrozen,
    /// `Close` on an account that still holds money.
    #[error("account still holds {balance} minor units")]
    NotEmpty {
        /// The balance.
        balance: i64,
    },
}

/// Where an account is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Not opened yet.
    #[default]
    New,
    /// Open for business.
    Open,
    /// Frozen: no money moves.
    Frozen,
    /// Closed for good.
    Closed,
}

/// The state of one account.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, Aggregate)]
#[aggregate(
    name = "account",
    command = AccountCommand,
    event = AccountEvent,
    rejection = AccountError,
    apply_with = ApplyAccountEvent
)]
pub struct Account {
    status: Status,
    owner: String,
    currency: Option<Currency>,
    balance: i64,
}

impl Account {
    /// Where the account is in its life.
    pub fn status(&self) -> Status {
        self.status
    }

    /// The balance in minor units.
    pub fn balance(&self) -> i64 {
        self.balance
    }

    /// The account's currency, once opened.
    pub fn currency(&self) -> Option<Currency> {
        self.currency
    }

    fn handle(
        &self,
        command: &AccountCommand,
        _ctx: &CommandContext,
    ) -> Result<Vec<AccountEvent>, AccountError> {
        use AccountCommand as C;
        use AccountEvent as E;
        match command {
            C::Open {
                owner, currency, ..
            } => {
                if self.status != Status::New {
                    return Err(AccountError::AlreadyOpen);
                }
                if owner.trim().is_empty() {
                    return Err(AccountError::EmptyOwner);
                }
                Ok(vec![E::Opened {
                    owner: owner.clone(),
                    currency: *currency,
                }])
            }
            C::Deposit { amount, .. } => {
                self.check_movement(*amount)?;
                let balance_after = self
                    .balance
                    .checked_add(amount.minor)
                    .ok_or(AccountError::BalanceOverflow)?;
                Ok(vec![E::Deposited {
                    amount: *amount,
                    balance_after,
                }])
            }
            C::Withdraw { amount, .. } => {
                self.check_movement(*amount)?;
                if amount.minor > self.balance {
                    return Err(AccountError::InsufficientFunds {
                        balance: self.balance,
                        requested: amount.minor,
                    });
                }
                Ok(vec![E::Withdrawn {
                    amount: *amount,
                    balance_after: self.balance - amount.minor,
                }])
            }
            C::Freeze { reason, .. } => {
                self.check_active()?;
                Ok(vec![E::Frozen {
                    reason: reason.clone(),
                }])
            }
            C::Unfreeze { .. } => match self.status {
                Status::Frozen => Ok(vec![E::Unfrozen]),
                Status::New => Err(AccountError::NotOpen),
                Status::Closed => Err(AccountError::Closed),
                Status::Open => Err(AccountError::NotFrozen),
            },
            C::VerifyCanReceive { currency, .. } => {
                self.check_movement(Money::new(1, *currency))?;
                Ok(vec![])
            }
            C::Close { .. } => {
                match self.status {
                    Status::New => return Err(AccountError::NotOpen),
                    Status::Closed => return Err(AccountError::Closed),
                    Status::Open | Status::Frozen => {}
                }
                if self.balance != 0 {
                    return Err(AccountError::NotEmpty {
                        balance: self.balance,
                    });
                }
                Ok(vec![E::Closed])
            }
        }
    }

    fn check_active(&self) -> Result<(), AccountError> {
        match self.status {
            Status::New => Err(AccountError::NotOpen),
            Status::Frozen => Err(AccountError::Frozen),
            Status::Closed => Err(AccountError::Closed),
            Status::Open => Ok(()),
        }
    }

    fn check_movement(&self, amount: Money) -> Result<(), AccountError> {
        self.check_active()?;
        if amount.minor <= 0 {
            return Err(AccountError::NonPositiveAmount {
                minor: amount.minor,
            });
        }
        match self.currency {
            Some(account) if account != amount.currency => Err(AccountError::CurrencyMismatch {
                account,
                given: amount.currency,
            }),
            _ => Ok(()),
        }
    }
}

impl ApplyAccountEvent for Account {
    fn opened(&mut self, owner: &String, currency: &Currency) {
        self.status = Status::Open;
        self.owner.clone_from(owner);
        self.currency = Some(*currency);
    }

    fn deposited(&mut self, _amount: &Money, balance_after: &i64) {
        self.balance = *balance_after;
    }

    fn withdrawn(&mut self, _amount: &Money, balance_after: &i64) {
        self.balance = *balance_after;
    }

    fn frozen(&mut self, _reason: &String) {
        self.status = Status::Frozen;
    }

    fn closed(&mut self) {
        self.status = Status::Closed;
    }

    fn unfrozen(&mut self) {
        self.status = Status::Open;
    }
}
