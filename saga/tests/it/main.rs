//! Given/when/then tests of the saga state machine: no Kafka, no clock, just decisions.

use annals_core::testing::AggregateTest;
use annals_core::{AggregateId, CommandId};
use annals_saga::{
    Direction, Outgoing, RetryPolicy, Saga, SagaCommand as C, SagaEvent as E, SagaInstance,
    SagaRejection, SagaStatus, Step, StepOutcome, step_command_id,
};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Move {
    from: String,
    to: String,
    amount: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
enum BadMove {
    #[error("a move to the same place")]
    SamePlace,
}

fn cmd(target: &str, what: &str, amount: i64) -> Outgoing {
    Outgoing {
        aggregate_type: "account".into(),
        aggregate_id: AggregateId::new(target),
        command_type: what.into(),
        command: serde_json::json!({ "what": what, "amount": amount }),
    }
}

fn take(m: &Move) -> Result<Outgoing, serde_json::Error> {
    Ok(cmd(&m.from, "take", m.amount))
}
fn give_back(m: &Move) -> Result<Outgoing, serde_json::Error> {
    Ok(cmd(&m.from, "give", m.amount))
}
fn give(m: &Move) -> Result<Outgoing, serde_json::Error> {
    Ok(cmd(&m.to, "give", m.amount))
}
fn take_back(m: &Move) -> Result<Outgoing, serde_json::Error> {
    Ok(cmd(&m.to, "take", m.amount))
}
fn log(m: &Move) -> Result<Outgoing, serde_json::Error> {
    Ok(cmd("journal", "log", m.amount))
}

struct Mover;

static STEPS: [Step<Move>; 3] = [
    Step {
        name: "take",
        action: take,
        compensation: Some(give_back),
        retry: RetryPolicy::DEFAULT,
        deadline: None,
    },
    Step {
        name: "give",
        action: give,
        compensation: Some(take_back),
        retry: RetryPolicy {
            max_attempts: 2,
            backoff: TimeDelta::seconds(1),
        },
        deadline: Some(TimeDelta::seconds(10)),
    },
    Step {
        name: "log",
        action: log,
        compensation: None,
        retry: RetryPolicy::DEFAULT,
        deadline: None,
    },
];

impl Saga for Mover {
    const NAME: &'static str = "mover";
    type Input = Move;
    type Invalid = BadMove;

    fn participants() -> &'static [&'static str] {
        &["account"]
    }

    fn validate(input: &Move) -> Result<(), BadMove> {
        if input.from == input.to {
            return Err(BadMove::SamePlace);
        }
        Ok(())
    }

    fn steps() -> &'static [Step<Move>] {
        &STEPS
    }
}

type Instance = SagaInstance<Mover>;

fn id() -> AggregateId {
    AggregateId::new("saga-1")
}

fn input() -> Move {
    Move {
        from: "a".into(),
        to: "b".into(),
        amount: 5,
    }
}

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600, 0).expect("valid")
}

fn cid(step: usize, direction: Direction, attempt: u32) -> CommandId {
    step_command_id(&id(), step, direction, attempt)
}

fn sent(step: usize, direction: Direction, attempt: u32, at: DateTime<Utc>) -> E<Move> {
    let m = input();
    let command = match (step, direction) {
        (0, Direction::Forward) => take(&m),
        (0, Direction::Compensation) => give_back(&m),
        (1, Direction::Forward) => give(&m),
        (1, Direction::Compensation) => take_back(&m),
        _ => log(&m),
    }
    .expect("builds");
    E::CommandSent {
        step,
        direction,
        attempt,
        command_id: cid(step, direction, attempt),
        command,
        // Step 1 has a deadline, for its compensation too.
        deadline: (step == 1).then(|| at + TimeDelta::seconds(10)),
        at,
    }
}

fn reply(command_id: CommandId, outcome: StepOutcome) -> C<Move> {
    C::Reply {
        saga_id: id(),
        command_id,
        outcome,
    }
}

fn refused(reason: &str) -> StepOutcome {
    StepOutcome::Refused {
        reason: reason.into(),
    }
}

