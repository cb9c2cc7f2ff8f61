//! The verifier against a JWKS served over HTTP on 127.0.0.1, as the authorizer meets it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::auth::guest::{GuestIssuer, GuestKey};
use crate::auth::jwks::{Jwks, JwksConfig};

const ISS: &str = "https://issuer.test/pool";
const AUD: &str = "client-1";

struct Key {
    enc: EncodingKey,
    jwk: Value,
    kid: String,
}

fn es256_key(kid: &str) -> Key {
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let enc = EncodingKey::from_ec_der(pair.to_pkcs8v1().unwrap().as_ref());
    let mut jwk = Jwk::from_encoding_key(&enc, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    Key { enc, jwk: serde_json::to_value(jwk).unwrap(), kid: kid.to_owned() }
}

/// A JWKS endpoint whose document can be swapped, counting fetches.
struct JwksServer {
    url: String,
    doc: Arc<Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
}

async fn jwks_server(keys: &[&Key]) -> JwksServer {
    let doc = Arc::new(Mutex::new(json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })));
    let fetches = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/.well-known/jwks.json", listener.local_addr().unwrap());
    let (d, f) = (doc.clone(), fetches.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = vec![0; 4096];
            let _ = s.read(&mut buf).await;
            f.fetch_add(1, Ordering::SeqCst);
            let body = d.lock().unwrap().to_string();
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        }
    });
    JwksServer { url, doc, fetches }
}

fn verifier(url: &str, guest_key: Option<GuestKey>, allow_guests: bool) -> Verifier {
    let mut cfg = JwksConfig::new(url);
    cfg.refetch_interval = Duration::from_secs(60);
    Verifier {
        oidc: Some(OidcIssuer { issuer: ISS.to_owned(), audiences: vec![AUD.to_owned()], jwks: Jwks::new(cfg) }),
        guest_key,
        allow_guests,
        leeway_secs: DEFAULT_LEEWAY_SECS,
    }
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn claims() -> Value {
    json!({ "iss": ISS, "aud": AUD, "sub": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "exp": now() + 600, "token_use": "id" })
}

fn sign(key: &Key, claims: &Value) -> String {
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&h, claims, &key.enc).unwrap()
}

async fn code(v: &Verifier, token: &str) -> &'static str {
    v.verify(Some(token)).await.unwrap_err().code()
}

#[tokio::test]
async fn an_id_token_from_the_issuer_proves_its_user() {
    let k = es256_key("k1");
    let srv = jwks_server(&[&k]).await;
    let p = verifier(&srv.url, None, false).verify(Some(&sign(&k, &claims()))).await.unwrap();
    assert_eq!(p.user_id, "u-0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0");
    assert!(!p.guest);
}

#[tokio::test]
async fn no_token_or_garbage_is_refused() {
    let k = es256_key("k1");
    let srv = jwks_server(&[&k]).await;
    let v = verifier(&srv.url, None, false);
    assert_eq!(v.verify(None).await.unwrap_err().code(), "missing");
    assert_eq!(v.verify(Some("  ")).await.unwrap_err().code(), "missing");
    assert_eq!(code(&v, "not.a.jwt").await, "malformed");
}

#[tokio::test]
async fn a_token_signed_by_another_key_under_a_known_kid_is_refused() {
    let k = es256_key("k1");
    let forger = Key { kid: "k1".to_owned(), ..es256_key("k1") };
    let srv = jwks_server(&[&k]).await;
    assert_eq!(code(&verifier(&srv.url, None, false), &sign(&forger, &claims())).await, "bad_signature");
}

#[tokio::test]
async fn alg_none_and_hmac_with_the_public_key_are_refused() {
    let k = es256_key("k1");
    let srv = jwks_server(&[&k]).await;
    let v = verifier(&srv.url, None, false);
    // `alg: none`, no signature.
    let b64 = |v: &Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let none = format!("{}.{}.", b64(&json!({"alg": "none", "kid": "k1"})), b64(&claims()));
    assert!(v.verify(Some(&none)).await.is_err());
    // HS256 keyed with the issuer's public key (the classic confusion): the key is bound to ES256.
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("k1".to_owned());
    let secret = k.jwk.to_string();
    let forged = jsonwebtoken::encode(&h, &claims(), &EncodingKey::from_secret(secret.as_bytes()).unwrap()).unwrap();
    assert_eq!(code(&v, &forged).await, "algorithm");
}

#[tokio::test]
async fn issuer_and_audience_must_match() {
    let k = es256_key("k1");
    let srv = jwks_server(&[&k]).await;
    let v = verifier(&srv.url, None, false);
    let mut c = claims();
    c["iss"] = json!("https://evil.test/pool");
    assert_eq!(code(&v, &sign(&k, &c)).await, "unknown_issuer");
    let mut c = claims();
    c["aud"] = json!("another-client");
    assert_eq!(code(&v, &sign(&k, &c)).await, "audience");
    c["aud"] = json!(["x", AUD]);
    assert!(v.verify(Some(&sign(&k, &c))).await.is_ok(), "one of several audiences is enough");
}

