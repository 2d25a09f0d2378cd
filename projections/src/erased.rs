//! Projections behind one object-safe trait, so runners and operations work by name:
//! how a document or SQL projection sets up a version and applies a batch in Postgres.

use std::collections::{HashMap, HashSet};

use annals_core::RawEnvelope;
use async_trait::async_trait;
use sqlx::{Postgres, Row, Transaction};

use crate::error::{ProjectionError, Result};
use crate::fold::{
    Applied, Item, ParkedEvent, Settings, Slot, decode_batch, error_chain, fold_documents,
    position_of,
};
use crate::projection::{Context, Decoding, DocumentProjection, ProjectionKind, SqlProjection};

type Tx = Transaction<'static, Postgres>;

/// The outcome of re-applying parked events: how many were applied (in order), and the
/// error of the first that failed again.
pub(crate) struct Reapplied {
    pub(crate) applied: usize,
    pub(crate) failure: Option<Box<dyn std::error::Error + Send + Sync>>,
}

#[async_trait]
pub(crate) trait Erased: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn kind(&self) -> ProjectionKind;
    fn aggregates(&self) -> &'static [&'static str];

    /// Creates the tables of a new version; the version's schema is first on the search
    /// path.
    async fn setup(&self, tx: &mut Tx, version: i32) -> Result<()>;

    /// Applies a batch in `tx` (search path set), leaving the offsets to the caller.
    async fn apply(
        &self,
        tx: &mut Tx,
        version: i32,
        items: &[Item],
        decoding: &Decoding,
        settings: &Settings,
    ) -> Result<Applied>;

    /// Re-applies parked events of one key, in order, stopping at the first failure.
    async fn reapply(
        &self,
        tx: &mut Tx,
        version: i32,
        events: &[RawEnvelope],
        decoding: &Decoding,
        settings: &Settings,
    ) -> Result<Reapplied>;
}

/// Keys that have parked events in this version, locked against a concurrent retry.
async fn parked_keys(
    tx: &mut Tx,
    projection: &str,
    version: i32,
    keys: &[String],
) -> Result<HashSet<String>> {
    if keys.is_empty() {
        return Ok(HashSet::new());
    }
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT key FROM annals_dead_letters
         WHERE projection = $1 AND version = $2 AND state = 'parked' AND key = ANY($3)
         FOR SHARE",
    )
    .bind(projection)
    .bind(version)
    .bind(keys)
    .fetch_all(&mut **tx)
    .await
    .map_err(|e| ProjectionError::db(format!("reading parked keys of {projection}"), e))?;
    Ok(rows.into_iter().collect())
}

/// Writes parked events in the batch's transaction. An event parked before (seen again
/// after a replay) keeps its row.
pub(crate) async fn park(
    tx: &mut Tx,
    projection: &str,
    version: i32,
    parked: &[ParkedEvent],
) -> Result<()> {
    for p in parked {
        let position = position_of(&p.raw);
        let mut header = p.raw.clone();
        let bytes = std::mem::take(&mut header.payload.bytes);
        let envelope =
            serde_json::to_value(&header).map_err(|source| ProjectionError::Document {
                projection: projection.to_owned(),
                id: p.key.clone(),
                source,
            })?;
        sqlx::query(
            "INSERT INTO annals_dead_letters
               (projection, version, topic, partition, \"offset\", key, event_id, event_type,
                aggregate_type, aggregate_id, sequence, envelope, payload, error, attempts, behind)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
             ON CONFLICT (projection, version, topic, partition, \"offset\") DO NOTHING",
        )
        .bind(projection)
        .bind(version)
        .bind(&position.topic)
        .bind(i32::try_from(position.partition.0).unwrap_or(i32::MAX))
        .bind(i64::try_from(position.offset.0).unwrap_or(i64::MAX))
        .bind(&p.key)
        .bind(p.raw.event_id.0)
        .bind(&p.raw.event_type)
        .bind(&p.raw.aggregate_type)
        .bind(p.raw.aggregate_id.as_str())
        .bind(i64::try_from(p.raw.sequence.0).unwrap_or(i64::MAX))
        .bind(envelope)
        .bind(bytes)
        .bind(&p.error)
        .bind(i32::try_from(p.attempts).unwrap_or(i32::MAX))
        .bind(p.behind)
        .execute(&mut **tx)
        .await
        .map_err(|e| ProjectionError::db(format!("parking an event of {projection}"), e))?;
    }
    Ok(())
}

/// Serialises writers of the same documents across partitions and processes: a
/// document id may collect events of several partitions, which different runners own.
/// Locks are taken in sorted order, so two batches cannot deadlock on them.
async fn lock_keys(tx: &mut Tx, projection: &str, keys: &[String]) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended($1 || chr(31) || k, 0))
         FROM unnest($2::text[]) AS k",
    )
    .bind(projection)
    .bind(keys)
    .execute(&mut **tx)
    .await
    .map(|_| ())
    .map_err(|e| ProjectionError::db(format!("locking documents of {projection}"), e))
}

