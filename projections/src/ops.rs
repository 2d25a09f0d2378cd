//! What operators do with projections (and what the `annals` CLI calls): list them, show
//! their status, replay them, rebuild them blue-green, drop old versions.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use annals_core::{EventStore, Partition};
use annals_kafka_store::{KafkaEventStore, KafkaStoreOptions};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use sqlx::Row;

use crate::error::{ProjectionError, Result};
use crate::projection::Projection;
use crate::runner::{Mode, Progress, Projector, ProjectorOptions};
use crate::schema::{Database, point_views_at, quoted, version_schema};
use crate::store::{self, create_version, lock_projection, require_row, to_i32, to_i64, to_u64};

/// One projection as registered in the database.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ProjectionSummary {
    /// Its name.
    pub name: String,
    /// `document` or `sql`.
    pub kind: String,
    /// The aggregate types it reads.
    pub aggregates: Vec<String>,
    /// The event topics it reads.
    pub topics: Vec<String>,
    /// The version readers see.
    pub live_version: i32,
    /// The version a rebuild is building, if one is in progress.
    pub building_version: Option<i32>,
    /// Every version that still has a schema, live and building included.
    pub versions: Vec<i32>,
    /// Events parked in the dead-letter table (live and building versions).
    pub parked: i64,
    /// The last error a projector stopped with.
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_at: Option<DateTime<Utc>>,
}

/// Every registered projection, by name.
pub async fn list(db: &Database) -> Result<Vec<ProjectionSummary>> {
    let rows = sqlx::query(
        "SELECT p.projection, p.kind, p.aggregates, p.topics, p.live_version, p.building_version,
                p.last_error, p.last_error_at,
                (SELECT count(*) FROM annals_dead_letters d
                  WHERE d.projection = p.projection AND d.state = 'parked'
                    AND (d.version = p.live_version OR d.version = p.building_version)),
                ARRAY(SELECT substring(s.schema_name FROM '__v([0-9]+)$')::int
                        FROM information_schema.schemata s
                       WHERE s.schema_name LIKE p.projection || '\\_\\_v%'
                       ORDER BY 1)
         FROM annals_projections p ORDER BY p.projection",
    )
    .fetch_all(db.pool())
    .await
    .map_err(|e| ProjectionError::db("listing projections", e))?;
    Ok(rows
        .into_iter()
        .map(|r| ProjectionSummary {
            name: r.get(0),
            kind: r.get(1),
            aggregates: r.get(2),
            topics: r.get(3),
            live_version: r.get(4),
            building_version: r.get(5),
            last_error: r.get(6),
            last_error_at: r.get(7),
            parked: r.get(8),
            versions: r.get(9),
        })
        .collect())
}

async fn summary(db: &Database, name: &str) -> Result<ProjectionSummary> {
    list(db)
        .await?
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| ProjectionError::UnknownProjection {
            name: name.to_owned(),
        })
}

/// The status of a projection: where each partition stands.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ProjectionStatus {
    /// The projection.
    pub summary: ProjectionSummary,
    /// Every partition of its topics, for the live version and, during a rebuild, the
    /// building one; by version, topic and partition.
    pub partitions: Vec<PartitionStatus>,
    /// Events per second over all live partitions, as the projectors last reported.
    pub events_per_sec: f64,
    /// Why heads are unknown, when they are (no Kafka options given, broker down).
    pub heads_error: Option<String>,
}

/// Where one partition of one version stands.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PartitionStatus {
    /// The version of the read model.
    pub version: i32,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The stored offset: the next record to apply. `None` when no projector was ever
    /// assigned the partition (it starts at the earliest record).
    pub next_offset: Option<u64>,
    /// The broker's high watermark. It counts transaction markers, so a caught-up
    /// partition written transactionally shows a lag of a marker or so; brokers that
    /// miscount watermarks (Tansu after multi-record batches, see
    /// `docs/kafka-brokers.md`) make it approximate. Never used for decisions.
    pub head: Option<u64>,
    /// `head - next_offset`, when the head is known.
    pub lag: Option<u64>,
    /// Events per second the projector last reported for it (0 when it reported
    /// nothing for 10 s).
    pub events_per_sec: f64,
    /// When its offset last moved.
    pub updated_at: Option<DateTime<Utc>>,
}

