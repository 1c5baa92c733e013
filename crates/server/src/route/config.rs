//! What a router routes: per index name, its shards, and per shard the
//! addresses of its replicas. From `--index NAME=H:P|H:P,H:P|H:P` (shards
//! separated by `,`, a shard's replicas by `|`) or a TOML file:
//!
//! ```toml
//! [[index]]
//! name = "words"
//! shards = [["shard-0.a:50051", "shard-0.b:50051"], ["shard-1.a:50051", "shard-1.b:50051"]]
//! ```

use std::path::Path;

use serde::Deserialize;

/// Why a routing configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--index {spec:?}: {reason}")]
    Spec { spec: String, reason: String },
    #[error("cannot read {path}: {error}")]
    Read {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {reason}")]
    File {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("index {0:?} is given twice")]
    Duplicate(String),
    #[error("nothing to route: give --index NAME=H:P|H:P,... or --config FILE")]
    Empty,
}

/// One routed index.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexRoute {
    pub name: String,
    /// Per shard group, its replicas' addresses (`host:port`, or a URI).
    pub shards: Vec<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    index: Vec<IndexRoute>,
}

/// Parse one `--index NAME=H:P|H:P,H:P|H:P`.
pub fn parse_spec(spec: &str) -> Result<IndexRoute, ConfigError> {
    let bad = |reason: &str| ConfigError::Spec {
        spec: spec.to_string(),
        reason: reason.to_string(),
    };
    let (name, groups) = spec
        .split_once('=')
        .ok_or_else(|| bad("expected NAME=H:P|H:P,H:P|H:P"))?;
    let shards: Vec<Vec<String>> = groups
        .split(',')
        .map(|g| {
            g.split('|')
                .map(|a| a.trim().to_string())
                .filter(|a| !a.is_empty())
                .collect()
        })
        .collect();
    check(IndexRoute {
        name: name.trim().to_string(),
        shards,
    })
    .map_err(|reason| bad(&reason))
}

fn check(r: IndexRoute) -> Result<IndexRoute, String> {
    if r.name.is_empty() {
        return Err("the index name is empty".into());
    }
    if r.shards.is_empty() {
        return Err("no shards".into());
    }
    if let Some(i) = r.shards.iter().position(Vec::is_empty) {
        return Err(format!("shard group {i} has no replicas"));
    }
    let mut seen = std::collections::HashSet::new();
    for a in r.shards.iter().flatten() {
        if !seen.insert(a) {
            return Err(format!("{a} is listed twice"));
        }
    }
    Ok(r)
}

/// Every route of `specs` and of the TOML file `config`; names unique.
pub fn load(specs: &[String], config: Option<&Path>) -> Result<Vec<IndexRoute>, ConfigError> {
    let mut routes = Vec::new();
    if let Some(path) = config {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        let file: File = toml::from_str(&text).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        for r in file.index {
            routes.push(check(r).map_err(|reason| ConfigError::File {
                path: path.to_path_buf(),
                reason,
            })?);
        }
    }
    for s in specs {
        routes.push(parse_spec(s)?);
    }
    let mut names = std::collections::HashSet::new();
    for r in &routes {
        if !names.insert(r.name.clone()) {
            return Err(ConfigError::Duplicate(r.name.clone()));
        }
    }
    if routes.is_empty() {
        return Err(ConfigError::Empty);
    }
    Ok(routes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_name_shards_and_replicas() {
        let r = parse_spec("words=a:1|b:1,c:1|d:1").unwrap();
        assert_eq!(r.name, "words");
        assert_eq!(r.shards, [vec!["a:1", "b:1"], vec!["c:1", "d:1"]]);
        assert!(parse_spec("words").is_err());
        assert!(parse_spec("words=a:1,,b:1").is_err());
        assert!(parse_spec("words=a:1,a:1").is_err());
        assert!(parse_spec("=a:1").is_err());
    }

    #[test]
    fn a_toml_file_gives_the_same_routes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("route.toml");
        std::fs::write(
            &path,
            "[[index]]\nname = \"words\"\nshards = [[\"a:1\", \"b:1\"], [\"c:1\", \"d:1\"]]\n",
        )
        .unwrap();
        let routes = load(&[], Some(&path)).unwrap();
        assert_eq!(routes, [parse_spec("words=a:1|b:1,c:1|d:1").unwrap()]);
        let e = load(&["words=x:1".into()], Some(&path)).unwrap_err();
        assert!(e.to_string().contains("given twice"));
        std::fs::write(&path, "[[index]]\nname = \"w\"\nshard = []\n").unwrap();
        assert!(load(&[], Some(&path)).is_err());
    }
}
