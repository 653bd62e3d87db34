//! Micro-benchmarks (divan) of the hot paths: the landing page lookup and
//! ETag check, error rendering, metrics recording, session lookup.
//! `cargo bench --bench hot_paths`. Numbers, never assertions.

use axum::http::{HeaderMap, HeaderValue, header};
use bytes::Bytes;
use huntaze::HttpMetrics;
use huntaze::SecurityHeaders;
use huntaze::{AppError, ErrorBody, ErrorResponse};
use huntaze::{PipelineHeaders, Precompressed};

fn main() {
    divan::main();
}

fn page() -> Precompressed {
    let html = "<!doctype html><html><body>".to_owned()
        + &"<p>Huntaze creators</p>".repeat(300)
        + "</body></html>";
    Precompressed::new(
        Bytes::from(html),
        "text/html; charset=utf-8",
        "public, max-age=60",
    )
}

/// The headers the server bakes into precompressed responses.
fn pipeline_headers() -> PipelineHeaders {
    let mut h = HeaderMap::new();
    SecurityHeaders::new("'sha256-bench'", false).apply(&mut h);
    huntaze::reserve_slot(&mut h);
    PipelineHeaders::new(h)
}

#[divan::bench]
fn landing_lookup_br(bencher: divan::Bencher) {
    let p = page();
    let security = pipeline_headers();
    let mut h = HeaderMap::new();
    h.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("gzip, deflate, br, zstd"),
    );
    bencher.bench_local(|| p.respond(divan::black_box(&h), &security));
}

#[divan::bench]
fn landing_etag_304(bencher: divan::Bencher) {
    let p = page();
    let security = pipeline_headers();
    let mut h = HeaderMap::new();
    h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("br"));
    let etag = p.respond(&h, &security).headers()[header::ETAG].clone();
    h.insert(header::IF_NONE_MATCH, etag);
    bencher.bench_local(|| p.respond(divan::black_box(&h), &security));
}

#[divan::bench]
fn error_rendering_json(bencher: divan::Bencher) {
    bencher.bench_local(|| {
        let r = AppError::NotFound.report();
        serde_json::to_vec(&ErrorResponse {
            error: ErrorBody {
                code: r.code.to_owned(),
                message: r.message,
                details: r.details,
            },
            timestamp: huntaze::now_rfc3339(),
            request_id: "01a2235ed94b76f69f23c0bd986039a2".into(),
        })
    });
}

#[divan::bench]
fn metrics_record(bencher: divan::Bencher) {
    let m = HttpMetrics::new();
    bencher.bench_local(|| {
        m.record(
            divan::black_box("/api/health/{component}"),
            "GET",
            200,
            0.000_4,
            huntaze::now_ms(),
        )
    });
}

/// As `metrics_record`, on a route the SLOs count (the health API is a
/// probe to them): the difference is the SLO slot's cost per request.
#[divan::bench]
fn metrics_record_slo_counted(bencher: divan::Bencher) {
    let m = HttpMetrics::new();
    bencher.bench_local(|| {
        m.record(
            divan::black_box("/api/accounts/{id}"),
            "GET",
            200,
            0.000_4,
            huntaze::now_ms(),
        )
    });
}

#[divan::bench(sample_count = 200)]
fn session_lookup(bencher: divan::Bencher) {
    session_bench(bencher, 30_000);
}

#[divan::bench(sample_count = 50)]
fn session_lookup_uncached(bencher: divan::Bencher) {
    session_bench(bencher, 0);
}

fn session_bench(bencher: divan::Bencher, cache_ttl_ms: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = huntaze::Config {
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    config.database.query_cache_ttl_ms = cache_ttl_ms;
    let db = rt.block_on(async {
        let db = huntaze::Db::connect_lazy(
            &config.database,
            &config.database_url(),
            &config.data_dir,
        )
        .unwrap();
        db.migrate().await.unwrap();
        sqlx::query("INSERT INTO users (id, email, password_hash, created_at, updated_at) VALUES ('u', 'a@example.com', 'x', 0, 0)")
            .execute(db.pool())
            .await
            .unwrap();
        let now = huntaze::now_ms();
        sqlx::query("INSERT INTO sessions (token_hash, user_id, created_at, last_seen_at, expires_at, ip, user_agent) VALUES ('h', 'u', $1, $1, $2, '', '')")
            .bind(now)
            .bind(now + 3_600_000)
            .execute(db.pool())
            .await
            .unwrap();
        db
    });
    let sessions = huntaze::SessionStore::new(db, &config.database, None);
    bencher.bench_local(|| rt.block_on(sessions.session_with_user("h")).unwrap());
}