fn started() -> Vec<E<Move>> {
    vec![
        E::Started { input: input() },
        sent(0, Direction::Forward, 1, t0()),
    ]
}

fn after_take() -> Vec<E<Move>> {
    let mut events = started();
    events.push(E::StepSucceeded { step: 0 });
    events.push(sent(1, Direction::Forward, 1, t0()));
    events
}

#[test]
fn a_start_records_the_input_and_sends_the_first_step() {
    AggregateTest::<Instance>::new()
        .when(C::Start {
            saga_id: id(),
            input: input(),
        })
        .then_expect_events(started());
}

#[test]
fn an_invalid_input_starts_nothing() {
    AggregateTest::<Instance>::new()
        .when(C::Start {
            saga_id: id(),
            input: Move {
                from: "a".into(),
                to: "a".into(),
                amount: 5,
            },
        })
        .then_expect_rejection(SagaRejection::Invalid(BadMove::SamePlace));
}

#[test]
fn replies_advance_the_steps_to_completion() {
    AggregateTest::<Instance>::new()
        .given(started())
        .when(reply(cid(0, Direction::Forward, 1), StepOutcome::Done))
        .then_expect_events(vec![
            E::StepSucceeded { step: 0 },
            sent(1, Direction::Forward, 1, t0()),
        ]);
    let mut given = after_take();
    given.push(E::StepSucceeded { step: 1 });
    given.push(sent(2, Direction::Forward, 1, t0()));
    AggregateTest::<Instance>::new()
        .given(given)
        .when(reply(cid(2, Direction::Forward, 1), StepOutcome::Done))
        .then_expect_events(vec![E::StepSucceeded { step: 2 }, E::Completed])
        .then_state(|s| assert_eq!(s.status, SagaStatus::Completed));
}

#[test]
fn a_refusal_compensates_completed_steps_in_reverse_order() {
    let mut given = after_take();
    given.push(E::StepSucceeded { step: 1 });
    given.push(sent(2, Direction::Forward, 1, t0()));
    // Step 2 refused: step 1 is undone first, then step 0.
    AggregateTest::<Instance>::new()
        .given(given.clone())
        .when(reply(
            cid(2, Direction::Forward, 1),
            refused("journal closed"),
        ))
        .then_expect_events(vec![
            E::StepFailed {
                step: 2,
                attempt: 1,
                reason: "journal closed".into(),
                retry_at: None,
            },
            sent(1, Direction::Compensation, 1, t0()),
        ])
        .then_state(|s| assert_eq!(s.status, SagaStatus::Compensating));
    given.push(E::StepFailed {
        step: 2,
        attempt: 1,
        reason: "journal closed".into(),
        retry_at: None,
    });
    given.push(sent(1, Direction::Compensation, 1, t0()));
    AggregateTest::<Instance>::new()
        .given(given.clone())
        .when(reply(cid(1, Direction::Compensation, 1), StepOutcome::Done))
        .then_expect_events(vec![
            E::CompensationSucceeded { step: 1 },
            sent(0, Direction::Compensation, 1, t0()),
        ]);
    given.push(E::CompensationSucceeded { step: 1 });
    given.push(sent(0, Direction::Compensation, 1, t0()));
    AggregateTest::<Instance>::new()
        .given(given)
        .when(reply(cid(0, Direction::Compensation, 1), StepOutcome::Done))
        .then_expect_events(vec![
            E::CompensationSucceeded { step: 0 },
            E::Compensated {
                reason: "journal closed".into(),
            },
        ])
        .then_state(|s| {
            assert_eq!(s.status, SagaStatus::Compensated);
            assert!(s.completed.is_empty());
        });
}