/// The status of projection `name`. With `kafka`, heads and lags come from the
/// brokers' watermarks; without, or when the brokers do not answer, they are `None` and
/// [`ProjectionStatus::heads_error`] says why.
pub async fn status(
    db: &Database,
    kafka: Option<&KafkaStoreOptions>,
    name: &str,
) -> Result<ProjectionStatus> {
    let summary = summary(db, name).await?;
    let mut versions = vec![summary.live_version];
    versions.extend(summary.building_version);
    let rows = sqlx::query(
        "SELECT version, topic, partition, next_offset, events_per_sec, updated_at,
                now() - updated_at < interval '10 seconds'
         FROM annals_projection_offsets
         WHERE projection = $1 AND version = ANY($2)",
    )
    .bind(name)
    .bind(&versions)
    .fetch_all(db.pool())
    .await
    .map_err(|e| ProjectionError::db(format!("reading offsets of {name}"), e))?;
    let mut stored: HashMap<(i32, String, u32), StoredRow> = HashMap::new();
    for r in rows {
        let fresh: bool = r.get(6);
        let rate: f64 = if fresh { r.get(4) } else { 0.0 };
        stored.insert(
            (
                r.get(0),
                r.get(1),
                u32::try_from(r.get::<i32, _>(2)).unwrap_or(0),
            ),
            (to_u64(r.get(3)), rate, r.get(5)),
        );
    }

    let mut heads: HashMap<(String, u32), u64> = HashMap::new();
    let mut heads_error = None;
    match kafka {
        None => heads_error = Some("no Kafka brokers given".to_owned()),
        Some(options) => {
            for topic in &summary.topics {
                match topic_heads(options, topic).await {
                    Ok(ends) => {
                        for (p, end) in ends.into_iter().enumerate() {
                            heads.insert((topic.clone(), u32::try_from(p).unwrap_or(0)), end);
                        }
                    }
                    Err(e) => heads_error = Some(crate::fold::error_chain(&e)),
                }
            }
        }
    }

    let mut partitions = Vec::new();
    for version in &versions {
        for topic in &summary.topics {
            let mut numbers: Vec<u32> = stored
                .keys()
                .filter(|(v, t, _)| v == version && t == topic)
                .map(|(_, _, p)| *p)
                .chain(heads.keys().filter(|(t, _)| t == topic).map(|(_, p)| *p))
                .collect();
            numbers.sort_unstable();
            numbers.dedup();
            for p in numbers {
                let s = stored.get(&(*version, topic.clone(), p));
                let head = heads.get(&(topic.clone(), p)).copied();
                let next_offset = s.map(|s| s.0);
                partitions.push(PartitionStatus {
                    version: *version,
                    topic: topic.clone(),
                    partition: p,
                    next_offset,
                    head,
                    lag: head.map(|h| h.saturating_sub(next_offset.unwrap_or(0))),
                    events_per_sec: s.map_or(0.0, |s| s.1),
                    updated_at: s.map(|s| s.2),
                });
            }
        }
    }
    let events_per_sec = partitions
        .iter()
        .filter(|p| p.version == summary.live_version)
        .map(|p| p.events_per_sec)
        .sum();
    Ok(ProjectionStatus {
        summary,
        partitions,
        events_per_sec,
        heads_error,
    })
}

/// A stored offset row: next offset, rate, last update.
type StoredRow = (u64, f64, DateTime<Utc>);

async fn topic_heads(options: &KafkaStoreOptions, topic: &str) -> Result<Vec<u64>> {
    let partitions = annals_kafka_store::topics::partition_count(options, topic)
        .await
        .map_err(|source| ProjectionError::Kafka {
            context: format!("counting partitions of `{topic}`"),
            source: Box::new(source),
        })?;
    let options = options.clone();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        annals_kafka_store::inspect::partition_ends(&options, &topic, partitions).map_err(
            |source| ProjectionError::Kafka {
                context: format!("reading the heads of `{topic}`"),
                source: Box::new(source),
            },
        )
    })
    .await
    .map_err(|e| ProjectionError::Source {
        projection: String::new(),
        source: Box::new(annals_core::Error::backend("reading heads", e)),
    })?
}

