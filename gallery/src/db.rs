//! The gallery's tables, and the statements that write them.
//!
//! Everything lives in the schema `gallery`:
//!   gallery.images (id, name, content_type, image bytea, added_at, embedding vector(dim))   HNSW cosine index
//!   gallery.texts  (id, text, added_at, embedding vector(dim))                              HNSW cosine index
//!   gallery.meta   (key, value): which model made the stored vectors; whether the first-run import happened
//! Embeddings are computed by the extension in the INSERT itself (clip_embed_images / clip_embed_texts on the
//! whole batch), so a batch is stored whole or not at all.
//!
//! Two steps, two roles. The set-up (`clip-gallery --setup`, run by a superuser: the database's owner would do
//! but for CREATE EXTENSION and CREATE ROLE) installs or updates the extension, creates or re-embeds the tables,
//! and makes the server's login role, which may only read and write the rows of those tables. The server
//! connects as that role and changes no schema: it refuses to start as a superuser, or when the stored vectors
//! were made by another model (re-embedding rewrites the tables, which only their owner may do).
use std::path::Path;

use deadpool_postgres::Pool;
use serde::Serialize;
use tokio_postgres::error::SqlState;
use tokio_postgres::GenericClient;

use crate::error::{ApiError, ApiResult};
use crate::sniff;

/// What produced the stored vectors, from clip_info().
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub model: String,
    pub weights: String,
    /// Where an installed model came from (a hub address and revision); None for a model exported locally.
    pub source: Option<String>,
    pub embed_dim: i32,
    /// Name, weights and the checksums of both towers (and of their data files, for models that have them) and of
    /// the tokenizer: the stored vectors are valid while this stays the same.
    pub identity: String,
}

/// The schema of an installed extension, quoted for use in SQL.
async fn extension_schema(client: &impl GenericClient, extension: &str) -> Result<String, String> {
    let row = client
        .query_opt(
            "SELECT pg_catalog.quote_ident(n.nspname) FROM pg_catalog.pg_extension e
             JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace
             WHERE e.extname OPERATOR(pg_catalog.=) $1::pg_catalog.name",
            &[&extension],
        )
        .await
        .map_err(db_err)?;
    row.map(|r| r.get(0)).ok_or_else(|| format!("the extension {extension} is not installed in this database"))
}

impl ModelInfo {
    /// The model in one line, for the set-up's and the server's output, with the notice when there is one.
    pub fn describe(&self) -> String {
        let source = self.source.as_deref().map(|s| format!(", from {s}")).unwrap_or_default();
        let notice = weights_notice(&self.weights).map(|n| format!(". {n}")).unwrap_or_default();
        format!("model {} ({}), {} dimensions{source}{notice}", self.model, self.weights, self.embed_dim)
    }
}

/// What a user must know about weights described as `weights` (clip_info()'s "weights"): with random weights,
/// which the exporter writes as "random weights, seed N", the searches run but their rankings mean nothing.
pub fn weights_notice(weights: &str) -> Option<&'static str> {
    weights.starts_with("random weights").then_some(
        "These are random weights: the rankings show the machinery working, not CLIP's quality. For real \
         weights, run scripts/gallery.sh where the Hugging Face hub is reachable, or install a model with \
         clip-fetch and set clip.model_dir to its directory.",
    )
}

async fn model_info(client: &impl GenericClient) -> Result<ModelInfo, String> {
    let clip = extension_schema(client, "clip_search").await?;
    let row = client
        .query_one(
            &format!(
                "SELECT i->>'model', i->>'weights', i->>'source', (i->>'embed_dim')::int,
                        concat_ws(' ', i->>'model', i->>'weights', i->'files'->'text'->>'sha256',
                                  i->'files'->'text'->'data'->>'sha256', i->'files'->'image'->>'sha256',
                                  i->'files'->'image'->'data'->>'sha256', i->'files'->'tokenizer'->>'sha256')
                 FROM (SELECT {clip}.clip_info() AS i) s"
            ),
            &[],
        )
        .await
        .map_err(|e| format!("the model is not usable: {}", describe(&e)))?;
    let info = ModelInfo {
        model: row.get(0),
        weights: row.get(1),
        source: row.get(2),
        embed_dim: row.get(3),
        identity: row.get(4),
    };
    if !(1..=16000).contains(&info.embed_dim) {
        return Err(format!("clip_info() reports an embedding dimension of {}", info.embed_dim));
    }
    Ok(info)
}

