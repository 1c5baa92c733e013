//! Experiments on a name (an alias or an index): variants that serve a
//! share of its calls, chosen by the call's `experiment_key`, and shadows
//! that search a share of its calls again off the response path to compare
//! with what was served.
//!
//! A key's bucket is `xxh3_64(key, seed = xxh3_64(name)) mod 10 000`, so the
//! same key always gets the same variant of a name, and two names' splits
//! are independent. Variants take buckets in the order given; the rest is
//! the base (what the name resolves to).

use std::collections::BTreeMap;

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Shares are kept in basis points: 10 000 is every call.
const WHOLE: u32 = 10_000;

/// One variant or shadow: an index and the share of calls it takes.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    pub index: String,
    /// Share of calls, in basis points (1% = 100).
    pub basis_points: u32,
}

impl Split {
    pub fn percent(&self) -> f64 {
        f64::from(self.basis_points) / 100.0
    }
}

/// Why a `--variant` or `--shadow` was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{flag} {spec:?}: {reason}")]
pub struct SplitError {
    pub flag: &'static str,
    pub spec: String,
    pub reason: String,
}

/// Every name's variants and shadows, fixed at start-up.
#[derive(Debug, Default, Clone)]
pub struct Experiments {
    variants: BTreeMap<String, Vec<Split>>,
    shadows: BTreeMap<String, Vec<Split>>,
}