/// Where a replay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayFrom {
    /// The first record of every partition.
    Earliest,
    /// This offset in every partition (a partition that has not reached it yet starts
    /// applying once it does).
    Offset(u64),
    /// The first record at or after this time in every partition.
    Time(DateTime<Utc>),
}

impl FromStr for ReplayFrom {
    type Err = String;

    /// `earliest`, `offset:N` or `time:RFC3339`.
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        if s == "earliest" {
            return Ok(Self::Earliest);
        }
        if let Some(n) = s.strip_prefix("offset:") {
            return n
                .parse()
                .map(Self::Offset)
                .map_err(|e| format!("`{s}`: the offset is not a whole number ({e})"));
        }
        if let Some(t) = s.strip_prefix("time:") {
            return DateTime::parse_from_rfc3339(t)
                .map(|t| Self::Time(t.with_timezone(&Utc)))
                .map_err(|e| format!("`{s}`: the time is not RFC 3339 ({e})"));
        }
        Err(format!(
            "`{s}`: expected `earliest`, `offset:N` or `time:RFC3339`"
        ))
    }
}

/// How the offsets of a time were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeLookup {
    /// The brokers answered (Kafka's offsets-for-times, on record timestamps, which
    /// annals sets to the events' occurred-at time).
    Broker,
    /// The brokers could not answer; the partitions were read from the start and the
    /// events' occurred-at times compared. Slower, same answer.
    ScannedEvents,
}

/// What a replay did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ReplayReport {
    /// The live version whose offsets moved.
    pub version: i32,
    /// Per topic and partition: the stored offset before and after.
    pub partitions: Vec<(String, u32, Option<u64>, u64)>,
    /// For a replay from a time: how the offsets were found.
    pub time_lookup: Option<TimeLookup>,
}

/// Resets the stored offsets of the live version of `name` so its projectors apply the
/// events again from `from`.
///
/// The read model is not cleared: events are applied again on top of it, with
/// [`Context::is_replaying`](crate::Context::is_replaying) true for those seen before.
/// That suits projections whose handlers are idempotent, and re-running side effects
/// deliberately; to build a read model from scratch without downtime, [`rebuild`] it.
/// Running projectors notice through their compare-and-set, or within their refresh
/// interval when idle, and seek.
pub async fn replay(
    db: &Database,
    kafka: &KafkaStoreOptions,
    name: &str,
    from: ReplayFrom,
) -> Result<ReplayReport> {
    let row = require_row(db.pool(), name).await?;
    let mut targets: Vec<(String, u32, u64)> = Vec::new();
    let mut time_lookup = None;
    for aggregate in &row.aggregates {
        let topic = kafka.events_topic(aggregate);
        if !row.topics.contains(&topic) {
            return Err(ProjectionError::Mismatch {
                projection: name.to_owned(),
                stored: format!("topics {:?}", row.topics),
                declared: format!("topic `{topic}` by these Kafka options"),
            });
        }
        let partitions = annals_kafka_store::topics::partition_count(kafka, &topic)
            .await
            .map_err(|source| ProjectionError::Kafka {
                context: format!("counting partitions of `{topic}`"),
                source: Box::new(source),
            })?;
        let offsets: Vec<u64> = match from {
            ReplayFrom::Earliest => vec![0; partitions as usize],
            ReplayFrom::Offset(n) => vec![n; partitions as usize],
            ReplayFrom::Time(time) => {
                if time > Utc::now() {
                    return Err(ProjectionError::InvalidReplay {
                        projection: name.to_owned(),
                        reason: format!("{time} is in the future"),
                    });
                }
                let (offsets, how) =
                    offsets_for_time(kafka, aggregate, &topic, partitions, time).await?;
                time_lookup = Some(how);
                offsets
            }
        };
        for (p, offset) in offsets.into_iter().enumerate() {
            targets.push((topic.clone(), u32::try_from(p).unwrap_or(0), offset));
        }
    }

    let mut tx = db.begin("replaying").await?;
    lock_projection(&mut tx, name).await?;
    let row = require_row(&mut *tx, name).await?;
    let version = row.live_version;
    let mut partitions = Vec::with_capacity(targets.len());
    for (topic, partition, offset) in targets {
        let before: Option<i64> = sqlx::query_scalar(
            "SELECT next_offset FROM annals_projection_offsets
             WHERE projection = $1 AND version = $2 AND topic = $3 AND partition = $4 FOR UPDATE",
        )
        .bind(name)
        .bind(version)
        .bind(&topic)
        .bind(to_i32(partition))
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| ProjectionError::db(format!("reading offsets of {name}"), e))?;
        sqlx::query(
            "INSERT INTO annals_projection_offsets (projection, version, topic, partition, next_offset)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (projection, version, topic, partition)
             DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()",
        )
        .bind(name)
        .bind(version)
        .bind(&topic)
        .bind(to_i32(partition))
        .bind(to_i64(offset))
        .execute(&mut *tx)
        .await
        .map_err(|e| ProjectionError::db(format!("resetting offsets of {name}"), e))?;
        partitions.push((topic, partition, before.map(to_u64), offset));
    }
    tx.commit()
        .await
        .map_err(|e| ProjectionError::db(format!("committing the replay of {name}"), e))?;
    Ok(ReplayReport {
        version,
        partitions,
        time_lookup,
    })
}

