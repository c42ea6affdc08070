//! Making and fingerprinting keys: a leaf that the authenticator and the key store both use.

use secrecy::SecretString;
use sha2::{Digest, Sha256};

/// A fresh random access key (`sk-llmb-` and 43 URL-safe characters, 256 bits).
pub fn generate_key() -> SecretString {
    let mut bytes = [0u8; 32];
    // The OS random source failing is unrecoverable for a key generator.
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    SecretString::from(format!("sk-llmb-{}", base64url(&bytes)))
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len() * 4 / 3 + 2);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// SHA-256 of a key.
pub(crate) fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}
