//! Tests: verify.
