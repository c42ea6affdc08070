//! Every end-to-end test of this crate in one binary: one link instead of one per file.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod corpus;
mod fixtures;
mod fuzz;
