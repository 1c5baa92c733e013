//! Aliases: names that stand for an index, so that a new build can take
//! over a name at once (`tracks` → `tracks-2026-12-06`). A call resolves
//! its name once, when it takes its index, so a switch never mixes two
//! indexes in one answer. With a catalog folder, aliases are kept in its
//! `aliases.json`, written atomically before a switch takes effect.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use super::{lock, CatalogError};

/// The file that keeps a catalog folder's aliases.
pub const ALIASES_FILE: &str = "aliases.json";

#[derive(Serialize, Deserialize)]
struct AliasesFile {
    format: u32,
    aliases: BTreeMap<String, String>,
}

/// Alias → index name, swapped whole on each change.
pub struct Aliases {
    map: ArcSwap<BTreeMap<String, String>>,
    /// The catalog folder they are kept in, if any.
    folder: Option<PathBuf>,
    /// Kept aliases not served (their index was not there at start-up):
    /// written back with every change, so that a switch does not drop them.
    dormant: Mutex<BTreeMap<String, String>>,
    /// Serializes changes (the file write and the swap).
    changing: Mutex<()>,
}

impl Aliases {
    pub fn new(folder: Option<&Path>) -> Aliases {
        Aliases {
            map: ArcSwap::from_pointee(BTreeMap::new()),
            folder: folder.map(Path::to_path_buf),
            dormant: Mutex::new(BTreeMap::new()),
            changing: Mutex::new(()),
        }
    }

    /// The aliases kept in the folder (none without a folder or a file).
    pub fn read_kept(&self) -> Result<BTreeMap<String, String>, CatalogError> {
        let Some(dir) = &self.folder else {
            return Ok(BTreeMap::new());
        };
        let path = dir.join(ALIASES_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(error) => {
                return Err(CatalogError::Aliases {
                    path,
                    reason: error.to_string(),
                })
            }
        };
        let file: AliasesFile = serde_json::from_str(&text).map_err(|e| CatalogError::Aliases {
            path: path.clone(),
            reason: format!("not an aliases file: {e}"),
        })?;
        if file.format != 1 {
            return Err(CatalogError::Aliases {
                path,
                reason: format!("format {} (this build reads 1)", file.format),
            });
        }
        Ok(file.aliases)
    }

    /// The index `name` stands for: itself when it is no alias.
    pub fn resolve<'n>(&self, name: &'n str) -> std::borrow::Cow<'n, str> {
        match self.map.load().get(name) {
            Some(index) => std::borrow::Cow::Owned(index.clone()),
            None => std::borrow::Cow::Borrowed(name),
        }
    }

    pub fn all(&self) -> Arc<BTreeMap<String, String>> {
        self.map.load_full()
    }

    /// Point `alias` at `index` (`None` removes it), kept in the folder
    /// first when there is one. Returns what it pointed at before, and
    /// whether the change is kept across restarts.
    pub fn set(
        &self,
        alias: &str,
        index: Option<&str>,
    ) -> Result<(Option<String>, bool), CatalogError> {
        let _changing = lock(&self.changing);
        let mut map = BTreeMap::clone(&self.map.load());
        let previous = match index {
            Some(i) => map.insert(alias.to_string(), i.to_string()),
            None => map.remove(alias),
        };
        let mut dormant = lock(&self.dormant);
        dormant.remove(alias);
        if let Some(dir) = &self.folder {
            let mut kept = dormant.clone();
            kept.extend(map.iter().map(|(a, i)| (a.clone(), i.clone())));
            let mut text = serde_json::to_string_pretty(&AliasesFile {
                format: 1,
                aliases: kept,
            })
            .expect("aliases serialize");
            text.push('\n');
            fathom_engine::layers::replace_file(dir, ALIASES_FILE, text.as_bytes()).map_err(
                |e| CatalogError::Aliases {
                    path: dir.join(ALIASES_FILE),
                    reason: e.to_string(),
                },
            )?;
        }
        self.map.store(Arc::new(map));
        Ok((previous, self.folder.is_some()))
    }

    /// Replace every alias at once (at start-up), without writing the
    /// file: `map` served, `dormant` only kept.
    pub fn replace(&self, map: BTreeMap<String, String>, dormant: BTreeMap<String, String>) {
        let _changing = lock(&self.changing);
        *lock(&self.dormant) = dormant;
        self.map.store(Arc::new(map));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_switch_keeps_the_aliases_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let aliases = Aliases::new(Some(dir.path()));
        let served = BTreeMap::from([("tracks".to_string(), "a".to_string())]);
        let dormant = BTreeMap::from([("old".to_string(), "gone".to_string())]);
        aliases.replace(served, dormant);
        aliases.set("tracks", Some("b")).unwrap();
        let kept = aliases.read_kept().unwrap();
        assert_eq!(kept.get("old").map(String::as_str), Some("gone"));
        assert_eq!(kept.get("tracks").map(String::as_str), Some("b"));
        assert_eq!(aliases.resolve("old"), "old");
        // Set again, a dormant alias is served and no longer dormant.
        aliases.set("old", Some("a")).unwrap();
        aliases.set("old", None).unwrap();
        assert!(!aliases.read_kept().unwrap().contains_key("old"));
    }
}