/// The offsets of the first events at or after `time`: from the brokers, or, when they
/// cannot answer, by reading the partitions.
async fn offsets_for_time(
    kafka: &KafkaStoreOptions,
    aggregate: &str,
    topic: &str,
    partitions: u32,
    time: DateTime<Utc>,
) -> Result<(Vec<u64>, TimeLookup)> {
    let (options, t) = (kafka.clone(), topic.to_owned());
    let asked = tokio::task::spawn_blocking(move || {
        annals_kafka_store::subscription::offsets_for_time(&options, &t, partitions, time)
    })
    .await;
    match asked {
        Ok(Ok(found)) if found.len() == partitions as usize => {
            let offsets = (0..partitions)
                .map(|p| found.get(&p).map_or(0, |o| o.0))
                .collect();
            return Ok((offsets, TimeLookup::Broker));
        }
        Ok(Ok(_)) => tracing::warn!(
            topic,
            "the brokers did not answer for every partition; scanning"
        ),
        Ok(Err(e)) => {
            tracing::warn!(topic, error = %e, "the brokers cannot look offsets up by time; scanning")
        }
        Err(e) => tracing::warn!(topic, error = %e, "the offsets-by-time lookup failed; scanning"),
    }
    let store = KafkaEventStore::connect(kafka.clone())
        .await
        .map_err(|source| ProjectionError::Kafka {
            context: "connecting to scan for a time".to_owned(),
            source: Box::new(source),
        })?;
    let mut offsets = Vec::with_capacity(partitions as usize);
    for p in 0..partitions {
        let mut stream = store.read_partition(aggregate, Partition(p), annals_core::Offset(0));
        let mut found = None;
        let mut end = 0;
        while let Some(event) =
            stream
                .try_next()
                .await
                .map_err(|source| ProjectionError::Source {
                    projection: String::new(),
                    source: Box::new(source),
                })?
        {
            let offset = event.position.as_ref().map_or(0, |x| x.offset.0);
            end = offset + 1;
            if event.occurred_at >= time {
                found = Some(offset);
                break;
            }
        }
        offsets.push(found.unwrap_or(end));
    }
    Ok((offsets, TimeLookup::ScannedEvents))
}

/// What a rebuild did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RebuildReport {
    /// The version built, now live.
    pub version: i32,
    /// The version that was live before; kept until [`drop_version`].
    pub previous: i32,
    /// Whether an interrupted rebuild of this version was resumed.
    pub resumed: bool,
    /// Events applied by this run.
    pub applied: u64,
    /// Events parked by this run.
    pub parked: u64,
    /// How long this run took.
    pub elapsed: Duration,
}

