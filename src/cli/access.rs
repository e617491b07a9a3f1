//! `latchkey access check`: what the rules decide for a URL, anonymous or
//! for a user with their real groups.

use anyhow::anyhow;

use super::{existing_username, open_admin, AccessCommand};
use crate::access::{check, ProxiedRequest, Rules, Subject};
use crate::auth::groups::UserGroups;
use crate::config::Config;

pub(super) fn access(cmd: AccessCommand, config: &Config) -> anyhow::Result<()> {
    let AccessCommand::Check {
        url,
        method,
        ip,
        user,
        otp,
    } = cmd;
    if otp && user.is_none() {
        anyhow::bail!("--otp judges a user's session: give --user NAME too");
    }
    let (host, path) = check::split_url(&url).map_err(|e| anyhow!(e))?;
    let request = ProxiedRequest {
        host,
        path,
        method: &method,
        ip: ip.unwrap_or(check::UNKNOWN_IP),
    };
    let rules = Rules::compile(&config.access);
    // The database only for a user: the rules alone need none.
    let found = match user {
        Some(name) => Some(open_admin(config)?.user_groups(&existing_username(&name)?)?),
        None => None,
    };
    // A disabled user has no valid session: /verify judges them as anyone
    // without one, and so does this.
    let subject = found.as_ref().filter(|u| !u.disabled).map(|u| Subject {
        username: &u.username,
        groups: &u.groups,
        two_factor: otp,
    });
    let explanation = rules.explain(&request, subject.as_ref());
    print!(
        "{}",
        check::Report {
            request: &request,
            ip_given: ip.is_some(),
            who: &who(found.as_ref(), otp),
            explanation: &explanation,
        }
    );
    Ok(())
}

/// Whom the request is judged for, as the report's first line ends.
fn who(user: Option<&UserGroups>, otp: bool) -> String {
    let session = match otp {
        true => ", with a session that proved a second factor",
        false => ", with a password-only session",
    };
    let described = match user {
        None => "without a session".to_owned(),
        Some(u) if u.disabled => format!(
            "for user {:?}, who is disabled: judged without a session, as /verify would",
            u.username
        ),
        // As in Remote-Groups: no group name holds a comma.
        Some(u) if u.groups.is_empty() => format!("as user {:?}, in no group", u.username),
        Some(u) => format!("as user {:?}, in groups {}", u.username, u.groups.join(",")),
    };
    match user {
        Some(u) if !u.disabled => described + session,
        _ => described,
    }
}