#[test]
fn a_transient_failure_is_retried_with_a_new_command_id_before_compensating() {
    let conflict = StepOutcome::Retryable {
        reason: "version conflict".into(),
    };
    let retry_at = t0() + TimeDelta::seconds(1);
    let failed_once = E::StepFailed {
        step: 1,
        attempt: 1,
        reason: "version conflict".into(),
        retry_at: Some(retry_at),
    };
    AggregateTest::<Instance>::new()
        .given(after_take())
        .when(reply(cid(1, Direction::Forward, 1), conflict.clone()))
        .then_expect_events(vec![failed_once.clone()]);
    let mut given = after_take();
    given.push(failed_once);
    // Not yet time: nothing happens.
    AggregateTest::<Instance>::new()
        .given(given.clone())
        .at(retry_at - TimeDelta::milliseconds(1))
        .when(C::Tick { saga_id: id() })
        .then_expect_events(vec![]);
    AggregateTest::<Instance>::new()
        .given(given.clone())
        .at(retry_at)
        .when(C::Tick { saga_id: id() })
        .then_expect_events(vec![sent(1, Direction::Forward, 2, retry_at)]);
    assert_ne!(cid(1, Direction::Forward, 1), cid(1, Direction::Forward, 2));
    // The second (last allowed) attempt fails too: compensation starts.
    given.push(sent(1, Direction::Forward, 2, retry_at));
    AggregateTest::<Instance>::new()
        .given(given)
        .at(retry_at)
        .when(reply(cid(1, Direction::Forward, 2), conflict))
        .then_expect_events(vec![
            E::StepFailed {
                step: 1,
                attempt: 2,
                reason: "version conflict".into(),
                retry_at: None,
            },
            sent(0, Direction::Compensation, 1, retry_at),
        ]);
}

#[test]
fn a_missed_deadline_resends_the_same_command_and_a_refusal_compensates() {
    let deadline = t0() + TimeDelta::seconds(10);
    AggregateTest::<Instance>::new()
        .given(after_take())
        .at(deadline - TimeDelta::milliseconds(1))
        .when(C::Tick { saga_id: id() })
        .then_expect_events(vec![]);
    let resent = E::CommandResent {
        step: 1,
        direction: Direction::Forward,
        command_id: cid(1, Direction::Forward, 1),
        command: give(&input()).expect("builds"),
        resends: 1,
        deadline: Some(deadline),
        at: deadline,
    };
    AggregateTest::<Instance>::new()
        .given(after_take())
        .at(deadline)
        .when(C::Tick { saga_id: id() })
        .then_expect_events(vec![resent.clone()]);
    let mut given = after_take();
    given.push(resent);
    AggregateTest::<Instance>::new()
        .given(given)
        .at(deadline)
        .when(reply(cid(1, Direction::Forward, 1), refused("expired")))
        .then_expect_events(vec![
            E::StepFailed {
                step: 1,
                attempt: 1,
                reason: "expired".into(),
                retry_at: None,
            },
            sent(0, Direction::Compensation, 1, deadline),
        ]);
}

#[test]
fn a_compensation_that_fails_twice_then_succeeds() {
    let mut given = after_take();
    given.push(E::StepFailed {
        step: 1,
        attempt: 1,
        reason: "target frozen".into(),
        retry_at: None,
    });
    given.push(sent(0, Direction::Compensation, 1, t0()));
    let mut now = t0();
    for attempt in 1..=2 {
        let retry_at = now + RetryPolicy::DEFAULT.delay_before(attempt + 1);
        let failed = E::CompensationFailed {
            step: 0,
            attempt,
            reason: "busy".into(),
            retry_at,
        };
        AggregateTest::<Instance>::new()
            .given(given.clone())
            .at(now)
            .when(reply(
                cid(0, Direction::Compensation, attempt),
                StepOutcome::Retryable {
                    reason: "busy".into(),
                },
            ))
            .then_expect_events(vec![failed.clone()]);
        given.push(failed);
        now = retry_at;
        given.push(sent(0, Direction::Compensation, attempt + 1, now));
    }
    AggregateTest::<Instance>::new()
        .given(given)
        .at(now)
        .when(reply(cid(0, Direction::Compensation, 3), StepOutcome::Done))
        .then_expect_events(vec![
            E::CompensationSucceeded { step: 0 },
            E::Compensated {
                reason: "target frozen".into(),
            },
        ]);
}

