//! `[metrics]`: where, if anywhere, Prometheus scrapes `/metrics`.

use std::net::SocketAddr;

use serde::{Deserialize, Deserializer};

/// `[metrics]`: the listener for `GET /metrics`, apart from the main one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `None` (written `""`) means no metrics listener at all.
    #[serde(deserialize_with = "optional_address")]
    pub listen: Option<SocketAddr>,
}

/// `""` is no address; anything else must be `host:port` with an IP host.
fn optional_address<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "{text:?} is not an address and port such as \"127.0.0.1:9464\" (or \"\" for none)"
        ))
    })
}
