//! The core's `Retriever` over OpenSearch's HTTP `_search` API: BM25 `multi_match` over configurable fields,
//! `size = top_k`, and, when the intent calls for it, a `terms` filter on the documents' `kind`
//! (`product`, `faq`, `policy`; see [`kinds_for`]). Scores are `_score` divided by the best hit's, so they lie
//! in `0..=1` whatever the index's BM25 scale.
//!
//! The index is expected to hold one passage per document: the passage text in `content_field` and, when the
//! indexer counted it, its token count in `tokens_field` (so the turn need not count it again).
//!
//! Authentication: none (a self-managed cluster in a private network), HTTP basic auth (`auth`: a domain with
//! fine-grained access control and an internal user), or IAM (`sigv4`): every request signed with the function
//! role's credentials ([`crate::sigv4`]) for an Amazon OpenSearch Service domain (`es`) or an OpenSearch
//! Serverless collection (`aoss`). A retried attempt is signed again (fresh `x-amz-date`).

use std::sync::Arc;
use std::time::Duration;

use mangaassist_core::intent::Intent;
use mangaassist_core::ports::sources::{Passage, Retriever, SourceError, kinds_for};
use reqwest::Url;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::{self, ConfigError, HttpError, HttpSettings};
use crate::sigv4::RequestSigner;

/// Basic-auth credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth").field("username", &self.username).field("password", &"***").finish()
    }
}

/// Where and how to search.
#[derive(Debug, Clone)]
pub struct OpenSearchConfig {
    /// The cluster's base URL, e.g. `https://search-manga.ap-northeast-1.es.amazonaws.com`.
    pub endpoint: String,
    pub index: String,
    /// `multi_match` fields, boosts allowed (`title^2`).
    pub fields: Vec<String>,
    /// The field holding the passage text.
    pub content_field: String,
    /// The field holding the passage's token count, if the indexer stores one.
    pub tokens_field: Option<String>,
    /// The keyword field the intent filter applies to.
    pub kind_field: String,
    /// Filter by [`kinds_for`] the turn's intent.
    pub filter_by_intent: bool,
    pub auth: Option<BasicAuth>,
    /// Sign every request (SigV4, service `es` or `aoss`); when set, `auth` is not sent.
    pub sigv4: Option<Arc<RequestSigner>>,
    pub http: HttpSettings,
}

impl OpenSearchConfig {
    /// The defaults for an index at `endpoint`/`index`: fields `title^2`, `content`, `content_ja`; token
    /// counts in `tokens`; kinds in `kind`; no auth.
    pub fn new(endpoint: impl Into<String>, index: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            index: index.into(),
            fields: vec!["title^2".into(), "content".into(), "content_ja".into()],
            content_field: "content".into(),
            tokens_field: Some("tokens".into()),
            kind_field: "kind".into(),
            filter_by_intent: true,
            auth: None,
            sigv4: None,
            http: HttpSettings::default(),
        }
    }
}

/// `Retriever` over OpenSearch.
#[derive(Debug, Clone)]
pub struct OpenSearchRetriever {
    client: reqwest::Client,
    search_url: Url,
    config: OpenSearchConfig,
}

#[derive(Deserialize)]
struct SearchResponse {
    hits: Hits,
}

#[derive(Deserialize)]
struct Hits {
    hits: Vec<Hit>,
}

#[derive(Deserialize)]
struct Hit {
    #[serde(rename = "_score")]
    score: Option<f32>,
    #[serde(rename = "_source", default)]
    source: Value,
}

impl OpenSearchRetriever {
    /// A retriever with its own HTTP client.
    pub fn new(config: OpenSearchConfig) -> Result<Self, ConfigError> {
        let client = http::client(&config.http)?;
        Self::with_client(client, config)
    }

    /// A retriever sharing `client` (and its connection pool) with other sources. The client's timeouts
    /// apply; `config.http.request_timeout` is also set on every request.
    pub fn with_client(client: reqwest::Client, config: OpenSearchConfig) -> Result<Self, ConfigError> {
        let base = http::base_url("OpenSearch endpoint", &config.endpoint)?;
        if config.index.is_empty() || config.index.contains(['/', '?', '#', '*', ',']) {
            return Err(ConfigError::Url {
                what: "OpenSearch index",
                url: config.index.clone(),
                reason: "an index name must be non-empty, single, and without / ? # * ,".into(),
            });
        }
        let search_url = http::join(&base, &[&config.index, "_search"]);
        Ok(Self { client, search_url, config })
    }

    /// Opens (or reuses) a pooled connection to the OpenSearch endpoint: `HEAD` of the search URL, unsigned;
    /// any status (a 403 or 405 included) is an answer, only a transport failure is an error.
    pub async fn warm(&self) -> Result<(), SourceError> {
        let timeout = self.config.http.request_timeout;
        match self.client.head(self.search_url.clone()).timeout(timeout).send().await {
            Ok(_) => Ok(()),
            Err(e) => Err(http::transport_error(e, timeout)),
        }
    }

    /// The `_search` request body.
    pub fn request_body(&self, query: &str, intent: Intent, top_k: usize) -> Value {
        let c = &self.config;
        let mut source = vec![c.content_field.clone()];
        source.extend(c.tokens_field.iter().cloned());
        let multi_match = json!({ "multi_match": { "query": query, "fields": c.fields, "type": "best_fields" } });
        let filter: Vec<Value> = match kinds_for(intent).filter(|_| c.filter_by_intent) {
            Some(kinds) => vec![json!({ "terms": { c.kind_field.as_str(): kinds } })],
            None => Vec::new(),
        };
        json!({
            "size": top_k,
            "_source": source,
            "track_total_hits": false,
            "query": { "bool": { "must": [multi_match], "filter": filter } },
        })
    }

