//! What browsers need from the services: session tokens and CORS.
//!
//! A browser cannot keep a secret, so a game client never holds an API key. The performance API
//! issues it a short-lived **session token** bound to one new session id and one source
//! (`POST /v1/sessions`); the gateway accepts the token only for envelopes of that session and
//! source. Both services read the same secret file; nothing else is shared, and the gateway
//! needs no database to check a token.
//!
//! A token is `pgs_<claims>.<mac>`: the claims are JSON (`sid`, `src`, `exp` in Unix seconds),
//! both parts base64url without padding, the MAC is HMAC-SHA256 over the encoded claims. The
//! MAC is checked in constant time before the claims are read.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

pub use tower_http::cors::CorsLayer;

/// Every session token starts with this, so the gateway tells it from an API key at a glance.
pub const TOKEN_PREFIX: &str = "pgs_";

/// The shortest secret accepted, in bytes (HMAC-SHA256's block security needs no more).
pub const MIN_SECRET_BYTES: usize = 32;

/// What a session token grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClaims {
    /// The one session id the token may send envelopes for.
    pub sid: String,
    /// The one `source.id` those envelopes may carry.
    pub src: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
}

/// Why a token was refused. The gateway answers 401 to each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not `pgs_<claims>.<mac>` in base64url.
    #[error("malformed session token")]
    Malformed,
    /// The MAC does not match: forged, damaged, or signed with another secret.
    #[error("session token signature does not match")]
    BadSignature,
    /// Past its expiry.
    #[error("session token expired at {0} (Unix seconds); ask the API for a new session")]
    Expired(u64),
}

/// Signs and checks session tokens with the shared secret.
#[derive(Clone)]
pub struct SessionKey {
    secret: Vec<u8>,
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

impl SessionKey {
    /// A key from the secret's bytes; at least [`MIN_SECRET_BYTES`].
    pub fn new(secret: &[u8]) -> Result<SessionKey, String> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(format!("the session secret has {} bytes; at least {MIN_SECRET_BYTES} are needed", secret.len()));
        }
        Ok(SessionKey { secret: secret.to_vec() })
    }

    /// Reads the secret file: its bytes, without surrounding whitespace, are the key
    /// (`pitgun gateway session-secret` writes 64 hex digits). Others may not read it and the
    /// group may not write it; group read is allowed, as Kubernetes mounts a Secret for a pod's
    /// `fsGroup`.
    pub fn load(path: &Path) -> Result<SessionKey, String> {
        use std::os::unix::fs::PermissionsExt;
        let place = path.display();
        use std::io::Read;
        let cannot = |e: std::io::Error| format!("cannot read the session secret {place}: {e}");
        let mut file = std::fs::File::open(path).map_err(cannot)?;
        let mode = file.metadata().map_err(cannot)?.permissions().mode();
        if mode & 0o027 != 0 {
            return Err(format!(
                "the session secret {place} is open to others or writable by its group (mode {:o}); run `chmod 600 {place}`",
                mode & 0o777
            ));
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(cannot)?;
        SessionKey::new(bytes.trim_ascii()).map_err(|e| format!("{place}: {e}"))
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes a key of any length")
    }

    /// A token for `claims`.
    pub fn issue(&self, claims: &SessionClaims) -> String {
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialise"));
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{TOKEN_PREFIX}{body}.{sig}")
    }

    /// The claims of a valid, unexpired token, at `now` (Unix seconds).
    pub fn verify(&self, token: &str, now: u64) -> Result<SessionClaims, TokenError> {
        let rest = token.strip_prefix(TOKEN_PREFIX).ok_or(TokenError::Malformed)?;
        let (body, sig) = rest.split_once('.').ok_or(TokenError::Malformed)?;
        let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        mac.verify_slice(&sig).map_err(|_| TokenError::BadSignature)?;
        let json = URL_SAFE_NO_PAD.decode(body).map_err(|_| TokenError::Malformed)?;
        let claims: SessionClaims = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
        if claims.exp <= now {
            return Err(TokenError::Expired(claims.exp));
        }
        Ok(claims)
    }
}

/// Creates a new secret file: 32 random bytes as 64 hex digits, mode 600. Never overwrites.
pub fn write_new_secret(path: &Path) -> Result<(), String> {
    use rand::RngCore;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let place = path.display();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot create {place} (an existing secret is never overwritten): {e}"))?;
    writeln!(file, "{hex}").map_err(|e| format!("cannot write {place}: {e}"))
}

/// An allow-list of origins in the one form browsers send them (RFC 6454's serialisation:
/// scheme and host in lower case, an international host in punycode, no default port), so that
/// comparing bytes is comparing origins. Anything but `http(s)://host[:port]` is refused.
pub fn origins(list: &[String]) -> Result<Vec<String>, String> {
    list.iter().map(|o| origin(o)).collect()
}

fn origin(o: &str) -> Result<String, String> {
    let bad = |why: &str| format!("CORS origin {o:?}: {why}; expected http(s)://host[:port], no path and no trailing slash");
    // The URL parser would take a path, a query or user info and drop them from the origin.
    if !o.split_once("://").is_some_and(|(_, rest)| !rest.is_empty() && !rest.contains(['/', '?', '#', '@'])) {
        return Err(bad("not an origin"));
    }
    let url = url::Url::parse(o).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("the scheme is neither http nor https"));
    }
    Ok(url.origin().ascii_serialization())
}