// ---------------------------------------------------------------------------------------
// Document projections

pub(crate) struct DocumentErased<P> {
    projection: P,
}

impl<P: DocumentProjection> DocumentErased<P> {
    pub(crate) fn new(projection: P) -> Self {
        Self { projection }
    }

    async fn load(
        &self,
        tx: &mut Tx,
        keys: &[String],
    ) -> Result<HashMap<String, Slot<P::Document>>> {
        let rows = sqlx::query("SELECT id, doc, revision FROM documents WHERE id = ANY($1)")
            .bind(keys)
            .fetch_all(&mut **tx)
            .await
            .map_err(|e| ProjectionError::db(format!("loading documents of {}", P::NAME), e))?;
        let mut slots = HashMap::with_capacity(keys.len());
        for row in rows {
            let id: String = row.get(0);
            let doc: serde_json::Value = row.get(1);
            let revision: i64 = row.get(2);
            let doc: P::Document =
                serde_json::from_value(doc).map_err(|source| ProjectionError::Document {
                    projection: P::NAME.to_owned(),
                    id: id.clone(),
                    source,
                })?;
            slots.insert(id, Slot::loaded(Some(doc), revision));
        }
        Ok(slots)
    }

    async fn store(&self, tx: &mut Tx, slots: HashMap<String, Slot<P::Document>>) -> Result<()> {
        let mut ids = Vec::new();
        let mut docs = Vec::new();
        let mut revisions = Vec::new();
        let mut deleted = Vec::new();
        for (id, slot) in slots {
            if !slot.changed {
                continue;
            }
            match slot.doc {
                Some(doc) => {
                    let value =
                        serde_json::to_value(&doc).map_err(|source| ProjectionError::Document {
                            projection: P::NAME.to_owned(),
                            id: id.clone(),
                            source,
                        })?;
                    ids.push(id);
                    docs.push(value);
                    revisions.push(slot.revision);
                }
                None if slot.existed => deleted.push(id),
                None => {}
            }
        }
        if ids.is_empty() && deleted.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "WITH gone AS (DELETE FROM documents WHERE id = ANY($4::text[]))
             INSERT INTO documents (id, doc, revision, updated_at)
             SELECT u.id, u.doc, u.revision, now()
             FROM unnest($1::text[], $2::jsonb[], $3::int8[]) AS u(id, doc, revision)
             ON CONFLICT (id) DO UPDATE
               SET doc = EXCLUDED.doc, revision = EXCLUDED.revision, updated_at = EXCLUDED.updated_at",
        )
        .bind(ids)
        .bind(docs)
        .bind(revisions)
        .bind(deleted)
        .execute(&mut **tx)
        .await
        .map(|_| ())
        .map_err(|e| ProjectionError::db(format!("writing documents of {}", P::NAME), e))
    }
}

