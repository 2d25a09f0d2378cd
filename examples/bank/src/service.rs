//! The bank's application service: what the HTTP API and the demo call. It talks to
//! `CommandGateway`s and repositories, so the same code runs in memory and on Kafka.

use std::sync::Arc;

use annals_core::{
    Actor, AggregateId, AggregateRepository, CommandError, CommandGateway, CommandId, Committed,
    Metadata,
};
use annals_saga::{Saga as _, SagaInstance, SagaRejection, SagaRunner, SagaStatus};
use async_trait::async_trait;
use serde::Serialize;

use crate::domain::{
    Account, AccountCommand, AccountError, AccountEvent, InvalidTransfer, Status, Transfer,
    TransferRequest,
};

/// Starts transfers and reports on them.
#[async_trait]
pub trait Transfers: Send + Sync {
    /// Starts a transfer saga; returns its status once it has gone as far as it can now.
    async fn start(
        &self,
        id: AggregateId,
        request: TransferRequest,
        metadata: Metadata,
    ) -> Result<TransferView, CommandError<SagaRejection<InvalidTransfer>>>;

    /// A transfer's current state, if it exists.
    async fn get(&self, id: &AggregateId) -> Result<Option<TransferView>, annals_core::Error>;
}

/// A transfer as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TransferView {
    /// The transfer id.
    pub id: String,
    /// Where the saga is.
    pub status: SagaStatus,
    /// The request.
    pub request: Option<TransferRequest>,
    /// Why it was compensated or is stuck.
    pub reason: Option<String>,
    /// The saga's trail, one line per event.
    pub trail: Vec<String>,
}

/// Transfers run in process by a [`SagaRunner`].
pub struct InProcessTransfers {
    /// The runner.
    pub runner: SagaRunner<Transfer>,
}

fn view(id: &AggregateId, saga: &SagaInstance<Transfer>, trail: Vec<String>) -> TransferView {
    TransferView {
        id: id.to_string(),
        status: saga.status,
        request: saga.input.clone(),
        reason: saga.reason.clone(),
        trail,
    }
}

async fn trail(
    sagas: &AggregateRepository<SagaInstance<Transfer>>,
    id: &AggregateId,
) -> Result<Vec<String>, annals_core::Error> {
    Ok(sagas
        .events(id)
        .await?
        .iter()
        .map(|e| e.payload.describe(Transfer::steps()))
        .collect())
}

#[async_trait]
impl Transfers for InProcessTransfers {
    async fn start(
        &self,
        id: AggregateId,
        request: TransferRequest,
        metadata: Metadata,
    ) -> Result<TransferView, CommandError<SagaRejection<InvalidTransfer>>> {
        let saga = self.runner.start(id.clone(), request, metadata).await?;
        let trail = trail(self.runner.sagas(), &id).await?;
        Ok(view(&id, &saga, trail))
    }

    async fn get(&self, id: &AggregateId) -> Result<Option<TransferView>, annals_core::Error> {
        let loaded = self.runner.sagas().load(id).await?;
        if loaded.version.0 == 0 {
            return Ok(None);
        }
        let trail = trail(self.runner.sagas(), id).await?;
        Ok(Some(view(id, &loaded.state, trail)))
    }
}

/// An account as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccountView {
    /// The account id.
    pub id: String,
    /// Where it is in its life.
    pub status: Status,
    /// Its currency, once opened.
    pub currency: Option<String>,
    /// The balance in minor units.
    pub balance: i64,
    /// The number of events in its stream.
    pub version: u64,
}

/// The bank: accounts and transfers.
#[derive(Clone)]
pub struct Bank {
    accounts: Arc<dyn CommandGateway<Account>>,
    reader: AggregateRepository<Account>,
    transfers: Arc<dyn Transfers>,
}

impl Bank {
    /// A bank sending account commands to `accounts`, reading accounts with `reader`
    /// (a consistent read of the event streams) and running transfers with `transfers`.
    pub fn new(
        accounts: Arc<dyn CommandGateway<Account>>,
        reader: AggregateRepository<Account>,
        transfers: Arc<dyn Transfers>,
    ) -> Self {
        Self {
            accounts,
            reader,
            transfers,
        }
    }

    /// Sends an account command on behalf of `actor`.
    pub async fn command(
        &self,
        command: AccountCommand,
        actor: &str,
    ) -> Result<Committed<AccountEvent>, CommandError<AccountError>> {
        self.accounts
            .send(command, Metadata::new(Actor::new(actor), new_command_id()))
            .await
    }

    /// Reads an account; `None` when it was never opened.
    pub async fn account(&self, id: &str) -> Result<Option<AccountView>, annals_core::Error> {
        let loaded = self.reader.load(&AggregateId::new(id)).await?;
        if loaded.version.0 == 0 {
            return Ok(None);
        }
        Ok(Some(AccountView {
            id: id.to_owned(),
            status: loaded.state.status(),
            currency: loaded.state.currency().map(|c| c.to_string()),
            balance: loaded.state.balance(),
            version: loaded.version.0,
        }))
    }

    /// Starts a transfer on behalf of `actor`.
    pub async fn transfer(
        &self,
        id: &str,
        request: TransferRequest,
        actor: &str,
    ) -> Result<TransferView, CommandError<SagaRejection<InvalidTransfer>>> {
        self.transfers
            .start(
                AggregateId::new(id),
                request,
                Metadata::new(Actor::new(actor), new_command_id()),
            )
            .await
    }

    /// Reads a transfer.
    pub async fn transfer_status(
        &self,
        id: &str,
    ) -> Result<Option<TransferView>, annals_core::Error> {
        self.transfers.get(&AggregateId::new(id)).await
    }
}

fn new_command_id() -> CommandId {
    CommandId(uuid::Uuid::now_v7())
}
