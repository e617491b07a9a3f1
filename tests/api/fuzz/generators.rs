//! What the fuzzer sends: random requests to every endpoint, mostly close
//! to what a client or proxy would send (so most reach the application),
//! with hostile values mixed in, drawn from one seeded sequence so that a
//! seed always makes the same requests.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use latchkey::auth::token::TOKEN_CHARS;
use serde_json::{Map, Value};

use super::raw::{visible_ascii, Framing, Raw, Request};
use super::{World, ALICE_PASSWORD, BASE64URL, MARKUP, MAX_BODY};
use crate::helpers::{padded_login_body, Rng};

/// Pieces that tend to break parsers, mixed into random text.
const SNIPPETS: &[&str] = &[
    "alice",
    "ALICE",
    "admin",
    "é",
    "日本語",
    "🦀",
    "\u{202e}",
    "\u{200b}",
    "\u{fffd}",
    "\u{feff}",
    "\u{85}",
    "\0",
    "\t",
    "\r\n",
    "\x7f",
    " ",
    "\"",
    "\\",
    "'",
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    ";",
    "=",
    "&",
    "+",
    "%",
    "%2",
    "%zz",
    "%00",
    "%ff",
    "%E2%82%AC",
    "%25",
    "../",
    "//",
    "?",
    "#",
    "*",
    MARKUP,
    "' OR '1'='1",
    "; DROP TABLE users; --",
    "${jndi:ldap://x}",
    "%s%n",
    "null",
    "true",
    "-1",
    "1e999",
    "9223372036854775808",
];

/// The characters of an HTTP token (RFC 9110), for header names.
const HTTP_TOKEN_CHARS: &[u8] =
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_!#$%&'*+.^`|~";

const COMMON_METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE",
];
const ODD_METHODS: &[&str] = &[
    "PROPFIND",
    "FOO",
    "get",
    "post",
    "M-SEARCH",
    "BREW",
    "PURGE",
    "X-METHOD-THAT-IS-RATHER-LONG-FOR-A-METHOD-NAME-ISNT-IT",
];
/// Methods reqwest will not send as such.
const RAW_METHODS: &[&str] = &["CONNECT", "G@T", "P\0ST", "", "GET /x", "GÉT"];

const FIELDS: &[&str] = &["username", "password", "token", "rd", "token_type_hint"];