#[async_trait]
impl<P: DocumentProjection> Erased for DocumentErased<P> {
    fn name(&self) -> &'static str {
        P::NAME
    }

    fn kind(&self) -> ProjectionKind {
        ProjectionKind::Document
    }

    fn aggregates(&self) -> &'static [&'static str] {
        P::AGGREGATES
    }

    async fn setup(&self, tx: &mut Tx, _version: i32) -> Result<()> {
        sqlx::query(
            "CREATE TABLE documents (
                 id text PRIMARY KEY,
                 doc jsonb NOT NULL,
                 revision bigint NOT NULL,
                 updated_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .execute(&mut **tx)
        .await
        .map(|_| ())
        .map_err(|e| ProjectionError::db(format!("creating the documents of {}", P::NAME), e))
    }

    async fn apply(
        &self,
        tx: &mut Tx,
        version: i32,
        items: &[Item],
        decoding: &Decoding,
        settings: &Settings,
    ) -> Result<Applied> {
        let (events, decode_halt) = decode_batch::<P::Event>(P::NAME, items, decoding);
        let ids: Vec<Option<String>> = events
            .iter()
            .map(|e| self.projection.document_id(e))
            .collect();
        let mut keys: Vec<String> = ids.iter().flatten().cloned().collect();
        keys.sort_unstable();
        keys.dedup();
        let mut blocked = parked_keys(tx, P::NAME, version, &keys).await?;
        lock_keys(tx, P::NAME, &keys).await?;
        let mut slots = self.load(tx, &keys).await?;
        let mut applied = fold_documents(
            &self.projection,
            items,
            &events,
            &ids,
            &mut slots,
            &mut blocked,
            settings.policy,
        );
        if applied.halt.is_none() {
            applied.consumed = events.len();
            applied.halt = decode_halt;
        }
        self.store(tx, slots).await?;
        park(tx, P::NAME, version, &applied.parked).await?;
        Ok(applied)
    }

    async fn reapply(
        &self,
        tx: &mut Tx,
        _version: i32,
        events: &[RawEnvelope],
        decoding: &Decoding,
        _settings: &Settings,
    ) -> Result<Reapplied> {
        let items: Vec<Item> = events
            .iter()
            .map(|raw| Item {
                raw: raw.clone(),
                replaying: false,
            })
            .collect();
        let (decoded, decode_error) = decode_batch::<P::Event>(P::NAME, &items, decoding);
        let ids: Vec<Option<String>> = decoded
            .iter()
            .map(|e| self.projection.document_id(e))
            .collect();
        let mut keys: Vec<String> = ids.iter().flatten().cloned().collect();
        keys.sort_unstable();
        keys.dedup();
        lock_keys(tx, P::NAME, &keys).await?;
        let mut slots = self.load(tx, &keys).await?;
        let mut applied = 0;
        let mut failure: Option<Box<dyn std::error::Error + Send + Sync>> = None;
        for (event, id) in decoded.iter().zip(&ids) {
            if let Some(id) = id {
                let slot = slots
                    .entry(id.clone())
                    .or_insert_with(|| Slot::loaded(None, 0));
                let mut candidate = slot.doc.clone();
                if let Err(e) = self.projection.apply(&mut candidate, event) {
                    failure = Some(Box::new(e));
                    break;
                }
                slot.doc = candidate;
                slot.changed = true;
                slot.revision += 1;
            }
            applied += 1;
        }
        if failure.is_none()
            && let Some(e) = decode_error
        {
            failure = Some(Box::new(e));
        }
        self.store(tx, slots).await?;
        Ok(Reapplied { applied, failure })
    }
}

// ---------------------------------------------------------------------------------------
// SQL projections

pub(crate) struct SqlErased<P> {
    projection: P,
}

impl<P: SqlProjection> SqlErased<P> {
    pub(crate) fn new(projection: P) -> Self {
        Self { projection }
    }

    /// Runs the handler in a savepoint, retrying with backoff; the last error after the
    /// bounded attempts, with how many there were.
    async fn handle_with_retries(
        &self,
        tx: &mut Tx,
        event: &annals_core::Envelope<P::Event>,
        ctx: &Context,
        settings: &Settings,
    ) -> Result<std::result::Result<(), (P::Error, u32)>> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut savepoint = sqlx::Acquire::begin(&mut **tx)
                .await
                .map_err(|e| ProjectionError::db("opening a savepoint", e))?;
            match self.projection.handle(&mut savepoint, event, ctx).await {
                Ok(()) => {
                    savepoint
                        .commit()
                        .await
                        .map_err(|e| ProjectionError::db("releasing a savepoint", e))?;
                    return Ok(Ok(()));
                }
                Err(e) => {
                    savepoint
                        .rollback()
                        .await
                        .map_err(|e| ProjectionError::db("rolling back to a savepoint", e))?;
                    if attempts > settings.retries {
                        return Ok(Err((e, attempts)));
                    }
                    tokio::time::sleep(settings.backoff * attempts).await;
                }
            }
        }
    }

    /// Every handler in one savepoint: the fast path. `false` when a handler failed (the
    /// savepoint is rolled back).
    async fn try_fast(
        &self,
        tx: &mut Tx,
        version: i32,
        items: &[Item],
        events: &[annals_core::Envelope<P::Event>],
        keys: &[String],
        blocked: &HashSet<String>,
    ) -> Result<bool> {
        let mut savepoint = sqlx::Acquire::begin(&mut **tx)
            .await
            .map_err(|e| ProjectionError::db("opening a savepoint", e))?;
        for ((item, event), key) in items.iter().zip(events).zip(keys) {
            if blocked.contains(key) {
                continue;
            }
            let ctx = Context::new(item.replaying, version);
            if self
                .projection
                .handle(&mut savepoint, event, &ctx)
                .await
                .is_err()
            {
                savepoint
                    .rollback()
                    .await
                    .map_err(|e| ProjectionError::db("rolling back to a savepoint", e))?;
                return Ok(false);
            }
        }
        savepoint
            .commit()
            .await
            .map_err(|e| ProjectionError::db("releasing a savepoint", e))?;
        Ok(true)
    }
}

