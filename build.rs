//! Hands the ONNX Runtime version from versions.env, where it is written once, to the code as
//! `env!("CLIP_ORT_VERSION")`: the default of clip.onnxruntime_library names that library file.
use std::path::Path;

fn main() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("versions.env");
    println!("cargo::rerun-if-changed={}", path.display());
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let version = text
        .lines()
        .find_map(|line| line.strip_prefix("ORT_VERSION="))
        .unwrap_or_else(|| panic!("{} has no ORT_VERSION= line", path.display()))
        .trim();
    println!("cargo::rustc-env=CLIP_ORT_VERSION={version}");
}