/// The set-up, as a superuser: creates (or updates) the extension and the tables, re-embeds stored rows when the
/// model changed since they were embedded, and makes `role` a login role with only the privileges the server
/// needs. Serialised with an advisory lock so that two set-ups of one database do not race.
///
/// The database's owner may create objects in public and set the database's default search_path, so the set-up,
/// which runs as a superuser, pins its own to pg_catalog and names the extensions' objects with their schemas:
/// nothing the owner created can stand in for a name it uses.
pub async fn set_up(client: &mut tokio_postgres::Client, role: &str) -> Result<ModelInfo, String> {
    let tx = client.transaction().await.map_err(db_err)?;
    tx.batch_execute(
        "SET LOCAL search_path = pg_catalog, pg_temp;
         SELECT pg_advisory_xact_lock(hashtext('clip-gallery schema'));
         CREATE EXTENSION IF NOT EXISTS clip_search SCHEMA public CASCADE;
         CREATE SCHEMA IF NOT EXISTS gallery;
         CREATE TABLE IF NOT EXISTS gallery.meta (key text PRIMARY KEY, value text NOT NULL);",
    )
    .await
    .map_err(|e| format!("cannot create the gallery schema: {}", describe(&e)))?;
    check_gallery_schema_is_trusted(&tx).await?;
    // A newer clip_search installed since this database made its extension: follow its update path.
    let versions = tx
        .query_one(
            "SELECT e.extversion, a.default_version FROM pg_extension e
             JOIN pg_available_extensions a ON a.name = e.extname WHERE e.extname = 'clip_search'",
            &[],
        )
        .await
        .map_err(db_err)?;
    let (installed, available): (String, String) = (versions.get(0), versions.get(1));
    if installed != available {
        tx.batch_execute("ALTER EXTENSION clip_search UPDATE")
            .await
            .map_err(|e| format!("cannot update clip_search from {installed} to {available}: {}", describe(&e)))?;
        eprintln!("clip-gallery: updated the extension clip_search from {installed} to {available}");
    }
    let info = model_info(&tx).await?;
    let dim = info.embed_dim;
    let clip = extension_schema(&tx, "clip_search").await?;
    let vector = extension_schema(&tx, "vector").await?;
    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS gallery.images (
             id           bigserial PRIMARY KEY,
             name         text NOT NULL,
             content_type text NOT NULL,
             image        bytea NOT NULL,
             added_at     timestamptz NOT NULL DEFAULT now(),
             embedding    {vector}.vector({dim}) NOT NULL
         );
         CREATE INDEX IF NOT EXISTS images_embedding_hnsw ON gallery.images
             USING hnsw (embedding {vector}.vector_cosine_ops);
         CREATE TABLE IF NOT EXISTS gallery.texts (
             id        bigserial PRIMARY KEY,
             text      text NOT NULL,
             added_at  timestamptz NOT NULL DEFAULT now(),
             embedding {vector}.vector({dim}) NOT NULL
         );
         CREATE INDEX IF NOT EXISTS texts_embedding_hnsw ON gallery.texts
             USING hnsw (embedding {vector}.vector_cosine_ops);"
    ))
    .await
    .map_err(|e| format!("cannot create the gallery tables: {}", describe(&e)))?;
    check_gallery_schema_is_trusted(&tx).await?;
    let stored = stored_identity(&tx).await.map_err(db_err)?;
    if stored.as_deref() != Some(info.identity.as_str()) {
        if let Some(old) = &stored {
            // Vectors of another model are meaningless under this one: re-embed everything (the column type
            // changes too when the dimension does; the indexes are rebuilt by the rewrite).
            eprintln!("clip-gallery: the model changed (was: {old}); re-embedding the stored images and texts");
            tx.batch_execute(&format!(
                "ALTER TABLE gallery.images ALTER COLUMN embedding TYPE {vector}.vector({dim})
                     USING {clip}.clip_embed_image(image);
                 ALTER TABLE gallery.texts ALTER COLUMN embedding TYPE {vector}.vector({dim})
                     USING {clip}.clip_embed_text(text);"
            ))
            .await
            .map_err(|e| format!("cannot re-embed the stored rows: {}", describe(&e)))?;
        }
        tx.execute(
            "INSERT INTO gallery.meta VALUES ('model', $1) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&info.identity],
        )
        .await
        .map_err(db_err)?;
    }
    grant_server_role(&tx, role).await?;
    tx.commit().await.map_err(db_err)?;
    Ok(info)
}

