//! `GET /login` (the HTML form) and `POST /login` (JSON or form).

use std::net::IpAddr;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::body::{body_kind, read_body, BodyKind, Fields};
use super::error::{no_store, ApiError};
use super::page::{code_page, html_response, login_page as render, refusal_text, CodeStep};
use super::AppState;
use crate::auth::audit::Requester;
use crate::auth::input::{Password, Username};
use crate::auth::{AuthError, ChallengeError, Client, FormLogin, NewSession};
use crate::ops::metrics::LoginResult;

/// How long a login refused without hashing (503, 429) waits for its answer.
const REFUSAL_PACE: std::time::Duration = std::time::Duration::from_millis(10);

/// The login form; `?rd=` is carried through to the POST.
///
/// A browser already holding a one-factor session, sent here from a page
/// whose `two_factor` rule it does not meet, is asked only for the code
/// (step-up), or, without a factor, led to enrollment on `/account`.
pub async fn login_page(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let rd = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "rd")
        .map(|(_, v)| v.into_owned());
    if let Some(rd) = rd.as_deref() {
        if let Some(response) = second_factor_wanted(&req, &state, rd).await {
            return response;
        }
    }
    html_response(StatusCode::OK, render(rd.as_deref(), "", None))
}

/// The step-up page or the way to enrollment, for a valid one-factor
/// session that the rules at `rd` send back for a second factor.
async fn second_factor_wanted(
    req: &HttpRequest,
    state: &AppState,
    rd: &str,
) -> Option<HttpResponse> {
    let (token, _) = state.token(req)?;
    let identity = state.auth.check_token(token).await.ok()??;
    if identity.amr.has_otp() || !state.wants_second_factor(req, rd, &identity) {
        return None;
    }
    match state.auth.begin_step_up(&identity).await {
        Ok(Some(challenge)) => Some(html_response(
            StatusCode::OK,
            code_page(CodeStep::StepUp, challenge.expose(), Some(rd), None),
        )),
        Ok(None) => {
            let target = format!(
                "/account?rd={}",
                url::form_urlencoded::byte_serialize(rd.as_bytes()).collect::<String>()
            );
            Some(
                HttpResponse::SeeOther()
                    .insert_header((header::LOCATION, target))
                    .insert_header(no_store())
                    .finish(),
            )
        }
        Err(e) => {
            // The plain form then: signing in again works too.
            tracing::warn!(error = %e, "cannot begin a step-up");
            None
        }
    }
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
        Err(e) => error_result(e),
    }
}

/// How a refused login ended, for `latchkey_login_total`.
fn error_result(error: &ApiError) -> LoginResult {
    match error {
        ApiError::InvalidCredentials => LoginResult::InvalidCredentials,
        ApiError::MfaRequired => LoginResult::MfaRequired,
        ApiError::RateLimited { .. } => LoginResult::Banned,
        ApiError::Busy => LoginResult::Shed,
        ApiError::Internal => LoginResult::Error,
        // Refused for its input, before any password was looked at.
        _ => LoginResult::BadRequest,
    }
}

/// A browser's login: success redirects, failure shows the form again. A
/// user with a second factor gets the code page after the password; its
/// POST carries the challenge instead of the credentials.
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
    if let Ok(Some(challenge)) = fields.optional("challenge") {
        return code_answer(req, state, &fields, challenge, rd).await;
    }
    let username = fields
        .optional("username")
        .ok()
        .flatten()
        .unwrap_or_default();
    let outcome = match credentials(req, state, &fields) {
        Ok((username, password, client)) => {
            let ip = client.requester.ip;
            let outcome = state.auth.login_form(&username, password, client).await;
            log_outcome(&username, ip, &outcome);
            pace_refusal(outcome.as_ref().err()).await;
            outcome.map_err(ApiError::from)
        }
        Err(e) => Err(e),
    };
    match outcome {
        Ok(FormLogin::Session(session)) => (LoginResult::Ok, logged_in(req, state, rd, &session)),
        Ok(FormLogin::CodeNeeded(challenge)) => {
            let page = code_page(CodeStep::Login, challenge.expose(), rd, None);
            (
                LoginResult::MfaRequired,
                html_response(StatusCode::OK, page),
            )
        }
        Err(e) => (error_result(&e), form_error(rd, username, &e)),
    }
}

