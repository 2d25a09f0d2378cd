//! Reading document read models from Postgres, through the views of the live version.

use std::collections::BTreeMap;

use sqlx::Row;

use crate::error::{ProjectionError, Result};
use crate::projection::DocumentProjection;
use crate::schema::{Database, quoted};

fn decode<P: DocumentProjection>(
    id: String,
    value: serde_json::Value,
) -> Result<(String, P::Document)> {
    match serde_json::from_value(value) {
        Ok(doc) => Ok((id, doc)),
        Err(source) => Err(ProjectionError::Document {
            projection: P::NAME.to_owned(),
            id,
            source,
        }),
    }
}

/// Document `id` of projection `P`, from the live version (`"{NAME}".documents`).
pub async fn document<P: DocumentProjection>(
    db: &Database,
    id: &str,
) -> Result<Option<P::Document>> {
    let row = sqlx::query(&format!(
        "SELECT doc FROM {}.documents WHERE id = $1",
        quoted(P::NAME)
    ))
    .bind(id)
    .fetch_optional(db.pool())
    .await
    .map_err(|e| ProjectionError::db(format!("reading document {id} of {}", P::NAME), e))?;
    row.map(|r| decode::<P>(id.to_owned(), r.get(0)).map(|(_, doc)| doc))
        .transpose()
}

/// Every document of projection `P`, by id, from the live version.
pub async fn documents<P: DocumentProjection>(
    db: &Database,
) -> Result<BTreeMap<String, P::Document>> {
    let rows = sqlx::query(&format!(
        "SELECT id, doc FROM {}.documents ORDER BY id",
        quoted(P::NAME)
    ))
    .fetch_all(db.pool())
    .await
    .map_err(|e| ProjectionError::db(format!("reading the documents of {}", P::NAME), e))?;
    rows.into_iter()
        .map(|r| decode::<P>(r.get(0), r.get(1)))
        .collect()
}

/// Every document of the projection named `name`, as JSON, by id, from the live
/// version.
pub async fn json_documents(
    db: &Database,
    name: &str,
) -> Result<BTreeMap<String, serde_json::Value>> {
    crate::store::require_row(db.pool(), name).await?;
    let rows = sqlx::query(&format!(
        "SELECT id, doc FROM {}.documents ORDER BY id",
        quoted(name)
    ))
    .fetch_all(db.pool())
    .await
    .map_err(|e| ProjectionError::db(format!("reading the documents of {name}"), e))?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
}
