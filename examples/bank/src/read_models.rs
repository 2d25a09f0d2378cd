//! The bank's read models, folded from the account events with an **exactly-once
//! effect**: each event changes them once, whatever crashes, rebalances or replays happen.
//!
//! - [`AccountBalances`] (a document projection, `"account_balances"`): per account its
//!   owner, currency, balance, status and the sequence of the last event folded in. It
//!   runs on Postgres ([`annals_projections::Projector`]) and in memory
//!   ([`InMemoryBalances`], for tests and the zero-setup demo).
//! - [`TransactionHistory`] (an SQL projection, `"transaction_history"`): one row per
//!   deposit or withdrawal, keyed by `(account, sequence)`, so a movement can never be
//!   recorded twice.
//!
//! [`registry`] lists both for operator tools (the `bank-admin` binary); [`balance`],
//! [`history`] and [`total_balance`] are the queries the API and the demo use.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use annals_kafka_store::KafkaStoreOptions;
//! use annals_projections::Database;
//!
//! let db = Database::connect("postgres://postgres@127.0.0.1:5432/bank").await?;
//! let kafka = KafkaStoreOptions::new("127.0.0.1:9092").topic_prefix("bank");
//! let projectors = bank::read_models::start(&db, &kafka).await?;
//! let alice = bank::read_models::balance(&db, "alice").await?;
//! let last_ten = bank::read_models::history(&db, "alice", 10).await?;
//! # let _ = (alice, last_ten, projectors); Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use annals_core::{Envelope, EventStore};
use annals_kafka_store::KafkaStoreOptions;
use annals_projections::{
    Context, Database, DocumentProjection, MemoryDocumentStore, MemoryProjector, Projection,
    ProjectionError, Projections, Projector, ProjectorHandle, SqlProjection, read,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, Row, Transaction};

use crate::domain::{Account, AccountEvent, Currency, Money, Status};

/// The name of the balances read model: its Postgres schema is `account_balances`.
pub const ACCOUNT_BALANCES: &str = "account_balances";

/// The name of the history read model: its Postgres schema is `transaction_history`.
pub const TRANSACTION_HISTORY: &str = "transaction_history";

/// The aggregate both read models follow.
const ACCOUNT: &str = <Account as annals_core::Aggregate>::TYPE;

/// Every projection of the bank, for operator tools (`bank-admin projections rebuild`).
pub fn registry() -> Projections {
    Projections::new()
        .with(Projection::document(AccountBalances))
        .with(Projection::sql(TransactionHistory))
}

/// Starts a projector for each of the bank's read models (creating their tables the
/// first time). Stop them with [`ProjectorHandle::stop`].
pub async fn start(
    db: &Database,
    kafka: &KafkaStoreOptions,
) -> Result<Vec<ProjectorHandle>, ProjectionError> {
    let mut handles = Vec::new();
    for projection in registry().iter() {
        let handle = Projector::new(db.clone(), kafka.clone(), projection.clone())
            .start()
            .await;
        match handle {
            Ok(h) => handles.push(h),
            Err(e) => {
                for h in handles {
                    h.abort().await;
                }
                return Err(e);
            }
        }
    }
    Ok(handles)
}

// ---------------------------------------------------------------------------------------
// Balances

/// One account in the balances read model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountBalance {
    /// Who owns the account.
    pub owner: String,
    /// Its currency.
    pub currency: Currency,
    /// The balance in minor units.
    pub balance: i64,
    /// Where it is in its life.
    pub status: Status,
    /// The sequence of the last event folded in: the account's version as this read
    /// model knows it.
    pub version: u64,
    /// When that event happened.
    pub updated_at: DateTime<Utc>,
}

/// Why an account event cannot be folded into a balance. Each means the events
/// contradict each other (or one was lost or delivered twice), so the event is poison.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BalanceError {
    /// An event other than `AccountOpened` for an account the model does not know, or
    /// `AccountOpened` for one it knows.
    #[error("{event_type} for account `{account}` that is {state}")]
    Lifecycle {
        /// The account.
        account: String,
        /// The event's type.
        event_type: String,
        /// `not open` or `already open`.
        state: &'static str,
    },
    /// The event does not follow the last one folded in: one before it is missing.
    #[error("event {got} of account `{account}` does not follow event {last}")]
    OutOfSequence {
        /// The account.
        account: String,
        /// The sequence of the last event folded in.
        last: u64,
        /// The sequence of this event.
        got: u64,
    },
    /// The balance the event records is not the one the model computes.
    #[error(
        "event {sequence} of account `{account}` records balance {recorded}, the model computes {computed}"
    )]
    BalanceMismatch {
        /// The account.
        account: String,
        /// The event's sequence.
        sequence: u64,
        /// `balance_after` in the event.
        recorded: i64,
        /// The balance before plus or minus the amount.
        computed: i64,
    },
}

