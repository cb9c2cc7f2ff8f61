//! The demo page `serve` shows at `http://127.0.0.1:8080/`: one HTML file embedded in the binary (no build
//! step, no framework), a chat that streams over the same WebSocket protocol as any client, product cards,
//! and a latency waterfall per turn ([`waterfall`] holds the same rules for the bench report).
//!
//! The page gets a token as any client does (the local issuer's development login or guest endpoint, or a
//! `token=` already in `?url=`), and talks to a deployed stage with `?url=wss://...`. Product cards show
//! what `completed.products` carries; on a local `serve` the page fills in titles, prices and stock from
//! `GET /local/products?asins=...` (the embedded catalog), elsewhere from the answer's own text.

pub mod waterfall;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use mangaassist_core::gather::ContextConfig;
use serde_json::{Value, json};

use crate::embedded::catalog::Catalog;

const INDEX_HTML: &str = include_str!("index.html");

/// Most products one `GET /local/products` answers.
const MAX_PRODUCTS: usize = 12;

/// The page, with the context deadlines the waterfall marks (the chat function's defaults).
pub fn index_html() -> String {
    let d = ContextConfig::default();
    let ms = |x: std::time::Duration| u64::try_from(x.as_millis()).unwrap_or(u64::MAX);
    let deadlines = json!({
        "memory": ms(d.memory), "retrieval": ms(d.retrieval), "cache": ms(d.cache),
        "services": ms(d.services), "context": ms(d.overall),
    });
    INDEX_HTML.replace("/*DEADLINES*/{}", &deadlines.to_string())
}

/// `GET /`: the page.
pub async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        index_html(),
    )
        .into_response()
}

/// `GET /local/products?asins=A,B`: the catalog's records of those products (unknown ones left out), for
/// the page's product cards.
pub fn products_router(catalog: Arc<Catalog>) -> Router {
    Router::new().route("/local/products", get(products)).with_state(catalog)
}

async fn products(State(catalog): State<Arc<Catalog>>, Query(q): Query<HashMap<String, String>>) -> Json<Value> {
    let asins = q.get("asins").map(String::as_str).unwrap_or_default();
    let found: Vec<Value> =
        asins.split(',').map(str::trim).take(MAX_PRODUCTS).filter_map(|a| catalog.product_json(a)).collect();
    Json(json!({ "products": found }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_carries_the_context_deadlines_and_no_placeholder() {
        let html = index_html();
        assert!(!html.contains("/*DEADLINES*/"));
        assert!(html.contains(r#""retrieval":240"#), "deadlines not injected");
        assert!(html.starts_with("<!doctype html>"));
    }
}