/// The set-up reads and grants on what the schema gallery holds, as a superuser: only if superusers made it. A
/// database's owner could have made the schema first, or a view in place of a table, for the set-up to run.
async fn check_gallery_schema_is_trusted(tx: &tokio_postgres::Transaction<'_>) -> Result<(), String> {
    let untrusted: Option<String> = tx
        .query_opt(
            "SELECT 'the schema itself' FROM pg_namespace n
             WHERE n.nspname = 'gallery' AND NOT (SELECT r.rolsuper FROM pg_roles r WHERE r.oid = n.nspowner)
             UNION ALL
             SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'gallery'
               AND (c.relkind NOT IN ('r', 'S', 'i') OR NOT (SELECT r.rolsuper FROM pg_roles r WHERE r.oid = c.relowner))
             LIMIT 1",
            &[],
        )
        .await
        .map_err(db_err)?
        .map(|r| r.get(0));
    match untrusted {
        None => Ok(()),
        Some(object) => Err(format!(
            "the schema gallery holds an object that no superuser made ({object}): drop the schema, or have a \
             superuser own what it holds, and run the set-up again"
        )),
    }
}

/// Makes `role` (a login role, created if missing; never a superuser) able to read and write the rows of the
/// gallery's tables, and nothing more: no DDL, no other tables, the model identity in gallery.meta read-only.
async fn grant_server_role(tx: &tokio_postgres::Transaction<'_>, role: &str) -> Result<(), String> {
    let existing = tx.query_opt("SELECT rolsuper FROM pg_roles WHERE rolname = $1", &[&role]).await.map_err(db_err)?;
    match existing.map(|r| r.get::<_, bool>(0)) {
        Some(true) => {
            return Err(format!("the role {role} is a superuser: the server must not run as one; pick another --role"))
        }
        Some(false) => {}
        None => {
            // Roles are shared by every database of the cluster: a set-up of another database may create it at
            // the same moment, which is fine.
            let create: String = tx
                .query_one("SELECT format('CREATE ROLE %I LOGIN', $1::text)", &[&role])
                .await
                .map_err(db_err)?
                .get(0);
            tx.batch_execute("SAVEPOINT create_role").await.map_err(db_err)?;
            match tx.batch_execute(&create).await {
                Ok(()) => tx.batch_execute("RELEASE SAVEPOINT create_role").await.map_err(db_err)?,
                Err(e) if [Some(&SqlState::DUPLICATE_OBJECT), Some(&SqlState::UNIQUE_VIOLATION)].contains(&e.code()) => {
                    tx.batch_execute("ROLLBACK TO SAVEPOINT create_role").await.map_err(db_err)?
                }
                Err(e) => return Err(format!("cannot create the role {role}: {}", describe(&e))),
            }
        }
    }
    let grants: String = tx
        .query_one(
            "SELECT format('REVOKE ALL ON ALL TABLES IN SCHEMA gallery FROM %1$I;
                            REVOKE ALL ON ALL SEQUENCES IN SCHEMA gallery FROM %1$I;
                            GRANT USAGE ON SCHEMA gallery TO %1$I;
                            GRANT SELECT, INSERT, DELETE ON gallery.images, gallery.texts TO %1$I;
                            GRANT USAGE ON SEQUENCE gallery.images_id_seq, gallery.texts_id_seq TO %1$I;
                            GRANT SELECT ON gallery.meta TO %1$I;', $1::text)",
            &[&role],
        )
        .await
        .map_err(db_err)?
        .get(0);
    tx.batch_execute(&grants).await.map_err(|e| format!("cannot grant the role {role} its privileges: {}", describe(&e)))?;
    // Before PostgreSQL 15 every role may create in the schema public, through PUBLIC: the set-up leaves that
    // database-wide grant to the DBA, and says so.
    let creatable: Option<String> = tx
        .query_one(
            "SELECT string_agg(quote_ident(nspname), ', ' ORDER BY nspname) FROM pg_catalog.pg_namespace
             WHERE pg_catalog.has_schema_privilege($1::text, oid, 'CREATE')",
            &[&role],
        )
        .await
        .map_err(db_err)?
        .get(0);
    if let Some(schemas) = creatable {
        eprintln!(
            "clip-gallery: warning: the role {role} may create objects in the schema(s) {schemas}, which the \
             gallery does not need (for the schema public, through PUBLIC before PostgreSQL 15: REVOKE CREATE ON \
             SCHEMA public FROM PUBLIC)"
        );
    }
    Ok(())
}

