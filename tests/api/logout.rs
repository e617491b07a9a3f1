//! Tests: logout.
