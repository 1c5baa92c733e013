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
}

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
    /// Read `ROLE TOKEN` lines; `#` starts a comment, blank lines are skipped.
    pub fn load(path: &Path) -> Result<Tokens, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|error| TokensError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Tokens::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Tokens, TokensError> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let bad = |reason| TokensError::Line {
                path: path.to_path_buf(),
                line: i + 1,
                reason,
            };
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let role = match words.next() {
                Some("search") => Role::Search,
                Some("admin") => Role::Admin,
                _ => return Err(bad("unknown role")),
            };
            let Some(token) = words.next() else {
                return Err(bad("no token after the role"));
            };
            if words.next().is_some() {
                return Err(bad("more than one token on the line"));
            }
            // A header value carries visible ASCII only.
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(bad("a token must be visible ASCII"));
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
        // act. Delete changes what every caller gets.
        "Reload" | "Delete" => Some(Role::Admin),
        _ => Some(Role::Search),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::parse(
            "# comment\n\nsearch s3cret-search  # trailing\nadmin  4dmin\n",
            Path::new("t"),
        )
        .unwrap()
    }

    #[test]
    fn roles_by_token() {
        let t = tokens();
        assert_eq!(t.check(Some(b"Bearer s3cret-search")), Ok(Role::Search));
        assert_eq!(t.check(Some(b"Bearer 4dmin")), Ok(Role::Admin));
        assert_eq!(t.check(Some(b"Bearer 4dmi")), Err(AuthError::Unknown));
        assert_eq!(t.check(Some(b"Bearer 4dmin ")), Err(AuthError::Unknown));
        assert_eq!(t.check(Some(b"Basic 4dmin")), Err(AuthError::NotBearer));
        assert_eq!(t.check(None), Err(AuthError::Missing));
        assert_eq!(format!("{t:?}"), "Tokens(2 entries)");
    }

    #[test]
    fn bad_files_name_the_line_not_the_token() {
        let e = Tokens::parse("search a\nroot hunter2\n", Path::new("t"))
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
