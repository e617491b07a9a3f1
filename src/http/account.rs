//! `GET /account` and its forms: a browser's way to the second factor,
//! with the same use cases (and the same proofs) as `/me/totp`, and no
//! JavaScript. Every answer is a page; `rd` rides along in every form, so
//! a user sent here by a `two_factor` rule can go back where they were.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};

use super::body::{body_kind, read_body, Fields};
use super::error::{no_store, ApiError};
use super::page::{document, error_paragraph, escape, hidden, html_response, refusal_text};
use super::{qr, AppState};
use crate::auth::input::Password;
use crate::auth::second_factor::Enrollment;
use crate::auth::{AuthError, Identity};

/// The account page: who is signed in, and the second factor's forms.
pub async fn account(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let rd = query_rd(&req);
    let identity = match state.identity(&req).await {
        Ok((identity, _)) => identity,
        Err(_) => return to_login(rd.as_deref()),
    };
    overview(&req, &state, &identity, rd.as_deref(), None).await
}

/// `POST /account/totp`: begins an enrollment (password, and a code when
/// a factor exists), and shows the QR code.
pub async fn begin(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    owner_change(req, payload, state, Change::Begin).await
}

/// `POST /account/totp/remove`: removes the factor (password and code).
pub async fn remove(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    owner_change(req, payload, state, Change::Remove).await
}

/// `POST /account/recovery-codes`: replaces the recovery codes (password
/// and code), and shows the new ones once.
pub async fn recovery_codes(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    owner_change(req, payload, state, Change::RecoveryCodes).await
}

/// The forms that need the password (and a code once a factor exists).
enum Change {
    Begin,
    Remove,
    RecoveryCodes,
}

/// Reads an owner's form, proves nothing itself (`Auth` checks the
/// password and code), makes `change`, and shows what follows it.
async fn owner_change(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    change: Change,
) -> HttpResponse {
    let form = match Form::read(&req, payload, &state).await {
        Ok(form) => form,
        Err(response) => return response,
    };
    let fields = form.fields();
    let rd = fields.rd();
    let refused = |e: ApiError| overview(&req, &state, &form.identity, rd, Some(Message::Error(e)));
    let (password, code) = match password_and_code(&fields) {
        Ok(proof) => proof,
        Err(e) => return refused(e).await,
    };
    let (auth, identity, requester) = (&state.auth, &form.identity, state.requester(&req));
    match change {
        Change::Begin => match auth
            .begin_enrollment(identity, password, code, &requester)
            .await
        {
            Ok(enrollment) => enrollment_page(&enrollment, rd, None),
            Err(e) => refused(e.into()).await,
        },
        Change::Remove => match auth
            .remove_second_factor(identity, password, code, &requester)
            .await
        {
            Ok(()) => {
                let done = Message::Done("Two-step verification is off.");
                overview(&req, &state, identity, rd, Some(done)).await
            }
            Err(e) => refused(e.into()).await,
        },
        Change::RecoveryCodes => match auth
            .replace_recovery_codes(identity, password, code, &requester)
            .await
        {
            Ok(codes) => codes_page(&req, &state, &codes, rd, "New recovery codes are ready."),
            Err(e) => refused(e.into()).await,
        },
    }
}

/// `POST /account/totp/confirm`: activates the factor with a code from the
/// app, and shows the recovery codes once.
pub async fn confirm(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let form = match Form::read(&req, payload, &state).await {
        Ok(form) => form,
        Err(response) => return response,
    };
    let fields = form.fields();
    let rd = fields.rd();
    let code = fields.text("code");
    let requester = state.requester(&req);
    let confirmed = state
        .auth
        .confirm_enrollment(&form.identity, code.trim(), &requester)
        .await;
    let error = match confirmed {
        Ok(codes) => {
            return codes_page(&req, &state, &codes, rd, "Two-step verification is on.");
        }
        // The same secret again: the app may simply have shown the next code.
        Err(AuthError::InvalidCredentials) => {
            match state.auth.pending_enrollment(&form.identity).await {
                Ok(Some(enrollment)) => {
                    let message = "That code did not match. Enter the code the app shows now.";
                    return enrollment_page(&enrollment, rd, Some(message));
                }
                Ok(None) => AuthError::NoEnrollment,
                Err(e) => e,
            }
        }
        Err(e) => e,
    };
    let message = Message::Error(error.into());
    overview(&req, &state, &form.identity, rd, Some(message)).await
}

