//! The SPEC's error responses: `{"error": "<code>", "error_description": "<text>"}`.
//!
//! Every error leaves the server through here, actix's own rejections
//! included (see [`json_errors`]), so clients never see a plain-text error.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{HttpResponse, ResponseError};

use crate::auth::input::InputError;
use crate::auth::AuthError;

/// Seconds a client should wait after a 503 before trying again.
const BUSY_RETRY_AFTER_SECS: u64 = 1;

/// An error answer of the HTTP API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("invalid username or password")]
    InvalidCredentials,
    #[error("this account needs a one-time code: send it in \"totp\" with the password")]
    MfaRequired,
    #[error("a valid session token is required")]
    Unauthorized,
    #[error("valid client credentials are required")]
    ClientUnauthorized,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("not found")]
    NotFound,
    #[error("the request body is larger than 64 KiB")]
    PayloadTooLarge,
    #[error("the body must be application/json or application/x-www-form-urlencoded")]
    UnsupportedMediaType,
    #[error("too many login attempts; try again in {retry_after} seconds")]
    RateLimited { retry_after: u64 },
    #[error("the server is busy; try again shortly")]
    Busy,
    #[error("internal error")]
    Internal,
}

impl ApiError {
    /// The SPEC's machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::InvalidCredentials => "invalid_credentials",
            ApiError::MfaRequired => "mfa_required",
            ApiError::Unauthorized | ApiError::ClientUnauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound => "not_found",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::RateLimited { .. } => "too_many_requests",
            ApiError::Busy => "service_unavailable",
            ApiError::Internal => "internal_error",
        }
    }

    /// `Retry-After`, in seconds, for the errors that carry one.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::RateLimited { retry_after } => Some((*retry_after).max(1)),
            ApiError::Busy => Some(BUSY_RETRY_AFTER_SECS),
            _ => None,
        }
    }
}

impl From<InputError> for ApiError {
    fn from(e: InputError) -> Self {
        ApiError::InvalidRequest(e.to_string())
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::InvalidCredentials
            | AuthError::CredentialsChanged
            | AuthError::ReplayedCode => ApiError::InvalidCredentials,
            AuthError::MfaRequired => ApiError::MfaRequired,
            e @ (AuthError::NoEnrollment | AuthError::NoSecondFactor) => {
                ApiError::InvalidRequest(e.to_string())
            }
            AuthError::Unauthorized => ApiError::Unauthorized,
            AuthError::RateLimited { retry_after } => ApiError::RateLimited { retry_after },
            AuthError::Busy => ApiError::Busy,
            fault => {
                // The one place a fault is logged; the client gets a generic 500.
                // Store and hash errors carry no secrets (SQL parameters are
                // never part of rusqlite's messages).
                tracing::error!(error = %fault, "request failed");
                ApiError::Internal
            }
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidCredentials
            | ApiError::MfaRequired
            | ApiError::Unauthorized
            | ApiError::ClientUnauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if let Some(secs) = self.retry_after() {
            response.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        match self {
            ApiError::Unauthorized => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            ApiError::ClientUnauthorized => {
                response.insert_header((header::WWW_AUTHENTICATE, "Basic realm=\"latchkey\""));
            }
            _ => {}
        }
        response
            .insert_header(no_store())
            .json(error_body(self.code(), &self.to_string()))
    }
}

/// The SPEC's JSON error body.
pub fn error_body(code: &str, description: &str) -> serde_json::Value {
    serde_json::json!({ "error": code, "error_description": description })
}

/// `Cache-Control: no-store`, for every answer that depends on a credential.
pub fn no_store() -> (header::HeaderName, HeaderValue) {
    (header::CACHE_CONTROL, HeaderValue::from_static("no-store"))
}

/// Middleware hook: gives actix's own error responses (unknown route, wrong
/// method, undecodable path, …) the SPEC's JSON shape. Responses that are
/// already JSON or HTML are left alone.
pub fn json_errors<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let shaped = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json") || ct.starts_with("text/html"));
    if shaped {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let (code, description) = match status {
        StatusCode::NOT_FOUND => ("not_found", "no such endpoint"),
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method_not_allowed", "method not allowed on this endpoint")
        }
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload_too_large",
            "the request body is larger than 64 KiB",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ("unsupported_media_type", "unsupported content type")
        }
        StatusCode::UNAUTHORIZED => ("unauthorized", "a valid session token is required"),
        StatusCode::FORBIDDEN => ("forbidden", "forbidden"),
        StatusCode::TOO_MANY_REQUESTS => ("too_many_requests", "too many requests"),
        StatusCode::SERVICE_UNAVAILABLE => ("service_unavailable", "the server is busy"),
        s if s.is_client_error() => ("invalid_request", "the request is not valid"),
        _ => ("internal_error", "internal error"),
    };
    let (req, res) = res.into_parts();
    let mut replaced = HttpResponse::build(status);
    for (name, value) in res.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            replaced.append_header((name.clone(), value.clone()));
        }
    }
    // Like every error the handlers give: an answer about a request is not
    // for a shared cache to keep and hand to the next one.
    if !res.headers().contains_key(header::CACHE_CONTROL) {
        replaced.insert_header(no_store());
    }
    let replaced: HttpResponse<BoxBody> = replaced.json(error_body(code, description));
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(req, replaced).map_into_right_body(),
    ))
}
