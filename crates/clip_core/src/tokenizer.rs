//! open_clip-exact CLIP tokenizer (being written).
