//! Console sessions: signing in with a token gives a random session id in an HttpOnly,
//! SameSite=Strict cookie (Secure when the console speaks TLS). The server keeps, in memory, what
//! the id stands for — the token's name and the SHA-256 the store keeps for it, never the
//! secret — and the session's CSRF token, which every form carries back. Each request looks the
//! token up again, so a revoked or expired token ends its sessions at once. Sessions are lost
//! when the controller restarts (people sign in again); each controller of an HA installation
//! has its own.
//!
//! The decisions (cookie parsing, CSRF comparison, expiry) are pure and tested here.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// The session cookie.
pub const COOKIE: &str = "ferry_session";
/// The sign-in form's own CSRF cookie (double submit: the form and the cookie must agree).
pub const SIGNIN_COOKIE: &str = "ferry_signin";
/// How long a session lasts (never longer than its token).
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Most sessions kept at once; the oldest go first (sessions come only from valid tokens, but
/// no map grows without bound).
pub const MAX_SESSIONS: usize = 10_000;

/// What a session id stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The token's name and the hash the store keeps for it: the token is looked up again on
    /// every request, and a token re-created under the same name does not inherit sessions.
    pub token_name: String,
    pub token_sha256: String,
    /// Every form of this session carries it back.
    pub csrf: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    /// The team an installation-wide token's pages are about (empty: `default`).
    pub team: String,
}

/// 256 random bits as 64 hex digits (as token secrets are made).
pub fn random_hex() -> String {
    let random = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    hex::encode(Sha256::digest(random.as_bytes()))
}

/// When a session made now for a token expiring at `token_expires_ms` ends.
pub fn expiry(now_ms: i64, token_expires_ms: Option<i64>) -> i64 {
    let ttl = now_ms + SESSION_TTL.as_millis() as i64;
    token_expires_ms.map_or(ttl, |t| t.min(ttl))
}

/// Compares two secrets in time independent of where they differ; an empty one never matches.
pub fn same_secret(expected: &str, given: &str) -> bool {
    !expected.is_empty()
        && expected.len() == given.len()
        && expected
            .bytes()
            .zip(given.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The value of cookie `name` in a `Cookie:` header value.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v.trim_matches('"'))
    })
}

/// A `Set-Cookie:` value: HttpOnly, SameSite=Strict, path `/`, Secure when served over TLS;
/// `max_age` 0 deletes it.
pub fn set_cookie(name: &str, value: &str, secure: bool, max_age: Duration) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        max_age.as_secs()
    )
}

/// The sessions of this controller (in memory).
#[derive(Debug, Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// Opens a session for a token; returns its id.
    pub fn open(
        &self,
        token_name: &str,
        token_sha256: &str,
        expires_at_ms: i64,
        now_ms: i64,
    ) -> String {
        let id = random_hex();
        let session = Session {
            token_name: token_name.to_owned(),
            token_sha256: token_sha256.to_owned(),
            csrf: random_hex(),
            created_at_ms: now_ms,
            expires_at_ms,
            team: String::new(),
        };
        if let Ok(mut map) = self.map.lock() {
            map.retain(|_, s| s.expires_at_ms > now_ms);
            while map.len() >= MAX_SESSIONS {
                let oldest = map
                    .iter()
                    .min_by_key(|(_, s)| s.created_at_ms)
                    .map(|(k, _)| k.clone());
                match oldest {
                    Some(k) => map.remove(&k),
                    None => break,
                };
            }
            map.insert(id.clone(), session);
        }
        id
    }

    /// The live session of an id (an expired one is dropped).
    pub fn get(&self, id: &str, now_ms: i64) -> Option<Session> {
        let mut map = self.map.lock().ok()?;
        match map.get(id) {
            Some(s) if s.expires_at_ms > now_ms => Some(s.clone()),
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    /// Sets the team a session's pages are about.
    pub fn set_team(&self, id: &str, team: &str) {
        if let Ok(mut map) = self.map.lock()
            && let Some(s) = map.get_mut(id)
        {
            s.team = team.to_owned();
        }
    }

    /// Ends a session (signing out).
    pub fn close(&self, id: &str) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(id);
        }
    }

    /// How many sessions are open.
    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// True when none is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_exact_name() {
        let h = "a=1; ferry_session=abc; ferry_session_x=no; b=\"q\"";
        assert_eq!(cookie(h, COOKIE), Some("abc"));
        assert_eq!(cookie(h, "b"), Some("q"));
        assert_eq!(cookie(h, "ferry"), None);
        assert_eq!(cookie("", COOKIE), None);
    }

    #[test]
    fn session_cookies_are_http_only_strict_and_secure_over_tls() {
        let c = set_cookie(COOKIE, "id", true, SESSION_TTL);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"));
        assert!(c.contains("Max-Age=28800"), "{c}");
        assert!(!set_cookie(COOKIE, "id", false, SESSION_TTL).contains("Secure"));
    }

    #[test]
    fn csrf_tokens_must_match_exactly() {
        let t = random_hex();
        assert_eq!(t.len(), 64);
        assert!(same_secret(&t, &t.clone()));
        assert!(!same_secret(&t, ""));
        assert!(
            !same_secret("", ""),
            "an empty expected token never matches"
        );
        assert!(!same_secret(&t, &t[..63]));
        let mut other = t.clone();
        other.replace_range(63.., if t.ends_with('0') { "1" } else { "0" });
        assert!(!same_secret(&t, &other));
        assert_ne!(random_hex(), random_hex());
    }

    #[test]
    fn a_session_never_outlives_its_token() {
        assert_eq!(expiry(1000, None), 1000 + SESSION_TTL.as_millis() as i64);
        assert_eq!(expiry(1000, Some(5000)), 5000);
    }

    #[test]
    fn sessions_expire_close_and_stay_bounded() {
        let s = Sessions::default();
        let id = s.open("ci", "hash", 2000, 1000);
        let got = s.get(&id, 1500).expect("live");
        assert_eq!(got.token_name, "ci");
        assert_eq!(got.csrf.len(), 64);
        assert_eq!(s.get(&id, 2000), None, "expired");
        assert!(s.is_empty(), "an expired session is dropped");
        let id = s.open("ci", "hash", 9000, 1000);
        s.set_team(&id, "b");
        assert_eq!(s.get(&id, 1001).map(|x| x.team).as_deref(), Some("b"));
        s.close(&id);
        assert_eq!(s.get(&id, 1001), None);
        assert_eq!(s.get("unknown", 0), None);
    }
}
