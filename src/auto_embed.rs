//! Auto-embedding in hand-written SQL (sql/auto_embed.sql): the trigger function and the backfill procedure.
//! They build on the batch functions, which must exist first.
// The macro orders the SQL after these functions; it reads their names only.
#[allow(unused_imports)]
use crate::embed::{clip_embed_image, clip_embed_images, clip_embed_text, clip_embed_texts};

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
