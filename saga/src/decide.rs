//! The saga instance as an aggregate: deciding on starts, replies, ticks and operator
//! commands, and evolving by its own events. Pure: time comes from the command context.

use annals_core::{Aggregate, AggregateId, Command, CommandContext, CommandId};
use chrono::{DateTime, Utc};

use crate::definition::{CommandFn, Saga};
use crate::instance::{
    COMPENSATION_ATTEMPTS_BEFORE_STUCK, Direction, InFlight, PendingRetry, RESEND_INTERVAL,
    RESENDS_BEFORE_STUCK, SagaCommand, SagaEvent, SagaInstance, SagaRejection, SagaStatus,
    StepOutcome, step_command_id,
};

impl<S: Saga> SagaInstance<S> {
    /// When the instance next needs a `Tick`: a deadline, a resend or a retry.
    pub fn wake_at(&self) -> Option<DateTime<Utc>> {
        if !matches!(self.status, SagaStatus::Running | SagaStatus::Compensating) {
            return None;
        }
        let retry = self.retry.as_ref().map(|r| r.at);
        let in_flight = self.in_flight.as_ref().and_then(|f| match f.deadline {
            Some(deadline) if f.resends == 0 => Some(deadline),
            Some(_) => Some(f.sent_at + RESEND_INTERVAL),
            None => None,
        });
        match (retry, in_flight) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Accumulates events, applying each so later decisions see it.
struct Decider<'a, S: Saga> {
    state: SagaInstance<S>,
    events: Vec<SagaEvent<S::Input>>,
    now: DateTime<Utc>,
    saga_id: &'a AggregateId,
}

impl<S: Saga> Decider<'_, S> {
    fn emit(&mut self, event: SagaEvent<S::Input>) {
        self.state.apply(&event);
        self.events.push(event);
    }

    fn send(&mut self, step: usize, direction: Direction, attempt: u32) {
        let steps = S::steps();
        let Some(def) = steps.get(step) else {
            self.emit(SagaEvent::Stuck {
                reason: format!("step {step} does not exist in this version of the saga"),
            });
            return;
        };
        let build: Option<CommandFn<S::Input>> = match direction {
            Direction::Forward => Some(def.action),
            Direction::Compensation => def.compensation,
        };
        let (Some(build), Some(input)) = (build, self.state.input.as_ref()) else {
            self.emit(SagaEvent::Stuck {
                reason: format!("step `{}` has no command for {direction:?}", def.name),
            });
            return;
        };
        match build(input) {
            Ok(command) => self.emit(SagaEvent::CommandSent {
                step,
                direction,
                attempt,
                command_id: step_command_id(self.saga_id, step, direction, attempt),
                command,
                deadline: def.deadline.map(|d| self.now + d),
                at: self.now,
            }),
            Err(e) => self.emit(SagaEvent::Stuck {
                reason: format!("cannot build the command of step `{}`: {e}", def.name),
            }),
        }
    }

    /// Starts or continues undoing completed steps, last first.
    fn compensate_next(&mut self, reason: &str) {
        let steps = S::steps();
        let next = self
            .state
            .completed
            .iter()
            .rev()
            .copied()
            .find(|s| steps.get(*s).is_some_and(|d| d.compensation.is_some()));
        match next {
            Some(step) => self.send(step, Direction::Compensation, 1),
            None => self.emit(SagaEvent::Compensated {
                reason: reason.to_owned(),
            }),
        }
    }

