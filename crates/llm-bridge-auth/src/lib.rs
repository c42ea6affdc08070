//! Who may use the gateway: access keys and the principal a key stands for.
//!
//! Keys are [`SecretString`]s from the moment they are read, kept only as SHA-256 digests,
//! and compared in constant time.

mod keys;

pub use keys::{
    AccessKey, Authenticator, Principal, generate_key, parse_access_keys, parse_admin_keys,
};
pub use secrecy::SecretString;
