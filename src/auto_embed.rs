//! Auto-embedding in hand-written SQL (sql/auto_embed.sql): the trigger function, the backfill procedure, the
//! table of rows it could not embed, and their helpers' schema. They build on the embedding functions, which
//! must exist first.
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode::ERRCODE_INVALID_TRANSACTION_TERMINATION;

// The macro orders the SQL after these functions; it reads their names only.
#[allow(unused_imports)]
use crate::embed::{clip_embed_image, clip_embed_images, clip_embed_text, clip_embed_texts};
use crate::errors::error_with_hint;

pgrx::extension_sql_file!(
    "../sql/auto_embed.sql",
    name = "auto_embed",
    requires = [
        clip_embed_text,
        clip_embed_image,
        clip_embed_texts,
        clip_embed_images
    ]
);

/// clip_search_internal.require_own_transaction(caller), declared in sql/auto_embed.sql and called by the
/// procedure `caller` itself, first: an error unless that procedure may COMMIT, that is unless it was CALLed as a
/// statement of its own. Inside a transaction block (BEGIN, a driver's default mode, several statements in one
/// query) or a function, PostgreSQL runs a CALL atomically; inside a PL/pgSQL block with an EXCEPTION clause, in a
/// subtransaction. Either way the first COMMIT would fail only after a batch's work.
#[pg_extern(sql = false)]
fn require_own_transaction(caller: &str) {
    // SAFETY: read the state of this backend: whether the calling procedure's SPI connection is non-atomic, which
    // is what lets it COMMIT, and whether a subtransaction is open.
    if !unsafe { pg_sys::SPI_inside_nonatomic_context() } || unsafe { pg_sys::IsSubTransaction() } {
        error_with_hint(
            ERRCODE_INVALID_TRANSACTION_TERMINATION,
            format!(
                "{caller} commits after each batch, so it cannot run inside a transaction block, a function or a \
                 block with an EXCEPTION clause"
            ),
            "CALL it as a statement of its own in autocommit mode: psql does so outside BEGIN; in psycopg set \
             connection.autocommit = True, in JDBC setAutoCommit(true), in node-postgres and asyncpg call it \
             outside a transaction.",
        );
    }
}
