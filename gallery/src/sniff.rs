//! The content type of stored image bytes, from their magic numbers, for serving them back. Whether bytes are an
//! image at all is the extension's decision (clip_embed_images), not this module's.
use std::path::Path;

pub fn content_type(bytes: &[u8]) -> &'static str {
    if bytes.starts_with(b"\xFF\xD8\xFF") {
        "image/jpeg"
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        "image/png"
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        "image/gif"
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        "image/webp"
    } else if bytes.starts_with(b"BM") {
        "image/bmp"
    } else if bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") {
        "image/tiff"
    } else {
        "application/octet-stream"
    }
}

/// Whether a file name looks like an image the extension decodes (for the first-run import of a folder).
pub fn has_image_extension(path: &Path) -> bool {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    matches!(ext.as_str(), "jpg" | "jpeg" | "png" | "gif" | "webp" | "bmp" | "tif" | "tiff")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_numbers() {
        assert_eq!(content_type(b"\xFF\xD8\xFF\xE0rest"), "image/jpeg");
        assert_eq!(content_type(b"\x89PNG\r\n\x1a\nrest"), "image/png");
        assert_eq!(content_type(b"GIF89a..."), "image/gif");
        assert_eq!(content_type(b"RIFF\0\0\0\0WEBPVP8 "), "image/webp");
        assert_eq!(content_type(b"BM...."), "image/bmp");
        assert_eq!(content_type(b"II*\0...."), "image/tiff");
        assert_eq!(content_type(b"<svg xmlns="), "application/octet-stream");
        assert_eq!(content_type(b""), "application/octet-stream");
    }

    #[test]
    fn image_extensions() {
        assert!(has_image_extension(Path::new("/a/b.JPG")));
        assert!(has_image_extension(Path::new("c.tiff")));
        assert!(!has_image_extension(Path::new("notes.txt")));
        assert!(!has_image_extension(Path::new("README")));
    }
}