/// Starts a rebuild of `projection` (or finds the one in progress): creates the next
/// version of the read model, empty, beside the live one. Returns the version and
/// whether it was already in progress. [`rebuild`] calls it.
pub async fn begin_rebuild(db: &Database, projection: &Projection) -> Result<(i32, bool)> {
    let name = projection.name();
    let mut tx = db.begin("starting a rebuild").await?;
    lock_projection(&mut tx, name).await?;
    let row = require_row(&mut *tx, name).await?;
    if let Some(v) = row.building_version {
        return Ok((v, true));
    }
    let version = row.last_version + 1;
    create_version(&mut tx, projection, version).await?;
    sqlx::query(
        "UPDATE annals_projections SET building_version = $2, last_version = $2, updated_at = now()
         WHERE projection = $1",
    )
    .bind(name)
    .bind(version)
    .execute(&mut *tx)
    .await
    .map_err(|e| ProjectionError::db(format!("starting the rebuild of {name}"), e))?;
    sqlx::query(
        "INSERT INTO annals_rebuilds (projection, version, from_version, state)
         VALUES ($1, $2, $3, 'building')",
    )
    .bind(name)
    .bind(version)
    .bind(row.live_version)
    .execute(&mut *tx)
    .await
    .map_err(|e| ProjectionError::db(format!("recording the rebuild of {name}"), e))?;
    tx.commit().await.map_err(|e| {
        ProjectionError::db(format!("committing the start of a rebuild of {name}"), e)
    })?;
    Ok((version, false))
}

/// Rebuilds `projection` blue-green: builds the next version of its read model beside
/// the live one from the earliest events (a consumer group of its own), and once every
/// partition is caught up, switches readers to it in one transaction. Readers see the
/// old complete model until the switch and the new complete one after it. Running
/// projectors follow the switch by themselves.
///
/// Resumable: a rebuild interrupted (crash, Ctrl-C) continues from the new version's
/// stored offsets when called again. Abortable: [`abort_rebuild`] from anywhere drops
/// the new version, and this call returns [`ProjectionError::RebuildAborted`].
/// `on_progress` sees every change of progress (for a progress bar).
pub async fn rebuild(
    db: &Database,
    kafka: &KafkaStoreOptions,
    projection: &Projection,
    options: ProjectorOptions,
    mut on_progress: impl FnMut(&Progress) + Send,
) -> Result<RebuildReport> {
    let started = Instant::now();
    let name = projection.name();
    let (version, resumed) = begin_rebuild(db, projection).await?;
    let mut handle = Projector::new(db.clone(), kafka.clone(), projection.clone())
        .options(options)
        .start_mode(Mode::Build(version))
        .await?;
    loop {
        let progress = handle.progress();
        on_progress(&progress);
        if progress.caught_up() {
            break;
        }
        if !handle.changed().await? {
            return Err(ProjectionError::RebuildAborted {
                projection: name.to_owned(),
                version,
            });
        }
    }
    let progress = handle.progress();
    handle.stop().await?;
    let previous = switch(db, projection, version).await?;
    Ok(RebuildReport {
        version,
        previous,
        resumed,
        applied: progress.applied,
        parked: progress.parked,
        elapsed: started.elapsed(),
    })
}

/// Makes `version` live: points the reader views at it and records the switch, in one
/// transaction. Returns the version that was live.
async fn switch(db: &Database, projection: &Projection, version: i32) -> Result<i32> {
    let name = projection.name();
    let mut tx = db.begin("switching versions").await?;
    lock_projection(&mut tx, name).await?;
    let row = require_row(&mut *tx, name).await?;
    if row.building_version != Some(version) {
        return Err(ProjectionError::RebuildAborted {
            projection: name.to_owned(),
            version,
        });
    }
    point_views_at(&mut tx, name, &version_schema(name, version)).await?;
    sqlx::query(
        "UPDATE annals_projections
         SET live_version = $2, building_version = NULL, updated_at = now()
         WHERE projection = $1",
    )
    .bind(name)
    .bind(version)
    .execute(&mut *tx)
    .await
    .map_err(|e| ProjectionError::db(format!("switching {name} to v{version}"), e))?;
    sqlx::query(
        "UPDATE annals_rebuilds SET state = 'switched', finished_at = now()
         WHERE projection = $1 AND version = $2",
    )
    .bind(name)
    .bind(version)
    .execute(&mut *tx)
    .await
    .map_err(|e| ProjectionError::db(format!("recording the switch of {name}"), e))?;
    tx.commit()
        .await
        .map_err(|e| ProjectionError::db(format!("committing the switch of {name}"), e))?;
    Ok(row.live_version)
}

