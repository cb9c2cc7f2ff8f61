//! OpenSearch over IAM: the retriever that the functions build from `OPENSEARCH_URL` + `OPENSEARCH_SIGV4`
//! sends SigV4-signed searches. A local OpenSearch stand-in checks what arrives on the wire: the headers are
//! present and well-formed (`AWS4-HMAC-SHA256`, a credential scope of this Region and service, the signed
//! headers, a 64-hex signature, `x-amz-date`, the body's `x-amz-content-sha256`, the session token), and the
//! signature is the one the same credentials give for exactly the request received (method, path, `host`,
//! `content-type`, body) at its `x-amz-date`, so nothing on the way changed what was signed.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_sdk_dynamodb::config::{Credentials, Region, SharedCredentialsProvider};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use mangaassist_adapters::env::{Env, SourceSettings};
use mangaassist_adapters::sigv4::{RequestSigner, SigningService};
use mangaassist_core::intent::Intent;
use mangaassist_core::ports::sources::Retriever;
use serde_json::json;

const REGION: &str = "ap-northeast-1";

fn sdk_config() -> aws_config::SdkConfig {
    let creds = Credentials::new("AKIDLOCAL", "local-secret", Some("local-session".into()), None, "e2e");
    aws_config::SdkConfig::builder()
        .region(Region::new(REGION))
        .credentials_provider(SharedCredentialsProvider::new(creds))
        .build()
}

/// What the stand-in saw: `Ok(service)` for a request whose signature checks out, `Err(why)` otherwise.
type Verdicts = Arc<Mutex<Vec<Result<String, String>>>>;

#[derive(Clone)]
struct Verifier {
    signer: Arc<RequestSigner>,
    verdicts: Verdicts,
}

/// `20261203T091500Z` as a time.
fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let digits = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    if s.len() != 16 || s.as_bytes()[8] != b'T' || !s.ends_with('Z') {
        return None;
    }
    let (y, m, d) = (digits(0..4)?, digits(4..6)?, digits(6..8)?);
    let (hh, mm, ss) = (digits(9..11)?, digits(11..13)?, digits(13..15)?);
    // Days from 1970-01-01 to y-m-d (proleptic Gregorian).
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days * 86_400 + hh * 3_600 + mm * 60 + ss).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// Checks one received request; `Ok(service)` when it is well-formed and its signature verifies.
async fn verify(signer: &RequestSigner, path: &str, headers: &HeaderMap, body: &Bytes) -> Result<String, String> {
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let auth = h("authorization").ok_or("no authorization header")?;
    let date = h("x-amz-date").ok_or("no x-amz-date")?;
    let time = parse_amz_date(&date).ok_or_else(|| format!("x-amz-date {date:?} is not YYYYMMDDTHHMMSSZ"))?;
    h("x-amz-content-sha256")
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or("x-amz-content-sha256 missing or not a SHA-256")?;
    if h("x-amz-security-token").as_deref() != Some("local-session") {
        return Err("the session token is not sent".into());
    }
    let rest = auth.strip_prefix("AWS4-HMAC-SHA256 Credential=").ok_or_else(|| format!("not SigV4: {auth}"))?;
    let (credential, rest) = rest.split_once(", SignedHeaders=").ok_or("no SignedHeaders")?;
    let (signed, signature) = rest.split_once(", Signature=").ok_or("no Signature")?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [key, day, region, service, "aws4_request"] = scope.as_slice() else {
        return Err(format!("scope {credential}"));
    };
    if *key != "AKIDLOCAL" || *day != &date[..8] || *region != REGION {
        return Err(format!("credential scope {credential} does not match the key, x-amz-date or Region"));
    }
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("signature {signature:?} is not 64 hex digits"));
    }
    let signed: Vec<&str> = signed.split(';').collect();
    for needed in ["content-type", "host", "x-amz-content-sha256", "x-amz-date", "x-amz-security-token"] {
        if !signed.contains(&needed) {
            return Err(format!("{needed} is not signed: {signed:?}"));
        }
    }
    // Re-sign exactly what arrived (its host, path, content type and body) at its x-amz-date.
    let host = h("host").ok_or("no host")?;
    let mut again = reqwest::Client::new()
        .post(format!("http://{host}{path}"))
        .header("content-type", h("content-type").unwrap_or_default())
        .body(body.to_vec())
        .build()
        .map_err(|e| e.to_string())?;
    signer.sign_at(&mut again, time).await.map_err(|e| e.to_string())?;
    let expected = again.headers()["authorization"].to_str().unwrap_or_default().to_owned();
    let expected_hash = again.headers()["x-amz-content-sha256"].to_str().unwrap_or_default().to_owned();
    if h("x-amz-content-sha256").as_deref() != Some(expected_hash.as_str()) {
        return Err("x-amz-content-sha256 is not the hash of the body received".into());
    }
    if expected != auth {
        return Err(format!("signature mismatch: got {auth}, expected {expected}"));
    }
    Ok((*service).to_owned())
}

