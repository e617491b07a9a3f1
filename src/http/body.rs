//! Request bodies: JSON or form fields, at most 64 KiB.

use std::borrow::Cow;
use std::future::poll_fn;
use std::pin::Pin;

use std::rc::Rc;

use std::future::{ready, Ready};

use actix_utils::future::Either;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header;
use actix_web::web::{Bytes, BytesMut, Payload};
use actix_web::HttpRequest;
use futures_core::future::LocalBoxFuture;
use futures_core::Stream;

use super::error::ApiError;

/// Largest request body accepted (SPEC: over 64 KiB gets 413).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The two body encodings the SPEC accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    Form,
}

/// Tells the encoding from `Content-Type`; no header means a form (as
/// `curl -d` sends), anything else not JSON or form is 415.
pub fn body_kind(req: &HttpRequest) -> Result<BodyKind, ApiError> {
    let Some(value) = req.headers().get(header::CONTENT_TYPE) else {
        return Ok(BodyKind::Form);
    };
    let essence = value
        .to_str()
        .map_err(|_| ApiError::UnsupportedMediaType)?
        .split(';')
        .next()
        .unwrap_or_default()
        .trim();
    // Compared in place: every introspection passes here.
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(BodyKind::Json)
    } else if essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        Ok(BodyKind::Form)
    } else {
        Err(ApiError::UnsupportedMediaType)
    }
}

/// Middleware: 413 for any request whose body is over [`MAX_BODY_BYTES`], on
/// every route, including those that never read a body.
///
/// A declared `Content-Length` is checked without reading anything. A
/// chunked body has no declared length, so it is read here (at most the
/// limit, rare in practice) and handed on to the handler from memory.
///
/// Written as a `Transform` rather than with `middleware::from_fn`: that one
/// boxes two futures per request (its own and the inner service's), and
/// every request, `/verify` above all, passes through here. Only the rare
/// chunked request pays for a box.
pub struct RejectOversized;

impl<S, B> Transform<S, ServiceRequest> for RejectOversized
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Transform = RejectOversizedService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RejectOversizedService {
            service: Rc::new(service),
        }))
    }
}

/// The service [`RejectOversized`] wraps around the app.
pub struct RejectOversizedService<S> {
    service: Rc<S>,
}

impl<S, B> Service<ServiceRequest> for RejectOversizedService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = Either<
        Ready<Result<ServiceResponse<B>, actix_web::Error>>,
        Either<S::Future, LocalBoxFuture<'static, Result<ServiceResponse<B>, actix_web::Error>>>,
    >;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        if declared_length(req.headers()).is_some_and(|len| len > MAX_BODY_BYTES as u64) {
            return Either::left(ready(Err(ApiError::PayloadTooLarge.into())));
        }
        if !req.headers().contains_key(header::TRANSFER_ENCODING) {
            return Either::right(Either::left(self.service.call(req)));
        }
        let service = Rc::clone(&self.service);
        Either::right(Either::right(Box::pin(async move {
            let req = buffer_chunked_body(req).await?;
            service.call(req).await
        })))
    }
}

/// Reads a chunked body into memory (413 past the limit) and puts it back.
async fn buffer_chunked_body(mut req: ServiceRequest) -> Result<ServiceRequest, actix_web::Error> {
    let payload = req.extract::<Payload>().await?;
    let body = match payload.to_bytes_limited(MAX_BODY_BYTES).await {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => {
            let message = "the request body could not be read".to_owned();
            return Err(ApiError::InvalidRequest(message).into());
        }
        Err(_) => return Err(ApiError::PayloadTooLarge.into()),
    };
    req.set_payload(actix_web::dev::Payload::from(body));
    Ok(req)
}

fn declared_length(headers: &header::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Reads the whole body, refusing more than [`MAX_BODY_BYTES`] with 413.
/// (A declared oversized length never gets here: [`RejectOversized`].)
///
/// A small body usually arrives as one chunk, which is handed back as is:
/// actix's own `to_bytes_limited` would copy it into a fresh 32 KiB buffer.
pub async fn read_body(mut payload: Payload) -> Result<Bytes, ApiError> {
    let Some(first) = next_chunk(&mut payload).await? else {
        return Ok(Bytes::new());
    };
    let mut body = BytesMut::new();
    let mut chunk = first;
    loop {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ApiError::PayloadTooLarge);
        }
        match next_chunk(&mut payload).await? {
            None if body.is_empty() => return Ok(chunk),
            None => {
                body.extend_from_slice(&chunk);
                return Ok(body.freeze());
            }
            Some(next) => {
                body.extend_from_slice(&chunk);
                chunk = next;
            }
        }
    }
}

async fn next_chunk(payload: &mut Payload) -> Result<Option<Bytes>, ApiError> {
    poll_fn(|cx| Pin::new(&mut *payload).poll_next(cx))
        .await
        .transpose()
        .map_err(|_| ApiError::InvalidRequest("the request body could not be read".into()))
}

/// The top-level string fields of a JSON object or a form.
#[derive(Debug, Default)]
pub struct Fields<'a> {
    /// In body order. Form fields borrow from the body unless they are escaped.
    values: FormFields<'a>,
}

