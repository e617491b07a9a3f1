//! `LATCHKEY_<SECTION>__<KEY>` environment overrides, laid over the file's table.

use super::{ConfigError, ENV_PREFIX};

/// Sets `table[section][key]` from `LATCHKEY_SECTION__KEY=value`.
///
/// The value is read as the type the key has by default: strings stay raw
/// (so `0.0.0.0:9000` and `7d` need no quoting), anything else is parsed as a
/// TOML value (`8`, `true`, `["127.0.0.1"]`).
pub(super) fn overlay_env(
    table: &mut toml::Table,
    var: &str,
    value: &str,
) -> Result<(), ConfigError> {
    let env_error = |message: String| ConfigError::Env {
        var: var.to_owned(),
        message,
    };
    let rest = &var[ENV_PREFIX.len()..];
    let Some((section, key)) = rest.split_once("__") else {
        return Err(env_error(
            "expected LATCHKEY_<SECTION>__<KEY>, e.g. LATCHKEY_SERVER__LISTEN".to_owned(),
        ));
    };
    let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
    let defaults = default_table();
    let default = defaults
        .get(&section)
        .and_then(|s| s.as_table())
        .and_then(|s| s.get(&key));
    let is_string = match default {
        Some(default) => default.is_str(),
        None if WITHOUT_DEFAULT_LINE.contains(&(section.as_str(), key.as_str())) => false,
        None => return Err(env_error(format!("unknown config key `{section}.{key}`"))),
    };
    let parsed = if is_string {
        toml::Value::String(value.to_owned())
    } else {
        parse_toml_value(value).ok_or_else(|| {
            env_error(format!(
                "{value:?} is not a valid value for `{section}.{key}`"
            ))
        })?
    };
    let section_table = table
        .entry(section.clone())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let Some(section_table) = section_table.as_table_mut() else {
        return Err(ConfigError::Key {
            key: section,
            message: "must be a table".to_owned(),
        });
    };
    section_table.insert(key, parsed);
    Ok(())
}

/// Keys that `config.toml` cannot show with a value (an array of tables
/// written as `[[access.rules]]`), taken from the environment as TOML, e.g.
/// `LATCHKEY_ACCESS__RULES='[{paths = ["/admin"], policy = "deny"}]'`.
const WITHOUT_DEFAULT_LINE: &[(&str, &str)] = &[("access", "rules")];

/// Parses a lone TOML value such as `8`, `true` or `["a", "b"]`.
fn parse_toml_value(text: &str) -> Option<toml::Value> {
    let doc = format!("v = {text}").parse::<toml::Table>().ok()?;
    doc.get("v").cloned()
}

/// The defaults as a TOML table, used to learn each key's type for env overrides.
fn default_table() -> toml::Table {
    // Written out rather than serialized so `Config` needs no `Serialize`;
    // a unit test checks it against `config.toml` and `Config::default()`.
    DEFAULTS_TOML
        .parse()
        .expect("the embedded config.toml parses (checked by a unit test)")
}

/// The repository's `config.toml`: the SPEC defaults, commented.
pub const DEFAULTS_TOML: &str = include_str!("../../config.toml");