/// An OpenSearch stand-in on `127.0.0.1:0`: a verified request gets one hit, any other a 403.
async fn verifying_opensearch(service: SigningService) -> (String, Verdicts) {
    let signer = Arc::new(RequestSigner::from_sdk(service, &sdk_config()).unwrap());
    let verdicts = Verdicts::default();
    let state = Verifier { signer, verdicts: verdicts.clone() };
    let app = axum::Router::new()
        .route(
            "/{index}/_search",
            axum::routing::post(
                |State(v): State<Verifier>, uri: axum::http::Uri, headers: HeaderMap, body: Bytes| async move {
                    let verdict = verify(&v.signer, uri.path(), &headers, &body).await;
                    let ok = verdict.is_ok();
                    v.verdicts.lock().unwrap().push(verdict);
                    if ok {
                        let hits = json!([{"_score": 2.0, "_source": {"content": "Signed passage.", "tokens": 3}}]);
                        (StatusCode::OK, json!({"hits": {"hits": hits}}).to_string())
                    } else {
                        (
                            StatusCode::FORBIDDEN,
                            json!({"message": "The request signature we calculated does not match"}).to_string(),
                        )
                    }
                },
            ),
        )
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), verdicts)
}

/// The retriever the chat and prefetch functions build from their environment.
fn retriever_from_env(url: &str, signing: &str) -> impl Retriever {
    let vars = [("OPENSEARCH_URL", url.to_owned()), ("OPENSEARCH_SIGV4", signing.to_owned())];
    let env = Env(move |k: &str| vars.iter().find(|(name, _)| *name == k).map(|(_, v)| v.clone()));
    let settings = SourceSettings::read(&env).unwrap();
    settings.build(&sdk_config()).unwrap().retriever.unwrap()
}

#[tokio::test]
async fn a_search_to_opensearch_serverless_is_signed_for_aoss_and_verifies_on_the_wire() {
    let (url, verdicts) = verifying_opensearch(SigningService::OpenSearchServerless).await;
    let retriever = retriever_from_env(&url, "aoss");
    let passages = retriever.retrieve("おすすめのホラー漫画", Intent::Recommendation, 3).await.unwrap();
    assert_eq!(passages.len(), 1, "the stand-in answered: the signature verified");
    assert_eq!(verdicts.lock().unwrap().as_slice(), [Ok("aoss".to_owned())]);
}

#[tokio::test]
async fn a_search_to_an_opensearch_service_domain_is_signed_for_es() {
    let (url, verdicts) = verifying_opensearch(SigningService::OpenSearch).await;
    let retriever = retriever_from_env(&url, "es");
    assert_eq!(retriever.retrieve("shipping", Intent::Faq, 2).await.unwrap().len(), 1);
    assert_eq!(verdicts.lock().unwrap().as_slice(), [Ok("es".to_owned())]);
}

#[tokio::test]
async fn an_unsigned_search_is_refused_by_an_iam_endpoint() {
    let (url, verdicts) = verifying_opensearch(SigningService::OpenSearchServerless).await;
    let retriever = retriever_from_env(&url, "none");
    assert!(retriever.retrieve("shipping", Intent::Faq, 2).await.is_err(), "403 is an error");
    let seen = verdicts.lock().unwrap().clone();
    assert!(matches!(seen.as_slice(), [Err(why)] if why.contains("authorization")), "{seen:?}");
}

#[test]
fn amz_dates_parse_to_the_right_instant() {
    let t = parse_amz_date("20261203T091500Z").unwrap();
    assert_eq!(t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(), 1_796_289_300);
    assert!(parse_amz_date("2026-12-03T09:15:00Z").is_none());
}