impl Experiments {
    /// From `--variant` and `--shadow` specs, `NAME=INDEX:PERCENT%`. The
    /// variants of one name may share out at most every call; so may its
    /// shadows.
    pub fn parse(variants: &[String], shadows: &[String]) -> Result<Experiments, SplitError> {
        Ok(Experiments {
            variants: parse_all("--variant", variants)?,
            shadows: parse_all("--shadow", shadows)?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.variants.is_empty() && self.shadows.is_empty()
    }

    /// Every (name, split) pair, variants then shadows, with its flag.
    pub fn splits(&self) -> impl Iterator<Item = (&'static str, &str, &Split)> {
        self.variants
            .iter()
            .flat_map(|(n, s)| s.iter().map(move |s| ("--variant", n.as_str(), s)))
            .chain(
                self.shadows
                    .iter()
                    .flat_map(|(n, s)| s.iter().map(move |s| ("--shadow", n.as_str(), s))),
            )
    }

    pub fn has_shadows(&self) -> bool {
        !self.shadows.is_empty()
    }

    /// Whether calls to `name` are split or shadowed.
    pub fn has(&self, name: &str) -> bool {
        self.variants.contains_key(name) || self.shadows.contains_key(name)
    }

    /// The variant a call to `name` with `key` is served by: `None` for the
    /// base (and for every call without a key).
    pub fn variant(&self, name: &str, key: &str) -> Option<&str> {
        let splits = self.variants.get(name)?;
        if key.is_empty() {
            return None;
        }
        pick(splits, bucket(name, key))
    }

    /// The shadow a call to `name` is searched again on, if drawn: calls are
    /// drawn at random, each shadow at its share.
    pub fn shadow(&self, name: &str) -> Option<&str> {
        let splits = self.shadows.get(name)?;
        pick(splits, rand::random_range(0..WHOLE))
    }
}

/// `key`'s bucket of `name`, in 0..10 000.
pub fn bucket(name: &str, key: &str) -> u32 {
    let seed = fathom_engine::shards::key(name);
    (xxh3_64_with_seed(key.as_bytes(), seed) % u64::from(WHOLE)) as u32
}

fn pick(splits: &[Split], bucket: u32) -> Option<&str> {
    let mut upto = 0;
    for s in splits {
        upto += s.basis_points;
        if bucket < upto {
            return Some(&s.index);
        }
    }
    None
}

fn parse_all(
    flag: &'static str,
    specs: &[String],
) -> Result<BTreeMap<String, Vec<Split>>, SplitError> {
    let mut out: BTreeMap<String, Vec<Split>> = BTreeMap::new();
    for spec in specs {
        let err = |reason: &str| SplitError {
            flag,
            spec: spec.clone(),
            reason: reason.to_string(),
        };
        let (name, rest) = spec
            .split_once('=')
            .ok_or_else(|| err("expected NAME=INDEX:PERCENT%, e.g. tracks=tracks-b:10%"))?;
        let (index, share) = rest
            .rsplit_once(':')
            .ok_or_else(|| err("expected NAME=INDEX:PERCENT%, e.g. tracks=tracks-b:10%"))?;
        if name.is_empty() || index.is_empty() {
            return Err(err("the name and the index must not be empty"));
        }
        if name == index {
            return Err(err("a name cannot be its own variant"));
        }
        let percent: f64 = share
            .strip_suffix('%')
            .ok_or_else(|| err("the share is a percentage, e.g. 10%"))?
            .parse()
            .map_err(|_| err("the share is a percentage, e.g. 10%"))?;
        if !(percent > 0.0 && percent <= 100.0) {
            return Err(err("the share must be above 0% and at most 100%"));
        }
        let splits = out.entry(name.to_string()).or_default();
        if splits.iter().any(|s| s.index == index) {
            return Err(err("the index is named twice for this name"));
        }
        splits.push(Split {
            index: index.to_string(),
            basis_points: (percent * 100.0).round() as u32,
        });
        if splits.iter().map(|s| s.basis_points).sum::<u32>() > WHOLE {
            return Err(err("the shares of one name add up to more than 100%"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn experiments(variants: &[&str]) -> Experiments {
        let v: Vec<String> = variants.iter().map(|s| s.to_string()).collect();
        Experiments::parse(&v, &[]).unwrap()
    }

    #[test]
    fn assignment_is_stable_and_keeps_its_share_over_100k_keys() {
        let e = experiments(&["tracks=tracks-b:10%", "tracks=tracks-c:2.5%"]);
        let (mut b, mut c) = (0u32, 0u32);
        for i in 0..100_000 {
            let key = format!("listener:{i}");
            let got = e.variant("tracks", &key);
            assert_eq!(got, e.variant("tracks", &key), "not stable for {key}");
            match got {
                Some("tracks-b") => b += 1,
                Some("tracks-c") => c += 1,
                Some(other) => panic!("{other}"),
                None => {}
            }
        }
        // Within ±1 point of the share asked for.
        assert!((9_000..=11_000).contains(&b), "tracks-b took {b} of 100k");
        assert!((1_500..=3_500).contains(&c), "tracks-c took {c} of 100k");
        // No key: the base. Other names: no variants.
        assert_eq!(e.variant("tracks", ""), None);
        assert_eq!(e.variant("episodes", "listener:1"), None);
    }

    #[test]
    fn two_names_split_the_same_keys_independently() {
        let e = experiments(&["a=a2:50%", "b=b2:50%"]);
        let both = (0..10_000)
            .map(|i| format!("k{i}"))
            .filter(|k| e.variant("a", k).is_some() && e.variant("b", k).is_some())
            .count();
        assert!((2_000..=3_000).contains(&both), "{both} of 10k in both");
    }

    #[test]
    fn bad_specs_are_refused_with_the_reason() {
        for (spec, reason) in [
            ("tracks", "expected NAME=INDEX:PERCENT%"),
            ("tracks=b", "expected NAME=INDEX:PERCENT%"),
            ("tracks=b:10", "percentage"),
            ("tracks=b:x%", "percentage"),
            ("tracks=b:0%", "above 0%"),
            ("tracks=b:101%", "at most 100%"),
            ("tracks=tracks:10%", "its own variant"),
            ("=b:10%", "must not be empty"),
        ] {
            let e = Experiments::parse(&[spec.to_string()], &[]).unwrap_err();
            assert!(e.to_string().contains(reason), "{spec}: {e}");
            assert!(e.to_string().starts_with("--variant"), "{e}");
        }
        let over = ["t=a:60%".to_string(), "t=b:50%".to_string()];
        let e = Experiments::parse(&[], &over).unwrap_err();
        assert!(e.to_string().contains("more than 100%"), "{e}");
        let twice = ["t=a:10%".to_string(), "t=a:10%".to_string()];
        assert!(Experiments::parse(&twice, &[]).is_err());
    }
}