/// Balances by account id: a document projection, exactly-once on Postgres, also run in
/// memory.
///
/// It checks every event against the last one it folded in: an event that skips one, or
/// whose recorded balance differs from the computed one, is an error (the projection
/// halts, or parks the account, by policy) rather than a wrong balance. An event it
/// already holds (a replay) changes nothing, so replays are safe.
#[derive(Debug, Clone, Copy, Default)]
pub struct AccountBalances;

impl DocumentProjection for AccountBalances {
    const NAME: &'static str = ACCOUNT_BALANCES;
    const AGGREGATES: &'static [&'static str] = &[ACCOUNT];
    type Event = AccountEvent;
    type Document = AccountBalance;
    type Error = BalanceError;

    fn document_id(&self, event: &Envelope<AccountEvent>) -> Option<String> {
        Some(event.aggregate_id.to_string())
    }

    fn apply(
        &self,
        document: &mut Option<AccountBalance>,
        event: &Envelope<AccountEvent>,
    ) -> Result<(), BalanceError> {
        let account = || event.aggregate_id.to_string();
        let sequence = event.sequence.0;
        let lifecycle = |state| BalanceError::Lifecycle {
            account: account(),
            event_type: event.event_type.clone(),
            state,
        };
        // An event at or below the version the document holds is folded in already:
        // a replay (`annals projections replay`) sees it again, and must not move money
        // twice.
        if document.as_ref().is_some_and(|doc| sequence <= doc.version) {
            return Ok(());
        }
        let doc = match (&event.payload, document.as_mut()) {
            (AccountEvent::Opened { owner, currency }, None) => {
                if sequence != 1 {
                    return Err(BalanceError::OutOfSequence {
                        account: account(),
                        last: 0,
                        got: sequence,
                    });
                }
                *document = Some(AccountBalance {
                    owner: owner.clone(),
                    currency: *currency,
                    balance: 0,
                    status: Status::Open,
                    version: sequence,
                    updated_at: event.occurred_at,
                });
                return Ok(());
            }
            (AccountEvent::Opened { .. }, Some(_)) => return Err(lifecycle("already open")),
            (_, None) => return Err(lifecycle("not open")),
            (_, Some(doc)) => doc,
        };
        if sequence != doc.version + 1 {
            return Err(BalanceError::OutOfSequence {
                account: account(),
                last: doc.version,
                got: sequence,
            });
        }
        // Everything is checked before anything changes: on error the document stays
        // as it was.
        let (computed, recorded, status) = match &event.payload {
            AccountEvent::Opened { .. } => return Err(lifecycle("already open")),
            AccountEvent::Deposited {
                amount,
                balance_after,
            } => (
                doc.balance.saturating_add(amount.minor),
                *balance_after,
                doc.status,
            ),
            AccountEvent::Withdrawn {
                amount,
                balance_after,
            } => (
                doc.balance.saturating_sub(amount.minor),
                *balance_after,
                doc.status,
            ),
            AccountEvent::Frozen { .. } => (doc.balance, doc.balance, Status::Frozen),
            AccountEvent::Unfrozen => (doc.balance, doc.balance, Status::Open),
            AccountEvent::Closed => (doc.balance, doc.balance, Status::Closed),
        };
        if computed != recorded {
            return Err(BalanceError::BalanceMismatch {
                account: account(),
                sequence,
                recorded,
                computed,
            });
        }
        doc.balance = computed;
        doc.status = status;
        doc.version = sequence;
        doc.updated_at = event.occurred_at;
        Ok(())
    }
}

/// The balance of account `id` in the live read model; `None` when the model does not
/// know the account (yet: read models follow the events with a lag).
pub async fn balance(db: &Database, id: &str) -> Result<Option<AccountBalance>, ProjectionError> {
    read::document::<AccountBalances>(db, id).await
}

