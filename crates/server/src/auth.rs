//! Bearer tokens (`serve --tokens FILE`): each token has a role, `search` or
//! `admin`, and each call needs one (see [`required_role`]). Tokens are
//! compared in constant time and never logged or echoed.

use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;

/// What a token may do. `Admin` may do everything `Search` may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Search,
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Search => "search",
            Role::Admin => "admin",
        }
    }
}

/// Most ids a `search` token may ask GetItems for in one call: enough to
/// search by a stored item, not to page through the stored vectors.
pub const SEARCH_ROLE_MAX_ITEMS: usize = 1;

/// Why a tokens file was refused. Never quotes a token.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("cannot read tokens file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}:{line}: {reason} (expected `ROLE TOKEN`, ROLE being search or admin)")]
    Line {
        path: PathBuf,
        line: usize,
        reason: &'static str,
    },
    #[error("tokens file {0} holds no token")]
    Empty(PathBuf),
    #[error("tokens file {path}: {reason}")]
    File { path: PathBuf, reason: String },
}

/// Shortest token accepted: a token short enough to guess is no token.
pub const MIN_TOKEN_BYTES: usize = 16;
/// Longest token accepted: `authorization: Bearer TOKEN` must fit in the
/// header block a client may send (16 KiB), beside the call's other headers.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// The tokens a server accepts.
pub struct Tokens {
    entries: Vec<(Role, Vec<u8>)>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} entries)", self.entries.len())
    }
}

impl Tokens {
    /// Read `ROLE TOKEN` lines from a regular file; a `#` at the start of
    /// a word starts a comment, blank lines are skipped. Returns the tokens
    /// and warnings to log (a file that others may read).
    pub fn load(path: &Path) -> Result<(Tokens, Vec<String>), TokensError> {
        use std::io::Read;
        let read_err = |error| TokensError::Read {
            path: path.to_path_buf(),
            error,
        };
        // Never blocks: a FIFO or a device is refused, not waited on.
        let mut file = fathom_engine::fsutil::open_regular_read(path).map_err(|e| match e {
            fathom_engine::error::Error::Io { cause, .. } => read_err(cause),
            other => TokensError::File {
                path: path.to_path_buf(),
                reason: other.to_string(),
            },
        })?;
        let mut warnings = Vec::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = file.metadata().map_err(read_err)?.permissions().mode();
            if mode & 0o077 != 0 {
                warnings.push(format!(
                    "tokens file {} may be read{} by other users (mode {:o}); chmod 600 it",
                    path.display(),
                    if mode & 0o022 != 0 {
                        " and written"
                    } else {
                        ""
                    },
                    mode & 0o777
                ));
            }
        }
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(read_err)?;
        Ok((Tokens::parse(&text, path)?, warnings))
    }

    pub fn parse(text: &str, path: &Path) -> Result<Tokens, TokensError> {
        let mut entries: Vec<(Role, Vec<u8>)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let bad = |reason| TokensError::Line {
                path: path.to_path_buf(),
                line: i + 1,
                reason,
            };
            // A comment starts at a word that begins with `#`; a `#` inside
            // a word is part of it (and refused below), so that `admin
            // abc#def` is not silently read as the token `abc`.
            let words: Vec<&str> = line
                .split_whitespace()
                .take_while(|w| !w.starts_with('#'))
                .collect();
            let (role, token) = match words.as_slice() {
                [] => continue,
                [_] => return Err(bad("no token after the role")),
                [role, token] => (*role, *token),
                _ => return Err(bad("more than one token on the line")),
            };
            let role = match role {
                "search" => Role::Search,
                "admin" => Role::Admin,
                _ => return Err(bad("unknown role")),
            };
            // A header value carries visible ASCII only.
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(bad("a token must be visible ASCII"));
            }
            if token.contains('#') {
                return Err(bad("a token must not contain `#`"));
            }
            if token.len() < MIN_TOKEN_BYTES {
                return Err(bad("a token must be at least 16 bytes long"));
            }
            if token.len() > MAX_TOKEN_BYTES {
                return Err(bad(
                    "a token must be at most 4096 bytes long, to fit in a header",
                ));
            }
            if entries.iter().any(|(_, t)| t == token.as_bytes()) {
                return Err(bad("the token is listed twice"));
            }
            entries.push((role, token.as_bytes().to_vec()));
        }
        if entries.is_empty() {
            return Err(TokensError::Empty(path.to_path_buf()));
        }
        Ok(Tokens { entries })
    }

    /// The role of the token in an `authorization` header value.
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<Role, AuthError> {
        let header = authorization.ok_or(AuthError::Missing)?;
        let token = header
            .strip_prefix(b"Bearer ")
            .or_else(|| header.strip_prefix(b"bearer "))
            .ok_or(AuthError::NotBearer)?;
        // Every entry is compared, each in constant time, so the time taken
        // tells nothing about how much of a token matched.
        let mut role = None;
        for (r, t) in &self.entries {
            if bool::from(token.ct_eq(t)) {
                role = role.max(Some(*r));
            }
        }
        role.ok_or(AuthError::Unknown)
    }
}

/// GetItems of more than [`SEARCH_ROLE_MAX_ITEMS`] ids needs `admin`;
/// `role` is `None` when the server takes no tokens.
pub(crate) fn check_items(role: Option<Role>, ids: usize) -> Result<(), AuthError> {
    if role == Some(Role::Search) && ids > SEARCH_ROLE_MAX_ITEMS {
        return Err(AuthError::Forbidden {
            what: format!("GetItems of more than {SEARCH_ROLE_MAX_ITEMS} id"),
            needs: Role::Admin,
        });
    }
    Ok(())
}

