//! Parked poison events: listing them, retrying them once the cause is fixed, skipping
//! them deliberately.

use annals_core::{
    AggregateId, AggregateRef, EventId, Offset, Partition, Position, RawEnvelope, Version,
};
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::error::{ProjectionError, Result};
use crate::fold::error_chain;
use crate::projection::Projection;
use crate::runner::ProjectorOptions;
use crate::schema::{Database, use_schema, version_schema};
use crate::store::{require_row, to_u64};

/// Where a dead letter stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterState {
    /// Waiting: neither it nor later events of its key are applied.
    Parked,
    /// Applied by a retry.
    Retried,
    /// Skipped by an operator: never applied.
    Skipped,
}

impl DeadLetterState {
    fn parse(s: &str) -> Self {
        match s {
            "retried" => Self::Retried,
            "skipped" => Self::Skipped,
            _ => Self::Parked,
        }
    }
}

/// One parked event.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// Its id, for retry and skip.
    pub id: i64,
    /// The projection.
    pub projection: String,
    /// The version of the read model it was parked in.
    pub version: i32,
    /// Where the event is stored.
    pub position: Position,
    /// The document id (or SQL projection key) it is parked under.
    pub key: String,
    /// The event's id.
    pub event_id: EventId,
    /// The event's type.
    pub event_type: String,
    /// The aggregate it belongs to.
    pub aggregate: AggregateRef,
    /// Its sequence in the aggregate.
    pub sequence: Version,
    /// The handler's last error (or why it is parked behind another).
    pub error: String,
    /// How often the handler was tried (0 when parked behind another).
    pub attempts: i32,
    /// Parked only because an earlier event of the same key is.
    pub behind: bool,
    /// Where it stands.
    pub state: DeadLetterState,
    /// When it was parked.
    pub parked_at: DateTime<Utc>,
    /// When it was retried or skipped.
    pub resolved_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, projection, version, topic, partition, \"offset\", key, event_id, \
    event_type, aggregate_type, aggregate_id, sequence, error, attempts, behind, state, \
    parked_at, resolved_at";

fn from_row(r: &PgRow) -> DeadLetter {
    DeadLetter {
        id: r.get(0),
        projection: r.get(1),
        version: r.get(2),
        position: Position {
            topic: r.get(3),
            partition: Partition(u32::try_from(r.get::<i32, _>(4)).unwrap_or(0)),
            offset: Offset(to_u64(r.get(5))),
        },
        key: r.get(6),
        event_id: EventId(r.get(7)),
        event_type: r.get(8),
        aggregate: AggregateRef::new(
            r.get::<String, _>(9),
            AggregateId::new(r.get::<String, _>(10)),
        ),
        sequence: Version(to_u64(r.get(11))),
        error: r.get(12),
        attempts: r.get(13),
        behind: r.get(14),
        state: DeadLetterState::parse(r.get::<&str, _>(15)),
        parked_at: r.get(16),
        resolved_at: r.get(17),
    }
}

/// The dead letters of `name` (every version), oldest first; resolved ones too when
/// `include_resolved`.
pub async fn dead_letters(
    db: &Database,
    name: &str,
    include_resolved: bool,
) -> Result<Vec<DeadLetter>> {
    require_row(db.pool(), name).await?;
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM annals_dead_letters
         WHERE projection = $1 AND ($2 OR state = 'parked') ORDER BY id"
    ))
    .bind(name)
    .bind(include_resolved)
    .fetch_all(db.pool())
    .await
    .map_err(|e| ProjectionError::db(format!("listing dead letters of {name}"), e))?;
    Ok(rows.iter().map(from_row).collect())
}

/// Locks dead letter `id` of `name` and checks that it is parked.
async fn parked_one(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    name: &str,
    id: i64,
) -> Result<DeadLetter> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM annals_dead_letters WHERE projection = $1 AND id = $2 FOR UPDATE"
    ))
    .bind(name)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await
    .map_err(|e| ProjectionError::db(format!("reading dead letter #{id}"), e))?
    .ok_or_else(|| ProjectionError::DeadLetterNotFound {
        projection: name.to_owned(),
        id,
    })?;
    let letter = from_row(&row);
    match letter.state {
        DeadLetterState::Parked => Ok(letter),
        DeadLetterState::Retried => Err(ProjectionError::DeadLetterResolved {
            projection: name.to_owned(),
            id,
            state: "retried".to_owned(),
        }),
        DeadLetterState::Skipped => Err(ProjectionError::DeadLetterResolved {
            projection: name.to_owned(),
            id,
            state: "skipped".to_owned(),
        }),
    }
}

