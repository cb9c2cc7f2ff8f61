//! One `$connect` REQUEST authorizer event in, an IAM policy (or `Unauthorized`) out.
//!
//! The contract with the chat function: on success the response is
//! `{"principalId": "<user id>", "policyDocument": {Allow execute-api:Invoke on the methodArn},
//! "context": {"user_id": "<user id>", "guest": "true"|"false"}}`, and API Gateway hands `principalId` and the
//! context fields to the chat function as `requestContext.authorizer.{principalId,user_id,guest}` on
//! `$connect` and on every later event of the connection. A missing or invalid token is the Lambda error
//! `Unauthorized` (the handshake gets 401); a genuine token this deployment refuses (a guest when guests are
//! off) is a Deny policy (403); an issuer whose keys cannot be fetched is any other error (500). Refused
//! connections never reach the chat function.

use aws_lambda_events::apigw::ApiGatewayCustomAuthorizerRequestTypeRequest;
use lambda_runtime::LambdaEvent;
use mangaassist_adapters::auth::verify::Verifier;
use mangaassist_adapters::auth::{AuthError, Principal};
use serde::Serialize;

/// The exact error message API Gateway turns into `401 Unauthorized`.
pub const UNAUTHORIZED: &str = "Unauthorized";

/// What the chat function receives in `requestContext.authorizer` besides `principalId`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuthContext {
    pub user_id: String,
    /// `"true"` or `"false"`: API Gateway passes context values as strings.
    pub guest: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Statement {
    pub action: String,
    pub effect: &'static str,
    pub resource: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PolicyDocument {
    pub version: &'static str,
    pub statement: Vec<Statement>,
}

/// The IAM-policy response of a REQUEST authorizer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizerResponse {
    pub principal_id: String,
    pub policy_document: PolicyDocument,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<AuthContext>,
}

fn policy(
    principal_id: String,
    effect: &'static str,
    method_arn: &str,
    context: Option<AuthContext>,
) -> AuthorizerResponse {
    AuthorizerResponse {
        principal_id,
        policy_document: PolicyDocument {
            version: "2012-10-17",
            statement: vec![Statement {
                action: "execute-api:Invoke".to_owned(),
                effect,
                resource: method_arn.to_owned(),
            }],
        },
        context,
    }
}

/// Allow, carrying the user id to the chat function.
pub fn allow(p: &Principal, method_arn: &str) -> AuthorizerResponse {
    let ctx = AuthContext { user_id: p.user_id.to_string(), guest: p.guest.to_string() };
    policy(p.user_id.to_string(), "Allow", method_arn, Some(ctx))
}

/// Deny: the token is genuine but refused here.
pub fn deny(method_arn: &str) -> AuthorizerResponse {
    policy("refused".to_owned(), "Deny", method_arn, None)
}

/// Decides one `$connect`.
pub async fn handle(
    verifier: &Verifier,
    event: LambdaEvent<ApiGatewayCustomAuthorizerRequestTypeRequest>,
) -> Result<AuthorizerResponse, lambda_runtime::Error> {
    let (ev, ctx) = event.into_parts();
    let method_arn = ev.method_arn.as_deref().unwrap_or_default();
    let token = ev.query_string_parameters.first("token");
    match verifier.verify(token).await {
        Ok(p) => {
            tracing::info!(request_id = %ctx.request_id, user_id = %p.user_id, guest = p.guest, "allowed");
            Ok(allow(&p, method_arn))
        }
        Err(e) if e.is_refusal() => {
            tracing::info!(request_id = %ctx.request_id, code = e.code(), "denied: {e}");
            Ok(deny(method_arn))
        }
        Err(e) if e.is_server_fault() => {
            tracing::error!(request_id = %ctx.request_id, code = e.code(), "cannot decide: {e}");
            Err(Box::new(e))
        }
        Err(e) => {
            tracing::info!(request_id = %ctx.request_id, code = e.code(), "unauthorized: {e}");
            Err(unauthorized(e))
        }
    }
}

fn unauthorized(_why: AuthError) -> lambda_runtime::Error {
    UNAUTHORIZED.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mangaassist_adapters::auth::guest::{GuestIssuer, GuestKey};
    use std::time::Duration;

    fn event(token: Option<&str>) -> LambdaEvent<ApiGatewayCustomAuthorizerRequestTypeRequest> {
        let mut v: serde_json::Value =
            serde_json::from_str(include_str!("../../../events/authorizer-connect.json")).unwrap();
        match token {
            Some(t) => v["queryStringParameters"]["token"] = serde_json::json!(t),
            None => v["queryStringParameters"] = serde_json::Value::Null,
        }
        LambdaEvent::new(serde_json::from_value(v).unwrap(), lambda_runtime::Context::default())
    }

    fn verifier(key: &GuestKey, allow_guests: bool) -> Verifier {
        Verifier { oidc: None, guest_key: Some(key.clone()), allow_guests, leeway_secs: 60 }
    }

    const ARN: &str = "arn:aws:execute-api:ap-northeast-1:123456789012:abcdef123/prod/$connect";

    #[tokio::test]
    async fn the_sample_events_unsigned_token_and_a_missing_one_are_unauthorized() {
        let key = GuestKey::random();
        let err = handle(&verifier(&key, true), event(None)).await.unwrap_err();
        assert_eq!(err.to_string(), UNAUTHORIZED);
        let sample = handle(&verifier(&key, true), event(Some("x"))).await.unwrap_err();
        assert_eq!(sample.to_string(), UNAUTHORIZED);
    }

    #[tokio::test]
    async fn a_guest_is_allowed_with_its_id_in_the_context_or_denied_when_guests_are_off() {
        let key = GuestKey::random();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let t = GuestIssuer::new(key.clone(), Duration::from_secs(900)).issue(now).unwrap();
        let resp = handle(&verifier(&key, true), event(Some(&t.token))).await.unwrap();
        let json = serde_json::to_value(&resp).unwrap();
        assert_eq!(json["principalId"], t.user_id.as_str());
        assert_eq!(json["context"], serde_json::json!({ "user_id": t.user_id.as_str(), "guest": "true" }));
        assert_eq!(
            json["policyDocument"],
            serde_json::json!({ "Version": "2012-10-17", "Statement": [
                { "Action": "execute-api:Invoke", "Effect": "Allow", "Resource": ARN }
            ] })
        );
        let denied = handle(&verifier(&key, false), event(Some(&t.token))).await.unwrap();
        assert_eq!(denied.policy_document.statement[0].effect, "Deny");
        assert!(denied.context.is_none());
    }
}
