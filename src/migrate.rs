//! Migrations of a table's embeddings to another model (sql/migrate.sql): a watch of a new column, then a switch.
use pgrx::prelude::*;

use crate::guc;

// After the watches, whose machinery a migration uses, and the registry, whose models it names.
pgrx::extension_sql_file!("../sql/migrate.sql", name = "migrate", requires = ["watch", "models"]);

/// clip_search_internal.batch_size(), declared in sql/migrate.sql: the batch size in force, which bounds the rows
/// clip_migrate_switch embeds while it holds its lock.
#[pg_extern(sql = false)]
fn batch_size() -> i32 {
    guc::batch_size() as i32
}
