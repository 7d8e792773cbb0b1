//! `[admin]`: where the admin listener binds (TCP or a unix socket) and the bearer
//! token that runtime writes need when it is reachable off the host.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::file::FileAdmin;
use super::validate::{invalid, Result};

/// Shortest token accepted: a guessable token is no lock.
pub const MIN_TOKEN_LEN: usize = 16;

/// The admin listener's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub bind: AdminBind,
    /// Writes must carry `Authorization: Bearer <token>` unless the listener is
    /// on a loopback address or a unix socket.
    pub token: Option<Token>,
}

/// Where the admin listener listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AdminBind {
    Tcp(SocketAddr),
    /// `unix:/run/fulcrum/admin.sock`
    Unix(PathBuf),
}

impl AdminBind {
    /// Reads `127.0.0.1:9090` or `unix:/path`.
    pub fn parse(text: &str) -> std::result::Result<AdminBind, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("`unix:` needs a path, e.g. unix:/run/fulcrum/admin.sock".to_owned());
            }
            return Ok(AdminBind::Unix(PathBuf::from(path)));
        }
        text.parse().map(AdminBind::Tcp).map_err(|_| {
            format!(
                "invalid admin address `{text}` (expected IP:PORT, e.g. 127.0.0.1:9090, or unix:/run/fulcrum/admin.sock)"
            )
        })
    }

    /// Whether only this host can reach it, so writes need no token.
    pub fn is_local(&self) -> bool {
        match self {
            AdminBind::Tcp(addr) => addr.ip().is_loopback(),
            AdminBind::Unix(_) => true,
        }
    }
}

impl fmt::Display for AdminBind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminBind::Tcp(addr) => write!(f, "{addr}"),
            AdminBind::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl From<SocketAddr> for AdminConfig {
    fn from(addr: SocketAddr) -> Self {
        AdminConfig {
            bind: AdminBind::Tcp(addr),
            token: None,
        }
    }
}

/// A bearer token; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Reads a token from a file's first line.
    pub fn read(path: &Path) -> std::result::Result<Token, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
        let token = text.lines().next().unwrap_or_default().trim();
        if token.len() < MIN_TOKEN_LEN || token.chars().any(|c| !c.is_ascii_graphic()) {
            return Err(format!(
                "the token in {} must be one line of at least {MIN_TOKEN_LEN} printable characters; \
                 make one with: openssl rand -hex 32 > {}",
                path.display(),
                path.display()
            ));
        }
        Ok(Token(token.to_owned()))
    }

    /// Compares in time that does not depend on where they differ.
    pub fn matches(&self, offered: &[u8]) -> bool {
        let mine = self.0.as_bytes();
        let mut diff = u8::from(mine.len() != offered.len());
        for (i, a) in mine.iter().enumerate() {
            diff |= a ^ offered.get(i).copied().unwrap_or(0);
        }
        diff == 0
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(..)")
    }
}

pub(super) fn validate(raw: &Spanned<FileAdmin>, base: &Path) -> Result<AdminConfig> {
    let raw = raw.get_ref();
    let bind = AdminBind::parse(raw.bind.get_ref()).map_err(|e| invalid(&raw.bind, e))?;
    let token = match &raw.token_file {
        Some(file) => Some(Token::read(&base.join(file.get_ref())).map_err(|e| invalid(file, e))?),
        None => None,
    };
    Ok(AdminConfig { bind, token })
}
