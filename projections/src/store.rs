//! The framework's rows in Postgres: registering projections, creating versions of their
//! read models, reading and compare-and-set advancing their offsets.

use sqlx::{Postgres, Row, Transaction};

use crate::error::{ProjectionError, Result};
use crate::projection::Projection;
use crate::schema::{Database, point_views_at, quoted, use_schema, version_schema};

type Tx = Transaction<'static, Postgres>;

/// A projection's row in `annals_projections`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProjectionRow {
    pub(crate) kind: String,
    pub(crate) aggregates: Vec<String>,
    pub(crate) topics: Vec<String>,
    pub(crate) live_version: i32,
    pub(crate) building_version: Option<i32>,
    pub(crate) last_version: i32,
}

/// The stored position of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stored {
    pub(crate) partition: u32,
    pub(crate) next_offset: u64,
    pub(crate) high_water: u64,
}

/// One compare-and-set advance.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Advance {
    pub(crate) partition: u32,
    pub(crate) expected: u64,
    pub(crate) new: u64,
    pub(crate) events_per_sec: f64,
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(crate) fn to_i32(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// Serialises changes of one projection's versions across processes.
pub(crate) async fn lock_projection(tx: &mut Tx, name: &str) -> Result<()> {
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended('annals-projection' || chr(31) || $1, 0))",
    )
    .bind(name)
    .execute(&mut **tx)
    .await
    .map(|_| ())
    .map_err(|e| ProjectionError::db(format!("locking projection {name}"), e))
}

pub(crate) async fn projection_row<'e, E>(executor: E, name: &str) -> Result<Option<ProjectionRow>>
where
    E: sqlx::PgExecutor<'e>,
{
    let row = sqlx::query(
        "SELECT kind, aggregates, topics, live_version, building_version, last_version
         FROM annals_projections WHERE projection = $1",
    )
    .bind(name)
    .fetch_optional(executor)
    .await
    .map_err(|e| ProjectionError::db(format!("reading projection {name}"), e))?;
    Ok(row.map(|r| ProjectionRow {
        kind: r.get(0),
        aggregates: r.get(1),
        topics: r.get(2),
        live_version: r.get(3),
        building_version: r.get(4),
        last_version: r.get(5),
    }))
}

/// The projection's row, or [`ProjectionError::UnknownProjection`].
pub(crate) async fn require_row<'e, E>(executor: E, name: &str) -> Result<ProjectionRow>
where
    E: sqlx::PgExecutor<'e>,
{
    projection_row(executor, name)
        .await?
        .ok_or_else(|| ProjectionError::UnknownProjection {
            name: name.to_owned(),
        })
}

/// Creates version `version` of a read model: its schema and tables.
pub(crate) async fn create_version(
    tx: &mut Tx,
    projection: &Projection,
    version: i32,
) -> Result<()> {
    let schema = version_schema(projection.name(), version);
    sqlx::query(&format!("CREATE SCHEMA {}", quoted(&schema)))
        .execute(&mut **tx)
        .await
        .map_err(|e| ProjectionError::db(format!("creating schema {schema}"), e))?;
    use_schema(tx, &schema).await?;
    projection.erased.setup(tx, version).await?;
    sqlx::query("SET LOCAL search_path TO public")
        .execute(&mut **tx)
        .await
        .map_err(|e| ProjectionError::db("resetting the search path", e))?;
    Ok(())
}

/// Makes sure the projection is registered with version 1 of its read model, created and
/// live. Idempotent and safe for many processes starting at once.
pub(crate) async fn register(
    db: &Database,
    projection: &Projection,
    topics: &[String],
) -> Result<ProjectionRow> {
    let name = projection.name();
    let mut tx = db.begin("registering a projection").await?;
    lock_projection(&mut tx, name).await?;
    let row = match projection_row(&mut *tx, name).await? {
        Some(row) => {
            if row.kind != projection.kind().as_str() {
                return Err(ProjectionError::Mismatch {
                    projection: name.to_owned(),
                    stored: format!("a {} projection", row.kind),
                    declared: format!("a {} projection", projection.kind()),
                });
            }
            let aggregates: Vec<String> = projection
                .aggregates()
                .iter()
                .map(|a| (*a).to_owned())
                .collect();
            if aggregates != row.aggregates || topics != row.topics.as_slice() {
                sqlx::query(
                    "UPDATE annals_projections SET aggregates = $2, topics = $3, updated_at = now()
                     WHERE projection = $1",
                )
                .bind(name)
                .bind(&aggregates)
                .bind(topics)
                .execute(&mut *tx)
                .await
                .map_err(|e| ProjectionError::db(format!("updating topics of {name}"), e))?;
            }
            ProjectionRow {
                aggregates,
                topics: topics.to_vec(),
                ..row
            }
        }
        None => {
            create_version(&mut tx, projection, 1).await?;
            point_views_at(&mut tx, name, &version_schema(name, 1)).await?;
            sqlx::query(
                "INSERT INTO annals_projections
                   (projection, kind, aggregates, topics, live_version, last_version)
                 VALUES ($1, $2, $3, $4, 1, 1)",
            )
            .bind(name)
            .bind(projection.kind().as_str())
            .bind(projection.aggregates())
            .bind(topics)
            .execute(&mut *tx)
            .await
            .map_err(|e| ProjectionError::db(format!("registering {name}"), e))?;
            ProjectionRow {
                kind: projection.kind().as_str().to_owned(),
                aggregates: projection
                    .aggregates()
                    .iter()
                    .map(|a| (*a).to_owned())
                    .collect(),
                topics: topics.to_vec(),
                live_version: 1,
                building_version: None,
                last_version: 1,
            }
        }
    };
    tx.commit()
        .await
        .map_err(|e| ProjectionError::db(format!("committing registration of {name}"), e))?;
    Ok(row)
}