fn behind(raw: &RawEnvelope, key: &str) -> ParkedEvent {
    ParkedEvent {
        raw: raw.clone(),
        key: key.to_owned(),
        error: "parked behind an earlier parked event of the same key".to_owned(),
        attempts: 0,
        behind: true,
    }
}

#[async_trait]
impl<P: SqlProjection> Erased for SqlErased<P> {
    fn name(&self) -> &'static str {
        P::NAME
    }

    fn kind(&self) -> ProjectionKind {
        ProjectionKind::Sql
    }

    fn aggregates(&self) -> &'static [&'static str] {
        P::AGGREGATES
    }

    async fn setup(&self, tx: &mut Tx, version: i32) -> Result<()> {
        self.projection
            .setup(tx)
            .await
            .map_err(|e| ProjectionError::Setup {
                projection: P::NAME.to_owned(),
                version,
                source: Box::new(e),
            })
    }

    async fn apply(
        &self,
        tx: &mut Tx,
        version: i32,
        items: &[Item],
        decoding: &Decoding,
        settings: &Settings,
    ) -> Result<Applied> {
        let (events, decode_halt) = decode_batch::<P::Event>(P::NAME, items, decoding);
        let keys: Vec<String> = events.iter().map(|e| self.projection.key(e)).collect();
        let mut distinct = keys.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let mut blocked = parked_keys(tx, P::NAME, version, &distinct).await?;
        let mut applied = Applied::default();

        if self
            .try_fast(tx, version, items, &events, &keys, &blocked)
            .await?
        {
            for ((item, _), key) in items.iter().zip(&events).zip(&keys) {
                if blocked.contains(key) {
                    applied.parked.push(behind(&item.raw, key));
                }
            }
            applied.consumed = events.len();
        } else {
            // Careful path: one savepoint per event, so one failing handler costs only
            // its own work, and it can be retried.
            for (i, ((item, event), key)) in items.iter().zip(&events).zip(&keys).enumerate() {
                if blocked.contains(key) {
                    applied.parked.push(behind(&item.raw, key));
                    applied.consumed = i + 1;
                    continue;
                }
                let ctx = Context::new(item.replaying, version);
                match self.handle_with_retries(tx, event, &ctx, settings).await? {
                    Ok(()) => applied.consumed = i + 1,
                    Err((e, attempts)) => match settings.policy {
                        crate::PoisonPolicy::Park => {
                            blocked.insert(key.clone());
                            applied.parked.push(ParkedEvent {
                                raw: item.raw.clone(),
                                key: key.clone(),
                                error: error_chain(&e),
                                attempts,
                                behind: false,
                            });
                            applied.consumed = i + 1;
                        }
                        crate::PoisonPolicy::Halt => {
                            applied.halt = Some(ProjectionError::PoisonHalted {
                                projection: P::NAME.to_owned(),
                                position: position_of(&item.raw),
                                key: key.clone(),
                                attempts,
                                source: Box::new(e),
                            });
                            break;
                        }
                    },
                }
            }
        }
        if applied.halt.is_none() {
            applied.halt = decode_halt;
        }
        park(tx, P::NAME, version, &applied.parked).await?;
        Ok(applied)
    }

    async fn reapply(
        &self,
        tx: &mut Tx,
        version: i32,
        events: &[RawEnvelope],
        decoding: &Decoding,
        settings: &Settings,
    ) -> Result<Reapplied> {
        let items: Vec<Item> = events
            .iter()
            .map(|raw| Item {
                raw: raw.clone(),
                replaying: false,
            })
            .collect();
        let (decoded, decode_error) = decode_batch::<P::Event>(P::NAME, &items, decoding);
        let ctx = Context::new(false, version);
        let mut applied = 0;
        for event in &decoded {
            if let Err((e, _)) = self.handle_with_retries(tx, event, &ctx, settings).await? {
                return Ok(Reapplied {
                    applied,
                    failure: Some(Box::new(e)),
                });
            }
            applied += 1;
        }
        Ok(Reapplied {
            applied,
            failure: decode_error.map(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
        })
    }
}