    fn reply(&mut self, command_id: CommandId, outcome: StepOutcome) {
        let Some(f) = self.state.in_flight.clone() else {
            return;
        };
        if f.command_id != command_id {
            // A late answer to an earlier attempt, or a duplicate: already decided.
            return;
        }
        let steps = S::steps();
        let retry = steps
            .get(f.step)
            .map(|d| d.retry)
            .unwrap_or_default_policy();
        match (f.direction, outcome) {
            (Direction::Forward, StepOutcome::Done) => {
                self.emit(SagaEvent::StepSucceeded { step: f.step });
                if f.step + 1 < steps.len() {
                    self.send(f.step + 1, Direction::Forward, 1);
                } else {
                    self.emit(SagaEvent::Completed);
                }
            }
            (Direction::Forward, StepOutcome::Retryable { reason })
                if f.attempt < retry.max_attempts =>
            {
                self.emit(SagaEvent::StepFailed {
                    step: f.step,
                    attempt: f.attempt,
                    reason,
                    retry_at: Some(self.now + retry.delay_before(f.attempt + 1)),
                });
            }
            (
                Direction::Forward,
                StepOutcome::Retryable { reason } | StepOutcome::Refused { reason },
            ) => {
                self.emit(SagaEvent::StepFailed {
                    step: f.step,
                    attempt: f.attempt,
                    reason: reason.clone(),
                    retry_at: None,
                });
                self.compensate_next(&reason);
            }
            (Direction::Compensation, StepOutcome::Done) => {
                self.emit(SagaEvent::CompensationSucceeded { step: f.step });
                let reason = self.state.reason.clone().unwrap_or_default();
                self.compensate_next(&reason);
            }
            (
                Direction::Compensation,
                StepOutcome::Retryable { reason } | StepOutcome::Refused { reason },
            ) => {
                if self.state.compensation_failures + 1 >= COMPENSATION_ATTEMPTS_BEFORE_STUCK {
                    self.emit(SagaEvent::Stuck {
                        reason: format!(
                            "compensating step `{}` failed {} times, last: {reason}",
                            steps.get(f.step).map_or("?", |d| d.name),
                            self.state.compensation_failures + 1
                        ),
                    });
                } else {
                    self.emit(SagaEvent::CompensationFailed {
                        step: f.step,
                        attempt: f.attempt,
                        reason,
                        retry_at: self.now + retry.delay_before(f.attempt + 1),
                    });
                }
            }
        }
    }

    fn tick(&mut self) {
        if !matches!(
            self.state.status,
            SagaStatus::Running | SagaStatus::Compensating
        ) {
            return;
        }
        if let Some(r) = self.state.retry.clone() {
            if self.now >= r.at {
                self.send(r.step, r.direction, r.attempt);
            }
            return;
        }
        let Some(f) = self.state.in_flight.clone() else {
            return;
        };
        let due = match f.deadline {
            Some(deadline) if f.resends == 0 => self.now >= deadline,
            Some(_) => self.now >= f.sent_at + RESEND_INTERVAL,
            None => false,
        };
        if !due {
            return;
        }
        if f.resends >= RESENDS_BEFORE_STUCK {
            self.emit(SagaEvent::Stuck {
                reason: format!(
                    "no answer to command {} after {} resends: is `{}` running?",
                    f.command_id, f.resends, f.command.aggregate_type
                ),
            });
            return;
        }
        // Past its deadline the participant refuses the command, so resending the same
        // command id yields a definite answer: the first outcome if it took effect in
        // time, a refusal otherwise.
        self.emit(SagaEvent::CommandResent {
            step: f.step,
            direction: f.direction,
            command_id: f.command_id,
            command: f.command,
            resends: f.resends + 1,
            deadline: f.deadline,
            at: self.now,
        });
    }
}

trait OrDefaultPolicy {
    fn unwrap_or_default_policy(self) -> crate::RetryPolicy;
}

impl OrDefaultPolicy for Option<crate::RetryPolicy> {
    fn unwrap_or_default_policy(self) -> crate::RetryPolicy {
        self.unwrap_or(crate::RetryPolicy::DEFAULT)
    }
}

impl<S: Saga> Aggregate for SagaInstance<S> {
    const TYPE: &'static str = S::NAME;
    type Command = SagaCommand<S::Input>;
    type Event = SagaEvent<S::Input>;
    type Rejection = SagaRejection<S::Invalid>;

