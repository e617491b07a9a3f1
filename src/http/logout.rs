//! `POST /logout` and `POST /logout?all=true`.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use super::error::{no_store, ApiError};
use super::AppState;

/// Revokes the request's token (or, with `all=true`, every session of its
/// user) and clears the cookie. Without `all`, always 204.
pub async fn logout(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let all = url::form_urlencoded::parse(req.query_string().as_bytes())
        .any(|(k, v)| k == "all" && (v == "true" || v == "1"));
    let token = state.token(&req);
    if let Some((_, source)) = &token {
        state.check_origin(&req, *source)?;
    }
    match token {
        Some((token, _)) if all => {
            state
                .auth
                .logout_everywhere(token, state.requester(&req))
                .await?;
        }
        None if all => return Err(ApiError::Unauthorized),
        Some((token, _)) => state.auth.logout(token, state.requester(&req)).await?,
        None => {}
    }
    Ok(HttpResponse::NoContent()
        .insert_header(no_store())
        .insert_header((header::SET_COOKIE, state.cookie.clear()))
        .finish())
}
