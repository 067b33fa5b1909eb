//! Continuous operation: the agent that sweeps one region on a schedule and pushes its
//! reports, and the aggregator server that assembles them into runs and serves them.
//!
//! Owns the push protocol ([`wire`]), the agent's on-disk spool ([`spool`]), the
//! server's embedded store ([`store`]), why it refuses a push ([`reject`]), the
//! Prometheus exposition ([`metrics`]) and the bearer token shared by both sides (here). It reuses the earlier stages (sweeps,
//! runs, analysis, rendering) and adds none of its own measurement or analysis.

pub mod wire;
pub mod spool;
pub mod agent;
pub mod store;
pub mod reject;
pub mod metrics;
pub mod server;

use std::path::{Path, PathBuf};

/// The shared secret of agents and server. Its `Debug` output hides the value.
#[derive(Clone)]
pub struct Token(Vec<u8>);

/// Why a token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the token file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the token file {0} is empty; write a long random token into it, e.g. `openssl rand -hex 32 > {0}`"
    )]
    Empty(PathBuf),
    #[error("the token in {0} contains a line break or a control character; a token is one line")]
    Invalid(PathBuf),
    #[error(
        "the token in {0} is {1} bytes long; use at least {MIN_TOKEN_LEN} random bytes, e.g. `openssl rand -hex 32 > {0}`"
    )]
    Short(PathBuf, usize),
}

/// The shortest token accepted, in bytes: shorter ones can be guessed.
pub const MIN_TOKEN_LEN: usize = 16;

impl Token {
    /// Reads a token file once: trailing whitespace is trimmed; an empty token is
    /// refused; a file that group or others may read is accepted with a warning.
    pub fn read(path: &Path) -> Result<Token, TokenError> {
        let read_err = |source| TokenError::Read {
            path: path.to_path_buf(),
            source,
        };
        let bytes = crate::files::read_regular(path).map_err(read_err)?;
        let text = String::from_utf8(bytes)
            .map_err(|e| read_err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        if let Ok(meta) = std::fs::metadata(path) {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o044 != 0 {
                tracing::warn!(
                    "the token file {} can be read by other users; run `chmod 600 {}`",
                    path.display(),
                    path.display()
                );
            }
        }
        Token::new(text.trim_end()).map_err(|e| match e {
            TokenError::Empty(_) => TokenError::Empty(path.to_path_buf()),
            TokenError::Short(_, n) => TokenError::Short(path.to_path_buf(), n),
            _ => TokenError::Invalid(path.to_path_buf()),
        })
    }

    /// A token from its text (leading and trailing whitespace are not removed here):
    /// one line of at least [`MIN_TOKEN_LEN`] bytes.
    pub fn new(text: &str) -> Result<Token, TokenError> {
        if text.is_empty() {
            return Err(TokenError::Empty(PathBuf::new()));
        }
        if text.chars().any(|c| c.is_control()) {
            return Err(TokenError::Invalid(PathBuf::new()));
        }
        if text.len() < MIN_TOKEN_LEN {
            return Err(TokenError::Short(PathBuf::new(), text.len()));
        }
        Ok(Token(text.as_bytes().to_vec()))
    }

    /// The token's text, for an `Authorization` header.
    pub fn expose(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// Whether `candidate` is this token, in time that depends only on the lengths
    /// (`subtle`'s constant-time comparison).
    pub fn matches(&self, candidate: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_slice().ct_eq(candidate).into()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<hidden>)")
    }
}

/// The HTTP client latmap talks to an aggregator with (the agent's pushes, `latmap
/// history URL`): reqwest on rustls with ring, every request bounded by `timeout`.
pub fn http_client(
    timeout: std::time::Duration,
    user_agent: &str,
) -> reqwest::Result<reqwest::Client> {
    // reqwest is built without a crypto provider; ring is ours. Installing twice is
    // harmless (the first one stays).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(std::time::Duration::from_secs(10)))
        .user_agent(user_agent)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_only_themselves() {
        let t = Token::new("secret-secret-secret").unwrap();
        for (candidate, eq) in [
            ("secret-secret-secret", true),
            ("secret-secret-secreT", false),
            ("Secret-secret-secret", false),
            ("secret-secret-secret2", false),
            ("secret-secret-secre", false),
            ("", false),
        ] {
            assert_eq!(t.matches(candidate.as_bytes()), eq, "{candidate}");
        }
    }

    #[test]
    fn token_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(&p, "s3cret-s3cret-s3cret \n").unwrap();
        let t = Token::read(&p).unwrap();
        assert!(t.matches(b"s3cret-s3cret-s3cret") && !t.matches(b"s3cret-s3cret-s3cret "));
        assert_eq!(format!("{t:?}"), "Token(<hidden>)");
        std::fs::write(&p, " \n\n").unwrap();
        assert!(matches!(Token::read(&p), Err(TokenError::Empty(_))));
        std::fs::write(&p, "a\nb\n").unwrap();
        assert!(matches!(Token::read(&p), Err(TokenError::Invalid(_))));
        std::fs::write(&p, "x\n").unwrap();
        assert!(matches!(Token::read(&p), Err(TokenError::Short(_, 1))));
        std::fs::write(&p, "0123456789abcde\n").unwrap();
        assert!(matches!(Token::read(&p), Err(TokenError::Short(_, 15))));
        std::fs::write(&p, "0123456789abcdef\n").unwrap();
        assert!(Token::read(&p).is_ok());
        assert!(matches!(
            Token::read(&dir.path().join("absent")),
            Err(TokenError::Read { .. })
        ));
    }
}