/// Aborts the rebuild in progress: drops the version being built (schema, offsets,
/// dead letters). A rebuild still running stops with
/// [`ProjectionError::RebuildAborted`]. Returns the version dropped.
pub async fn abort_rebuild(db: &Database, name: &str) -> Result<i32> {
    let mut tx = db.begin("aborting a rebuild").await?;
    lock_projection(&mut tx, name).await?;
    let row = require_row(&mut *tx, name).await?;
    let Some(version) = row.building_version else {
        return Err(ProjectionError::NoRebuild {
            projection: name.to_owned(),
        });
    };
    drop_version_in(&mut tx, name, version).await?;
    sqlx::query(
        "UPDATE annals_projections SET building_version = NULL, updated_at = now() WHERE projection = $1",
    )
    .bind(name)
    .execute(&mut *tx)
    .await
    .map_err(|e| ProjectionError::db(format!("aborting the rebuild of {name}"), e))?;
    sqlx::query(
        "UPDATE annals_rebuilds SET state = 'aborted', finished_at = now()
         WHERE projection = $1 AND version = $2",
    )
    .bind(name)
    .bind(version)
    .execute(&mut *tx)
    .await
    .map_err(|e| ProjectionError::db(format!("recording the abort of {name}"), e))?;
    tx.commit()
        .await
        .map_err(|e| ProjectionError::db(format!("committing the abort of {name}"), e))?;
    Ok(version)
}

/// Drops an old version of a read model (after a rebuild switched away from it). The
/// live version and a version being built cannot be dropped.
pub async fn drop_version(db: &Database, name: &str, version: i32) -> Result<()> {
    let mut tx = db.begin("dropping a version").await?;
    lock_projection(&mut tx, name).await?;
    let row = require_row(&mut *tx, name).await?;
    let refuse = |reason| ProjectionError::Version {
        projection: name.to_owned(),
        version,
        reason,
    };
    if row.live_version == version {
        return Err(refuse("is live"));
    }
    if row.building_version == Some(version) {
        return Err(refuse("is being built; abort the rebuild instead"));
    }
    if version < 1 || version > row.last_version {
        return Err(refuse("does not exist"));
    }
    drop_version_in(&mut tx, name, version).await?;
    tx.commit()
        .await
        .map_err(|e| ProjectionError::db(format!("committing the drop of {name} v{version}"), e))
}

async fn drop_version_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    name: &str,
    version: i32,
) -> Result<()> {
    let schema = version_schema(name, version);
    sqlx::query(&format!(
        "DROP SCHEMA IF EXISTS {} CASCADE",
        quoted(&schema)
    ))
    .execute(&mut **tx)
    .await
    .map_err(|e| ProjectionError::db(format!("dropping schema {schema}"), e))?;
    for table in ["annals_projection_offsets", "annals_dead_letters"] {
        sqlx::query(&format!(
            "DELETE FROM {table} WHERE projection = $1 AND version = $2"
        ))
        .bind(name)
        .bind(version)
        .execute(&mut **tx)
        .await
        .map_err(|e| ProjectionError::db(format!("deleting {table} rows of {schema}"), e))?;
    }
    Ok(())
}

/// Whether a projection of that name is registered, for tools that take names.
pub async fn exists(db: &Database, name: &str) -> Result<bool> {
    Ok(store::projection_row(db.pool(), name).await?.is_some())
}