    /// Chunks from a `_search` response body, best first, scores divided by the best score.
    pub fn parse_response(&self, body: &[u8]) -> Result<Vec<Passage>, SourceError> {
        let malformed = |reason: String| {
            SourceError::Other(Box::new(HttpError::Malformed { url: self.search_url.to_string(), reason }))
        };
        let resp: SearchResponse = serde_json::from_slice(body).map_err(|e| malformed(e.to_string()))?;
        let c = &self.config;
        let mut chunks: Vec<Passage> = resp
            .hits
            .hits
            .into_iter()
            .filter_map(|hit| {
                let content = hit.source.get(&c.content_field)?.as_str()?.trim();
                if content.is_empty() {
                    return None;
                }
                let tokens = c
                    .tokens_field
                    .as_ref()
                    .and_then(|f| hit.source.get(f))
                    .and_then(Value::as_u64)
                    .and_then(|n| usize::try_from(n).ok());
                Some(Passage { content: content.to_owned(), score: hit.score.unwrap_or(0.0), tokens })
            })
            .collect();
        let max = chunks.iter().map(|ch| ch.score).fold(0.0f32, f32::max);
        for ch in &mut chunks {
            ch.score = if max > 0.0 { (ch.score / max).clamp(0.0, 1.0) } else { 0.0 };
        }
        chunks.sort_by(|a, b| b.score.total_cmp(&a.score));
        Ok(chunks)
    }

    async fn search_once(&self, body: &Value) -> Result<Vec<Passage>, SourceError> {
        let timeout = self.config.http.request_timeout;
        let mut req = self.client.post(self.search_url.clone()).timeout(timeout).json(body);
        if let (None, Some(auth)) = (&self.config.sigv4, &self.config.auth) {
            req = req.basic_auth(&auth.username, Some(&auth.password));
        }
        let mut req = req.build().map_err(|e| SourceError::Other(Box::new(e)))?;
        if let Some(signer) = &self.config.sigv4 {
            // Credentials that cannot be loaded or a request that cannot be signed: no retry will fix it.
            signer.sign(&mut req).await.map_err(|e| SourceError::Other(Box::new(e)))?;
        }
        let resp = self.client.execute(req).await.map_err(|e| http::transport_error(e, timeout))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| http::transport_error(e, timeout))?;
        if !status.is_success() {
            return Err(http::status_error(status, &self.search_url, &String::from_utf8_lossy(&bytes)));
        }
        self.parse_response(&bytes)
    }

    /// The configured request timeout.
    pub fn request_timeout(&self) -> Duration {
        self.config.http.request_timeout
    }
}

impl Retriever for OpenSearchRetriever {
    async fn retrieve(&self, query: &str, intent: Intent, top_k: usize) -> Result<Vec<Passage>, SourceError> {
        let query = query.trim();
        if query.is_empty() || top_k == 0 {
            return Ok(Vec::new());
        }
        let body = self.request_body(query, intent, top_k);
        let mut chunks = self.config.http.retry.run(|| self.search_once(&body)).await?;
        chunks.truncate(top_k);
        Ok(chunks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retriever() -> OpenSearchRetriever {
        OpenSearchRetriever::new(OpenSearchConfig::new("http://127.0.0.1:9200/", "manga")).unwrap()
    }

    #[test]
    fn the_search_url_is_the_index_search_endpoint() {
        assert_eq!(retriever().search_url.as_str(), "http://127.0.0.1:9200/manga/_search");
    }

    #[test]
    fn an_index_name_with_a_path_or_wildcard_is_refused() {
        assert!(OpenSearchRetriever::new(OpenSearchConfig::new("http://x", "a/b")).is_err());
        assert!(OpenSearchRetriever::new(OpenSearchConfig::new("http://x", "a*")).is_err());
        assert!(OpenSearchRetriever::new(OpenSearchConfig::new("http://x", "")).is_err());
    }

    #[test]
    fn a_product_question_filters_on_product_documents() {
        let body = retriever().request_body("blade chronicle volumes", Intent::ProductQuestion, 3);
        assert_eq!(body["size"], 3);
        assert_eq!(body["query"]["bool"]["must"][0]["multi_match"]["query"], "blade chronicle volumes");
        assert_eq!(body["query"]["bool"]["filter"][0]["terms"]["kind"], json!(["product"]));
    }

    #[test]
    fn a_general_question_is_not_filtered() {
        let body = retriever().request_body("hello", Intent::General, 5);
        assert_eq!(body["query"]["bool"]["filter"], json!([]));
    }

    #[test]
    fn scores_are_normalised_by_the_best_hit_and_token_counts_kept() {
        let body = json!({"hits": {"max_score": 8.0, "hits": [
            {"_score": 2.0, "_source": {"content": "b"}},
            {"_score": 8.0, "_source": {"content": "a", "tokens": 12}},
            {"_score": 1.0, "_source": {"other": "no content"}},
        ]}});
        let chunks = retriever().parse_response(body.to_string().as_bytes()).unwrap();
        assert_eq!(chunks.len(), 2);
        assert_eq!((chunks[0].content.as_str(), chunks[0].score, chunks[0].tokens), ("a", 1.0, Some(12)));
        assert_eq!((chunks[1].content.as_str(), chunks[1].score, chunks[1].tokens), ("b", 0.25, None));
    }

    #[test]
    fn a_body_that_is_not_a_search_response_is_an_error() {
        assert!(matches!(retriever().parse_response(b"<html>"), Err(SourceError::Other(_))));
    }
}