/// Retries a parked event once its cause is fixed (new code, repaired data): applies it,
/// and every parked event of the same key behind it, oldest first, in one transaction
/// that also marks them retried, so each is applied exactly once. Events of the key
/// that arrive meanwhile wait for this transaction and then apply normally.
///
/// Stops at the first event that fails again: the ones before it stay applied, it stays
/// parked with its new error, and [`ProjectionError::RetryFailed`] is returned. Returns
/// the ids applied.
pub async fn retry_dead_letter(
    db: &Database,
    projection: &Projection,
    id: i64,
    options: &ProjectorOptions,
) -> Result<Vec<i64>> {
    let name = projection.name();
    let mut tx = db.begin("retrying a dead letter").await?;
    let letter = parked_one(&mut tx, name, id).await?;
    let row = require_row(&mut *tx, name).await?;
    if row.live_version != letter.version && row.building_version != Some(letter.version) {
        return Err(ProjectionError::Version {
            projection: name.to_owned(),
            version: letter.version,
            reason: "is neither live nor being built; its dead letters cannot be retried",
        });
    }
    // The second read sees entries a projector parked while the first waited for its
    // lock; once both hold, no projector can park more of this key until we commit.
    let mut entries = Vec::new();
    for _ in 0..2 {
        entries = sqlx::query(
            "SELECT id, envelope, payload FROM annals_dead_letters
             WHERE projection = $1 AND version = $2 AND key = $3 AND state = 'parked'
             ORDER BY id FOR UPDATE",
        )
        .bind(name)
        .bind(letter.version)
        .bind(&letter.key)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| ProjectionError::db(format!("locking dead letters of {name}"), e))?;
    }
    let mut ids = Vec::with_capacity(entries.len());
    let mut events = Vec::with_capacity(entries.len());
    for entry in &entries {
        let entry_id: i64 = entry.get(0);
        let envelope: serde_json::Value = entry.get(1);
        let payload: Vec<u8> = entry.get(2);
        let mut raw: RawEnvelope =
            serde_json::from_value(envelope).map_err(|source| ProjectionError::Document {
                projection: name.to_owned(),
                id: format!("dead letter #{entry_id}"),
                source,
            })?;
        raw.payload.bytes = payload;
        ids.push(entry_id);
        events.push(raw);
    }
    use_schema(&mut tx, &version_schema(name, letter.version)).await?;
    let outcome = projection
        .erased
        .reapply(
            &mut tx,
            letter.version,
            &events,
            &projection.decoding,
            &options.settings(),
        )
        .await?;
    let applied = &ids[..outcome.applied.min(ids.len())];
    sqlx::query(
        "UPDATE annals_dead_letters SET state = 'retried', resolved_at = now() WHERE id = ANY($1)",
    )
    .bind(applied)
    .execute(&mut *tx)
    .await
    .map_err(|e| ProjectionError::db(format!("marking dead letters of {name} retried"), e))?;
    let failed = match outcome.failure {
        Some(source) => {
            let failed_id = ids.get(outcome.applied).copied().unwrap_or(id);
            sqlx::query(
                "UPDATE annals_dead_letters SET error = $2, attempts = attempts + 1, behind = false
                 WHERE id = $1",
            )
            .bind(failed_id)
            .bind(error_chain(source.as_ref()))
            .execute(&mut *tx)
            .await
            .map_err(|e| ProjectionError::db(format!("recording a failed retry of {name}"), e))?;
            Some((failed_id, source))
        }
        None => None,
    };
    tx.commit()
        .await
        .map_err(|e| ProjectionError::db(format!("committing a retry of {name}"), e))?;
    match failed {
        Some((id, source)) => Err(ProjectionError::RetryFailed {
            projection: name.to_owned(),
            id,
            source,
        }),
        None => Ok(applied.to_vec()),
    }
}

/// Skips a parked event for good: it is never applied. Events parked behind it stay
/// parked until retried.
pub async fn skip_dead_letter(db: &Database, name: &str, id: i64) -> Result<()> {
    let mut tx = db.begin("skipping a dead letter").await?;
    parked_one(&mut tx, name, id).await?;
    sqlx::query(
        "UPDATE annals_dead_letters SET state = 'skipped', resolved_at = now() WHERE id = $1",
    )
    .bind(id)
    .execute(&mut *tx)
    .await
    .map_err(|e| ProjectionError::db(format!("skipping dead letter #{id}"), e))?;
    tx.commit()
        .await
        .map_err(|e| ProjectionError::db(format!("committing the skip of #{id}"), e))
}