/// The sum of all balances, per currency (minor units), from the live read model.
pub async fn total_balance(db: &Database) -> Result<BTreeMap<String, i64>, ProjectionError> {
    let rows = sqlx::query(
        "SELECT doc->>'currency', sum((doc->>'balance')::int8)::int8
         FROM account_balances.documents GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(db.pool())
    .await
    .map_err(|e| db_error("summing the balances of account_balances", e))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The balances read model in memory, for tests and the zero-setup demo: the same
/// [`AccountBalances`] fold, reading any [`EventStore`].
///
/// ```
/// # async fn demo() -> anyhow::Result<()> {
/// use std::sync::Arc;
/// use annals_core::MemoryEventStore;
///
/// let balances = bank::read_models::InMemoryBalances::new(Arc::new(MemoryEventStore::new()));
/// balances.catch_up().await?;
/// assert_eq!(balances.balance("alice")?, None);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct InMemoryBalances {
    projector: MemoryProjector<AccountBalances>,
    documents: MemoryDocumentStore,
}

impl InMemoryBalances {
    /// Balances of the accounts in `store`, folded when [`catch_up`](Self::catch_up) is
    /// called.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        let documents = MemoryDocumentStore::new();
        Self {
            projector: MemoryProjector::new(store, documents.clone(), AccountBalances),
            documents,
        }
    }

    /// Folds the events stored since the last call. Returns how many it read.
    pub async fn catch_up(&self) -> Result<u64, ProjectionError> {
        self.projector.catch_up().await
    }

    /// The balance of account `id`, as of the last [`catch_up`](Self::catch_up).
    pub fn balance(&self, id: &str) -> Result<Option<AccountBalance>, ProjectionError> {
        self.documents.document::<AccountBalances>(id)
    }

    /// Every account's balance, by id.
    pub fn balances(&self) -> Result<BTreeMap<String, AccountBalance>, ProjectionError> {
        self.documents.documents::<AccountBalances>()
    }

    /// The sum of all balances, per currency (minor units).
    pub fn total_balance(&self) -> Result<BTreeMap<String, i64>, ProjectionError> {
        let mut totals = BTreeMap::new();
        for doc in self.balances()?.into_values() {
            *totals.entry(doc.currency.to_string()).or_insert(0i64) += doc.balance;
        }
        Ok(totals)
    }
}

// ---------------------------------------------------------------------------------------
// History

/// Which way money moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MovementKind {
    /// Money came in.
    Deposit,
    /// Money went out.
    Withdrawal,
}

impl MovementKind {
    /// The name stored in the `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deposit => "deposit",
            Self::Withdrawal => "withdrawal",
        }
    }
}

/// One deposit or withdrawal in the history read model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Movement {
    /// The account.
    pub account: String,
    /// The sequence of the event in the account's stream.
    pub sequence: u64,
    /// Deposit or withdrawal.
    pub kind: MovementKind,
    /// The amount (positive, minor units) and currency.
    pub amount: Money,
    /// The balance afterwards, in minor units.
    pub balance_after: i64,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// Who asked for it.
    pub actor: String,
    /// The business request it belongs to (a transfer's saga, an API call).
    pub correlation_id: uuid::Uuid,
}

/// Why a movement cannot be recorded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// A statement failed.
    #[error("recording the history failed")]
    Database(#[from] sqlx::Error),
    /// Another event is already recorded at this place of the account's stream, or this
    /// one is recorded already although it is not a replay.
    #[error(
        "movement {sequence} of account `{account}` is already recorded ({recorded}); this event is {event}"
    )]
    Duplicate {
        /// The account.
        account: String,
        /// The sequence.
        sequence: u64,
        /// The event id recorded there.
        recorded: uuid::Uuid,
        /// The event id of this event.
        event: uuid::Uuid,
    },
}

/// The movements of every account: an SQL projection writing one row per deposit or
/// withdrawal into `movements`, whose primary key `(account, sequence)` makes a double
/// impossible. A replay (`annals projections replay`) finds its rows there and leaves
/// them as they are; outside a replay, finding the row is an error, since it would mean
/// an event was applied twice.
#[derive(Debug, Clone, Copy, Default)]
pub struct TransactionHistory;

