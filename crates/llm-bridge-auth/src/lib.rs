//! Who may use the gateway, and how much: access keys and managed keys with their
//! permissions, rate limits and budgets.
//!
//! Keys are [`SecretString`]s from the moment they are read, kept only as SHA-256 digests,
//! and compared in constant time (static keys) or found by digest (managed keys, 256-bit
//! random). Managed keys live in a [`KeyStore`] (the embedded SQLite database, or PostgreSQL
//! through `llm-bridge-postgres`) and in memory
//! ([`ManagedKeys`]), so that a request never waits for the database.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod authenticator;
pub mod clock;
mod limits;
mod managed;
mod policy;
mod secret;
mod store;

pub use authenticator::{
    AccessKey, Authenticator, DEFAULT_RESERVATION, LimitsBackend, LimitsConfig, OnUnavailable,
    Principal, parse_access_keys, parse_admin_keys,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use limits::{
    Admission, KeyState, Ledger, LimitsUnavailable, Period, RateInfo, Refusal, Rejection,
    SharedAdmission, SharedLimits,
};
pub use managed::{ManagedKey, ManagedKeys};
pub use policy::{Budget, KeyPolicy, glob, parse_duration_ms};
pub use secrecy::SecretString;
pub use secret::generate_key;
pub use store::{
    KeyRecord, KeyStore, NewKey, SqliteKeyStore, key_not_found, name_taken, newer_schema,
    policy_json,
};
