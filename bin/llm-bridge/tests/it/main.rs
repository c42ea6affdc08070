//! Every end-to-end test of this crate in one binary: one link instead of one per file.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod cli;
mod config_docs;
mod lanes;
mod logs;
mod postgres;
mod prices;
mod scale_out;
mod shutdown_and_fds;
