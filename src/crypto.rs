//! Encryption at rest for outcomes, which carry voucher codes and PINs (guarantee 6).
//!
//! XChaCha20-Poly1305 with a random 24-byte nonce per value; the stored form is
//! `nonce || ciphertext`. The key comes from `DATA_ENCRYPTION_KEY` (base64 of 32 bytes).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

const NONCE_LEN: usize = 24;

/// Parses a base64 32-byte key.
pub fn parse_key(b64: &str) -> Result<[u8; 32], String> {
    let bytes = STANDARD
        .decode(b64.trim())
        .map_err(|_| "not base64".to_string())?;
    bytes
        .try_into()
        .map_err(|v: Vec<u8>| format!("decodes to {} bytes; 32 are required", v.len()))
}

/// A key derived from another secret, for setups that give no `DATA_ENCRYPTION_KEY`.
pub fn derive_key(secret: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"voucher-relay data key v1\0");
    h.update(secret.as_bytes());
    h.finalize().into()
}

/// Seals values with one key and opens them with that key or an older one.
#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
    /// Keys still accepted for opening, from a signing secret being rotated out.
    older: Vec<XChaCha20Poly1305>,
}

impl Sealer {
    pub fn new(key: &[u8; 32]) -> Sealer {
        Sealer {
            cipher: XChaCha20Poly1305::new(key.into()),
            older: Vec::new(),
        }
    }

    /// The first key seals; every key opens. An empty list gives the all-zero key, which
    /// only commands that never read sealed values (migrate, topology) end up with.
    pub fn with_keys(keys: &[[u8; 32]]) -> Sealer {
        let mut ciphers = keys.iter().map(|k| XChaCha20Poly1305::new(k.into()));
        Sealer {
            cipher: ciphers
                .next()
                .unwrap_or_else(|| XChaCha20Poly1305::new(&[0u8; 32].into())),
            older: ciphers.collect(),
        }
    }

    /// Encrypts `plain` under a fresh nonce.
    pub fn seal(&self, plain: &[u8]) -> Vec<u8> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        // Encryption fails only for inputs beyond 256 GiB.
        let ct = self
            .cipher
            .encrypt(&nonce, plain)
            .unwrap_or_else(|_| unreachable!("input far below the AEAD limit"));
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        out
    }

    /// Decrypts what [`seal`](Self::seal) produced; `None` if it was tampered with or the key
    /// is wrong.
    pub fn open(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        std::iter::once(&self.cipher)
            .chain(&self.older)
            .find_map(|c| c.decrypt(XNonce::from_slice(nonce), ct).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_detects_tampering() {
        let s = Sealer::new(&derive_key("k"));
        let sealed = s.seal(b"1111222233334444");
        assert!(!sealed.windows(16).any(|w| w == b"1111222233334444"));
        assert_eq!(s.open(&sealed).as_deref(), Some(&b"1111222233334444"[..]));
        let mut bad = sealed.clone();
        bad[30] ^= 1;
        assert!(s.open(&bad).is_none());
        assert!(Sealer::new(&derive_key("other")).open(&sealed).is_none());
    }

    #[test]
    fn opens_with_an_older_key_and_seals_with_the_first() {
        let (new, old) = (derive_key("new"), derive_key("old"));
        let sealed_before = Sealer::new(&old).seal(b"code");
        let rotating = Sealer::with_keys(&[new, old]);
        assert_eq!(rotating.open(&sealed_before).as_deref(), Some(&b"code"[..]));
        let sealed_now = rotating.seal(b"code");
        assert_eq!(
            Sealer::new(&new).open(&sealed_now).as_deref(),
            Some(&b"code"[..])
        );
    }

    #[test]
    fn parses_keys() {
        assert!(parse_key(&STANDARD.encode([7u8; 32])).is_ok());
        assert!(parse_key(&STANDARD.encode([7u8; 16])).is_err());
        assert!(parse_key("@@").is_err());
    }
}