/// The code page's POST: a right code logs in, a wrong one shows the page
/// again with a new challenge, a dead challenge the login form.
async fn code_answer(
    req: &HttpRequest,
    state: &AppState,
    fields: &Fields<'_>,
    challenge: &str,
    rd: Option<&str>,
) -> (LoginResult, HttpResponse) {
    let code = fields.optional("totp").ok().flatten().unwrap_or_default();
    let answer = state
        .auth
        .answer_challenge(challenge, code.trim(), client(req, state))
        .await;
    match answer {
        Ok(session) => (LoginResult::Ok, logged_in(req, state, rd, &session)),
        Err(ChallengeError::WrongCode(next)) => {
            let message = "Incorrect code. Try the newest code from your app.";
            let page = code_page(CodeStep::Login, next.expose(), rd, Some(message));
            let response = html_response(StatusCode::UNAUTHORIZED, page);
            (LoginResult::InvalidCredentials, response)
        }
        Err(ChallengeError::Expired) => {
            let message = "This sign-in page has expired. Please sign in again.";
            let page = render(rd, "", Some(message));
            let response = html_response(StatusCode::UNAUTHORIZED, page);
            (LoginResult::InvalidCredentials, response)
        }
        Err(ChallengeError::Refused(e)) => {
            pace_refusal(Some(&e)).await;
            let e = ApiError::from(e);
            (error_result(&e), form_error(rd, "", &e))
        }
    }
}

/// The 303 to `rd` (when allowed) with the new session's cookie.
fn logged_in(
    req: &HttpRequest,
    state: &AppState,
    rd: Option<&str>,
    session: &NewSession,
) -> HttpResponse {
    let origin = state.request_origin(req);
    let target = state.hosts.redirect_target(rd, origin.as_ref());
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, target))
        .insert_header(no_store())
        .insert_header(set_cookie(state, session))
        .finish()
}

/// Parses the credentials (input limits first, before any hashing), then
/// asks `Auth` to log in.
async fn attempt(
    req: &HttpRequest,
    state: &AppState,
    fields: &Fields<'_>,
) -> Result<NewSession, ApiError> {
    let (username, password, client) = credentials(req, state, fields)?;
    // A TOTP code or a recovery code, for a user with a second factor.
    let one_time = fields
        .optional("totp")?
        .filter(|code| !code.is_empty())
        .map(str::to_owned);
    let ip = client.requester.ip;
    let outcome = state
        .auth
        .login(&username, password, one_time, client)
        .await;
    log_outcome(&username, ip, &outcome);
    pace_refusal(outcome.as_ref().err()).await;
    Ok(outcome?)
}

/// The username and password of a login, checked against the input limits.
fn credentials(
    req: &HttpRequest,
    state: &AppState,
    fields: &Fields<'_>,
) -> Result<(Username, Password, Client), ApiError> {
    let username = fields.required("username")?;
    let password = Password::parse(fields.required("password")?.to_owned())?;
    let username = Username::parse(username)?;
    Ok((username, password, client(req, state)))
}

/// Where a login comes from.
fn client(req: &HttpRequest, state: &AppState) -> Client {
    let address = state.client_address(req);
    Client {
        requester: Requester::new(address.ip, &super::extract::user_agent(req)),
        limited_address: address.limited,
    }
}

/// Logs how a login ended.
///
/// Only a login that succeeded names its user here: what was typed may be
/// a password typed into the wrong field. `Auth` logs a wrong password
/// itself, with the name only of an account that exists.
fn log_outcome<T>(username: &Username, ip: IpAddr, outcome: &Result<T, AuthError>) {
    match outcome {
        Ok(_) => tracing::info!(user = username.as_str(), %ip, "login"),
        Err(AuthError::InvalidCredentials) => {}
        Err(AuthError::MfaRequired) => {
            tracing::info!(user = username.as_str(), %ip, "login needs a one-time code")
        }
        // Shed logins come by the thousand in a flood: a log line each would
        // cost the CPU that shedding saves.
        Err(AuthError::Busy) => tracing::debug!(%ip, "login shed"),
        Err(e) => tracing::info!(%ip, reason = %e, "login refused"),
    }
}

/// Refused without hashing (pool full, or banned): answer only after a
/// short pause. It costs an async timer, no CPU and no hashing slot, and
/// paces a client that hammers /login to ~100 attempts a second per
/// connection, so a flood cannot take the worker from token checks.
async fn pace_refusal(error: Option<&AuthError>) {
    if matches!(error, Some(AuthError::Busy | AuthError::RateLimited { .. })) {
        tokio::time::sleep(REFUSAL_PACE).await;
    }
}

fn set_cookie(state: &AppState, session: &NewSession) -> (header::HeaderName, String) {
    (
        header::SET_COOKIE,
        state.cookie.set(session.token.expose(), session.max_age()),
    )
}

/// The form again, with a message that never says which field was wrong.
fn form_error(rd: Option<&str>, username: &str, error: &ApiError) -> HttpResponse {
    use actix_web::ResponseError;
    let message = refusal_text(
        error,
        "Incorrect username or password.",
        "Enter the one-time code from your authenticator app, or a recovery code.",
    );
    let mut response = html_response(error.status_code(), render(rd, username, Some(&message)));
    if let Some(secs) = error.retry_after() {
        if let Ok(value) = header::HeaderValue::from_str(&secs.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    response
}
