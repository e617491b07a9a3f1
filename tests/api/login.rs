//! Tests: login.
