//! Operations: what an operator sees of the running server: the log
//! ([`logging`]: level, line format, request ids) and the Prometheus
//! metrics ([`metrics`]: the series, and their text for a scrape).

pub mod logging;
pub mod metrics;
