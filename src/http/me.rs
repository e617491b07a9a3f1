//! `GET /me`, `GET /sessions` and `DELETE /sessions/{id}`: the token's own user.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::error::{no_store, ApiError};
use super::extract::TokenSource;
use super::AppState;

/// The user behind the token and the session's expiry.
pub async fn me(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (identity, _) = state.identity(&req).await?;
    let totp = state.auth.has_second_factor(identity.user_id).await?;
    Ok(HttpResponse::Ok().insert_header(no_store()).json(json!({
        "id": identity.user_id,
        "username": identity.username,
        "email": identity.email,
        "display_name": identity.display_name,
        "created_at": identity.user_created_at,
        "groups": identity.groups,
        "totp": totp,
        "session": {
            "expires_at": identity.expires_at,
            "max_expires_at": identity.max_expires_at,
            "amr": identity.amr.names(),
        },
    })))
}

/// The user's valid sessions, newest first, marking the one making the request.
pub async fn sessions(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (identity, _) = state.identity(&req).await?;
    let sessions: Vec<_> = state
        .auth
        .sessions_of(identity.user_id)
        .await?
        .into_iter()
        .map(|s| {
            json!({
                "id": s.id,
                "created_at": s.created_at,
                "expires_at": s.expires_at,
                "max_expires_at": s.max_expires_at,
                "ip": s.ip,
                "user_agent": s.user_agent,
                "current": s.id == identity.session_id,
            })
        })
        .collect();
    Ok(HttpResponse::Ok()
        .insert_header(no_store())
        .json(json!({ "sessions": sessions })))
}

/// Revokes one of the user's own sessions: 204, or 404 when it is not theirs.
pub async fn delete_session(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (identity, source) = state.identity(&req).await?;
    state.check_origin(&req, source)?;
    let id: i64 = req
        .match_info()
        .get("id")
        .and_then(|id| id.parse().ok())
        .ok_or(ApiError::NotFound)?;
    if state
        .auth
        .revoke_session(identity.user_id, id, state.requester(&req))
        .await?
    {
        let mut response = HttpResponse::NoContent();
        response.insert_header(no_store());
        // A browser that ended its own session drops the dead cookie, as
        // after /logout. A Bearer caller's cookie (if any) may be another
        // session's, so it is left alone.
        if id == identity.session_id && source == TokenSource::Cookie {
            response.insert_header((header::SET_COOKIE, state.cookie.clear()));
        }
        Ok(response.finish())
    } else {
        Err(ApiError::NotFound)
    }
}
