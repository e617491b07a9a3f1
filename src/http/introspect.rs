//! `POST /introspect`: RFC 7662 token introspection.

use actix_web::http::header::ContentType;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

use super::body::{body_kind, read_body, Fields};
use super::error::{no_store, ApiError};
use super::extract::basic_credentials;
use super::AppState;
use crate::auth::Introspection;

/// The RFC 7662 answer for an active token.
#[derive(Serialize)]
struct Active<'a> {
    active: bool,
    sub: String,
    username: &'a str,
    /// The user's group names, sorted case-insensitively.
    groups: &'a [String],
    /// The factors the session's login proved: `["pwd"]` or `["pwd", "otp"]`.
    amr: Vec<&'static str>,
    token_type: &'static str,
    iat: i64,
    exp: i64,
}

/// The whole answer for any token that is not active.
const INACTIVE: &str = r#"{"active":false}"#;

/// 200 `{"active": true, …}` or `{"active": false}`; 401 for an unknown
/// client once clients exist; 400 without a `token` field.
pub async fn introspect(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let kind = body_kind(&req)?;
    let body = read_body(payload).await?;
    let fields = Fields::parse(kind, &body)?;
    let token = fields.required("token");
    // Client authentication is decided before a missing token is reported:
    // an unauthenticated caller gets 401 whatever its body says.
    let token_text = token.as_ref().ok().copied().unwrap_or_default();
    let outcome = state
        .auth
        .introspect(basic_credentials(&req), token_text)
        .await?;
    if let Introspection::ClientRejected = outcome {
        return Err(ApiError::ClientUnauthorized);
    }
    token?;
    if let Some(metrics) = &state.metrics {
        metrics.introspect(matches!(outcome, Introspection::Active(_)));
    }
    Ok(match outcome {
        Introspection::Active(identity) => {
            HttpResponse::Ok().insert_header(no_store()).json(Active {
                active: true,
                sub: identity.user_id.to_string(),
                username: &identity.username,
                groups: &identity.groups,
                amr: identity.amr.names(),
                token_type: "Bearer",
                iat: identity.issued_at,
                exp: identity.exp(),
            })
        }
        // RFC 7662 §2.2: nothing but `active` for an inactive token.
        _ => HttpResponse::Ok()
            .insert_header(no_store())
            .content_type(ContentType::json())
            .body(INACTIVE),
    })
}
