//! Benchmark helper (not part of the server): the floor this machine allows
//! for serving `/` with tokio + axum — the same bytes from memory, no
//! middleware, no negotiation beyond "does Accept-Encoding mention gzip".
//! `bench/compare.sh` runs it next to the real server and nginx.
//!
//!   cargo run --release --example floor -- \
//!       --listen 127.0.0.1:8081 --file index.html [--gzip-file index.html.gz]
//!
//! The files are read once at start. `GET /` answers 200 with the identity
//! bytes, or with the gzip bytes plus `Content-Encoding: gzip` when a gzip
//! file was given and the request's `Accept-Encoding` contains "gzip";
//! `Vary: Accept-Encoding` either way. Anything else is axum's bare 404/405.
//! The runtime is tokio's default multi-thread one, as in the server.

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;

const USAGE: &str = "usage: floor --listen ADDR --file PATH [--gzip-file PATH]";

struct Args {
    listen: String,
    file: String,
    gzip_file: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut listen = None;
    let mut file = None;
    let mut gzip_file = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--listen" => listen = Some(value("--listen")?),
            "--file" => file = Some(value("--file")?),
            "--gzip-file" => gzip_file = Some(value("--gzip-file")?),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        listen: listen.ok_or("--listen is required")?,
        file: file.ok_or("--file is required")?,
        gzip_file,
    })
}

fn read(path: &str) -> Bytes {
    match std::fs::read(path) {
        Ok(b) => Bytes::from(b),
        Err(e) => {
            eprintln!("floor: cannot read {path}: {e}");
            std::process::exit(1);
        }
    }
}

fn wants_gzip(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT_ENCODING).iter().any(|v| {
        v.as_bytes()
            .windows(4)
            .any(|w| w.eq_ignore_ascii_case(b"gzip"))
    })
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("floor: {e}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let identity = read(&args.file);
    let gzip = args.gzip_file.as_deref().map(read);

    let app = Router::new().route(
        "/",
        get(move |headers: HeaderMap| {
            let identity = identity.clone();
            let gzip = gzip.clone();
            async move {
                let html = HeaderValue::from_static("text/html; charset=utf-8");
                let vary = HeaderValue::from_static("Accept-Encoding");
                let mut res: Response = match gzip {
                    Some(gz) if wants_gzip(&headers) => (
                        [
                            (header::CONTENT_TYPE, html),
                            (header::CONTENT_ENCODING, HeaderValue::from_static("gzip")),
                        ],
                        gz,
                    )
                        .into_response(),
                    _ => ([(header::CONTENT_TYPE, html)], identity).into_response(),
                };
                res.headers_mut().insert(header::VARY, vary);
                res
            }
        }),
    );

    let listener = match tokio::net::TcpListener::bind(&args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("floor: cannot listen on {}: {e}", args.listen);
            std::process::exit(1);
        }
    };
    eprintln!("floor: serving on {}", args.listen);
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("floor: {e}");
        std::process::exit(1);
    }
}