#[async_trait]
impl SqlProjection for TransactionHistory {
    const NAME: &'static str = TRANSACTION_HISTORY;
    const AGGREGATES: &'static [&'static str] = &[ACCOUNT];
    type Event = AccountEvent;
    type Error = HistoryError;

    async fn setup(&self, tx: &mut Transaction<'_, Postgres>) -> Result<(), HistoryError> {
        sqlx::query(
            "CREATE TABLE movements (
                 account        text NOT NULL,
                 sequence       bigint NOT NULL CHECK (sequence > 0),
                 kind           text NOT NULL CHECK (kind IN ('deposit', 'withdrawal')),
                 amount_minor   bigint NOT NULL CHECK (amount_minor > 0),
                 currency       text NOT NULL,
                 balance_after  bigint NOT NULL,
                 occurred_at    timestamptz NOT NULL,
                 actor          text NOT NULL,
                 correlation_id uuid NOT NULL,
                 event_id       uuid NOT NULL UNIQUE,
                 PRIMARY KEY (account, sequence)
             )",
        )
        .execute(&mut **tx)
        .await?;
        sqlx::query("CREATE INDEX movements_by_time ON movements (occurred_at)")
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    async fn handle(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        event: &Envelope<AccountEvent>,
        ctx: &Context,
    ) -> Result<(), HistoryError> {
        let (kind, amount, balance_after) = match &event.payload {
            AccountEvent::Deposited {
                amount,
                balance_after,
            } => (MovementKind::Deposit, amount, balance_after),
            AccountEvent::Withdrawn {
                amount,
                balance_after,
            } => (MovementKind::Withdrawal, amount, balance_after),
            _ => return Ok(()),
        };
        let sequence = i64::try_from(event.sequence.0).unwrap_or(i64::MAX);
        let inserted = sqlx::query(
            "INSERT INTO movements (account, sequence, kind, amount_minor, currency,
                                    balance_after, occurred_at, actor, correlation_id, event_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (account, sequence) DO NOTHING",
        )
        .bind(event.aggregate_id.as_str())
        .bind(sequence)
        .bind(kind.as_str())
        .bind(amount.minor)
        .bind(amount.currency.as_str())
        .bind(*balance_after)
        .bind(event.occurred_at)
        .bind(event.metadata.actor.as_str())
        .bind(event.metadata.correlation_id.0)
        .bind(event.event_id.0)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(());
        }
        let recorded: uuid::Uuid = sqlx::query_scalar(
            "SELECT event_id FROM movements WHERE account = $1 AND sequence = $2",
        )
        .bind(event.aggregate_id.as_str())
        .bind(sequence)
        .fetch_one(&mut **tx)
        .await?;
        if recorded == event.event_id.0 && ctx.is_replaying() {
            return Ok(());
        }
        Err(HistoryError::Duplicate {
            account: event.aggregate_id.to_string(),
            sequence: event.sequence.0,
            recorded,
            event: event.event_id.0,
        })
    }
}

/// The latest `limit` movements of account `id`, newest first, from the live read
/// model. Empty when the model knows none (yet).
pub async fn history(
    db: &Database,
    id: &str,
    limit: u32,
) -> Result<Vec<Movement>, ProjectionError> {
    let rows = sqlx::query(
        "SELECT account, sequence, kind, amount_minor, currency, balance_after, occurred_at,
                actor, correlation_id
         FROM transaction_history.movements WHERE account = $1
         ORDER BY sequence DESC LIMIT $2",
    )
    .bind(id)
    .bind(i64::from(limit))
    .fetch_all(db.pool())
    .await
    .map_err(|e| db_error(&format!("reading the history of account {id}"), e))?;
    rows.iter()
        .map(|r| {
            let kind = match r.get::<&str, _>(2) {
                "deposit" => MovementKind::Deposit,
                _ => MovementKind::Withdrawal,
            };
            let currency = Currency::parse(r.get::<&str, _>(4)).map_err(|e| {
                db_error(
                    &format!("reading the history of account {id}"),
                    sqlx::Error::Decode(Box::new(e)),
                )
            })?;
            Ok(Movement {
                account: r.get(0),
                sequence: u64::try_from(r.get::<i64, _>(1)).unwrap_or(0),
                kind,
                amount: Money::new(r.get(3), currency),
                balance_after: r.get(5),
                occurred_at: r.get(6),
                actor: r.get(7),
                correlation_id: r.get(8),
            })
        })
        .collect()
}