const JSON_TYPES: &[&str] = &[
    "application/json",
    "application/json; charset=utf-8",
    "Application/JSON",
    "APPLICATION/JSON;CHARSET=UTF-8",
    "application/json;charset=latin1",
    " application/json ",
    "application/json;;",
    "application/json; boundary=\"x\"",
    "application/json , text/plain",
];
const FORM_TYPES: &[&str] = &[
    "application/x-www-form-urlencoded",
    "application/x-www-form-urlencoded; charset=UTF-8",
    "APPLICATION/X-WWW-FORM-URLENCODED",
    "application/x-www-form-urlencoded;",
    "application/x-www-form-urlencoded ; q=1",
];
const ODD_TYPES: &[&str] = &[
    "text/plain",
    "text/html",
    "application/xml",
    "multipart/form-data; boundary=zz",
    "application/jsonx",
    "json",
    "",
    ";;;",
    "/",
    "application/",
    "*/*",
    "application/json\u{e9}",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    LoginPage,
    Login,
    Logout,
    Introspect,
    Verify,
    Me,
    Sessions,
    Session,
    Health,
    Elsewhere,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum BodyKind {
    Json,
    Form,
}

/// Makes the requests: from its own random sequence and what it knows.
pub(super) struct Fuzzer {
    rng: Rng,
    pub(super) world: World,
}

impl Fuzzer {
    /// A fuzzer drawing from `rng`, knowing `world`.
    pub(super) fn new(rng: Rng, world: World) -> Fuzzer {
        Fuzzer { rng, world }
    }

    /// A length skewed small: mostly short, sometimes long, rarely over 64 KiB.
    fn size(&mut self) -> usize {
        match self.rng.below(100) {
            0..=49 => self.rng.below(16),
            50..=79 => 16 + self.rng.below(112),
            80..=94 => 128 + self.rng.below(1920),
            95..=98 => 2048 + self.rng.below(14 * 1024),
            _ => 60 * 1024 + self.rng.below(8 * 1024),
        }
    }

    pub(super) fn request(&mut self) -> Request {
        let raw_wanted = self.rng.chance(20);
        let (endpoint, target, natural) = self.target();
        let method = match self.rng.below(10) {
            0..=5 => natural.to_owned(),
            6..=7 => self.rng.pick(COMMON_METHODS).to_owned(),
            8 => self.rng.pick(ODD_METHODS).to_owned(),
            _ if raw_wanted => self.rng.pick(RAW_METHODS).to_owned(),
            _ => self.rng.pick(ODD_METHODS).to_owned(),
        };
        let mut headers = Vec::new();
        self.credentials(&mut headers);
        self.proxy_headers(&mut headers);
        let body = self.body(endpoint, raw_wanted, &mut headers);
        self.extra_headers(&mut headers);
        if self.rng.chance(10) {
            // Header order should not matter; shuffle it now and then.
            for i in (1..headers.len()).rev() {
                let j = self.rng.below(i + 1);
                headers.swap(i, j);
            }
        }
        if self.rng.chance(if raw_wanted { 70 } else { 92 }) {
            // Mostly header values a client could send, so that most requests
            // reach the application rather than stop at the HTTP parser.
            for (_, value) in &mut headers {
                value.retain(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f));
            }
        }
        let mut request = Request {
            method,
            target,
            headers,
            body,
            raw: None,
        };
        if raw_wanted || !request.reqwest_can_send(&self.world.host) {
            request.raw = Some(self.raw_details(&request));
            request.sanitise_for_raw();
            if self.rng.chance(80) {
                // Mostly a request line the parser accepts, as reqwest's would be.
                request.target = visible_ascii(&request.target);
            }
        } else {
            request.normalise_for_reqwest(&self.world.host);
        }
        request
    }

    /// Where the request goes, and the method that route expects.
    fn target(&mut self) -> (Endpoint, String, &'static str) {
        let (endpoint, mut target, natural) = match self.rng.below(20) {
            0..=1 => {
                let query = self.maybe_rd();
                (Endpoint::LoginPage, format!("/login{query}"), "GET")
            }
            2..=4 => {
                let query = self.maybe_rd();
                (Endpoint::Login, format!("/login{query}"), "POST")
            }
            5..=6 => {
                let query = match self.rng.below(10) {
                    0..=5 => String::new(),
                    6..=8 => "?all=true".to_owned(),
                    _ => {
                        let value = self.rng.pick(&["1", "TRUE", "false", "", "%ff", "yes"]);
                        format!("?all={value}")
                    }
                };
                (Endpoint::Logout, format!("/logout{query}"), "POST")
            }
            7..=9 => (Endpoint::Introspect, "/introspect".to_owned(), "POST"),
            10..=12 => {
                let query = self.maybe_rd();
                let method = self.rng.pick(COMMON_METHODS);
                (Endpoint::Verify, format!("/verify{query}"), method)
            }
            13 => (Endpoint::Me, "/me".to_owned(), "GET"),
            14 => (Endpoint::Sessions, "/sessions".to_owned(), "GET"),
            15..=16 => {
                let id = self.session_id();
                (Endpoint::Session, format!("/sessions/{id}"), "DELETE")
            }
            17 => (Endpoint::Health, "/healthz".to_owned(), "GET"),
            _ => (Endpoint::Elsewhere, self.random_path(), "GET"),
        };
        if self.rng.chance(10) {
            let separator = if target.contains('?') { '&' } else { '?' };
            let junk = match self.rng.below(3) {
                0 => self.text(40),
                _ => self
                    .rng
                    .pick(&[
                        "&&&",
                        "a=1&a=2",
                        "=",
                        "%",
                        "%zz=%zz",
                        "rd",
                        "all",
                        "rd=&rd=/x",
                    ])
                    .to_owned(),
            };
            target = format!("{target}{separator}{junk}");
        }
        (endpoint, target, natural)
    }

    /// `?rd=<a redirect target>` half of the time, encoded or not.
    fn maybe_rd(&mut self) -> String {
        if self.rng.chance(50) {
            return String::new();
        }
        let rd = self.redirect_value();
        if self.rng.chance(60) {
            let encoded: String = url::form_urlencoded::byte_serialize(rd.as_bytes()).collect();
            format!("?rd={encoded}")
        } else {
            format!("?rd={rd}")
        }
    }

    fn redirect_value(&mut self) -> String {
        if self.rng.chance(25) {
            return self.text(100);
        }
        let host = self.world.host.clone();
        match self.rng.below(24) {
            0 => "/".to_owned(),
            1 => "/app?x=1#y".to_owned(),
            2 => "//evil.example/".to_owned(),
            3 => "///evil.example".to_owned(),
            4 => "/\\evil.example".to_owned(),
            5 => "https://evil.example/".to_owned(),
            6 => format!("http://{host}/ok"),
            7 => "https://app.example.com/".to_owned(),
            8 => "https://deep.sub.example.com:8443/x".to_owned(),
            9 => "https://example.com.evil.example/".to_owned(),
            10 => "javascript:alert(1)".to_owned(),
            11 => "data:text/html,x".to_owned(),
            12 => "https://app.example.com@evil.example/".to_owned(),
            13 => "http://[::1".to_owned(),
            14 => "https:%2F%2Fevil.example".to_owned(),
            15 => "\t/evil.example".to_owned(),
            16 => "/%0a/evil.example".to_owned(),
            17 => MARKUP.to_owned(),
            18 => format!("/{MARKUP}"),
            19 => "HTTP://EVIL.EXAMPLE/".to_owned(),
            20 => format!("http://{host}/{}", "a".repeat(3000)),
            21 => "https://evil.example\\@app.example.com".to_owned(),
            22 => "http://127.0.0.1/".to_owned(),
            _ => "ftp://app.example.com/".to_owned(),
        }
    }

    fn session_id(&mut self) -> String {
        // Draw first: whether ids are known must not shift later draws.
        if self.rng.chance(30) && !self.world.session_ids.is_empty() {
            let i = self.rng.below(self.world.session_ids.len());
            return self.world.session_ids[i].to_string();
        }
        match self.rng.below(4) {
            // Small ids are other users' sessions too (the sentinel's among
            // them): deleting those must get 404 and change nothing.
            0..=1 => (1 + self.rng.below(8)).to_string(),
            2 => self
                .rng
                .pick(&[
                    "0",
                    "-1",
                    "99999999999999999999",
                    "9223372036854775807",
                    "1.0",
                    "0x1",
                    "%31",
                    "1%00",
                    "%20%31",
                    "1;x",
                    "1e3",
                    "+1",
                    "abc",
                    "%ff",
                ])
                .to_owned(),
            _ => self.text(12).replace('/', "%2F").replace('?', "%3F"),
        }
    }

    fn random_path(&mut self) -> String {
        let mut path = self
            .rng
            .pick(&[
                "/", "/", "//", "/./", "/%00", "/;", "/%2e%2e/", "/LOGIN", "/Verify",
            ])
            .to_owned();
        for i in 0..self.rng.below(5) {
            if i > 0 {
                path.push('/');
            }
            let segment = match self.rng.below(4) {
                0 => self.text(20),
                1 => url::form_urlencoded::byte_serialize(self.text(20).as_bytes()).collect(),
                _ => self
                    .rng
                    .pick(&[
                        "login",
                        "logout",
                        "verify",
                        "sessions",
                        "me",
                        "healthz",
                        "..",
                        ".",
                        "%2F",
                        "",
                        "admin",
                        "%2e%2e",
                        "introspect",
                        "1",
                    ])
                    .to_owned(),
            };
            path.push_str(&segment);
        }
        if self.rng.chance(3) {
            path.push_str(&"a".repeat(self.rng.pick(&[1000, 8000, 40_000])));
        }
        path
    }

    /// Random text: letters, snippets, any Unicode, controls.
    fn text(&mut self, max: usize) -> String {
        let len = self.size().min(max);
        let mut s = String::new();
        while s.len() < len {
            match self.rng.below(10) {
                0..=3 => s.push(char::from(self.rng.pick(BASE64URL))),
                4 => s.push_str(self.rng.pick(SNIPPETS)),
                5 => s.push(char::from(0x20 + self.rng.below(0x5f) as u8)),
                6 => s.push(char::from_u32(0xa0 + self.rng.below(0x2000) as u32).unwrap_or('?')),
                7 => s.push(char::from_u32(0x1f300 + self.rng.below(0x300) as u32).unwrap_or('?')),
                8 => s.push(self.rng.pick(&['\0', '\t', '\n', '\r', '\x1b', '\x7f'])),
                _ => {
                    // Runs make long strings quickly and look like padding.
                    let c = char::from(self.rng.pick(BASE64URL));
                    let run = 1 + self.rng.below(len - s.len());
                    s.extend(std::iter::repeat_n(c, run));
                }
            }
        }
        s
    }

    fn random_bytes(&mut self) -> Vec<u8> {
        let len = self.size();
        (0..len).map(|_| self.rng.next() as u8).collect()
    }

    /// A token, real or almost: the near misses must never authenticate.
    /// The newest token half of the time (older ones are more likely to
    /// have been logged out by now), else any held token.
    fn held_token(&mut self) -> String {
        let newest = self.rng.chance(50);
        let any = self.rng.below(self.world.held.len());
        let at = if newest {
            self.world.held.len() - 1
        } else {
            any
        };
        self.world.held[at].clone()
    }

    fn token_like(&mut self) -> String {
        let live = self.held_token();
        match self.rng.below(14) {
            0..=5 => live,
            6 => {
                let mut bytes = live.into_bytes();
                let i = self.rng.below(bytes.len());
                // One draw whatever the token, so replays stay in step.
                let at = BASE64URL.iter().position(|&c| c == bytes[i]).unwrap_or(0);
                bytes[i] =
                    BASE64URL[(at + 1 + self.rng.below(BASE64URL.len() - 1)) % BASE64URL.len()];
                String::from_utf8(bytes).unwrap()
            }
            7 => {
                let suffix = self
                    .rng
                    .pick(&["x", "A", "-", "=", "==", " ", "%00", "\0", "é", ";"]);
                format!("{live}{suffix}")
            }
            8 => {
                let prefix = self.rng.pick(&["x", "A", "_", " ", "Bearer ", "\""]);
                format!("{prefix}{live}")
            }
            9 => {
                let cut = self.rng.below(live.len());
                live[..cut].to_owned()
            }
            10 => (0..TOKEN_CHARS)
                .map(|_| char::from(self.rng.pick(BASE64URL)))
                .collect(),
            11 => format!("{live}{live}"),
            12 => self.text(64),
            _ => {
                let huge = "a".repeat(5000);
                self.rng
                    .pick(&["", " ", "null", "undefined", &huge])
                    .to_owned()
            }
        }
    }

    fn credentials(&mut self, headers: &mut Vec<(String, Vec<u8>)>) {
        let authorizations = match self.rng.below(10) {
            0..=5 => 1,
            6..=8 => 0,
            _ => 2,
        };
        for _ in 0..authorizations {
            let value: Vec<u8> = match self.rng.below(11) {
                0..=5 => {
                    let scheme = self
                        .rng
                        .pick(&["Bearer", "Bearer", "Bearer", "bearer", "BEARER", "Bearer "]);
                    format!("{scheme} {}", self.token_like()).into_bytes()
                }
                6..=7 => {
                    let credentials = match (&self.world.client, self.rng.below(5)) {
                        (Some((id, secret)), 0..=2) => format!("{id}:{secret}"),
                        (Some((id, secret)), 3) => format!("{id}:{secret}x"),
                        _ => format!("{}:{}", self.text(20), self.text(40)),
                    };
                    let encoded = match self.rng.below(6) {
                        0 => self.text(40),
                        1 => credentials,
                        _ => STANDARD.encode(credentials),
                    };
                    let scheme = self.rng.pick(&["Basic", "basic", "BASIC", "Basic "]);
                    format!("{scheme} {encoded}").into_bytes()
                }
                8 => {
                    let scheme = self
                        .rng
                        .pick(&["Token", "Digest", "Negotiate", "", "Bearer\t"]);
                    format!("{scheme} {}", self.text(80)).into_bytes()
                }
                9 => self.text(200).into_bytes(),
                _ => {
                    let mut value = b"Bearer ".to_vec();
                    value.extend(self.random_bytes().into_iter().take(100));
                    value
                }
            };
            headers.push(("Authorization".to_owned(), value));
        }

        let cookies = match self.rng.below(10) {
            0..=4 => 0,
            5..=8 => 1,
            _ => 2,
        };
        for _ in 0..cookies {
            let name = self.world.cookie_name.clone();
            let value: Vec<u8> = match self.rng.below(10) {
                0..=4 => format!("{name}={}", self.token_like()).into_bytes(),
                5 => {
                    let separator = self.rng.pick(&["; ", ";", ";;", ", ", " ; ", "&"]);
                    let token = self.token_like();
                    let junk = self.text(20);
                    format!("a=b{separator}{name}={token}{separator}c={junk}").into_bytes()
                }
                6 => {
                    let token = self.token_like();
                    match self.rng.below(5) {
                        0 => format!("{name}=\"{token}\""),
                        1 => format!("{name}=junk; {name}={token}"),
                        2 => format!("{}={token}", name.to_uppercase()),
                        3 => format!(" {name} = {token} ;"),
                        _ => format!("{name}={token}; {name}=junk"),
                    }
                    .into_bytes()
                }
                7 => format!("{name}=").into_bytes(),
                8 => self.text(200).into_bytes(),
                _ => {
                    let mut value = format!("{name}=").into_bytes();
                    value.extend(self.random_bytes().into_iter().take(60));
                    value
                }
            };
            headers.push(("Cookie".to_owned(), value));
        }

        if self.rng.chance(30) {
            let host = self.world.host.clone();
            let origin = match self.rng.below(10) {
                0..=1 => format!("http://{host}"),
                2 => self.text(40),
                _ => self
                    .rng
                    .pick(&[
                        "https://evil.example",
                        "null",
                        "",
                        "http://app.example.com",
                        "https://sub.example.com",
                        "http://127.0.0.1",
                        "http://[::1",
                        "file://",
                        "http://evil.example@127.0.0.1",
                    ])
                    .to_owned(),
            };
            headers.push(("Origin".to_owned(), origin.into_bytes()));
        }
    }

    fn proxy_headers(&mut self, headers: &mut Vec<(String, Vec<u8>)>) {
        let host = self.world.host.clone();
        if self.rng.chance(15) {
            let value = match self.rng.below(4) {
                0 => self.text(60),
                _ => self
                    .rng
                    .pick(&[
                        "1.2.3.4",
                        "10.0.0.1, 203.0.113.9",
                        "::1",
                        "[2001:db8::1]:443",
                        "unknown",
                        "999.1.1.1",
                        ",,,",
                        "127.0.0.1",
                        "203.0.113.9, 127.0.0.1",
                        "::ffff:1.2.3.4",
                    ])
                    .to_owned(),
            };
            headers.push(("X-Forwarded-For".to_owned(), value.into_bytes()));
        }
        if self.rng.chance(15) {
            let value = match self.rng.below(4) {
                0 => self.text(40),
                1 => host.clone(),
                _ => self
                    .rng
                    .pick(&[
                        "app.example.com",
                        "evil.example",
                        "a, b",
                        "",
                        "[::1]:80",
                        "example.com:notaport",
                        "EVIL.example",
                    ])
                    .to_owned(),
            };
            headers.push(("X-Forwarded-Host".to_owned(), value.into_bytes()));
        }
        if self.rng.chance(15) {
            let value = match self.rng.below(3) {
                0 => self.text(10),
                _ => self
                    .rng
                    .pick(&["https", "http", "HTTPS", "ftp", "", "https, http"])
                    .to_owned(),
            };
            headers.push(("X-Forwarded-Proto".to_owned(), value.into_bytes()));
        }
        if self.rng.chance(15) {
            let value = match self.rng.below(3) {
                0 => self.text(100),
                _ => self
                    .rng
                    .pick(&["/", "/app?x=1&y=2", "//evil.example", "/%zz", MARKUP])
                    .to_owned(),
            };
            headers.push(("X-Forwarded-Uri".to_owned(), value.into_bytes()));
        }
        if self.rng.chance(10) {
            let value = match self.rng.below(3) {
                0 => self.text(100),
                _ => self
                    .rng
                    .pick(&[
                        "https://app.example.com/x?y=1",
                        "/relative",
                        "javascript:alert(1)",
                        "https://evil.example/",
                    ])
                    .to_owned(),
            };
            headers.push(("X-Original-URL".to_owned(), value.into_bytes()));
        }
        if self.rng.chance(50) {
            let agent = self.text(20_000);
            headers.push(("User-Agent".to_owned(), agent.into_bytes()));
        }
        if self.rng.chance(5) {
            let value = match self.rng.below(3) {
                0 => self.text(30),
                _ => self
                    .rng
                    .pick(&[
                        "evil.example",
                        "",
                        "app.example.com",
                        "[::1]:8080",
                        "127.0.0.1:1",
                    ])
                    .to_owned(),
            };
            headers.push(("Host".to_owned(), value.into_bytes()));
        }
    }

    fn extra_headers(&mut self, headers: &mut Vec<(String, Vec<u8>)>) {
        let count = match self.rng.below(20) {
            0..=9 => 0,
            10..=18 => 1 + self.rng.below(3),
            // Past actix's 96 headers: a 431, and the server lives on.
            _ => self.rng.pick(&[20, 90, 120]),
        };
        for _ in 0..count {
            let name = if self.rng.chance(50) {
                self.rng
                    .pick(&[
                        "X-Fuzz",
                        "Accept",
                        "Accept-Language",
                        "Referer",
                        "Forwarded",
                        "X-Real-IP",
                        "If-None-Match",
                        "Range",
                        "Cache-Control",
                        "X-Requested-With",
                        "Sec-Fetch-Site",
                        "Remote-User",
                        "X-Remote-User",
                    ])
                    .to_owned()
            } else {
                let len = 1 + self.rng.below(20);
                (0..len)
                    .map(|_| char::from(self.rng.pick(HTTP_TOKEN_CHARS)))
                    .collect()
            };
            let value = self.text(100);
            headers.push((name, value.into_bytes()));
        }
    }

    /// The body, with its `Content-Type` pushed onto `headers`.
    fn body(
        &mut self,
        endpoint: Endpoint,
        raw: bool,
        headers: &mut Vec<(String, Vec<u8>)>,
    ) -> Vec<u8> {
        let reads_body = matches!(endpoint, Endpoint::Login | Endpoint::Introspect);
        // A body the route never reads makes actix linger up to a second for
        // the client to hang up, and the raw harness waits for that: raw
        // requests carry bodies only where they are read.
        let (body, kind) = if reads_body || (!raw && self.rng.chance(25)) {
            match self.rng.below(10) {
                0..=3 => (self.json_body(), Some(BodyKind::Json)),
                4..=6 => (self.form_body(), Some(BodyKind::Form)),
                7 => (self.random_bytes(), None),
                8 => (Vec::new(), None),
                _ if self.rng.chance(30) => (self.body_near_the_limit(), Some(BodyKind::Json)),
                _ => (self.json_body(), Some(BodyKind::Json)),
            }
        } else {
            (Vec::new(), None)
        };
        let content_type: Option<Vec<u8>> = match self.rng.below(10) {
            0 => None,
            1 => Some(match self.rng.below(4) {
                0 => self.text(30).into_bytes(),
                1 => b"application/json\xff".to_vec(),
                _ => self.rng.pick(ODD_TYPES).as_bytes().to_vec(),
            }),
            _ => match kind {
                Some(BodyKind::Json) => Some(self.rng.pick(JSON_TYPES).as_bytes().to_vec()),
                Some(BodyKind::Form) => Some(self.rng.pick(FORM_TYPES).as_bytes().to_vec()),
                None if self.rng.chance(50) => {
                    let all = [JSON_TYPES, FORM_TYPES, ODD_TYPES].concat();
                    Some(self.rng.pick(&all).as_bytes().to_vec())
                }
                None => None,
            },
        };
        let content_type = if body.is_empty() && !reads_body && self.rng.chance(70) {
            None
        } else {
            content_type
        };
        if let Some(value) = content_type {
            headers.push(("Content-Type".to_owned(), value));
            if self.rng.chance(3) {
                let second = self.rng.pick(&[JSON_TYPES[0], FORM_TYPES[0], "text/plain"]);
                headers.push(("Content-Type".to_owned(), second.as_bytes().to_vec()));
            }
        }
        body
    }

    /// A field's value as text: mostly plausible, sometimes hostile.
    fn field_text(&mut self, field: &str) -> String {
        match field {
            "username" => match self.rng.below(10) {
                0..=3 => "alice".to_owned(),
                4 => self
                    .rng
                    .pick(&["ALICE", "Alice", "bob", "sentinel"])
                    .to_owned(),
                5 => self.text(80),
                6 => "a".repeat(self.rng.pick(&[64, 65, 1000])),
                7 => MARKUP.to_owned(),
                _ => self
                    .rng
                    .pick(&["", " alice", "alice\0", "alice\n", "\u{202e}ecila"])
                    .to_owned(),
            },
            "password" => match self.rng.below(6) {
                0..=1 => ALICE_PASSWORD.to_owned(),
                2 => "x".repeat(self.rng.pick(&[1024, 1025, 50_000])),
                _ => self.text(64),
            },
            "token" => self.token_like(),
            "rd" => self.redirect_value(),
            "token_type_hint" if self.rng.chance(70) => self
                .rng
                .pick(&["access_token", "refresh_token", ""])
                .to_owned(),
            _ => self.text(40),
        }
    }

    fn json_value(&mut self, depth: u32) -> Value {
        let choice = if depth > 3 {
            self.rng.below(6)
        } else {
            self.rng.below(9)
        };
        match choice {
            0 => Value::Null,
            1 => Value::Bool(self.rng.chance(50)),
            2 => {
                let any = self.rng.next() as i64;
                Value::from(self.rng.pick(&[0, -1, i64::MAX, i64::MIN, any]))
            }
            3 => Value::from(f64::from_bits(self.rng.next())),
            4..=5 => Value::String(self.text(200)),
            6 => Value::Array(
                (0..self.rng.below(4))
                    .map(|_| self.json_value(depth + 1))
                    .collect(),
            ),
            _ => {
                let mut map = Map::new();
                for _ in 0..self.rng.below(4) {
                    let key = self.text(16);
                    let value = self.json_value(depth + 1);
                    map.insert(key, value);
                }
                Value::Object(map)
            }
        }
    }

    fn json_body(&mut self) -> Vec<u8> {
        let plausible = self.rng.chance(35);
        let mut map = Map::new();
        for field in FIELDS {
            if self.rng.chance(55) {
                let value = if self.rng.chance(15) {
                    self.json_value(1)
                } else {
                    Value::String(self.field_text(field))
                };
                map.insert((*field).to_owned(), value);
            }
        }
        for _ in 0..self.rng.below(3) {
            let key = self.text(20);
            let value = self.json_value(0);
            map.insert(key, value);
        }
        let token = self.held_token();
        if plausible {
            // Right credentials and a held token, so the success paths (new
            // sessions, active introspection) are swept too, not only refusals.
            map.insert("username".into(), "alice".into());
            map.insert("password".into(), ALICE_PASSWORD.into());
            map.insert("token".into(), token.into());
        }
        let value = if plausible || self.rng.chance(90) {
            Value::Object(map)
        } else {
            self.json_value(0)
        };
        let mut bytes = serde_json::to_vec(&value).unwrap();
        match self.rng.below(20) {
            0 => bytes.truncate(self.rng.below(bytes.len())),
            1 if !bytes.is_empty() => {
                let i = self.rng.below(bytes.len());
                bytes[i] = self.rng.next() as u8;
            }
            2 => {
                let depth = self.rng.pick(&[10, 127, 128, 129, 1000, 20_000]);
                let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
                bytes = match self.rng.below(2) {
                    0 => nested.into_bytes(),
                    _ => format!("{{\"token\":{nested},\"username\":{nested}}}").into_bytes(),
                };
            }
            3 => {
                let token = self.token_like();
                bytes = format!(
                    "{{\"username\":\"x\",\"username\":\"alice\",\"password\":\"{ALICE_PASSWORD}\",\
                     \"token\":\"a\",\"token\":{}}}",
                    Value::String(token)
                )
                .into_bytes();
            }
            4 => {
                let prefix: &[u8] = self.rng.pick(&[&b"\xef\xbb\xbf"[..], b" \n\t", b""]);
                let suffix: &[u8] = self.rng.pick(&[&b"x"[..], b"}", b" \n", b"\0", b""]);
                bytes = [prefix, &bytes, suffix].concat();
            }
            5 => {
                // A raw NUL or a byte that is not UTF-8 inside the text.
                let at = self.rng.below(bytes.len() + 1);
                let odd = self.rng.pick(&[0u8, 0xff, 0xc3, 0x80]);
                bytes.insert(at, odd);
            }
            6 => {
                bytes = self
                    .rng
                    .pick(&[
                        &br#"{"token":1e999999,"username":-0.0e-99999}"#[..],
                        br#"{"token":"\ud800","username":"\udfff","password":"x"}"#,
                        br#"{"token":"\u0000","username":"alice\u0000"}"#,
                        br#"{"":"","":""}"#,
                    ])
                    .to_vec();
            }
            _ => {}
        }
        bytes
    }

    fn form_body(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.rng.chance(10) {
            out.push(b'&');
        }
        let plausible = self.rng.chance(35);
        let token = self.held_token();
        let rd: String =
            url::form_urlencoded::byte_serialize(self.redirect_value().as_bytes()).collect();
        if plausible {
            // First occurrence wins: these hold whatever random pairs follow.
            let pairs = format!("username=alice&password={ALICE_PASSWORD}&token={token}&rd={rd}&");
            out.extend_from_slice(pairs.as_bytes());
        }
        for i in 0..self.rng.below(7) {
            if i > 0 {
                let separator = self.rng.pick(&["&", "&", "&", "&&", ";", "&amp;"]);
                out.extend_from_slice(separator.as_bytes());
            }
            let key = if self.rng.chance(70) {
                self.rng.pick(FIELDS).to_owned()
            } else {
                self.text(16)
            };
            let value = self.field_text(&key);
            let encode = |s: &str| -> String {
                url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
            };
            let pair = match self.rng.below(10) {
                0..=5 => format!("{}={}", encode(&key), encode(&value)),
                6 => format!("{key}={}", value.replace(' ', "+")),
                7 => encode(&key),
                8 => format!("={}", encode(&value)),
                _ => {
                    let broken = self
                        .rng
                        .pick(&["%", "%4", "%G1", "%%", "%ff%fe", "%00", "+%2B+", "%u0041"]);
                    format!("{}={}{broken}", encode(&key), encode(&value))
                }
            };
            out.extend_from_slice(pair.as_bytes());
        }
        if self.rng.chance(10) {
            out.push(b'&');
        }
        if self.rng.chance(5) {
            out.extend_from_slice(b"&username=\xff\xc3&token=\xc3\x28");
        }
        out
    }

    /// A JSON login body of a size around 64 KiB, padded with an ignored field.
    fn body_near_the_limit(&mut self) -> Vec<u8> {
        let len = self
            .rng
            .pick(&[MAX_BODY - 1, MAX_BODY, MAX_BODY + 1, MAX_BODY + 1000]);
        padded_login_body(ALICE_PASSWORD, len)
    }

    /// The raw-only parts of a request the fuzzer sends byte for byte.
    fn raw_details(&mut self, request: &Request) -> Raw {
        let version = if self.rng.chance(90) {
            "HTTP/1.1"
        } else {
            self.rng
                .pick(&["HTTP/1.0", "HTTP/1.2", "HTTP/2.0", "http/1.1", "HTTP/1", ""])
        };
        let framing = if request.body.is_empty() {
            self.rng.pick(&[Framing::Exact, Framing::Unframed])
        } else {
            match self.rng.below(100) {
                0..=67 => Framing::Exact,
                68..=79 => Framing::Chunked,
                80..=83 => Framing::Short,
                84..=87 => Framing::Padded,
                88..=92 => Framing::Doubled,
                93 => Framing::Huge,
                94..=97 => Framing::BadChunk,
                _ => Framing::Unframed,
            }
        };
        let chunks = (0..self.rng.below(6))
            .map(|_| 1 + self.rng.below(request.body.len().max(1)))
            .collect();
        let junk_line = self.rng.chance(8).then(|| {
            self.rng
                .pick(&[
                    &b"Bad Header"[..],
                    b"NoColon",
                    b": empty-name",
                    b" folded continuation",
                    b"X-Nul: a\0b",
                    b"X-Del: \x7f",
                    b"X-Bin: \xff\xfe",
                    b"\tX-Tab: 1",
                    b"X Space: 1",
                ])
                .to_vec()
        });
        Raw {
            version,
            framing,
            omit_host: self.rng.chance(5),
            junk_line,
            chunks,
        }
    }
}
