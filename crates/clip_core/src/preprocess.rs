//! Image decoding and open_clip-exact preprocessing (being written).
