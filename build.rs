//! Compresses the embedded static assets (`assets/`) at build time, into
//! `$OUT_DIR/assets/<path>.{br,zst,gz}`, which `src/assets.rs` embeds next to
//! the originals. Done at start-up instead, brotli 11 and zstd 19 took ~220 ms
//! of every start (155 ms for the dashboard's 51 KB chart library alone),
//! against a start-to-ready budget of 300 ms (issue #7). The encoders are the
//! server's own (`src/compress.rs`), so the bytes are the ones it would make.

use std::path::{Path, PathBuf};

#[path = "src/compress.rs"]
mod compress;

fn main() {
    println!("cargo:rerun-if-changed=assets");
    println!("cargo:rerun-if-changed=src/compress.rs");
    // `sqlx::migrate!` embeds these, and a new file alone would not rebuild
    // the crate that embeds them.
    println!("cargo:rerun-if-changed=migrations");
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("assets");
    let mut files = Vec::new();
    collect(Path::new("assets"), &mut files);
    for file in files {
        let rel = file.strip_prefix("assets").expect("under assets/");
        let body =
            std::fs::read(&file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        let target = out.join(rel);
        std::fs::create_dir_all(target.parent().expect("a file has a parent"))
            .unwrap_or_else(|e| panic!("creating {}: {e}", target.display()));
        for (ext, encoded) in [
            ("br", compress::brotli(&body)),
            ("zst", compress::zstd(&body)),
            ("gz", compress::gzip(&body)),
        ] {
            // An encoder that failed leaves an empty file; the server then
            // offers that encoding for no asset (it must be smaller).
            let path = PathBuf::from(format!("{}.{ext}", target.display()));
            std::fs::write(&path, encoded.unwrap_or_default())
                .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        }
    }
}

/// Every served file under `dir` (not the vendored licences and notes).
fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            collect(&path, files);
        } else if !matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("md" | "LICENSE")
        ) {
            files.push(path);
        }
    }
}
