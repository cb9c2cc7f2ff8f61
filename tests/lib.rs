//! Integration-test crate; the tests live in `e2e/`.
