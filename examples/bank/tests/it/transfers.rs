//! Transfers as sagas on Kafka: the account and transfer processors talk only through
//! topics; the tests check balances, the saga trails and that money is conserved.

use std::sync::Arc;
use std::time::Duration;

use annals_core::{
    Actor, Aggregate, AggregateId, AggregateRepository, CommandContext, CommandError,
    CommandGateway, CommandId, EventStore, ManualClock, Metadata,
};
use annals_kafka_store::{CommandBus, CommandProcessor, KafkaEventStore, KafkaStoreOptions};
use annals_saga::kafka::SagaReactions;
use annals_saga::{
    BuildError, Outgoing, RetryPolicy, Saga, SagaCommand, SagaEvent, SagaInstance, SagaRejection,
    SagaStatus, Step,
};
use bank::domain::{
    Account, AccountCommand, AccountError, AccountEvent, Currency, InvalidTransfer, Money,
    Transfer, TransferRequest,
};
use chrono::{TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::support::{brokers, eventually, options, unique_prefix};

fn meta() -> Metadata {
    Metadata::new(Actor::new("user:test"), CommandId(uuid::Uuid::now_v7()))
}

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::EUR)
}

struct Bank {
    options: KafkaStoreOptions,
    accounts: CommandBus<Account>,
    reader: AggregateRepository<Account>,
    store: Arc<dyn EventStore>,
}

impl Bank {
    async fn connect(options: &KafkaStoreOptions) -> Self {
        let store: Arc<dyn EventStore> = Arc::new(
            KafkaEventStore::connect(options.clone())
                .await
                .expect("store"),
        );
        Self {
            options: options.clone(),
            accounts: CommandBus::connect(options.clone()).await.expect("bus"),
            reader: AggregateRepository::new(store.clone()),
            store,
        }
    }

    async fn open(&self, id: &str, deposit: i64) {
        self.accounts
            .send(
                AccountCommand::Open {
                    account: id.into(),
                    owner: id.into(),
                    currency: Currency::EUR,
                },
                meta(),
            )
            .await
            .expect("open");
        if deposit > 0 {
            self.accounts
                .send(
                    AccountCommand::Deposit {
                        account: id.into(),
                        amount: eur(deposit),
                    },
                    meta(),
                )
                .await
                .expect("deposit");
        }
    }

    async fn balance(&self, id: &str) -> i64 {
        self.reader
            .load(&AggregateId::new(id))
            .await
            .expect("load")
            .state
            .balance()
    }

    async fn saga<S: Saga>(&self, id: &str) -> (SagaInstance<S>, Vec<SagaEvent<S::Input>>) {
        let repo = AggregateRepository::<SagaInstance<S>>::new(self.store.clone());
        let events = repo
            .events(&AggregateId::new(id))
            .await
            .expect("saga events");
        let mut state = SagaInstance::<S>::default();
        let mut trail = Vec::new();
        for e in events {
            state.apply(&e.payload);
            trail.push(e.payload);
        }
        (state, trail)
    }

    async fn finished<S: Saga>(&self, id: &str) -> SagaInstance<S> {
        eventually(
            Duration::from_secs(60),
            &format!("saga {id} to finish"),
            || async {
                let (state, _) = self.saga::<S>(id).await;
                state.status.is_final().then_some(state)
            },
        )
        .await
    }
}