/// A database error of a query, told apart as the projections crate does: unreachable
/// (retry later) or a failing statement.
fn db_error(context: &str, source: sqlx::Error) -> ProjectionError {
    let context = context.to_owned();
    match &source {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => ProjectionError::DatabaseUnavailable {
            context,
            hint: "is Postgres running and DATABASE_URL right?",
            source,
        },
        _ => ProjectionError::Database { context, source },
    }
}

#[cfg(test)]
mod tests {
    use annals_core::{Actor, AggregateId, CommandId, EventId, Metadata, Version};

    use super::*;

    fn envelope(sequence: u64, payload: AccountEvent) -> Envelope<AccountEvent> {
        Envelope {
            event_id: EventId(uuid::Uuid::now_v7()),
            aggregate_type: "account".into(),
            aggregate_id: AggregateId::new("alice"),
            sequence: Version(sequence),
            event_type: "test".into(),
            schema_version: 1,
            occurred_at: Utc::now(),
            metadata: Metadata::new(Actor::new("user:test"), CommandId(uuid::Uuid::now_v7())),
            position: None,
            prev_hash: Default::default(),
            hash: Default::default(),
            payload,
        }
    }

    fn eur(minor: i64) -> Money {
        Money::new(minor, Currency::EUR)
    }

    fn fold(events: &[Envelope<AccountEvent>]) -> Result<Option<AccountBalance>, BalanceError> {
        let mut doc = None;
        for e in events {
            AccountBalances.apply(&mut doc, e)?;
        }
        Ok(doc)
    }

    #[test]
    fn balances_follow_the_account_through_its_life() {
        let opened = AccountEvent::Opened {
            owner: "Alice".into(),
            currency: Currency::EUR,
        };
        let doc = fold(&[
            envelope(1, opened),
            envelope(
                2,
                AccountEvent::Deposited {
                    amount: eur(500),
                    balance_after: 500,
                },
            ),
            envelope(
                3,
                AccountEvent::Withdrawn {
                    amount: eur(200),
                    balance_after: 300,
                },
            ),
            envelope(
                4,
                AccountEvent::Frozen {
                    reason: "audit".into(),
                },
            ),
        ])
        .expect("folds")
        .expect("exists");
        assert_eq!(
            (
                doc.owner.as_str(),
                doc.currency,
                doc.balance,
                doc.status,
                doc.version
            ),
            ("Alice", Currency::EUR, 300, Status::Frozen, 4)
        );
    }

    #[test]
    fn missing_and_contradicting_events_are_errors_and_replayed_ones_change_nothing() {
        let opened = envelope(
            1,
            AccountEvent::Opened {
                owner: "Alice".into(),
                currency: Currency::EUR,
            },
        );
        let deposit = envelope(
            2,
            AccountEvent::Deposited {
                amount: eur(500),
                balance_after: 500,
            },
        );
        let replayed = fold(&[
            opened.clone(),
            deposit.clone(),
            opened.clone(),
            deposit.clone(),
        ])
        .expect("a replay folds")
        .expect("exists");
        assert_eq!((replayed.balance, replayed.version), (500, 2));
        let withdrawal = envelope(
            3,
            AccountEvent::Withdrawn {
                amount: eur(100),
                balance_after: 400,
            },
        );
        assert_eq!(
            fold(&[opened.clone(), withdrawal]),
            Err(BalanceError::OutOfSequence {
                account: "alice".into(),
                last: 1,
                got: 3
            })
        );
        assert!(matches!(
            fold(std::slice::from_ref(&deposit)),
            Err(BalanceError::Lifecycle {
                state: "not open",
                ..
            })
        ));
        let wrong = envelope(
            2,
            AccountEvent::Deposited {
                amount: eur(500),
                balance_after: 700,
            },
        );
        assert_eq!(
            fold(&[opened, wrong]),
            Err(BalanceError::BalanceMismatch {
                account: "alice".into(),
                sequence: 2,
                recorded: 700,
                computed: 500
            })
        );
    }
}
