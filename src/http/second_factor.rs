//! `POST /me/totp`, `POST /me/totp/confirm`, `DELETE /me/totp` and
//! `POST /me/recovery-codes`: the token's own user manages their second
//! factor. Bodies are JSON or forms, like `/login`'s.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::body::{body_kind, read_body, BodyKind, Fields};
use super::error::{no_store, ApiError};
use super::AppState;
use crate::auth::input::Password;
use crate::auth::Identity;

/// The request's identity (401 without one; 403 for a cross-site cookie
/// request) and its body's fields.
async fn owner_request(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<(Identity, actix_web::web::Bytes, BodyKind), ApiError> {
    let kind = body_kind(req)?;
    let body = read_body(payload).await?;
    let (identity, source) = state.identity(req).await?;
    state.check_origin(req, source)?;
    Ok((identity, body, kind))
}

/// The password and, when the account has a factor, the current code.
fn password_and_code(fields: &Fields<'_>) -> Result<(Password, Option<String>), ApiError> {
    let password = Password::parse(fields.required("password")?.to_owned())?;
    let code = fields.optional("code")?.map(str::to_owned);
    Ok((password, code))
}

/// Begins an enrollment: 200 `{"secret", "otpauth_uri"}`; nothing is
/// active until confirmed.
pub async fn begin(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (identity, body, kind) = owner_request(&req, payload, &state).await?;
    let fields = Fields::parse(kind, &body)?;
    let (password, code) = password_and_code(&fields)?;
    let requester = state.requester(&req);
    let enrollment = state
        .auth
        .begin_enrollment(&identity, password, code, &requester)
        .await?;
    Ok(HttpResponse::Ok().insert_header(no_store()).json(json!({
        "secret": enrollment.secret,
        "otpauth_uri": enrollment.otpauth_uri,
    })))
}

/// Confirms the enrollment with a code: 200 `{"recovery_codes": [10]}`.
pub async fn confirm(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (identity, body, kind) = owner_request(&req, payload, &state).await?;
    let fields = Fields::parse(kind, &body)?;
    let code = fields.required("code")?;
    let requester = state.requester(&req);
    let codes = state
        .auth
        .confirm_enrollment(&identity, code, &requester)
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header(no_store())
        .json(json!({ "recovery_codes": codes })))
}

/// Removes the factor: 204.
pub async fn remove(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (identity, body, kind) = owner_request(&req, payload, &state).await?;
    let fields = Fields::parse(kind, &body)?;
    let (password, code) = password_and_code(&fields)?;
    let requester = state.requester(&req);
    state
        .auth
        .remove_second_factor(&identity, password, code, &requester)
        .await?;
    Ok(HttpResponse::NoContent().insert_header(no_store()).finish())
}

/// Replaces the recovery codes: 200 `{"recovery_codes": [10]}`.
pub async fn recovery_codes(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (identity, body, kind) = owner_request(&req, payload, &state).await?;
    let fields = Fields::parse(kind, &body)?;
    let (password, code) = password_and_code(&fields)?;
    let requester = state.requester(&req);
    let codes = state
        .auth
        .replace_recovery_codes(&identity, password, code, &requester)
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header(no_store())
        .json(json!({ "recovery_codes": codes })))
}
