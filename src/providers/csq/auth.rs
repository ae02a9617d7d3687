//! CSQ's U / SH / ST request headers.
//!
//! Reading of the eVSB "Headers" page, which the texts we hold list but do not define:
//! - `U`: the API user name;
//! - `ST`: the request time, whole seconds since the Unix epoch, as decimal text;
//! - `SH`: lowercase hex of SHA-256 over `U + ST + password`, so the password never travels
//!   and a captured header set expires with its timestamp.
//!
//! The sandbox checks the same formula and refuses a timestamp more than
//! [`MAX_CLOCK_SKEW_SECS`] away from its clock, as a certification endpoint would.

use sha2::{Digest, Sha256};

/// How far `ST` may be from the server's clock.
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;

/// The three headers for one request at `now` (Unix seconds).
pub fn headers(user: &str, password: &str, now: i64) -> [(&'static str, String); 3] {
    let st = now.to_string();
    let sh = signature(user, &st, password);
    [("U", user.to_string()), ("SH", sh), ("ST", st)]
}

/// `SH` for the given user, timestamp text and password.
pub fn signature(user: &str, st: &str, password: &str) -> String {
    let mut h = Sha256::new();
    h.update(user.as_bytes());
    h.update(st.as_bytes());
    h.update(password.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_sha256_of_user_time_password() {
        // sha256("relay1700000000secret"), computed independently with `sha256sum`.
        assert_eq!(
            signature("relay", "1700000000", "secret"),
            "3ba6771d5eda1ff115d848558a9820ec99427cbe25ce9f0841730c36692a3460"
        );
        let [u, sh, st] = headers("relay", "secret", 1_700_000_000);
        assert_eq!(u.1, "relay");
        assert_eq!(st.1, "1700000000");
        assert_eq!(sh.1.len(), 64);
    }
}
