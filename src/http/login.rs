//! `GET /login` (the HTML form) and `POST /login` (JSON or form).

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::body::{body_kind, read_body, BodyKind, Fields};
use super::error::{no_store, ApiError};
use super::page::{html_response, login_page as render};
use super::AppState;
use crate::auth::audit::Requester;
use crate::auth::input::{Password, Username};
use crate::auth::{AuthError, Client, NewSession};
use crate::ops::metrics::LoginResult;

/// How long a login refused without hashing (503, 429) waits for its answer.
const REFUSAL_PACE: std::time::Duration = std::time::Duration::from_millis(10);

/// The login form; `?rd=` is carried through to the POST.
pub async fn login_page(req: HttpRequest) -> HttpResponse {
    let rd = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "rd")
        .map(|(_, v)| v.into_owned());
    html_response(StatusCode::OK, render(rd.as_deref(), "", None))
}

/// Logs in: JSON requests get the token as JSON, form requests a 303 to `rd`;
/// both get the session cookie.
pub async fn login(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (result, response) = answer(&req, payload, &state).await;
    if let Some(metrics) = &state.metrics {
        metrics.login(result);
    }
    response
}

/// The answer to a login, and how it ended for the metrics.
async fn answer(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> (LoginResult, Result<HttpResponse, ApiError>) {
    let body = match body_kind(req) {
        Ok(kind) => read_body(payload).await.map(|body| (kind, body)),
        Err(e) => Err(e),
    };
    let (kind, body) = match body {
        Ok(read) => read,
        Err(e) => return (LoginResult::BadRequest, Err(e)),
    };
    match kind {
        BodyKind::Json => {
            let session = match Fields::parse(kind, &body) {
                Ok(fields) => attempt(req, state, &fields).await,
                Err(e) => Err(e),
            };
            let result = login_result(&session);
            (result, session.map(|session| json_answer(state, &session)))
        }
        BodyKind::Form => {
            // Only a form can be sent across sites without CORS, so only a
            // form is checked; its refusal is JSON, as nothing was logged in.
            if let Err(e) = state.check_login_origin(req) {
                return (LoginResult::BadRequest, Err(e));
            }
            let (result, response) = form_login(req, state, &body).await;
            (result, Ok(response))
        }
    }
}

/// The JSON answer to a successful login.
fn json_answer(state: &AppState, session: &NewSession) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(no_store())
        .insert_header(set_cookie(state, session))
        .json(json!({
            "access_token": session.token.expose(),
            "token_type": "Bearer",
            "expires_in": session.expires_in(),
            "expires_at": session.expires_at,
            "max_expires_at": session.max_expires_at,
        }))
}

/// How a login ended, for `latchkey_login_total`.
fn login_result(outcome: &Result<NewSession, ApiError>) -> LoginResult {
    match outcome {
        Ok(_) => LoginResult::Ok,
        Err(ApiError::InvalidCredentials) => LoginResult::InvalidCredentials,
        Err(ApiError::MfaRequired) => LoginResult::MfaRequired,
        Err(ApiError::RateLimited { .. }) => LoginResult::Banned,
        Err(ApiError::Busy) => LoginResult::Shed,
        Err(ApiError::Internal) => LoginResult::Error,
        // Refused for its input, before any password was looked at.
        Err(_) => LoginResult::BadRequest,
    }
}

/// A browser's login: success redirects, failure shows the form again.
async fn form_login(
    req: &HttpRequest,
    state: &AppState,
    body: &[u8],
) -> (LoginResult, HttpResponse) {
    let fields = match Fields::parse(BodyKind::Form, body) {
        Ok(fields) => fields,
        Err(e) => return (LoginResult::BadRequest, form_error(None, "", &e)),
    };
    let rd = fields.optional("rd").ok().flatten();
    let username = fields
        .optional("username")
        .ok()
        .flatten()
        .unwrap_or_default();
    let outcome = attempt(req, state, &fields).await;
    let response = match &outcome {
        Ok(session) => {
            let origin = state.request_origin(req);
            let target = state.hosts.redirect_target(rd, origin.as_ref());
            HttpResponse::SeeOther()
                .insert_header((header::LOCATION, target))
                .insert_header(no_store())
                .insert_header(set_cookie(state, session))
                .finish()
        }
        Err(e) => form_error(rd, username, e),
    };
    (login_result(&outcome), response)
}