#[test]
fn a_compensation_that_keeps_failing_parks_the_saga_as_stuck_and_an_operator_resumes_it() {
    let mut state: Vec<E<Move>> = after_take();
    state.push(E::StepFailed {
        step: 1,
        attempt: 1,
        reason: "refused".into(),
        retry_at: None,
    });
    state.push(sent(0, Direction::Compensation, 1, t0()));
    let mut attempt = 1;
    loop {
        let outcome = AggregateTest::<Instance>::new()
            .given(state.clone())
            .when(reply(
                cid(0, Direction::Compensation, attempt),
                refused("closed"),
            ));
        let events = outcome.result().clone().expect("decided");
        state.extend(events.clone());
        if let Some(E::Stuck { .. }) = events.last() {
            break;
        }
        attempt += 1;
        state.push(sent(0, Direction::Compensation, attempt, t0()));
        assert!(attempt < 20, "the saga must park itself");
    }
    assert_eq!(
        attempt,
        annals_saga::instance::COMPENSATION_ATTEMPTS_BEFORE_STUCK
    );
    AggregateTest::<Instance>::new()
        .given(state.clone())
        .when(C::Tick { saga_id: id() })
        .then_expect_events(vec![]);
    AggregateTest::<Instance>::new()
        .given(state)
        .when(C::Retry { saga_id: id() })
        .then_expect_events(vec![
            E::Resumed,
            E::CommandResent {
                step: 0,
                direction: Direction::Compensation,
                command_id: cid(0, Direction::Compensation, attempt),
                command: give_back(&input()).expect("builds"),
                resends: 1,
                deadline: None,
                at: t0(),
            },
        ])
        .then_state(|s| assert_eq!(s.status, SagaStatus::Compensating));
}

#[test]
fn duplicate_and_late_replies_change_nothing() {
    AggregateTest::<Instance>::new()
        .given(after_take())
        .when(reply(cid(0, Direction::Forward, 1), StepOutcome::Done))
        .then_expect_events(vec![]);
    AggregateTest::<Instance>::new()
        .given(after_take())
        .when(reply(CommandId(uuid::Uuid::nil()), StepOutcome::Done))
        .then_expect_events(vec![]);
}

#[test]
fn operators_can_abandon_but_not_a_finished_saga() {
    AggregateTest::<Instance>::new()
        .given(after_take())
        .when(C::Abandon {
            saga_id: id(),
            reason: "manual".into(),
        })
        .then_expect_events(vec![E::Abandoned {
            reason: "manual".into(),
        }])
        .then_state(|s| assert!(s.wake_at().is_none()));
    let mut done = after_take();
    done.push(E::Abandoned { reason: "x".into() });
    AggregateTest::<Instance>::new()
        .given(done)
        .when(C::Abandon {
            saga_id: id(),
            reason: "again".into(),
        })
        .then_expect_rejection(SagaRejection::AlreadyEnded(SagaStatus::Abandoned));
    AggregateTest::<Instance>::new()
        .when(C::Tick { saga_id: id() })
        .then_expect_rejection(SagaRejection::NotStarted);
}

#[test]
fn wake_at_follows_deadlines_and_retries() {
    AggregateTest::<Instance>::new()
        .given(after_take())
        .when(C::Tick { saga_id: id() })
        .then_state(|s| assert_eq!(s.wake_at(), Some(t0() + TimeDelta::seconds(10))));
}

#[test]
fn saga_events_round_trip_through_their_stored_form() {
    use annals_core::DomainEvent;
    for event in after_take() {
        let doc = event.to_document().expect("encodes");
        let back = E::<Move>::from_document(event.event_type(), doc)
            .expect("known type")
            .expect("decodes");
        assert_eq!(back, event);
    }
    let doc = E::<Move>::Completed.to_document().expect("encodes");
    assert_eq!(
        E::<Move>::from_document("SagaCompleted", doc)
            .expect("known")
            .expect("decodes"),
        E::Completed
    );
}
