//! The encoders behind [`crate::precompressed`], each at its best ratio:
//! bodies are compressed once (at build time for the embedded assets, see
//! `build.rs`, which includes this file; once per render for the landing
//! page) and served many times. Plain functions over bytes, with no crate
//! paths, so that the build script can include the very same file.

use std::io::Write;

/// Brotli at quality 11.
pub(crate) fn brotli(body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    {
        // A window no larger than the body: the same output, and the
        // encoder's memory scales with it (lgwin 22 costs tens of MB, which
        // showed up as the process's peak RSS at start).
        let lgwin = (usize::BITS - body.len().max(1 << 10).leading_zeros()).clamp(10, 22);
        let mut w = ::brotli::CompressorWriter::new(&mut out, 4096, 11, lgwin);
        w.write_all(body).ok()?;
        w.flush().ok()?;
    }
    Some(out)
}

/// Zstandard at level 19. `bulk` tells zstd the input size, so it sizes
/// its tables to the body instead of the level's multi-megabyte window.
pub(crate) fn zstd(body: &[u8]) -> Option<Vec<u8>> {
    ::zstd::bulk::compress(body, 19).ok()
}

/// gzip at level 9.
pub(crate) fn gzip(body: &[u8]) -> Option<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(body).ok()?;
    enc.finish().ok()
}
