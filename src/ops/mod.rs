//! Operations: what an operator sees of the running server. For now the
//! log ([`logging`]: level, line format, request ids).

pub mod logging;
