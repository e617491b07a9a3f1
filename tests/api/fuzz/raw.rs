//! The fuzzer's requests and answers as they are on the wire: a request is
//! sent with reqwest or, for what reqwest will not send, as raw bytes with
//! odd framing; the answer is read back either way; and both print exactly
//! enough to rebuild them when a check fails.

use std::fmt::Write as _;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use reqwest::Method;

use super::MAX_BODY;
use crate::helpers::{chunked_body, RawResponse, TestApp};

/// Longer than anything the server should take; past it the server is hung.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// How a raw request delimits its body.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Framing {
    /// `Content-Length` of the body.
    Exact,
    /// No length at all: what follows the head is not a body.
    Unframed,
    /// `Content-Length` of half the body.
    Short,
    /// The right length with leading zeros.
    Padded,
    /// The right length, twice.
    Doubled,
    /// Ten gigabytes declared, a few bytes sent: refused before reading.
    Huge,
    /// Well-formed chunks of random sizes.
    Chunked,
    /// A chunk size that is not one.
    BadChunk,
}

/// Raw-only details: the things reqwest will not do.
pub(super) struct Raw {
    pub(super) version: &'static str,
    pub(super) framing: Framing,
    pub(super) omit_host: bool,
    pub(super) junk_line: Option<Vec<u8>>,
    /// Chunk sizes drawn when the request was made, so a replay sends the same.
    pub(super) chunks: Vec<usize>,
}

pub(super) struct Request {
    pub(super) method: String,
    /// As on the request line: path and query, or absolute-form, or `*`.
    pub(super) target: String,
    pub(super) headers: Vec<(String, Vec<u8>)>,
    pub(super) body: Vec<u8>,
    /// `None`: sent with reqwest.
    pub(super) raw: Option<Raw>,
}

impl Request {
    /// True when reqwest sends this exactly as described.
    pub(super) fn reqwest_can_send(&self, host: &str) -> bool {
        let header_bytes: usize = self.headers.iter().map(|(n, v)| n.len() + v.len()).sum();
        self.target.starts_with('/')
            && Method::from_bytes(self.method.as_bytes()).is_ok_and(|m| m != Method::CONNECT)
            && url::Url::parse(&format!("http://{host}{}", self.target)).is_ok()
            && self.headers.iter().all(|(n, v)| {
                HeaderName::from_bytes(n.as_bytes()).is_ok() && HeaderValue::from_bytes(v).is_ok()
            })
            // Past actix's limits (96 headers, a 128 KiB head, a 64 KiB body)
            // the server refuses and closes, maybe before reqwest has written
            // everything; the raw harness copes with that, reqwest errors.
            && header_bytes < 32 * 1024
            && self.headers.len() < 90
            && self.body.len() <= MAX_BODY + 4 * 1024
    }

    /// The request line's target as reqwest will send it (the URL parser
    /// encodes and normalises), so descriptions and checks see the real thing.
    pub(super) fn normalise_for_reqwest(&mut self, host: &str) {
        let url = url::Url::parse(&format!("http://{host}{}", self.target)).unwrap();
        self.target = url[url::Position::BeforePath..].to_owned();
    }

    /// Raw requests cannot carry CR or LF inside a line without changing the
    /// framing (and hanging the exchange); everything else goes as it is.
    pub(super) fn sanitise_for_raw(&mut self) {
        self.target = self.target.replace('\r', "%0D").replace('\n', "%0A");
        for (name, value) in &mut self.headers {
            *name = name.replace(['\r', '\n'], " ");
            for byte in value.iter_mut() {
                if *byte == b'\r' || *byte == b'\n' {
                    *byte = b' ';
                }
            }
        }
    }