/// Why a call was turned away at the door.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing authorization header; send `authorization: Bearer TOKEN`")]
    Missing,
    #[error("the authorization header is not `Bearer TOKEN`")]
    NotBearer,
    #[error("unknown token")]
    Unknown,
    #[error("{what} needs a token with the {} role", .needs.name())]
    Forbidden { what: String, needs: Role },
}

/// The role a call to `path` needs, or `None` when it is open to all:
/// health checks and reflection, which reveal nothing served.
pub fn required_role(path: &str) -> Option<Role> {
    let Some(method) = path.strip_prefix(concat!("/", "fathom.v1.Retrieval", "/")) else {
        return if path.starts_with("/grpc.health.v1.Health/")
            || path.starts_with("/grpc.reflection.")
        {
            None
        } else {
            // Unknown services answer UNIMPLEMENTED, but only to callers
            // with a token.
            Some(Role::Search)
        };
    };
    match method {
        // Reload reads and verifies whole files: costly, and an operator's
        // act. Delete and SetAlias change what every caller gets.
        "Reload" | "Delete" | "SetAlias" => Some(Role::Admin),
        _ => Some(Role::Search),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::parse(
            "# comment\n\nsearch s3cret-search-0123456  # trailing\nadmin  4dmin-0123456789abcdef\n",
            Path::new("t"),
        )
        .unwrap()
    }

    #[test]
    fn roles_by_token() {
        let t = tokens();
        let admin = b"Bearer 4dmin-0123456789abcdef";
        assert_eq!(
            t.check(Some(b"Bearer s3cret-search-0123456")),
            Ok(Role::Search)
        );
        assert_eq!(t.check(Some(admin)), Ok(Role::Admin));
        assert_eq!(
            t.check(Some(&admin[..admin.len() - 1])),
            Err(AuthError::Unknown)
        );
        assert_eq!(
            t.check(Some(b"Bearer 4dmin-0123456789abcdef ")),
            Err(AuthError::Unknown)
        );
        assert_eq!(
            t.check(Some(b"Basic 4dmin-0123456789abcdef")),
            Err(AuthError::NotBearer)
        );
        assert_eq!(t.check(None), Err(AuthError::Missing));
        assert_eq!(format!("{t:?}"), "Tokens(2 entries)");
    }

    #[test]
    fn bad_files_name_the_line_not_the_token() {
        let e = Tokens::parse("search 0123456789abcdef\nroot hunter2\n", Path::new("t"))
            .err()
            .unwrap();
        assert_eq!(
            e.to_string(),
            "t:2: unknown role (expected `ROLE TOKEN`, ROLE being search or admin)"
        );
        assert!(Tokens::parse("admin\n", Path::new("t")).is_err());
        assert!(Tokens::parse("admin a b\n", Path::new("t")).is_err());
        assert!(matches!(
            Tokens::parse("# none\n", Path::new("t")),
            Err(TokensError::Empty(_))
        ));
    }

    #[test]
    fn weak_or_ambiguous_tokens_are_refused() {
        let reason = |text: &str| match Tokens::parse(text, Path::new("t")) {
            Err(TokensError::Line { reason, .. }) => reason,
            other => panic!("{text:?} was not refused: {other:?}"),
        };
        assert_eq!(
            reason("admin short\n"),
            "a token must be at least 16 bytes long"
        );
        assert_eq!(
            reason("admin abcdefgh#ijklmnopq\n"),
            "a token must not contain `#`"
        );
        assert_eq!(
            reason("search 0123456789abcdef\nadmin 0123456789abcdef\n"),
            "the token is listed twice"
        );
        let long = format!("admin {}\n", "x".repeat(MAX_TOKEN_BYTES + 1));
        assert!(reason(&long).contains("at most 4096 bytes"));
        // A comment word after the token is still a comment.
        let t = Tokens::parse("admin 0123456789abcdef #ops\n", Path::new("t")).unwrap();
        assert_eq!(t.check(Some(b"Bearer 0123456789abcdef")), Ok(Role::Admin));
    }

    #[test]
    fn a_tokens_file_must_be_a_private_regular_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "admin 0123456789abcdef\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Tokens::load(&path).unwrap().1.is_empty());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let warnings = Tokens::load(&path).unwrap().1;
        assert!(
            warnings[0].contains("may be read by other users"),
            "{warnings:?}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let warnings = Tokens::load(&path).unwrap().1;
        assert!(warnings[0].contains("read and written"), "{warnings:?}");
        // A FIFO is refused at once, not waited on.
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(Tokens::load(&fifo).map(|_| ()));
        });
        let outcome = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("loading a FIFO returned");
        let e = outcome.unwrap_err().to_string();
        assert!(e.contains("FIFO"), "{e}");
    }

    #[test]
    fn paths_and_roles() {
        assert_eq!(
            required_role("/fathom.v1.Retrieval/Reload"),
            Some(Role::Admin)
        );
        assert_eq!(
            required_role("/fathom.v1.Retrieval/Delete"),
            Some(Role::Admin)
        );
        assert_eq!(
            required_role("/fathom.v1.Retrieval/Search"),
            Some(Role::Search)
        );
        assert_eq!(required_role("/grpc.health.v1.Health/Check"), None);
        assert_eq!(
            required_role("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            None
        );
        assert_eq!(required_role("/other.Service/X"), Some(Role::Search));
    }
}
