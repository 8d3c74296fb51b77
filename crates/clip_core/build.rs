//! Builds the JPEG decoder's C side (src/preprocess/jpeg.c) against the system's libjpeg-turbo (Debian:
//! libjpeg62-turbo-dev, which scripts/setup.sh installs).
fn main() {
    println!("cargo:rerun-if-changed=src/preprocess/jpeg.c");
    cc::Build::new()
        .file("src/preprocess/jpeg.c")
        .warnings(true)
        .extra_warnings(true)
        .compile("clip_jpeg");
    println!("cargo:rustc-link-lib=jpeg");
}
