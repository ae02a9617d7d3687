//! Console logins: the operator token opens a session kept in memory (a restart logs
//! everyone out), carried by an HttpOnly, SameSite=Strict cookie. Every form that changes
//! something carries the session's CSRF token, checked in constant time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The session cookie's name.
pub const COOKIE: &str = "voucher_console";

/// How long a login lasts: one shift.
const LIFETIME: Duration = Duration::from_secs(8 * 3600);

/// One logged-in operator.
#[derive(Debug, Clone)]
pub struct Session {
    pub operator: String,
    pub csrf: String,
    expires: Instant,
}

/// The sessions of this process.
#[derive(Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, Session>>,
}

fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// Equal bytes, in a time that does not depend on where they differ.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Sessions {
    /// Opens a session for `operator`; returns its cookie value.
    pub fn open(&self, operator: &str) -> String {
        let id = random_token();
        let session = Session {
            operator: operator.to_owned(),
            csrf: random_token(),
            expires: Instant::now() + LIFETIME,
        };
        let mut open = self.lock();
        open.retain(|_, s| s.expires > Instant::now());
        open.insert(id.clone(), session);
        id
    }

    /// The live session of a cookie value.
    pub fn get(&self, id: &str) -> Option<Session> {
        let open = self.lock();
        open.get(id).filter(|s| s.expires > Instant::now()).cloned()
    }

    pub fn close(&self, id: &str) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // Plain values: a panic elsewhere leaves nothing half-written.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The session cookie's value in a `Cookie` header.
pub fn cookie_value(header: &str) -> Option<&str> {
    header.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == COOKIE).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_by_its_cookie_only() {
        let s = Sessions::default();
        let id = s.open("night shift");
        let got = s.get(&id).expect("open");
        assert_eq!(got.operator, "night shift");
        assert!(s.get("forged").is_none());
        assert_ne!(got.csrf, id);
        s.close(&id);
        assert!(s.get(&id).is_none());
    }

    #[test]
    fn cookies_and_comparisons() {
        assert_eq!(cookie_value("a=1; voucher_console=xyz; b=2"), Some("xyz"));
        assert_eq!(cookie_value("voucher_consolex=1"), None);
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }
}