async fn start_transfer(
    bus: &CommandBus<SagaInstance<Transfer>>,
    id: &str,
    from: &str,
    to: &str,
    minor: i64,
) -> Result<(), CommandError<SagaRejection<InvalidTransfer>>> {
    bus.send(
        SagaCommand::Start {
            saga_id: AggregateId::new(id),
            input: TransferRequest {
                from: from.into(),
                to: to.into(),
                amount: eur(minor),
            },
        },
        meta(),
    )
    .await
    .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn completed_refused_and_invalid_transfers_keep_money_conserved() {
    let Some(brokers) = brokers() else { return };
    let options = options(&brokers, &unique_prefix());
    let (accounts, transfers) = crate::support::start_services(&options).await;
    let bank = Bank::connect(&options).await;
    let sagas = CommandBus::<SagaInstance<Transfer>>::connect(options.clone())
        .await
        .expect("saga bus");

    bank.open("a", 1_000).await;
    bank.open("b", 0).await;
    // `full` cannot take more: its credit is refused after the debit, forcing a refund.
    bank.open("full", i64::MAX - 10).await;

    start_transfer(&sagas, "t-ok", "a", "b", 300)
        .await
        .expect("start");
    start_transfer(&sagas, "t-refund", "a", "full", 100)
        .await
        .expect("start");
    start_transfer(&sagas, "t-unknown", "a", "nobody", 100)
        .await
        .expect("start");

    let ok = bank.finished::<Transfer>("t-ok").await;
    assert_eq!(ok.status, SagaStatus::Completed);
    let refund = bank.finished::<Transfer>("t-refund").await;
    assert_eq!(refund.status, SagaStatus::Compensated, "{refund:?}");
    let (_, trail) = bank.saga::<Transfer>("t-refund").await;
    let described: Vec<String> = trail
        .iter()
        .map(|e| e.describe(Transfer::steps()))
        .collect();
    assert!(
        described.iter().any(|d| d == "debit undone"),
        "the debit was refunded: {described:?}"
    );
    let unknown = bank.finished::<Transfer>("t-unknown").await;
    assert_eq!(unknown.status, SagaStatus::Compensated);
    assert!(
        !bank
            .saga::<Transfer>("t-unknown")
            .await
            .1
            .iter()
            .any(|e| matches!(e, SagaEvent::StepSucceeded { step: 1 })),
        "no debit happened before the unknown target was found"
    );

    // Bad input is refused before anything is sent.
    for (id, from, to, minor, expected) in [
        ("t-self", "a", "a", 5, InvalidTransfer::SameAccount),
        (
            "t-zero",
            "a",
            "b",
            0,
            InvalidTransfer::NonPositiveAmount { minor: 0 },
        ),
        (
            "t-neg",
            "a",
            "b",
            -5,
            InvalidTransfer::NonPositiveAmount { minor: -5 },
        ),
    ] {
        let err = start_transfer(&sagas, id, from, to, minor)
            .await
            .expect_err("invalid");
        assert!(
            matches!(&err, CommandError::Rejected(SagaRejection::Invalid(e)) if *e == expected),
            "{id}: {err:?}"
        );
        assert!(
            bank.saga::<Transfer>(id).await.1.is_empty(),
            "{id} was never started"
        );
    }

    assert_eq!(bank.balance("a").await, 700);
    assert_eq!(bank.balance("b").await, 300);
    assert_eq!(bank.balance("full").await, i64::MAX - 10);
    let _ = &bank.options;
    accounts.shutdown().await;
    transfers.shutdown().await;
}

/// An account kept by another service (a branch), so that the test can keep it from
/// answering until a deadline has passed.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct BranchAccount(Account);

impl Aggregate for BranchAccount {
    const TYPE: &'static str = "branch-account";
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Rejection = AccountError;

    fn handle(
        &self,
        command: &AccountCommand,
        ctx: &CommandContext,
    ) -> Result<Vec<AccountEvent>, AccountError> {
        self.0.handle(command, ctx)
    }

    fn apply(&mut self, event: &AccountEvent) {
        self.0.apply(event);
    }
}

/// Moves money from a local account to a branch account.
struct ToBranch;

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

fn credit_branch(t: &TransferRequest) -> Result<Outgoing, BuildError> {
    Outgoing::to::<BranchAccount>(&AccountCommand::Deposit {
        account: t.to.clone(),
        amount: t.amount,
    })
}

static TO_BRANCH: [Step<TransferRequest>; 2] = [
    Step {
        name: "debit",
        action: debit,
        compensation: Some(refund),
        retry: RetryPolicy::DEFAULT,
        deadline: None,
    },
    Step {
        name: "credit-branch",
        action: credit_branch,
        compensation: None,
        retry: RetryPolicy::DEFAULT,
        deadline: Some(TimeDelta::seconds(10)),
    },
];

impl Saga for ToBranch {
    const NAME: &'static str = "to-branch";
    type Input = TransferRequest;
    type Invalid = InvalidTransfer;
    fn participants() -> &'static [&'static str] {
        &["account", "branch-account"]
    }
    fn validate(t: &TransferRequest) -> Result<(), InvalidTransfer> {
        Transfer::validate(t)
    }
    fn steps() -> &'static [Step<TransferRequest>] {
        &TO_BRANCH
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missed_deadline_refunds_and_a_failing_refund_is_retried_until_it_succeeds() {
    let Some(brokers) = brokers() else { return };
    let options = options(&brokers, &unique_prefix());
    // One manual clock for every processor: the test decides when deadlines pass.
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let accounts = CommandProcessor::<Account>::new(options.clone())
        .with_clock(clock.clone())
        .start()
        .await
        .expect("accounts");
    let sagas = CommandProcessor::<SagaInstance<ToBranch>>::new(options.clone())
        .with_clock(clock.clone())
        .with_reactions(Arc::new(SagaReactions::<ToBranch>::new()))
        .start()
        .await
        .expect("sagas");
    bank::services::wait_live(&accounts, "account")
        .await
        .expect("live");
    bank::services::wait_live(&sagas, "saga")
        .await
        .expect("live");
    let bank = Bank::connect(&options).await;
    bank.open("a", 1_000).await;
    let branch = CommandBus::<BranchAccount>::connect(options.clone())
        .await
        .expect("bus");
    let saga_bus = CommandBus::<SagaInstance<ToBranch>>::connect(options.clone())
        .await
        .expect("bus");
    saga_bus
        .send(
            SagaCommand::Start {
                saga_id: AggregateId::new("x-1"),
                input: TransferRequest {
                    from: "a".into(),
                    to: "branch-acc".into(),
                    amount: eur(250),
                },
            },
            meta(),
        )
        .await
        .expect("start");
    // The debit happens; the credit waits: the branch service is not running.
    eventually(Duration::from_secs(30), "the credit to be sent", || async {
        let (s, _) = bank.saga::<ToBranch>("x-1").await;
        s.in_flight.as_ref().filter(|f| f.step == 1).map(|_| ())
    })
    .await;
    assert_eq!(bank.balance("a").await, 750);
    // Meanwhile compliance freezes the source: the refund will be refused at first.
    bank.accounts
        .send(
            AccountCommand::Freeze {
                account: "a".into(),
                reason: "review".into(),
            },
            meta(),
        )
        .await
        .expect("freeze");

    clock.advance(TimeDelta::seconds(11));
    eventually(
        Duration::from_secs(30),
        "the saga to resend after the deadline",
        || async {
            let (_, trail) = bank.saga::<ToBranch>("x-1").await;
            trail
                .iter()
                .any(|e| matches!(e, SagaEvent::CommandResent { .. }))
                .then_some(())
        },
    )
    .await;
    // The branch comes up after the deadline: it refuses the late credit.
    let branch_processor = CommandProcessor::<BranchAccount>::new(options.clone())
        .with_clock(clock.clone())
        .start()
        .await
        .expect("branch");
    bank::services::wait_live(&branch_processor, "branch")
        .await
        .expect("live");

    // The refund fails while the source is frozen, is retried, and succeeds once the
    // freeze is lifted.
    for failures in 1..=2u32 {
        eventually(
            Duration::from_secs(30),
            "a refund attempt to fail",
            || async {
                let (s, _) = bank.saga::<ToBranch>("x-1").await;
                (s.compensation_failures >= failures).then_some(())
            },
        )
        .await;
        if failures < 2 {
            clock.advance(TimeDelta::seconds(1));
        }
    }
    bank.accounts
        .send(
            AccountCommand::Unfreeze {
                account: "a".into(),
            },
            meta(),
        )
        .await
        .expect("unfreeze");
    clock.advance(TimeDelta::seconds(2));
    let done = bank.finished::<ToBranch>("x-1").await;
    assert_eq!(done.status, SagaStatus::Compensated, "{done:?}");
    let (_, trail) = bank.saga::<ToBranch>("x-1").await;
    let failed = trail
        .iter()
        .filter(|e| matches!(e, SagaEvent::CompensationFailed { .. }))
        .count();
    assert_eq!(
        failed, 2,
        "the refund failed exactly twice before it succeeded"
    );
    assert_eq!(bank.balance("a").await, 1_000, "refunded once, exactly");
    let branch_acc = branch
        .send(
            AccountCommand::VerifyCanReceive {
                account: "branch-acc".into(),
                currency: Currency::EUR,
            },
            meta(),
        )
        .await;
    assert!(
        matches!(
            branch_acc,
            Err(CommandError::Rejected(AccountError::NotOpen))
        ),
        "the late credit never happened: {branch_acc:?}"
    );
    accounts.shutdown().await;
    sagas.shutdown().await;
    branch_processor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn answers_delivered_twice_have_no_second_effect() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::{ClientConfig, Offset as KOffset, TopicPartitionList};

    let Some(brokers) = brokers() else { return };
    let options = options(&brokers, &unique_prefix());
    let (accounts, transfers) = crate::support::start_services(&options).await;
    let bank = Bank::connect(&options).await;
    let sagas = CommandBus::<SagaInstance<Transfer>>::connect(options.clone())
        .await
        .expect("saga bus");
    bank.open("a", 1_000).await;
    bank.open("b", 0).await;
    start_transfer(&sagas, "t-dup", "a", "b", 100)
        .await
        .expect("start");
    assert_eq!(
        bank.finished::<Transfer>("t-dup").await.status,
        SagaStatus::Completed
    );
    let (_, trail_before) = bank.saga::<Transfer>("t-dup").await;

    // Every answer the saga received sits on its command topic: deliver each again.
    let topic = options.commands_topic("transfer");
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", format!("{}-dup-reader", unique_prefix()))
        .set("enable.partition.eof", "true")
        .create()
        .expect("reader");
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset(&topic, p, KOffset::Beginning)
            .expect("tpl");
    }
    reader.assign(&tpl).expect("assign");
    let mut answers = Vec::new();
    let mut at_end = std::collections::HashSet::new();
    while at_end.len() < 3 {
        match reader.poll(Duration::from_secs(10)) {
            Some(Ok(m)) => {
                let payload = m.payload().unwrap_or_default();
                let is_answer = serde_json::from_slice::<serde_json::Value>(payload)
                    .is_ok_and(|v| v.get("outcome").is_some());
                if is_answer {
                    answers.push((
                        m.partition(),
                        m.key().map(<[u8]>::to_vec),
                        payload.to_vec(),
                        m.headers().map(rdkafka::message::BorrowedHeaders::detach),
                    ));
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => panic!("reading the saga's command topic: {e}"),
            None => panic!("the saga's command topic did not reach its end"),
        }
    }
    assert_eq!(
        answers.len(),
        3,
        "one answer per step: verify, debit, credit"
    );
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("producer");
    let mut written: std::collections::HashMap<i32, i64> = std::collections::HashMap::new();
    for (partition, key, payload, headers) in &answers {
        let mut record = FutureRecord::to(&topic)
            .partition(*partition)
            .payload(payload);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(h) = headers {
            record = record.headers(h.clone());
        }
        let delivery = producer
            .send(record, Duration::from_secs(10))
            .await
            .expect("duplicate sent");
        let end = written.entry(delivery.partition).or_default();
        *end = (*end).max(delivery.offset + 1);
    }
    assert!(!written.is_empty(), "the duplicates were written");

    // A command behind the duplicates on their partition: once it is answered, the
    // processor has handled the duplicates (a partition is processed in order). A
    // transfer to oneself is refused before anything moves, so it changes nothing.
    for partition in written.keys() {
        let probe = (0..)
            .map(|i| format!("probe-{i}"))
            .find(|id| {
                annals_core::partition::partition_for(id.as_bytes(), 3)
                    == u32::try_from(*partition).unwrap_or(0)
            })
            .expect("some id lands on every partition");
        let refused = start_transfer(&sagas, &probe, "a", "a", 1).await;
        assert!(
            matches!(
                refused,
                Err(CommandError::Rejected(SagaRejection::Invalid(_)))
            ),
            "{refused:?}"
        );
    }

    let (state, trail_after) = bank.saga::<Transfer>("t-dup").await;
    assert_eq!(
        trail_after, trail_before,
        "no saga event was added by the duplicates"
    );
    assert_eq!(state.status, SagaStatus::Completed);
    assert_eq!(bank.balance("a").await, 900, "debited once");
    assert_eq!(bank.balance("b").await, 100, "credited once");
    accounts.shutdown().await;
    transfers.shutdown().await;
}