impl<'a> Fields<'a> {
    /// Parses `body` as `kind`; a JSON body must be an object.
    pub fn parse(kind: BodyKind, body: &'a [u8]) -> Result<Fields<'a>, ApiError> {
        let values = match kind {
            BodyKind::Json => {
                let object: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_slice(body).map_err(|e| {
                        ApiError::InvalidRequest(format!("the body is not a JSON object: {e}"))
                    })?;
                object
                    .into_iter()
                    .map(|(key, value)| {
                        let text = match value {
                            serde_json::Value::String(s) => Some(Cow::Owned(s)),
                            _ => None,
                        };
                        (Cow::Owned(key), text)
                    })
                    .collect()
            }
            BodyKind::Form => match plain_form(body) {
                Some(fields) => fields,
                // form_urlencoded decodes invalid UTF-8 lossily.
                None => url::form_urlencoded::parse(body)
                    .map(|(key, value)| (key, Some(value)))
                    .collect(),
            },
        };
        Ok(Fields { values })
    }

    /// The field `name`, if present; 400 when it is present but not a string.
    /// A form field given twice counts the first time.
    pub fn optional(&self, name: &str) -> Result<Option<&str>, ApiError> {
        match self.values.iter().find(|(key, _)| key == name) {
            None => Ok(None),
            Some((_, Some(text))) => Ok(Some(text)),
            Some((_, None)) => Err(ApiError::InvalidRequest(format!(
                "`{name}` must be a string"
            ))),
        }
    }

    /// The field `name`; 400 when it is missing or not a string.
    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.optional(name)?
            .ok_or_else(|| ApiError::InvalidRequest(format!("the `{name}` field is required")))
    }
}

/// The fields of a form that needs no decoding (no `%`, no `+`, valid
/// UTF-8), borrowed straight from the body: what an introspecting proxy
/// sends (`token=<base64url>`). `None` for anything else, which
/// `form_urlencoded` decodes. Splits exactly as it does: on `&`, skipping
/// empty pairs, then at the first `=` (a pair without one has an empty value).
fn plain_form(body: &[u8]) -> Option<FormFields<'_>> {
    if body.iter().any(|&b| b == b'%' || b == b'+') {
        return None;
    }
    let text = std::str::from_utf8(body).ok()?;
    Some(
        text.split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (Cow::Borrowed(key), Some(Cow::Borrowed(value)))
            })
            .collect(),
    )
}

/// Field names and values as [`Fields`] holds them; `None` marks a JSON
/// field that is present but not a string.
type FormFields<'a> = Vec<(Cow<'a, str>, Option<Cow<'a, str>>)>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_form_fields_read_alike() {
        let json = Fields::parse(BodyKind::Json, br#"{"token":"abc","n":1}"#).unwrap();
        let form = Fields::parse(BodyKind::Form, b"token=abc&token=second&x=%20y").unwrap();
        assert_eq!(json.required("token").unwrap(), "abc");
        assert_eq!(form.required("token").unwrap(), "abc");
        assert_eq!(form.optional("x").unwrap(), Some(" y"));
        assert!(json.required("n").is_err());
        assert!(form.required("missing").is_err());
    }

    #[test]
    fn the_body_kind_is_the_content_type_essence_in_any_case() {
        use actix_web::test::TestRequest;
        let kind = |content_type: &str| {
            let req = TestRequest::default()
                .insert_header((header::CONTENT_TYPE, content_type))
                .to_http_request();
            body_kind(&req).ok()
        };
        assert_eq!(kind("application/json"), Some(BodyKind::Json));
        assert_eq!(
            kind(" Application/JSON ; charset=utf-8"),
            Some(BodyKind::Json)
        );
        assert_eq!(
            kind("APPLICATION/X-WWW-FORM-URLENCODED"),
            Some(BodyKind::Form)
        );
        assert_eq!(kind("text/plain"), None);
        assert_eq!(kind("application/jsonx"), None);
        assert_eq!(
            body_kind(&TestRequest::default().to_http_request()).ok(),
            Some(BodyKind::Form)
        );
    }

    #[test]
    fn a_plain_form_splits_exactly_as_form_urlencoded_does() {
        // Every body over a small alphabet up to 6 bytes long, plus some
        // longer ones: the fast path must agree with the decoder wherever it
        // answers at all.
        let alphabet = [b'a', b'=', b'&', b'b', 0xC3, 0xA9];
        let mut bodies: Vec<Vec<u8>> = vec![
            b"token=abc_-DEF123&token_type_hint=access_token".to_vec(),
            b"&&a==b&=c&d&".to_vec(),
            "x=\u{e9}t\u{e9}".as_bytes().to_vec(),
        ];
        for len in 0..=6u32 {
            for n in 0..alphabet.len().pow(len) {
                let mut body = Vec::new();
                let mut rest = n;
                for _ in 0..len {
                    body.push(alphabet[rest % alphabet.len()]);
                    rest /= alphabet.len();
                }
                bodies.push(body);
            }
        }
        for body in &bodies {
            let Some(fast) = plain_form(body) else {
                assert!(std::str::from_utf8(body).is_err(), "{body:?}");
                continue;
            };
            let decoded: FormFields<'_> = url::form_urlencoded::parse(body)
                .map(|(key, value)| (key, Some(value)))
                .collect();
            assert_eq!(fast, decoded, "{body:?}");
        }
        assert!(plain_form(b"a=b%20c").is_none());
        assert!(plain_form(b"a=b+c").is_none());
    }

    #[test]
    fn json_that_is_not_an_object_is_refused() {
        for body in [&b"[]"[..], b"\"x\"", b"{", b"", &[0xff, 0xfe]] {
            assert!(Fields::parse(BodyKind::Json, body).is_err());
        }
    }
}