/// A URL browsers are told to send to (the gateway's, as they reach it): absolute http(s), no
/// query or fragment, kept without a trailing slash so that paths are appended to it.
pub fn browser_url(u: &str) -> Result<String, String> {
    let bad = |why: &str| format!("{u:?} is not a URL browsers can send to: {why}; expected http(s)://host[:port][/path]");
    let url = url::Url::parse(u).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(bad("not an http or https URL with a host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("a query or fragment"));
    }
    // `fetch` refuses a URL with credentials in it.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("user info"));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// The CORS layer for an allow-list of origins ([`origins`]). Preflights from a listed origin
/// are answered; others get no CORS headers, so the browser refuses the request. An empty list
/// allows no cross-origin request.
pub fn cors(list: &[String]) -> Result<CorsLayer, String> {
    use axum::http::{header, HeaderValue, Method};
    let mut allowed = Vec::with_capacity(list.len());
    for o in origins(list)? {
        allowed.push(HeaderValue::from_str(&o).map_err(|_| format!("CORS origin {o:?} is not a valid header value"))?);
    }
    // No X-Api-Key: API keys are for services, never for pages.
    Ok(CorsLayer::new()
        .allow_origin(allowed)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::CONTENT_ENCODING])
        .expose_headers([header::RETRY_AFTER])
        .max_age(std::time::Duration::from_secs(600)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SessionKey {
        SessionKey::new(&[7u8; 32]).unwrap()
    }

    fn claims() -> SessionClaims {
        SessionClaims { sid: "web-1".into(), src: "pitgun-web".into(), exp: 1_000 }
    }

    #[test]
    fn a_token_round_trips_until_it_expires() {
        let t = key().issue(&claims());
        assert!(t.starts_with(TOKEN_PREFIX));
        assert_eq!(key().verify(&t, 999), Ok(claims()));
        assert_eq!(key().verify(&t, 1_000), Err(TokenError::Expired(1_000)));
    }

    #[test]
    fn a_changed_claim_or_another_secret_is_refused() {
        let t = key().issue(&claims());
        let (body, sig) = t[TOKEN_PREFIX.len()..].split_once('.').unwrap();
        let other = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&SessionClaims { sid: "web-2".into(), ..claims() }).unwrap());
        assert_eq!(key().verify(&format!("{TOKEN_PREFIX}{other}.{sig}"), 0), Err(TokenError::BadSignature));
        assert_eq!(SessionKey::new(&[8u8; 32]).unwrap().verify(&t, 0), Err(TokenError::BadSignature));
        assert_eq!(key().verify(&format!("{TOKEN_PREFIX}{body}"), 0), Err(TokenError::Malformed));
        assert_eq!(key().verify("pgk_0123", 0), Err(TokenError::Malformed));
        assert_eq!(key().verify(&format!("{TOKEN_PREFIX}{body}.!!"), 0), Err(TokenError::Malformed));
    }

    #[test]
    fn a_secret_file_others_can_read_or_its_group_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("pitgun-secret-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("session.secret");
        std::fs::write(&path, format!("{}\n", "ab".repeat(32))).unwrap();
        for (mode, ok) in [(0o600, true), (0o440, true), (0o640, true), (0o604, false), (0o660, false), (0o644, false)] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let got = SessionKey::load(&path);
            assert_eq!(got.is_ok(), ok, "mode {mode:o}: {got:?}");
            if let Err(e) = got {
                assert!(e.contains("chmod 600"), "{e}");
            }
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "short\n").unwrap();
        assert!(SessionKey::load(&path).unwrap_err().contains("at least 32"));
        // A new secret: mode 600, loadable, never over an existing file.
        let new = dir.join("new.secret");
        write_new_secret(&new).unwrap();
        assert_eq!(std::fs::metadata(&new).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(SessionKey::load(&new).is_ok());
        let before = std::fs::read(&new).unwrap();
        assert!(write_new_secret(&new).unwrap_err().contains("never overwritten"));
        assert_eq!(std::fs::read(&new).unwrap(), before);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Browsers send an origin in one form: scheme and host in lower case, no default port. An
    /// allow-list entry written otherwise (`http://Game.Example.com`) started the service but
    /// matched no browser's request, so it is stored in that form; a port out of range is refused.
    #[test]
    fn origins_are_kept_as_browsers_send_them() {
        let given: Vec<String> = ["HTTP://Game.Example.com", "https://play.example:443", "http://127.0.0.1:8090", "http://xn--bcher-kva.example:80"]
            .map(String::from)
            .into();
        assert_eq!(
            origins(&given).unwrap(),
            ["http://game.example.com", "https://play.example", "http://127.0.0.1:8090", "http://xn--bcher-kva.example"]
        );
        for bad in ["https://a.com:99999", "ftp://a.com", "http://user@a.com", "http://a.com?x=1", "http://a.com#f"] {
            let err = origins(&[bad.to_string()]).unwrap_err();
            assert!(err.contains(bad), "{bad}: {err}");
        }
    }

    /// `--gateway-url notaurl` was handed to every browser session as the address to post to.
    #[test]
    fn a_gateway_url_for_browsers_is_an_http_url() {
        assert_eq!(browser_url("https://ingest.pitgun.dev/").unwrap(), "https://ingest.pitgun.dev");
        assert_eq!(browser_url("http://127.0.0.1:8080").unwrap(), "http://127.0.0.1:8080");
        assert_eq!(browser_url("https://a.example/ingest").unwrap(), "https://a.example/ingest");
        for bad in ["notaurl", "ftp://a.example", "http://", "https://a.example/?x=1", "https://a.example/#f", "/ingest", "https://u:p@a.example"] {
            assert!(browser_url(bad).unwrap_err().contains(bad), "{bad}");
        }
    }

    #[test]
    fn short_secrets_and_bad_origins_are_refused() {
        assert!(SessionKey::new(&[1u8; 31]).is_err());
        assert!(cors(&["http://127.0.0.1:8090".into(), "https://play.example".into()]).is_ok());
        for bad in ["127.0.0.1:8090", "http://a/", "http://a/play", "http://", "*"] {
            assert!(cors(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
