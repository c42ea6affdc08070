//! Integration tests (one binary to save link time).
