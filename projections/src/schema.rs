//! The framework's tables, their migrations, and the schemas that hold each version of a
//! read model.
//!
//! Migrations are recorded in `annals_schema_migrations`, not in sqlx's
//! `_sqlx_migrations`: an application that runs its own sqlx migrator on the same
//! database would otherwise see versions it does not know and refuse to run.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};

use crate::error::{ProjectionError, Result};

/// The framework's migrations, applied in order, each once.
const MIGRATIONS: &[(i32, &str, &str)] = &[(
    1,
    "projections, offsets, dead letters, rebuilds",
    include_str!("../migrations/0001_projections.sql"),
)];

/// Lock key for migrations (any constant; `hashtext('annals-projections-migrate')`).
const MIGRATION_LOCK: i64 = 0x616e_6e61_6c73_0001;

/// A Postgres database holding read models and the framework's tables. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Database {
    pool: PgPool,
}

impl Database {
    /// Connects to `url` (`postgres://user@host:port/db`) and brings the framework's
    /// tables up to date.
    pub async fn connect(url: &str) -> Result<Self> {
        let options: PgConnectOptions = url.parse().map_err(|e| {
            ProjectionError::db(format!("parsing the database url `{}`", redact(url)), e)
        })?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(|e| ProjectionError::db(format!("connecting to `{}`", redact(url)), e))?;
        Self::from_pool(pool).await
    }

    /// Uses an existing pool and brings the framework's tables up to date.
    pub async fn from_pool(pool: PgPool) -> Result<Self> {
        let db = Self { pool };
        db.migrate().await?;
        Ok(db)
    }

    /// The pool, for readers of the read models.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the framework's migrations that are not applied yet, one transaction
    /// each, serialised across processes by an advisory lock.
    async fn migrate(&self) -> Result<()> {
        let mut tx = self.begin("migrating").await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(|e| ProjectionError::db("locking for migrations", e))?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS annals_schema_migrations (
                 version int PRIMARY KEY,
                 description text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .execute(&mut *tx)
        .await
        .map_err(|e| ProjectionError::db("creating annals_schema_migrations", e))?;
        let applied: Vec<i32> = sqlx::query_scalar("SELECT version FROM annals_schema_migrations")
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| ProjectionError::db("reading applied migrations", e))?;
        for (version, description, sql) in MIGRATIONS {
            if applied.contains(version) {
                continue;
            }
            sqlx::raw_sql(sql)
                .execute(&mut *tx)
                .await
                .map_err(|e| ProjectionError::db(format!("applying migration {version}"), e))?;
            sqlx::query(
                "INSERT INTO annals_schema_migrations (version, description) VALUES ($1, $2)",
            )
            .bind(version)
            .bind(description)
            .execute(&mut *tx)
            .await
            .map_err(|e| ProjectionError::db("recording a migration", e))?;
        }
        tx.commit()
            .await
            .map_err(|e| ProjectionError::db("committing migrations", e))
    }

    pub(crate) async fn begin(&self, context: &str) -> Result<Transaction<'static, Postgres>> {
        self.pool
            .begin()
            .await
            .map_err(|e| ProjectionError::db(format!("starting a transaction for {context}"), e))
    }
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Checks a projection name: it becomes a Postgres schema name, so it is restricted to
/// `[a-z][a-z0-9_]*`, at most 40 bytes, without `__` (which separates the version
/// suffix) and not starting with `pg_`.
pub(crate) fn validate_name(name: &str) -> std::result::Result<(), &'static str> {
    let mut bytes = name.bytes();
    match bytes.next() {
        None => return Err("it is empty"),
        Some(b) if !b.is_ascii_lowercase() => return Err("it must start with a-z"),
        Some(_) => {}
    }
    if name.len() > 40 {
        return Err("it is longer than 40 bytes");
    }
    if !bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Err("only a-z, 0-9 and _ are allowed");
    }
    if name.contains("__") {
        return Err("`__` is reserved for version suffixes");
    }
    if name.starts_with("pg_") {
        return Err("names starting with pg_ are reserved by Postgres");
    }
    Ok(())
}

/// The schema holding version `version` of projection `name`'s read model.
pub(crate) fn version_schema(name: &str, version: i32) -> String {
    format!("{name}__v{version}")
}

/// Double-quotes an identifier. Names are validated, so this never needs escaping, but
/// quoting keeps reserved words usable.
pub(crate) fn quoted(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// Sets the search path of the transaction to the version's schema, then `public`.
pub(crate) async fn use_schema(
    tx: &mut Transaction<'static, Postgres>,
    schema: &str,
) -> Result<()> {
    sqlx::query(&format!(
        "SET LOCAL search_path TO {}, public",
        quoted(schema)
    ))
    .execute(&mut **tx)
    .await
    .map(|_| ())
    .map_err(|e| ProjectionError::db(format!("selecting schema {schema}"), e))
}

/// Points the reader schema's views at the tables of `schema`, replacing the views that
/// pointed at another version. Runs inside the caller's transaction, so readers switch
/// atomically when it commits.
pub(crate) async fn point_views_at(
    tx: &mut Transaction<'static, Postgres>,
    name: &str,
    schema: &str,
) -> Result<()> {
    let reader = quoted(name);
    sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {reader}"))
        .execute(&mut **tx)
        .await
        .map_err(|e| ProjectionError::db(format!("creating reader schema {name}"), e))?;
    let old: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.views WHERE table_schema = $1",
    )
    .bind(name)
    .fetch_all(&mut **tx)
    .await
    .map_err(|e| ProjectionError::db(format!("listing the views of {name}"), e))?;
    for view in old {
        sqlx::query(&format!(
            "DROP VIEW IF EXISTS {reader}.{} CASCADE",
            quoted(&view)
        ))
        .execute(&mut **tx)
        .await
        .map_err(|e| ProjectionError::db(format!("dropping view {name}.{view}"), e))?;
    }
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = $1 AND table_type IN ('BASE TABLE', 'VIEW') ORDER BY 1",
    )
    .bind(schema)
    .fetch_all(&mut **tx)
    .await
    .map_err(|e| ProjectionError::db(format!("listing the tables of {schema}"), e))?;
    for table in tables {
        sqlx::query(&format!(
            "CREATE VIEW {reader}.{t} AS SELECT * FROM {s}.{t}",
            t = quoted(&table),
            s = quoted(schema)
        ))
        .execute(&mut **tx)
        .await
        .map_err(|e| ProjectionError::db(format!("creating view {name}.{table}"), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_schema_safe() {
        assert!(validate_name("balances").is_ok());
        assert!(validate_name("tx_history2").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("Balances").is_err());
        assert!(validate_name("1x").is_err());
        assert!(validate_name("a__v1").is_err());
        assert!(validate_name("pg_stats").is_err());
        assert!(validate_name("a-b").is_err());
        assert!(validate_name(&"a".repeat(41)).is_err());
        assert_eq!(version_schema("balances", 3), "balances__v3");
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
