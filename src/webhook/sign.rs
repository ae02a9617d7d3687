//! Standard Webhooks signatures (<https://www.standardwebhooks.com>).
//!
//! `webhook-signature: v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>` where the
//! key is the base64 part of a `whsec_` secret.
//!
//! While a secret is being rotated, `WEBHOOK_SIGNING_SECRET` holds several, separated by
//! spaces, and every message carries one signature per secret ([`SigningKeys`]). Receivers
//! accept a message when any one verifies, so each can switch secrets on its own day.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A decoded `whsec_` signing secret.
#[derive(Clone)]
pub struct SigningKey {
    key: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(***)")
    }
}

impl SigningKey {
    /// Parses `whsec_<base64>`; the key must decode to 24 to 64 bytes, as the spec asks.
    pub fn parse(secret: &str) -> Result<SigningKey, String> {
        let b64 = secret
            .strip_prefix("whsec_")
            .ok_or("must start with whsec_")?;
        let key = STANDARD
            .decode(b64)
            .map_err(|_| "the part after whsec_ is not base64".to_string())?;
        if !(24..=64).contains(&key.len()) {
            return Err(format!(
                "the key decodes to {} bytes; 24 to 64 are required",
                key.len()
            ));
        }
        Ok(SigningKey { key })
    }

    /// The `webhook-signature` header value for one message.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        format!("v1,{}", STANDARD.encode(self.mac(msg_id, timestamp, body)))
    }

    /// Checks a `webhook-signature` header (space-separated list of `v1,<sig>`) in constant
    /// time. Used by the demo's receiver and the tests.
    pub fn verify(&self, msg_id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
        header
            .split(' ')
            .filter_map(|candidate| candidate.strip_prefix("v1,"))
            .filter_map(|sig| STANDARD.decode(sig).ok())
            .any(|sig| {
                self.hmac(msg_id, timestamp, body)
                    .verify_slice(&sig)
                    .is_ok()
            })
    }

    fn hmac(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    fn mac(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
        self.hmac(msg_id, timestamp, body)
            .finalize()
            .into_bytes()
            .to_vec()
    }
}

/// Every secret in use, the current one first.
#[derive(Clone, Debug)]
pub struct SigningKeys(Vec<SigningKey>);

impl SigningKeys {
    /// Parses a space-separated list of `whsec_` secrets; at least one is required.
    pub fn parse(secrets: &str) -> Result<SigningKeys, String> {
        let keys = secrets
            .split_whitespace()
            .enumerate()
            .map(|(i, s)| SigningKey::parse(s).map_err(|e| format!("secret {}: {e}", i + 1)))
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err("holds no secret".into());
        }
        Ok(SigningKeys(keys))
    }

    /// The `webhook-signature` header: one `v1,<sig>` per secret, space-separated.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        self.0
            .iter()
            .map(|k| k.sign(msg_id, timestamp, body))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The current secret: the one receivers are moving to.
    pub fn current(&self) -> &SigningKey {
        &self.0[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector published with the Standard Webhooks reference libraries.
    #[test]
    fn matches_the_reference_vector() {
        let key = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = key.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(key.verify(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
            &format!("v1,bm90IGl0 {sig}")
        ));
        assert!(!key.verify("msg_other", 1614265330, br#"{"test": 2432232314}"#, &sig));
    }

    #[test]
    fn signs_once_per_secret_during_a_rotation() {
        let old = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let new = "whsec_dGhpcyBpcyBhIG5ldyAzMi1ieXRlIHNlY3JldCEhIQ==";
        let keys = SigningKeys::parse(&format!("{new}  {old}")).unwrap();
        let header = keys.sign("msg_1", 1614265330, b"{}");
        assert_eq!(header.split(' ').count(), 2);
        for secret in [old, new] {
            assert!(
                SigningKey::parse(secret)
                    .unwrap()
                    .verify("msg_1", 1614265330, b"{}", &header)
            );
        }
        assert!(SigningKeys::parse("  ").is_err());
        assert!(SigningKeys::parse(&format!("{new} whsec_!!")).is_err());
    }

    #[test]
    fn refuses_malformed_secrets() {
        assert!(SigningKey::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(SigningKey::parse("whsec_!!!").is_err());
        assert!(SigningKey::parse("whsec_c2hvcnQ=").is_err());
    }
}