/// A form POST from the signed-in owner, read whole.
struct Form {
    identity: Identity,
    body: web::Bytes,
}

impl Form {
    /// The owner and the body; the login page without a session, 403 for a
    /// request another site sent.
    async fn read(
        req: &HttpRequest,
        payload: web::Payload,
        state: &AppState,
    ) -> Result<Form, HttpResponse> {
        // The cookie alone authenticates these forms: another site must not
        // be able to send one (SameSite=Lax already keeps the cookie off a
        // cross-site POST; this holds without it).
        if let Err(e) = state.check_login_origin(req) {
            return Err(e.error_response());
        }
        let kind = body_kind(req).map_err(|e| e.error_response())?;
        if kind != super::body::BodyKind::Form {
            return Err(ApiError::InvalidRequest("a form body is expected".into()).error_response());
        }
        let body = read_body(payload).await.map_err(|e| e.error_response())?;
        match state.identity(req).await {
            Ok((identity, _)) => Ok(Form { identity, body }),
            Err(_) => Err(to_login(Some("/account"))),
        }
    }

    fn fields(&self) -> AccountFields<'_> {
        // A body that does not parse reads as empty: every form's fields
        // are then missing, which each handler reports.
        AccountFields(Fields::parse(super::body::BodyKind::Form, &self.body).ok())
    }
}

/// The fields of an account form.
struct AccountFields<'a>(Option<Fields<'a>>);

impl AccountFields<'_> {
    fn text(&self, name: &str) -> &str {
        self.0
            .as_ref()
            .and_then(|f| f.optional(name).ok().flatten())
            .unwrap_or_default()
    }

    fn rd(&self) -> Option<&str> {
        Some(self.text("rd")).filter(|rd| !rd.is_empty())
    }
}

/// The password and, when the account has a factor, the current code.
fn password_and_code(fields: &AccountFields<'_>) -> Result<(Password, Option<String>), ApiError> {
    let password = fields.text("password");
    if password.is_empty() {
        return Err(ApiError::InvalidRequest("the password is required".into()));
    }
    let password = Password::parse(password.to_owned())?;
    let code = Some(fields.text("code").trim())
        .filter(|code| !code.is_empty())
        .map(str::to_owned);
    Ok((password, code))
}

/// `?rd=` of a GET.
fn query_rd(req: &HttpRequest) -> Option<String> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "rd")
        .map(|(_, v)| v.into_owned())
        .filter(|rd| !rd.is_empty())
}

/// A 303 to the login page, coming back to the account page after it.
fn to_login(rd: Option<&str>) -> HttpResponse {
    let back = match rd {
        Some(rd) => format!("/account?rd={}", encode(rd)),
        None => "/account".to_owned(),
    };
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, format!("/login?rd={}", encode(&back))))
        .insert_header(no_store())
        .finish()
}

fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// What the page says above its forms.
enum Message {
    Done(&'static str),
    Error(ApiError),
}

/// What a refused form is told.
fn error_text(error: &ApiError) -> String {
    refusal_text(
        error,
        "Incorrect password or code.",
        "Enter a current code from your authenticator app (or a recovery code) as well.",
    )
}

/// The account page itself.
async fn overview(
    req: &HttpRequest,
    state: &AppState,
    identity: &Identity,
    rd: Option<&str>,
    message: Option<Message>,
) -> HttpResponse {
    let enrolled = match state.auth.has_second_factor(identity.user_id).await {
        Ok(enrolled) => enrolled,
        Err(e) => return page_error(ApiError::from(e)),
    };
    let (status, notice) = match &message {
        None => (StatusCode::OK, String::new()),
        Some(Message::Done(text)) => (
            StatusCode::OK,
            format!("<p class=\"done\" role=\"status\">{}</p>\n", escape(text)),
        ),
        Some(Message::Error(e)) => (e.status_code(), error_paragraph(Some(&error_text(e)))),
    };
    let rd_html = hidden("rd", rd);
    let forms = if enrolled {
        format!(
            "<p>Two-step verification is <strong>on</strong>: signing in asks for a code from your authenticator app.</p>
<h2>New recovery codes</h2>
<p class=\"note\">The old ones stop working.</p>
<form method=\"post\" action=\"/account/recovery-codes\">
{rd_html}{proof}<button type=\"submit\">Make new recovery codes</button>
</form>
<h2>Turn off</h2>
<form method=\"post\" action=\"/account/totp/remove\">
{rd_html}{proof_again}<button type=\"submit\">Turn off two-step verification</button>
</form>
",
            proof = proof_fields("codes"),
            proof_again = proof_fields("remove"),
        )
    } else {
        format!(
            "<p>Two-step verification is <strong>off</strong>. With it on, signing in asks for a code from an authenticator app as well as your password.</p>
<form method=\"post\" action=\"/account/totp\">
{rd_html}<label for=\"password\">Password</label>
<input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>
<button type=\"submit\">Set up two-step verification</button>
</form>
"
        )
    };
    let main = format!(
        "{notice}<p>Signed in as <strong id=\"account-user\">{user}</strong>.</p>
<h2>Two-step verification</h2>
{forms}{back}",
        user = escape(&identity.username),
        back = continue_link(req, state, rd, identity.amr.has_otp()),
    );
    html_response(status, document("Account", &main))
}

/// A password and a code field, with ids unique to the form `prefix`.
fn proof_fields(prefix: &str) -> String {
    format!(
        "<label for=\"{prefix}-password\">Password</label>
<input id=\"{prefix}-password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>
<label for=\"{prefix}-code\">Code from your app, or a recovery code</label>
<input id=\"{prefix}-code\" name=\"code\" type=\"text\" autocomplete=\"one-time-code\" autocapitalize=\"none\" spellcheck=\"false\" required maxlength=\"64\">
"
    )
}

/// A link back to `rd` (when a login would follow it), once the session
/// meets a `two_factor` rule or when none was waiting.
fn continue_link(req: &HttpRequest, state: &AppState, rd: Option<&str>, has_otp: bool) -> String {
    let origin = state.request_origin(req);
    match rd {
        Some(rd) if state.hosts.redirect_allowed(rd, origin.as_ref()) && has_otp => format!(
            "<p><a id=\"continue\" href=\"{}\">Continue</a></p>\n",
            escape(rd)
        ),
        _ => String::new(),
    }
}

/// The QR code, the secret and the URI, and the form confirming a code.
fn enrollment_page(enrollment: &Enrollment, rd: Option<&str>, error: Option<&str>) -> HttpResponse {
    let label = "QR code to scan with an authenticator app";
    let qr = qr::svg(&enrollment.otpauth_uri, label).unwrap_or_default();
    let main = format!(
        "{error_html}<p class=\"note\">Scan this code with your authenticator app, then enter the code it shows. Nothing changes until you do (within 10 minutes).</p>
{qr}
<details><summary>Cannot scan?</summary>Enter this key in the app: <code id=\"totp-secret\">{secret}</code><br>or open <code id=\"totp-uri\">{uri}</code></details>
<form method=\"post\" action=\"/account/totp/confirm\">
{rd_html}<label for=\"code\">Code from the app</label>
<input id=\"code\" name=\"code\" type=\"text\" inputmode=\"numeric\" autocomplete=\"one-time-code\" required maxlength=\"64\" autofocus>
<button type=\"submit\">Turn on</button>
</form>
",
        error_html = error_paragraph(error),
        secret = escape(&enrollment.secret),
        uri = escape(&enrollment.otpauth_uri),
        rd_html = hidden("rd", rd),
    );
    let status = if error.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    html_response(status, document("Set up two-step verification", &main))
}

/// The recovery codes, shown this once.
fn codes_page(
    req: &HttpRequest,
    state: &AppState,
    codes: &[String],
    rd: Option<&str>,
    done: &str,
) -> HttpResponse {
    let items: String = codes
        .iter()
        .map(|code| format!("<li>{}</li>", escape(code)))
        .collect();
    let origin = state.request_origin(req);
    let next = match rd {
        Some(rd) if state.hosts.redirect_allowed(rd, origin.as_ref()) => rd.to_owned(),
        _ => "/account".to_owned(),
    };
    let main = format!(
        "<p class=\"done\" role=\"status\">{done}</p>
<h2>Recovery codes</h2>
<p class=\"note\">Save these somewhere safe. Each signs you in once without your phone. They are shown only now.</p>
<ul class=\"codes\" id=\"recovery-codes\">{items}</ul>
<p><a id=\"continue\" href=\"{next}\">Continue</a></p>
",
        done = escape(done),
        next = escape(&next),
    );
    html_response(StatusCode::OK, document("Recovery codes", &main))
}

/// A page for a fault that left nothing to show.
fn page_error(error: ApiError) -> HttpResponse {
    let main = error_paragraph(Some(&error_text(&error)));
    html_response(error.status_code(), document("Account", &main))
}
