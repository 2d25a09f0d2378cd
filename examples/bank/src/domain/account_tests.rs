//! Given/when/then tests, one or more per account rule.

use annals_core::testing::AggregateTest;

use super::account::{Account, AccountCommand as C, AccountError, AccountEvent as E, Status};
use super::money::{Currency, Money};

const ID: &str = "acc-1";

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::EUR)
}

fn opened() -> E {
    E::Opened {
        owner: "Ada".into(),
        currency: Currency::EUR,
    }
}

fn funded(balance: i64) -> Vec<E> {
    vec![
        opened(),
        E::Deposited {
            amount: eur(balance),
            balance_after: balance,
        },
    ]
}

fn deposit(minor: i64) -> C {
    C::Deposit {
        account: ID.into(),
        amount: eur(minor),
    }
}

fn withdraw(minor: i64) -> C {
    C::Withdraw {
        account: ID.into(),
        amount: eur(minor),
    }
}

fn test() -> AggregateTest<Account> {
    AggregateTest::new()
}

#[test]
fn opening_a_new_account() {
    test()
        .when(C::Open {
            account: ID.into(),
            owner: "Ada".into(),
            currency: Currency::EUR,
        })
        .then_expect_events(vec![opened()])
        .then_state(|a| {
            assert_eq!(a.status(), Status::Open);
            assert_eq!(a.currency(), Some(Currency::EUR));
        });
}

#[test]
fn an_account_opens_only_once() {
    test()
        .given([opened()])
        .when(C::Open {
            account: ID.into(),
            owner: "Bob".into(),
            currency: Currency::USD,
        })
        .then_expect_rejection(AccountError::AlreadyOpen);
}

#[test]
fn an_owner_is_required() {
    test()
        .when(C::Open {
            account: ID.into(),
            owner: "  ".into(),
            currency: Currency::EUR,
        })
        .then_expect_rejection(AccountError::EmptyOwner);
}

#[test]
fn deposits_raise_the_balance() {
    test()
        .given(funded(500))
        .when(deposit(250))
        .then_expect_events(vec![E::Deposited {
            amount: eur(250),
            balance_after: 750,
        }])
        .then_state(|a| assert_eq!(a.balance(), 750));
}

#[test]
fn money_cannot_move_on_an_account_that_does_not_exist() {
    test()
        .when(deposit(100))
        .then_expect_rejection(AccountError::NotOpen);
    test()
        .when(withdraw(100))
        .then_expect_rejection(AccountError::NotOpen);
}

#[test]
fn zero_and_negative_amounts_are_refused() {
    test()
        .given([opened()])
        .when(deposit(0))
        .then_expect_rejection(AccountError::NonPositiveAmount { minor: 0 });
    test()
        .given([opened()])
        .when(deposit(-5))
        .then_expect_rejection(AccountError::NonPositiveAmount { minor: -5 });
    test()
        .given(funded(100))
        .when(withdraw(-1))
        .then_expect_rejection(AccountError::NonPositiveAmount { minor: -1 });
}

#[test]
fn the_currency_must_match() {
    test()
        .given([opened()])
        .when(C::Deposit {
            account: ID.into(),
            amount: Money::new(100, Currency::USD),
        })
        .then_expect_rejection(AccountError::CurrencyMismatch {
            account: Currency::EUR,
            given: Currency::USD,
        });
    test()
        .given(funded(500))
        .when(C::Withdraw {
            account: ID.into(),
            amount: Money::new(100, Currency::USD),
        })
        .then_expect_rejection(AccountError::CurrencyMismatch {
            account: Currency::EUR,
            given: Currency::USD,
        });
}

#[test]
fn withdrawals_lower_the_balance() {
    test()
        .given(funded(500))
        .when(withdraw(500))
        .then_expect_events(vec![E::Withdrawn {
            amount: eur(500),
            balance_after: 0,
        }])
        .then_state(|a| assert_eq!(a.balance(), 0));
}

