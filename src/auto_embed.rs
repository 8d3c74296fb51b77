//! Auto-embedding in hand-written SQL (sql/auto_embed.sql): the trigger function, the backfill procedure, the
//! table of rows it could not embed, and their helpers' schema. They build on the embedding functions, which
//! must exist first.
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