/// The stored offsets of `partitions`, creating missing rows at offset 0. A new row takes
/// its high water from the live version, so a rebuild sees what the live version saw as
/// a replay.
pub(crate) async fn ensure_offsets(
    db: &Database,
    name: &str,
    version: i32,
    topic: &str,
    partitions: &[u32],
) -> Result<Vec<Stored>> {
    let parts: Vec<i32> = partitions.iter().map(|p| to_i32(*p)).collect();
    sqlx::query(
        "INSERT INTO annals_projection_offsets (projection, version, topic, partition, next_offset, high_water)
         SELECT $1, $2, $3, p, 0, COALESCE((
             SELECT o.high_water FROM annals_projection_offsets o
             JOIN annals_projections pr ON pr.projection = o.projection AND pr.live_version = o.version
             WHERE o.projection = $1 AND o.topic = $3 AND o.partition = p), 0)
         FROM unnest($4::int4[]) AS p
         ON CONFLICT DO NOTHING",
    )
    .bind(name)
    .bind(version)
    .bind(topic)
    .bind(&parts)
    .execute(db.pool())
    .await
    .map_err(|e| ProjectionError::db(format!("creating offsets of {name} v{version} {topic}"), e))?;
    read_offsets(db, name, version, topic, partitions).await
}

/// The stored offsets of `partitions` (those that have a row).
pub(crate) async fn read_offsets(
    db: &Database,
    name: &str,
    version: i32,
    topic: &str,
    partitions: &[u32],
) -> Result<Vec<Stored>> {
    let parts: Vec<i32> = partitions.iter().map(|p| to_i32(*p)).collect();
    let rows = sqlx::query(
        "SELECT partition, next_offset, high_water FROM annals_projection_offsets
         WHERE projection = $1 AND version = $2 AND topic = $3 AND partition = ANY($4)",
    )
    .bind(name)
    .bind(version)
    .bind(topic)
    .bind(&parts)
    .fetch_all(db.pool())
    .await
    .map_err(|e| ProjectionError::db(format!("reading offsets of {name} v{version} {topic}"), e))?;
    Ok(rows
        .into_iter()
        .map(|r| Stored {
            partition: u32::try_from(r.get::<i32, _>(0)).unwrap_or(0),
            next_offset: to_u64(r.get(1)),
            high_water: to_u64(r.get(2)),
        })
        .collect())
}

/// Advances offsets by compare-and-set, only while `version` is the live or the building
/// version. Returns the partitions advanced, with their high water after the advance;
/// a partition missing from the answer is in conflict and the transaction must roll back.
pub(crate) async fn advance(
    tx: &mut Tx,
    name: &str,
    version: i32,
    topic: &str,
    advances: &[Advance],
) -> Result<Vec<(u32, u64)>> {
    let partitions: Vec<i32> = advances.iter().map(|a| to_i32(a.partition)).collect();
    let expected: Vec<i64> = advances.iter().map(|a| to_i64(a.expected)).collect();
    let new: Vec<i64> = advances.iter().map(|a| to_i64(a.new)).collect();
    let rates: Vec<f64> = advances.iter().map(|a| a.events_per_sec).collect();
    let rows = sqlx::query(
        "UPDATE annals_projection_offsets o
         SET next_offset = u.new, high_water = GREATEST(o.high_water, u.new),
             events_per_sec = u.rate, updated_at = now()
         FROM unnest($4::int4[], $5::int8[], $6::int8[], $7::float8[]) AS u(partition, expected, new, rate),
              annals_projections p
         WHERE o.projection = $1 AND o.version = $2 AND o.topic = $3
           AND o.partition = u.partition AND o.next_offset = u.expected
           AND p.projection = o.projection
           AND (p.live_version = o.version OR p.building_version = o.version)
         RETURNING o.partition, o.high_water",
    )
    .bind(name)
    .bind(version)
    .bind(topic)
    .bind(&partitions)
    .bind(&expected)
    .bind(&new)
    .bind(&rates)
    .fetch_all(&mut **tx)
    .await
    .map_err(|e| ProjectionError::db(format!("advancing offsets of {name} v{version} {topic}"), e))?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                u32::try_from(r.get::<i32, _>(0)).unwrap_or(0),
                to_u64(r.get(1)),
            )
        })
        .collect())
}

/// Records the error that stopped a projection, for `status`.
pub(crate) async fn record_error(db: &Database, name: &str, error: &ProjectionError) {
    let text = crate::fold::error_chain(error);
    let result = sqlx::query(
        "UPDATE annals_projections SET last_error = $2, last_error_at = now(), updated_at = now()
         WHERE projection = $1",
    )
    .bind(name)
    .bind(&text)
    .execute(db.pool())
    .await;
    if let Err(e) = result {
        tracing::warn!(projection = name, error = %e, "cannot record the projection's error");
    }
}