/// Parses the credentials (input limits first, before any hashing), then
/// asks `Auth` to log in.
async fn attempt(
    req: &HttpRequest,
    state: &AppState,
    fields: &Fields<'_>,
) -> Result<NewSession, ApiError> {
    let username = fields.required("username")?;
    let password = Password::parse(fields.required("password")?.to_owned())?;
    let username = Username::parse(username)?;
    let address = state.client_address(req);
    let client = Client {
        requester: Requester::new(address.ip, &super::extract::user_agent(req)),
        limited_address: address.limited,
    };
    // A TOTP code or a recovery code, for a user with a second factor.
    let one_time = fields
        .optional("totp")?
        .filter(|code| !code.is_empty())
        .map(str::to_owned);
    let outcome = state
        .auth
        .login(&username, password, one_time, client)
        .await;
    // Only a login that succeeded names its user here: what was typed may be
    // a password typed into the wrong field. `Auth` logs a wrong password
    // itself, with the name only of an account that exists.
    match &outcome {
        Ok(_) => tracing::info!(user = username.as_str(), ip = %address.ip, "login"),
        Err(AuthError::InvalidCredentials) => {}
        Err(AuthError::MfaRequired) => {
            tracing::info!(user = username.as_str(), ip = %address.ip, "login needs a one-time code")
        }
        // Shed logins come by the thousand in a flood: a log line each would
        // cost the CPU that shedding saves.
        Err(AuthError::Busy) => tracing::debug!(ip = %address.ip, "login shed"),
        Err(e) => tracing::info!(ip = %address.ip, reason = %e, "login refused"),
    }
    if matches!(
        outcome,
        Err(AuthError::Busy | AuthError::RateLimited { .. })
    ) {
        // Refused without hashing (pool full, or banned): answer only after a
        // short pause. It costs an async timer, no CPU and no hashing slot,
        // and paces a client that hammers /login to ~100 attempts a second
        // per connection, so a flood cannot take the worker from token checks.
        tokio::time::sleep(REFUSAL_PACE).await;
    }
    Ok(outcome?)
}

fn set_cookie(state: &AppState, session: &NewSession) -> (header::HeaderName, String) {
    (
        header::SET_COOKIE,
        state.cookie.set(session.token.expose(), session.max_age()),
    )
}

/// `the x field` → `The x field.`
fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => format!("{}{}.", first.to_uppercase(), chars.as_str()),
        None => String::new(),
    }
}

/// The form again, with a message that never says which field was wrong.
fn form_error(rd: Option<&str>, username: &str, error: &ApiError) -> HttpResponse {
    use actix_web::ResponseError;
    let message = match error {
        ApiError::InvalidCredentials => "Incorrect username or password.".to_owned(),
        ApiError::MfaRequired => {
            "Enter the one-time code from your authenticator app, or a recovery code.".to_owned()
        }
        ApiError::RateLimited { retry_after } => format!(
            "Too many failed sign-in attempts. Try again in {} minute(s).",
            retry_after.div_ceil(60).max(1)
        ),
        ApiError::Busy => "The server is busy. Please try again in a moment.".to_owned(),
        // The description says what is wrong with the input (a missing field,
        // a password over 1024 bytes); it names no account.
        ApiError::InvalidRequest(description) => sentence(description),
        _ => "Something went wrong. Please try again.".to_owned(),
    };
    let mut response = html_response(error.status_code(), render(rd, username, Some(&message)));
    if let Some(secs) = error.retry_after() {
        if let Ok(value) = header::HeaderValue::from_str(&secs.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    response
}