    fn handle(
        &self,
        command: &Self::Command,
        ctx: &CommandContext,
    ) -> Result<Vec<Self::Event>, Self::Rejection> {
        let saga_id = command.aggregate_id();
        let mut d = Decider::<S> {
            state: self.clone(),
            events: Vec::new(),
            now: ctx.now,
            saga_id: &saga_id,
        };
        if !matches!(command, SagaCommand::Start { .. }) && self.status == SagaStatus::New {
            return Err(SagaRejection::NotStarted);
        }
        match command {
            SagaCommand::Start { input, .. } => {
                if self.status != SagaStatus::New {
                    return Err(SagaRejection::AlreadyStarted);
                }
                S::validate(input).map_err(SagaRejection::Invalid)?;
                d.emit(SagaEvent::Started {
                    input: input.clone(),
                });
                if S::steps().is_empty() {
                    d.emit(SagaEvent::Completed);
                } else {
                    d.send(0, Direction::Forward, 1);
                }
            }
            SagaCommand::Reply {
                command_id,
                outcome,
                ..
            } => {
                if matches!(self.status, SagaStatus::Running | SagaStatus::Compensating) {
                    d.reply(*command_id, outcome.clone());
                }
            }
            SagaCommand::Tick { .. } => d.tick(),
            SagaCommand::Retry { .. } => {
                if self.status != SagaStatus::Stuck {
                    return Err(SagaRejection::NotStuck(self.status));
                }
                d.emit(SagaEvent::Resumed);
                if let Some(f) = d.state.in_flight.clone() {
                    d.emit(SagaEvent::CommandResent {
                        step: f.step,
                        direction: f.direction,
                        command_id: f.command_id,
                        command: f.command,
                        resends: 1,
                        deadline: f.deadline,
                        at: d.now,
                    });
                } else if d.state.retry.is_none() && d.state.phase == Direction::Compensation {
                    let reason = d.state.reason.clone().unwrap_or_default();
                    d.compensate_next(&reason);
                }
            }
            SagaCommand::Abandon { reason, .. } => {
                if self.status.is_final() {
                    return Err(SagaRejection::AlreadyEnded(self.status));
                }
                d.emit(SagaEvent::Abandoned {
                    reason: reason.clone(),
                });
            }
        }
        Ok(d.events)
    }

    fn apply(&mut self, event: &Self::Event) {
        match event {
            SagaEvent::Started { input } => {
                self.status = SagaStatus::Running;
                self.input = Some(input.clone());
            }
            SagaEvent::CommandSent {
                step,
                direction,
                attempt,
                command_id,
                command,
                deadline,
                at,
            } => {
                self.retry = None;
                self.in_flight = Some(InFlight {
                    step: *step,
                    direction: *direction,
                    attempt: *attempt,
                    command_id: *command_id,
                    command: command.clone(),
                    sent_at: *at,
                    deadline: *deadline,
                    resends: 0,
                });
                self.updated_at = Some(*at);
            }
            SagaEvent::CommandResent { resends, at, .. } => {
                if let Some(f) = self.in_flight.as_mut() {
                    f.resends = *resends;
                    f.sent_at = *at;
                }
                self.updated_at = Some(*at);
            }
            SagaEvent::StepSucceeded { step } => {
                self.in_flight = None;
                self.completed.push(*step);
            }
            SagaEvent::StepFailed {
                step,
                attempt,
                reason,
                retry_at,
            } => {
                self.in_flight = None;
                match retry_at {
                    Some(at) => {
                        self.retry = Some(PendingRetry {
                            step: *step,
                            direction: Direction::Forward,
                            attempt: attempt + 1,
                            at: *at,
                        });
                    }
                    None => {
                        self.phase = Direction::Compensation;
                        self.status = SagaStatus::Compensating;
                        self.reason = Some(reason.clone());
                    }
                }
            }
            SagaEvent::CompensationSucceeded { step } => {
                self.in_flight = None;
                self.completed.retain(|s| s != step);
                self.compensation_failures = 0;
            }
            SagaEvent::CompensationFailed {
                step,
                attempt,
                retry_at,
                ..
            } => {
                self.in_flight = None;
                self.compensation_failures += 1;
                self.retry = Some(PendingRetry {
                    step: *step,
                    direction: Direction::Compensation,
                    attempt: attempt + 1,
                    at: *retry_at,
                });
            }
            SagaEvent::Completed => {
                self.status = SagaStatus::Completed;
                self.in_flight = None;
            }
            SagaEvent::Compensated { reason } => {
                self.status = SagaStatus::Compensated;
                self.in_flight = None;
                self.reason = Some(reason.clone());
            }
            SagaEvent::Stuck { reason } => {
                self.status = SagaStatus::Stuck;
                self.reason = Some(reason.clone());
            }
            SagaEvent::Resumed => {
                self.status = match self.phase {
                    Direction::Forward => SagaStatus::Running,
                    Direction::Compensation => SagaStatus::Compensating,
                };
                self.compensation_failures = 0;
                if let Some(f) = self.in_flight.as_mut() {
                    f.resends = 0;
                }
            }
            SagaEvent::Abandoned { reason } => {
                self.status = SagaStatus::Abandoned;
                self.reason = Some(reason.clone());
                self.in_flight = None;
                self.retry = None;
            }
        }
    }
}
