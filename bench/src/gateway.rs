//! `pitgun-bench gateway`: the gateway benchmark's baseline. The same framing as the gateway
//! (`pitgun_ingest::batch`), then only a parse of every item into an envelope view, and 202 —
//! no keys, no validation beyond the parse, no Avro, no Kafka. The ratio of the gateway's rate
//! to this one is what validation and the broker cost.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::ops::Range;
use std::process::ExitCode;

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use clap::Args;
use pitgun_codec::json::{decode_into, EnvelopeView};
use pitgun_ingest::batch::{self, BodyError};
use serde_json::json;

/// Arguments of `pitgun-bench gateway`.
#[derive(Args)]
pub struct GatewayArgs {
    /// Address to listen on; port 0 picks a free port (printed as `listening on http://…`).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Largest request body, as the gateway's default.
    #[arg(long, default_value_t = 8 << 20)]
    max_body: usize,
    /// Most envelopes in one request, as the gateway's default.
    #[arg(long, default_value_t = 5000)]
    max_batch: usize,
}

thread_local! {
    static ITEMS: RefCell<Vec<Range<usize>>> = const { RefCell::new(Vec::new()) };
}

fn refuse(e: BodyError) -> Response {
    let (status, message) = match e {
        BodyError::Unsupported(m) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, m),
        BodyError::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, m),
        BodyError::Malformed(m) => (StatusCode::BAD_REQUEST, m),
    };
    (status, axum::Json(json!({"error": "refused", "message": message}))).into_response()
}

/// Frames the body as the gateway does and counts the items that parse as envelopes.
fn parse_only(headers: &HeaderMap, body: &[u8], max_batch: usize) -> Response {
    let framing = match batch::framing(headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok())) {
        Ok(f) => f,
        Err(e) => return refuse(e),
    };
    ITEMS.with(|items| {
        let items = &mut *items.borrow_mut();
        if let Err(e) = batch::split(body, framing, max_batch, items) {
            return refuse(e);
        }
        let mut view = EnvelopeView::empty();
        let mut ok = 0usize;
        for r in items.iter() {
            view.channels.clear();
            view.dims.clear();
            ok += usize::from(pitgun_codec::text::utf8(&body[r.clone()]).is_ok_and(|t| decode_into(t, &mut view).is_ok()));
        }
        (StatusCode::ACCEPTED, axum::Json(json!({"accepted": ok, "rejected": items.len() - ok, "errors": []}))).into_response()
    })
}

pub fn run(args: GatewayArgs) -> Result<ExitCode> {
    let max_batch = args.max_batch;
    let app = Router::new()
        .route("/v1/envelopes", post(move |headers: HeaderMap, body: Bytes| async move { parse_only(&headers, &body, max_batch) }))
        .route("/readyz", get(|| async { "ready" }))
        .layer(DefaultBodyLimit::max(args.max_body));
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("gateway").build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
        eprintln!("pitgun-bench gateway: listening on http://{}", listener.local_addr()?);
        axum::serve(listener, app).await.context("the HTTP server failed")
    })?;
    Ok(ExitCode::SUCCESS)
}
