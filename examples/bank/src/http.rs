//! The bank's HTTP API (JSON). Errors are `{"error": {"kind", "message", "detail"}}` with
//! a status that says who must act: 400 bad input, 404 unknown, 409 conflict, 422 refused
//! by the domain, 503/504 infrastructure.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use annals_core::{CommandError, Error};

use crate::domain::{AccountCommand, Currency, Money, TransferRequest};
use crate::service::Bank;

/// The routes of the API.
pub fn router(bank: Bank) -> Router {
    Router::new()
        .route("/accounts", post(open))
        .route("/accounts/{id}", get(account))
        .route("/accounts/{id}/deposits", post(deposit))
        .route("/accounts/{id}/withdrawals", post(withdraw))
        .route("/accounts/{id}/freeze", post(freeze))
        .route("/transfers", post(transfer))
        .route("/transfers/{id}", get(transfer_status))
        .with_state(bank)
}

/// An API error.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    detail: serde_json::Value,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            detail: serde_json::Value::Null,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "kind": self.kind, "message": self.message, "detail": self.detail } });
        (self.status, Json(body)).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", r.body_text())
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let (status, kind) = match &e {
            Error::Conflict { .. } | Error::DeadlinePassed { .. } => {
                (StatusCode::CONFLICT, "conflict")
            }
            Error::InvalidRequest { .. } => (StatusCode::BAD_REQUEST, "invalid_request"),
            Error::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            Error::Backend { .. } | Error::NotOwner { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "corrupt_store"),
        };
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message.push_str(&format!(": {s}"));
            source = s.source();
        }
        ApiError::new(status, kind, message)
    }
}

fn command_error<R>(e: CommandError<R>) -> ApiError
where
    R: std::fmt::Display + serde::Serialize,
{
    match e {
        CommandError::Rejected(r) => ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            kind: "rejected",
            message: r.to_string(),
            detail: serde_json::to_value(&r).unwrap_or_default(),
        },
        CommandError::Store(e) => e.into(),
    }
}

type Body<T> = Result<Json<T>, JsonRejection>;

#[derive(Debug, Deserialize)]
struct OpenBody {
    id: String,
    owner: String,
    currency: Currency,
}

#[derive(Debug, Deserialize)]
struct AmountBody {
    amount: Money,
}

#[derive(Debug, Deserialize)]
struct FreezeBody {
    reason: String,
}

#[derive(Debug, Deserialize)]
struct TransferBody {
    id: String,
    from: String,
    to: String,
    amount: Money,
}

const ACTOR: &str = "api";

async fn open(
    State(bank): State<Bank>,
    body: Body<OpenBody>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(b) = body?;
    let done = bank
        .command(
            AccountCommand::Open {
                account: b.id.clone(),
                owner: b.owner,
                currency: b.currency,
            },
            ACTOR,
        )
        .await
        .map_err(command_error)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": b.id, "version": done.version.0 })),
    ))
}

async fn account(
    State(bank): State<Bank>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    match bank.account(&id).await? {
        Some(view) => Ok(Json(view)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no account `{id}`"),
        )),
    }
}

async fn movement(
    bank: &Bank,
    command: AccountCommand,
) -> Result<Json<serde_json::Value>, ApiError> {
    let done = bank.command(command, ACTOR).await.map_err(command_error)?;
    Ok(Json(json!({ "version": done.version.0 })))
}

async fn deposit(
    State(bank): State<Bank>,
    Path(id): Path<String>,
    body: Body<AmountBody>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(b) = body?;
    movement(
        &bank,
        AccountCommand::Deposit {
            account: id,
            amount: b.amount,
        },
    )
    .await
}

async fn withdraw(
    State(bank): State<Bank>,
    Path(id): Path<String>,
    body: Body<AmountBody>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(b) = body?;
    movement(
        &bank,
        AccountCommand::Withdraw {
            account: id,
            amount: b.amount,
        },
    )
    .await
}

async fn freeze(
    State(bank): State<Bank>,
    Path(id): Path<String>,
    body: Body<FreezeBody>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(b) = body?;
    movement(
        &bank,
        AccountCommand::Freeze {
            account: id,
            reason: b.reason,
        },
    )
    .await
}

async fn transfer(
    State(bank): State<Bank>,
    body: Body<TransferBody>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(b) = body?;
    let view = bank
        .transfer(
            &b.id,
            TransferRequest {
                from: b.from,
                to: b.to,
                amount: b.amount,
            },
            ACTOR,
        )
        .await
        .map_err(command_error)?;
    Ok((StatusCode::CREATED, Json(view)))
}

async fn transfer_status(
    State(bank): State<Bank>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    match bank.transfer_status(&id).await? {
        Some(view) => Ok(Json(view)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no transfer `{id}`"),
        )),
    }
}

/// A minimal HTTP/1.1 client for the demo and the tests, so they exercise the real
/// server over a real socket without another HTTP stack.
pub mod client {
    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;

    /// Sends one request and returns the status code and the JSON body.
    pub async fn request(
        addr: SocketAddr,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> std::io::Result<(u16, serde_json::Value)> {
        let body = body.map(ToString::to_string).unwrap_or_default();
        let mut stream = TcpStream::connect(addr).await?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        let text = String::from_utf8_lossy(&response);
        let invalid =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| invalid("no status line"))?;
        let (_, payload) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| invalid("no header end"))?;
        let json = if payload.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(payload).map_err(|e| invalid(&e.to_string()))?
        };
        Ok((status, json))
    }
}