#[test]
fn no_overdraft() {
    test()
        .given(funded(500))
        .when(withdraw(501))
        .then_expect_rejection(AccountError::InsufficientFunds {
            balance: 500,
            requested: 501,
        });
}

#[test]
fn a_balance_cannot_overflow() {
    test()
        .given(funded(i64::MAX))
        .when(deposit(1))
        .then_expect_rejection(AccountError::BalanceOverflow);
}

#[test]
fn a_frozen_account_moves_no_money() {
    let frozen = || {
        let mut events = funded(500);
        events.push(E::Frozen {
            reason: "fraud check".into(),
        });
        events
    };
    test()
        .given(funded(500))
        .when(C::Freeze {
            account: ID.into(),
            reason: "fraud check".into(),
        })
        .then_expect_events(vec![E::Frozen {
            reason: "fraud check".into(),
        }])
        .then_state(|a| assert_eq!(a.status(), Status::Frozen));
    test()
        .given(frozen())
        .when(deposit(1))
        .then_expect_rejection(AccountError::Frozen);
    test()
        .given(frozen())
        .when(withdraw(1))
        .then_expect_rejection(AccountError::Frozen);
    test()
        .given(frozen())
        .when(C::Freeze {
            account: ID.into(),
            reason: "again".into(),
        })
        .then_expect_rejection(AccountError::Frozen);
}

#[test]
fn only_an_empty_account_closes() {
    test()
        .given(funded(1))
        .when(C::Close { account: ID.into() })
        .then_expect_rejection(AccountError::NotEmpty { balance: 1 });
    test()
        .given([opened()])
        .when(C::Close { account: ID.into() })
        .then_expect_events(vec![E::Closed])
        .then_state(|a| assert_eq!(a.status(), Status::Closed));
    test()
        .when(C::Close { account: ID.into() })
        .then_expect_rejection(AccountError::NotOpen);
}

#[test]
fn a_closed_account_accepts_nothing() {
    let closed = [opened(), E::Closed];
    test()
        .given(closed.clone())
        .when(deposit(1))
        .then_expect_rejection(AccountError::Closed);
    test()
        .given(closed.clone())
        .when(withdraw(1))
        .then_expect_rejection(AccountError::Closed);
    test()
        .given(closed.clone())
        .when(C::Close { account: ID.into() })
        .then_expect_rejection(AccountError::Closed);
    test()
        .given(closed)
        .when(C::Freeze {
            account: ID.into(),
            reason: "x".into(),
        })
        .then_expect_rejection(AccountError::Closed);
}

#[test]
fn verifying_a_receiver_changes_nothing_and_checks_the_rules() {
    let verify = |currency| C::VerifyCanReceive {
        account: ID.into(),
        currency,
    };
    test()
        .given([opened()])
        .when(verify(Currency::EUR))
        .then_expect_events(vec![]);
    test()
        .when(verify(Currency::EUR))
        .then_expect_rejection(AccountError::NotOpen);
    test()
        .given([opened()])
        .when(verify(Currency::USD))
        .then_expect_rejection(AccountError::CurrencyMismatch {
            account: Currency::EUR,
            given: Currency::USD,
        });
    test()
        .given([opened(), E::Frozen { reason: "x".into() }])
        .when(verify(Currency::EUR))
        .then_expect_rejection(AccountError::Frozen);
}

#[test]
fn a_freeze_can_be_lifted() {
    let frozen = [opened(), E::Frozen { reason: "x".into() }];
    test()
        .given(frozen)
        .when(C::Unfreeze { account: ID.into() })
        .then_expect_events(vec![E::Unfrozen])
        .then_state(|a| assert_eq!(a.status(), Status::Open));
    test()
        .given([opened()])
        .when(C::Unfreeze { account: ID.into() })
        .then_expect_rejection(AccountError::NotFrozen);
}