    fn has_header(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    pub(super) fn header_values<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// Appends the header lines, as given.
    fn push_headers(&self, out: &mut Vec<u8>) {
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The bytes a raw request puts on the wire.
    pub(super) fn raw_bytes(&self, host: &str) -> Vec<u8> {
        let raw = self.raw.as_ref().expect("a raw request");
        let mut out = format!("{} {} {}\r\n", self.method, self.target, raw.version).into_bytes();
        if !raw.omit_host && !self.has_header("host") {
            out.extend_from_slice(format!("Host: {host}\r\n").as_bytes());
        }
        self.push_headers(&mut out);
        if let Some(line) = &raw.junk_line {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
        let len = self.body.len();
        let mut body = self.body.clone();
        match raw.framing {
            Framing::Exact => {
                out.extend_from_slice(format!("Content-Length: {len}\r\n").as_bytes())
            }
            Framing::Unframed => {}
            Framing::Short => {
                out.extend_from_slice(format!("Content-Length: {}\r\n", len / 2).as_bytes());
            }
            Framing::Padded => {
                out.extend_from_slice(format!("Content-Length: 000{len}\r\n").as_bytes());
            }
            Framing::Doubled => out.extend_from_slice(
                format!("Content-Length: {len}\r\nContent-Length: {len}\r\n").as_bytes(),
            ),
            Framing::Huge => out.extend_from_slice(b"Content-Length: 10000000000\r\n"),
            Framing::Chunked => {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
                body = chunked_body(&self.body, &raw.chunks);
            }
            Framing::BadChunk => {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
                body = [&b"zz\r\n"[..], &self.body, b"\r\n0\r\n\r\n"].concat();
            }
        }
        out.extend_from_slice(b"Connection: close\r\n\r\n");
        out.extend_from_slice(&body);
        out
    }

    /// The request as it went out, printable, long parts elided.
    pub(super) fn describe(&self, host: &str) -> String {
        let (how, bytes) = match &self.raw {
            Some(raw) => (
                format!("raw bytes, framing {:?}", raw.framing),
                self.raw_bytes(host),
            ),
            None => {
                let mut bytes = format!(
                    "{} {} HTTP/1.1\r\nHost: {host}\r\n",
                    self.method, self.target
                )
                .into_bytes();
                self.push_headers(&mut bytes);
                if !self.body.is_empty() {
                    let length = format!("Content-Length: {}\r\n", self.body.len());
                    bytes.extend_from_slice(length.as_bytes());
                }
                bytes.extend_from_slice(b"\r\n");
                bytes.extend_from_slice(&self.body);
                let how = "reqwest, which adds Accept and groups repeated headers";
                (how.to_owned(), bytes)
            }
        };
        format!(
            "({how}, {} bytes)\n{}",
            bytes.len(),
            printable(&bytes, 3000)
        )
    }
}

/// `text` with every byte that is not visible ASCII percent-encoded.
pub(super) fn visible_ascii(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_graphic() {
            out.push(char::from(byte));
        } else {
            write!(out, "%{byte:02X}").unwrap();
        }
    }
    out
}

/// Bytes as text, exact enough to rebuild them: CR and LF shown (LF also
/// breaks the line), other controls as `\u{..}`, bytes that are not UTF-8 as
/// `\x..`; the middle elided past `limit`.
fn printable(bytes: &[u8], limit: usize) -> String {
    let render = |bytes: &[u8]| {
        let mut out = String::new();
        for chunk in bytes.utf8_chunks() {
            for c in chunk.valid().chars() {
                match c {
                    '\n' => out.push_str("\\n\n"),
                    '\r' => out.push_str("\\r"),
                    c if c.is_control() => write!(out, "\\u{{{:x}}}", c as u32).unwrap(),
                    c => out.push(c),
                }
            }
            for byte in chunk.invalid() {
                write!(out, "\\x{byte:02x}").unwrap();
            }
        }
        out
    };
    if bytes.len() <= limit {
        render(bytes)
    } else {
        let head = &bytes[..limit * 2 / 3];
        let tail = &bytes[bytes.len() - limit / 3..];
        format!(
            "{}[… {} bytes elided …]{}",
            render(head),
            bytes.len() - head.len() - tail.len(),
            render(tail)
        )
    }
}

/// An answer, however the request was sent.
pub(super) struct Answer {
    pub(super) status: u16,
    /// Lower-case names.
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Vec<u8>,
}

impl Answer {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub(super) fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub(super) fn from_raw(raw: RawResponse) -> Answer {
        let headers: Vec<(String, String)> = raw
            .headers()
            .map(|(name, value)| (name.to_ascii_lowercase(), value.to_owned()))
            .collect();
        let mut answer = Answer {
            status: raw.status,
            headers,
            body: raw.body,
        };
        // Only the first answer counts: cut what a pipelined leftover drew.
        if answer
            .header("transfer-encoding")
            .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
        {
            answer.body = dechunk(&answer.body);
        } else if let Some(len) = answer.header("content-length").and_then(|l| l.parse().ok()) {
            answer.body.truncate(len);
        }
        answer
    }

    /// A refusal by actix's HTTP parser, before any application code runs:
    /// 431, or a 400 with nothing in it.
    pub(super) fn refused_by_parser(&self) -> bool {
        self.status == 431
            || (self.status == 400 && self.body.is_empty() && self.header("content-type").is_none())
    }

    pub(super) fn describe(&self) -> String {
        let mut out = format!("{}\n", self.status);
        for (name, value) in &self.headers {
            writeln!(out, "{name}: {}", printable(value.as_bytes(), 300)).unwrap();
        }
        out.push('\n');
        out.push_str(&printable(&self.body, 1500));
        out
    }
}

fn dechunk(mut bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = bytes.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let line = String::from_utf8_lossy(&bytes[..end]);
        let Ok(size) = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
        else {
            return out;
        };
        bytes = &bytes[end + 2..];
        if size == 0 || bytes.len() < size {
            return out;
        }
        out.extend_from_slice(&bytes[..size]);
        bytes = bytes.get(size + 2..).unwrap_or_default();
    }
}

/// Sends `request` as it says (with `client`, or as raw bytes) and reads the answer.
pub(super) async fn send(
    app: &TestApp,
    client: &reqwest::Client,
    request: &Request,
) -> Result<Answer, String> {
    if request.raw.is_some() {
        let bytes = request.raw_bytes(&app.host());
        // The harness reads with its own 10 s timeout and panics without an
        // answer; this outer limit only guards against a stuck connect.
        return tokio::time::timeout(ANSWER_WITHIN * 2, app.raw(bytes))
            .await
            .map(Answer::from_raw)
            .map_err(|_| "no answer in time".to_owned());
    }
    let method = Method::from_bytes(request.method.as_bytes()).unwrap();
    let mut builder = client.request(method, app.url(&request.target));
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_slice());
    }
    if !request.body.is_empty() {
        builder = builder.body(request.body.clone());
    }
    let exchange = async {
        let response = builder.send().await?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = response.bytes().await?.to_vec();
        Ok::<_, reqwest::Error>(Answer {
            status,
            headers,
            body,
        })
    };
    match tokio::time::timeout(ANSWER_WITHIN, exchange).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(format!("no answer: {e:?}")),
        Err(_) => Err("no answer in time".to_owned()),
    }
}