async fn stored_identity(client: &impl GenericClient) -> Result<Option<String>, tokio_postgres::Error> {
    Ok(client.query_opt("SELECT value FROM gallery.meta WHERE key = 'model'", &[]).await?.map(|r| r.get(0)))
}

/// The server's start-up check, as its own role: not a superuser, the set-up done, and the stored vectors made by
/// the model this database uses now. Changes nothing.
pub async fn check_schema(pool: &Pool) -> Result<ModelInfo, String> {
    const SETUP: &str = "run `clip-gallery --setup` as a superuser";
    let client = pool.get().await.map_err(|e| format!("cannot connect to the database: {e}"))?;
    let row = client
        .query_one("SELECT current_user::text, rolsuper FROM pg_roles WHERE rolname = current_user", &[])
        .await
        .map_err(db_err)?;
    let (user, superuser): (String, bool) = (row.get(0), row.get(1));
    if superuser {
        return Err(format!(
            "connected as {user}, a superuser: the server runs as the role that `clip-gallery --setup` makes \
             (--role, default clip_gallery), which may only read and write the gallery's tables"
        ));
    }
    let ready: bool = client
        .query_one(
            "SELECT to_regclass('gallery.meta') IS NOT NULL AND to_regclass('gallery.images') IS NOT NULL
                    AND to_regclass('gallery.texts') IS NOT NULL",
            &[],
        )
        .await
        .map_err(db_err)?
        .get(0);
    if !ready {
        return Err(format!("the database has no gallery tables: {SETUP} first"));
    }
    let stored = stored_identity(&**client).await.map_err(|e| match e.code() {
        Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
            format!("the role {user} may not read the gallery's tables: {SETUP} with --role {user}")
        }
        _ => db_err(e),
    })?;
    let info = model_info(&**client).await?;
    match stored {
        Some(stored) if stored == info.identity => Ok(info),
        Some(stored) => Err(format!(
            "the stored vectors were made by the model \"{stored}\", but the database now uses \"{}\": {SETUP} \
             to re-embed them",
            info.identity
        )),
        None => Err(format!("the gallery's tables were never set up: {SETUP} first")),
    }
}

/// A vector column of gallery.images, the registered model whose embeddings it holds (clip_column_model: the model
/// of the watch that fills it, or else the default model; None for an unregistered default model), and how many
/// images it embeds. The set-up's column, `embedding`, holds the gallery's own model; a database owner adds others,
/// as a column kept by `clip_watch(..., model => ...)` or a migration's new column.
#[derive(Debug, Serialize)]
pub struct ModelColumn {
    pub model: Option<String>,
    pub column: String,
    pub images_embedded: i64,
    pub complete: bool,
}

/// The vector columns of gallery.images, in table order.
pub async fn model_columns(client: &impl GenericClient) -> Result<Vec<ModelColumn>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT a.attname::text, clip_column_model('gallery.images'::regclass, a.attname::text)::text
             FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
             WHERE a.attrelid = 'gallery.images'::regclass AND a.attnum > 0 AND NOT a.attisdropped
               AND t.typname IN ('vector', 'halfvec')
             ORDER BY a.attnum",
            &[],
        )
        .await?;
    let columns: Vec<(String, Option<String>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let counts: Vec<String> = columns.iter().map(|(column, _)| format!("count({})", quote_ident(column))).collect();
    let row = client.query_one(&format!("SELECT count(*), {} FROM gallery.images", counts.join(", ")), &[]).await?;
    let images: i64 = row.get(0);
    Ok(columns
        .into_iter()
        .enumerate()
        .map(|(i, (column, model))| {
            let images_embedded: i64 = row.get(i + 1);
            ModelColumn { model, column, images_embedded, complete: images_embedded == images }
        })
        .collect())
}

