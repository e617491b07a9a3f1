//! The HTML login page: one self-contained document, no scripts, no
//! external assets, readable on a phone and in dark mode.

use std::sync::LazyLock;

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha256};

use super::error::ApiError;

const STYLE: &str = "\
:root{color-scheme:light dark;--bg:#f4f5f7;--card:#fff;--fg:#1d2125;--muted:#5e6670;--line:#c7ccd1;--accent:#2457c5;--err-bg:#fdecea;--err-fg:#8a1c12}
@media (prefers-color-scheme:dark){:root{--bg:#16181b;--card:#202327;--fg:#e8eaed;--muted:#a0a7b0;--line:#454b52;--accent:#7aa5ff;--err-bg:#3b1d1a;--err-fg:#ffb4a9}}
*{box-sizing:border-box}
body{margin:0;min-height:100vh;display:flex;align-items:center;justify-content:center;background:var(--bg);color:var(--fg);font:16px/1.5 system-ui,-apple-system,\"Segoe UI\",sans-serif;padding:1rem}
main{width:100%;max-width:22rem;background:var(--card);border:1px solid var(--line);border-radius:12px;padding:2rem 1.5rem}
h1{margin:0 0 1.5rem;font-size:1.4rem;font-weight:600;text-align:center;letter-spacing:.02em}
label{display:block;margin:1rem 0 .3rem;font-weight:500}
input{width:100%;padding:.65rem .75rem;font:inherit;color:inherit;background:transparent;border:1px solid var(--line);border-radius:8px}
input:focus{outline:3px solid var(--accent);outline-offset:1px;border-color:var(--accent)}
button{width:100%;margin-top:1.5rem;padding:.7rem;font:inherit;font-weight:600;color:#fff;background:var(--accent);border:0;border-radius:8px;cursor:pointer}
@media (prefers-color-scheme:dark){button{color:#10131a}}
button:focus-visible{outline:3px solid var(--fg);outline-offset:2px}
.error{margin:0 0 1rem;padding:.6rem .75rem;border-radius:8px;background:var(--err-bg);color:var(--err-fg)}
.note{margin:0 0 1rem;color:var(--muted)}
.done{margin:0 0 1rem;padding:.6rem .75rem;border-radius:8px;border:1px solid var(--line)}
h2{margin:1.75rem 0 .5rem;font-size:1.05rem;font-weight:600}
a{color:var(--accent)}
.qr{display:block;width:100%;max-width:14rem;height:auto;margin:0 auto 1rem;border-radius:8px}
code,.codes{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;overflow-wrap:anywhere}
.codes{columns:2;padding:0;list-style:none;font-size:1.05rem}
details{margin:1rem 0;color:var(--muted);font-size:.9rem}";

/// `Content-Security-Policy` of HTML pages: nothing but this page's own style.
static CSP: LazyLock<String> = LazyLock::new(|| {
    let hash = STANDARD.encode(Sha256::digest(STYLE.as_bytes()));
    format!(
        "default-src 'none'; style-src 'sha256-{hash}'; frame-ancestors 'none'; base-uri 'none'"
    )
});

/// A whole page: the shared head and style around `main`'s content.
pub fn document(title: &str, main: &str) -> String {
    format!(
        "<!doctype html>
<html lang=\"en\">
<head>
<meta charset=\"utf-8\">
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">
<title>{title} · latchkey</title>
<style>{STYLE}</style>
</head>
<body>
<main>
<h1>latchkey</h1>
{main}</main>
</body>
</html>
",
        title = escape(title),
    )
}

/// An error paragraph the form points at, or nothing.
pub fn error_paragraph(error: Option<&str>) -> String {
    error.map_or_else(String::new, |msg| {
        format!(
            "<p class=\"error\" role=\"alert\" id=\"form-error\">{}</p>\n",
            escape(msg)
        )
    })
}

/// `aria-describedby` for a form with an error.
fn described_by(error: Option<&str>) -> &'static str {
    if error.is_some() {
        " aria-describedby=\"form-error\""
    } else {
        ""
    }
}

/// A hidden field, or nothing without a value.
pub fn hidden(name: &str, value: Option<&str>) -> String {
    value.map_or_else(String::new, |value| {
        format!(
            "<input type=\"hidden\" name=\"{name}\" value=\"{}\">\n",
            escape(value)
        )
    })
}

/// The login form, with `rd` carried through and an optional error message.
pub fn login_page(rd: Option<&str>, username: &str, error: Option<&str>) -> String {
    let (autofocus_user, autofocus_password) = if username.is_empty() {
        (" autofocus", "")
    } else {
        ("", " autofocus")
    };
    let main = format!(
        "{error_html}<form method=\"post\" action=\"/login\"{described_by}>
{rd_html}<label for=\"username\">Username</label>
<input id=\"username\" name=\"username\" type=\"text\" autocomplete=\"username\" autocapitalize=\"none\" spellcheck=\"false\" required maxlength=\"64\" value=\"{username}\"{autofocus_user}>
<label for=\"password\">Password</label>
<input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required{autofocus_password}>
<button type=\"submit\">Sign in</button>
</form>
",
        error_html = error_paragraph(error),
        described_by = described_by(error),
        rd_html = hidden("rd", rd),
        username = escape(username),
    );
    document("Sign in", &main)
}

/// What the code page is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeStep {
    /// The second page of a login: the password was right.
    Login,
    /// A one-factor session asked for more by a `two_factor` rule.
    StepUp,
}

/// The page asking for a TOTP code or a recovery code, carrying the
/// challenge (and `rd`) to the POST.
pub fn code_page(step: CodeStep, challenge: &str, rd: Option<&str>, error: Option<&str>) -> String {
    let note = match step {
        CodeStep::Login => "Enter the 6-digit code from your authenticator app.",
        CodeStep::StepUp => {
            "This page needs two-step verification. Enter the 6-digit code from your authenticator app."
        }
    };
    let main = format!(
        "{error_html}<p class=\"note\" id=\"code-note\">{note}</p>
<form method=\"post\" action=\"/login\"{described_by}>
{challenge_html}{rd_html}<label for=\"totp\">Code</label>
<input id=\"totp\" name=\"totp\" type=\"text\" autocomplete=\"one-time-code\" autocapitalize=\"none\" spellcheck=\"false\" required maxlength=\"64\" aria-describedby=\"code-note\" autofocus>
<button type=\"submit\">Verify</button>
</form>
<details><summary>No phone at hand?</summary>Type one of your recovery codes instead; each works once.</details>
",
        error_html = error_paragraph(error),
        described_by = described_by(error),
        challenge_html = hidden("challenge", Some(challenge)),
        rd_html = hidden("rd", rd),
    );
    document("Two-step verification", &main)
}

/// What a refused form says, from the JSON error the same request would
/// get: `wrong` for wrong credentials (never which one was wrong), `no_code`
/// when a one-time code was missing.
pub fn refusal_text(error: &ApiError, wrong: &str, no_code: &str) -> String {
    match error {
        ApiError::InvalidCredentials => wrong.to_owned(),
        ApiError::MfaRequired => no_code.to_owned(),
        ApiError::RateLimited { retry_after } => format!(
            "Too many failed sign-in attempts. Try again in {} minute(s).",
            retry_after.div_ceil(60).max(1)
        ),
        ApiError::Busy => "The server is busy. Please try again in a moment.".to_owned(),
        // The description says what is wrong with the input (a missing field,
        // a password over 1024 bytes); it names no account.
        ApiError::InvalidRequest(description) => sentence(description),
        _ => "Something went wrong. Please try again.".to_owned(),
    }
}

/// `the x field` → `The x field.`
fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => format!("{}{}.", first.to_uppercase(), chars.as_str()),
        None => String::new(),
    }
}

/// An HTML response with the headers every page carries.
pub fn html_response(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP.as_str()))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        // Not `no-referrer`: under it browsers send `Origin: null` with the
        // form's own POST, which the login CSRF check must refuse. Other
        // origins still get no referrer at all.
        .insert_header((header::REFERRER_POLICY, "same-origin"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_page_carries_the_challenge_and_rd_escaped() {
        let page = code_page(CodeStep::StepUp, "abc", Some("/a\"b"), Some("<x>"));
        assert!(page.contains("name=\"challenge\" value=\"abc\""));
        assert!(page.contains("name=\"rd\" value=\"/a&quot;b\""));
        assert!(page.contains("&lt;x&gt;"));
        assert!(page.contains("autocomplete=\"one-time-code\""));
    }

    #[test]
    fn values_are_escaped_in_the_page() {
        let page = login_page(Some("/x\"><script>"), "<b>", Some("a & b"));
        assert!(page.contains("value=\"/x&quot;&gt;&lt;script&gt;\""));
        assert!(page.contains("value=\"&lt;b&gt;\""));
        assert!(page.contains("a &amp; b"));
        assert!(!page.contains("<script>"));
    }
}
