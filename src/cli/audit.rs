//! `latchkey audit`: the audit trail, oldest first, as a table or as JSON lines.

use std::io::Write;

use anyhow::{anyhow, Context};

use super::table::{format_utc, output_error};
use crate::auth::admin::Admin;
use crate::auth::audit::Entry;
use crate::auth::input::Username;
use crate::auth::unix_now;
use crate::config::parse_duration;

/// Prints the events about `user` (if given) from the last `since` (if
/// given), a page at a time: the trail may hold millions of rows.
pub(super) fn audit(
    admin: &Admin,
    user: Option<&str>,
    since: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    // A name that is not an account any more still has its events.
    let user = user
        .map(|name| Username::parse(name).map_err(|e| anyhow!("--user {name:?}: {e}")))
        .transpose()?;
    let since = since
        .map(|text| {
            let ago = parse_duration(text).map_err(|e| anyhow!("--since {text:?}: {e}"))?;
            let ago = i64::try_from(ago.as_secs()).unwrap_or(i64::MAX);
            anyhow::Ok(unix_now().saturating_sub(ago))
        })
        .transpose()?;
    let mut listing = admin.audit_trail(user.as_ref(), since);
    let mut out = std::io::stdout().lock();
    if !json {
        writeln!(
            out,
            "{}",
            text_line(["TIME", "EVENT", "SOURCE", "USER", "ADDRESS", "DETAIL"])
        )
        .map_err(output_error)?;
    }
    loop {
        let page = listing.next_page().context("cannot read the audit trail")?;
        if page.is_empty() {
            break;
        }
        for entry in &page {
            let line = if json {
                json_line(entry)
            } else {
                table_line(entry)
            };
            writeln!(out, "{line}").map_err(output_error)?;
        }
    }
    out.flush().map_err(output_error)
}

/// Columns padded to fixed widths (a streamed listing cannot measure its
/// rows first); a longer value pushes the rest of its line right.
fn text_line(cells: [&str; 6]) -> String {
    const WIDTHS: [usize; 5] = [20, 16, 6, 16, 15];
    let mut line = String::new();
    for (cell, width) in cells.iter().zip(WIDTHS) {
        line += &format!("{cell:<width$}  ");
    }
    line += cells[5];
    line.trim_end().to_owned()
}

fn table_line(e: &Entry) -> String {
    text_line([
        &format_utc(e.at),
        &e.event,
        &e.source,
        e.username.as_deref().unwrap_or("-"),
        e.ip.as_deref().unwrap_or("-"),
        &e.detail,
    ])
}

/// One JSON object: what log shippers and `jq` read.
fn json_line(e: &Entry) -> String {
    serde_json::json!({
        "id": e.id,
        "time": format_utc(e.at).replace(' ', "T"),
        "at": e.at,
        "event": e.event,
        "user": e.username,
        "ip": e.ip,
        "user_agent": e.user_agent,
        "source": e.source,
        "detail": e.detail,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            id: 7,
            at: 1_795_000_000,
            event: "login_failed".to_owned(),
            username: None,
            ip: Some("192.0.2.1".to_owned()),
            user_agent: Some("curl/8 \"quoted\"".to_owned()),
            source: "http".to_owned(),
            detail: "unknown user".to_owned(),
        }
    }

    #[test]
    fn a_json_line_is_one_object_with_every_field() {
        let line = json_line(&entry());
        assert!(!line.contains('\n'));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["time"], "2026-11-18T11:06:40Z");
        assert_eq!(value["user"], serde_json::Value::Null);
        assert_eq!(value["user_agent"], "curl/8 \"quoted\"");
        assert_eq!(value["event"], "login_failed");
    }

    #[test]
    fn a_table_line_shows_a_dash_for_what_is_unknown() {
        assert_eq!(
            table_line(&entry()),
            "2026-11-18 11:06:40Z  login_failed      http    -                 192.0.2.1        unknown user"
        );
    }
}