/// An identifier quoted for SQL: always in double quotes, each inner one doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// One uploaded image.
pub struct NewImage {
    pub name: String,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Serialize)]
pub struct StoredImage {
    pub id: i64,
    pub name: String,
    pub content_type: String,
    pub bytes: i64,
    pub url: String,
}

impl StoredImage {
    pub fn from_row(row: &tokio_postgres::Row) -> Self {
        let id: i64 = row.get("id");
        StoredImage {
            id,
            name: row.get("name"),
            content_type: row.get("content_type"),
            bytes: row.get("bytes"),
            url: format!("/api/images/{id}"),
        }
    }
}

/// Inserts the images in one statement, which embeds them all with clip_embed_images: either every image is
/// stored or, when one is bad, none is and the error names the file at fault.
pub async fn insert_images(client: &impl GenericClient, images: &[NewImage]) -> ApiResult<Vec<StoredImage>> {
    let names: Vec<&str> = images.iter().map(|i| i.name.as_str()).collect();
    let types: Vec<&str> = images.iter().map(|i| sniff::content_type(&i.bytes)).collect();
    let blobs: Vec<&[u8]> = images.iter().map(|i| i.bytes.as_slice()).collect();
    let rows = client
        .query(
            "INSERT INTO gallery.images (name, content_type, image, embedding)
             SELECT n, c, i, e FROM unnest($1::text[], $2::text[], $3::bytea[], clip_embed_images($3::bytea[])) AS u(n, c, i, e)
             RETURNING id, name, content_type, octet_length(image)::int8 AS bytes",
            &[&names, &types, &blobs],
        )
        .await
        .map_err(|e| {
            let err = ApiError::from_db(&e);
            let file = err.element.and_then(|i| names.get(i.wrapping_sub(1))).map(|n| n.to_string());
            err.with_file(file)
        })?;
    let mut stored: Vec<StoredImage> = rows.iter().map(StoredImage::from_row).collect();
    stored.sort_by_key(|s| s.id);
    Ok(stored)
}

/// On the first run (no 'imported' mark), stores the images of `dir` (JPEG, PNG, WebP, GIF, BMP, TIFF by file
/// name) in one transaction and marks the import done, so that deleting them later does not bring them back.
pub async fn import_dir(client: &mut tokio_postgres::Client, dir: &Path) -> Result<usize, String> {
    let tx = client.transaction().await.map_err(db_err)?;
    tx.execute("SELECT pg_advisory_xact_lock(hashtext('clip-gallery import'))", &[]).await.map_err(db_err)?;
    if tx.query_opt("SELECT 1 FROM gallery.meta WHERE key = 'imported'", &[]).await.map_err(db_err)?.is_some() {
        return Ok(0);
    }
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && sniff::has_image_extension(p))
        .collect();
    paths.sort();
    let mut images = Vec::with_capacity(paths.len());
    for path in &paths {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        images.push(NewImage { name, bytes });
    }
    if !images.is_empty() {
        insert_images(&tx, &images).await.map_err(|e| {
            format!(
                "cannot import {}: {}{}",
                dir.display(),
                e.message,
                e.file.map(|f| format!(" ({f})")).unwrap_or_default()
            )
        })?;
    }
    tx.execute("INSERT INTO gallery.meta VALUES ('imported', $1)", &[&dir.display().to_string()])
        .await
        .map_err(db_err)?;
    tx.commit().await.map_err(db_err)?;
    Ok(images.len())
}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.hint() {
            Some(hint) => format!("{} ({})", db.message(), hint),
            None => db.message().to_string(),
        },
        None => e.to_string(),
    }
}

fn db_err(e: tokio_postgres::Error) -> String {
    format!("database: {}", describe(&e))
}
