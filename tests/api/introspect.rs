//! Tests: introspect.