#[tokio::test]
async fn a_cognito_access_token_is_matched_on_client_id() {
    let k = es256_key("k1");
    let srv = jwks_server(&[&k]).await;
    let v = verifier(&srv.url, None, false);
    let mut c = claims();
    c.as_object_mut().unwrap().remove("aud");
    c["token_use"] = json!("access");
    c["client_id"] = json!(AUD);
    assert!(v.verify(Some(&sign(&k, &c))).await.is_ok());
    c["client_id"] = json!("another-client");
    assert_eq!(code(&v, &sign(&k, &c)).await, "audience");
    c["client_id"] = json!(AUD);
    c["token_use"] = json!("id");
    assert_eq!(code(&v, &sign(&k, &c)).await, "audience", "only access tokens go without aud");
}

#[tokio::test]
async fn expiry_and_not_before_allow_a_minute_of_clock_skew() {
    let k = es256_key("k1");
    let srv = jwks_server(&[&k]).await;
    let v = verifier(&srv.url, None, false);
    let mut c = claims();
    c["exp"] = json!(now() - 30);
    assert!(v.verify(Some(&sign(&k, &c))).await.is_ok(), "30 s past exp is within the leeway");
    c["exp"] = json!(now() - 120);
    assert_eq!(code(&v, &sign(&k, &c)).await, "expired");
    let mut c = claims();
    c["nbf"] = json!(now() + 600);
    assert_eq!(code(&v, &sign(&k, &c)).await, "not_yet_valid");
    c["nbf"] = json!(now() + 30);
    assert!(v.verify(Some(&sign(&k, &c))).await.is_ok());
    let mut c = claims();
    c.as_object_mut().unwrap().remove("exp");
    assert!(v.verify(Some(&sign(&k, &c))).await.is_err(), "exp is required");
}

#[tokio::test]
async fn a_rotated_key_is_fetched_once_and_unknown_kids_do_not_flood_the_issuer() {
    let k1 = es256_key("k1");
    let k2 = es256_key("k2");
    let srv = jwks_server(&[&k1]).await;
    let v = verifier(&srv.url, None, false);
    assert!(v.verify(Some(&sign(&k1, &claims()))).await.is_ok());
    assert_eq!(srv.fetches.load(Ordering::SeqCst), 1);
    assert!(v.verify(Some(&sign(&k1, &claims()))).await.is_ok());
    assert_eq!(srv.fetches.load(Ordering::SeqCst), 1, "cached per container");

    // The issuer rotates: the first token under the new kid refetches.
    *srv.doc.lock().unwrap() = json!({ "keys": [k1.jwk, k2.jwk] });
    assert!(v.verify(Some(&sign(&k2, &claims()))).await.is_ok());
    assert_eq!(srv.fetches.load(Ordering::SeqCst), 2);

    // Made-up kids within the minute are refused from the cache.
    for i in 0..5 {
        let fake = es256_key(&format!("fake{i}"));
        assert_eq!(code(&v, &sign(&fake, &claims())).await, "unknown_key");
    }
    assert_eq!(srv.fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn guest_tokens_are_accepted_only_when_guests_are_allowed() {
    let k = es256_key("k1");
    let srv = jwks_server(&[&k]).await;
    let key = GuestKey::random();
    let token = GuestIssuer::new(key.clone(), Duration::from_secs(900)).issue(now()).unwrap();
    assert!(token.user_id.as_str().starts_with("g-"));

    let p = verifier(&srv.url, Some(key.clone()), true).verify(Some(&token.token)).await.unwrap();
    assert_eq!(p.user_id, token.user_id);
    assert!(p.guest);

    let err = verifier(&srv.url, Some(key.clone()), false).verify(Some(&token.token)).await.unwrap_err();
    assert!(err.is_refusal(), "a genuine guest token is denied, not unauthorized: {err}");

    let other = GuestIssuer::new(GuestKey::random(), Duration::from_secs(900)).issue(now()).unwrap();
    let err = verifier(&srv.url, Some(key.clone()), false).verify(Some(&other.token)).await.unwrap_err();
    assert_eq!(err.code(), "bad_signature", "a forged guest token is unauthorized even when guests are off");

    let expired = GuestIssuer::new(key.clone(), Duration::from_secs(900)).issue(now() - 2000).unwrap();
    assert_eq!(code(&verifier(&srv.url, Some(key), true), &expired.token).await, "expired");
}

#[tokio::test]
async fn a_guest_issuer_token_signed_with_the_oidc_key_is_refused() {
    let k = es256_key("k1");
    let srv = jwks_server(&[&k]).await;
    let c = json!({ "iss": "mangaassist-guest", "aud": "mangaassist-chat", "sub": "g-1", "exp": now() + 60, "guest": true });
    assert_eq!(code(&verifier(&srv.url, Some(GuestKey::random()), true), &sign(&k, &c)).await, "algorithm");
}

#[test]
fn a_short_guest_secret_is_rejected() {
    assert!(GuestKey::new(vec![7u8; 31]).is_err());
    assert!(GuestKey::new(vec![7u8; 32]).is_ok());
}

#[tokio::test]
async fn an_attacker_chosen_kid_is_cut_short_in_the_error_that_is_logged() {
    let k = es256_key("k1");
    let srv = jwks_server(&[&k]).await;
    let long = es256_key(&"k".repeat(9_000));
    let err = verifier(&srv.url, None, true).verify(Some(&sign(&long, &claims()))).await.unwrap_err();
    assert_eq!(err.code(), "unknown_key");
    let logged = err.to_string();
    assert!(logged.len() < 200, "{} bytes logged", logged.len());
    assert!(logged.contains("9000 bytes"), "{logged}");
}
