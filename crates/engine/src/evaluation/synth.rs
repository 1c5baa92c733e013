//! Seeded synthetic data: clustered Gaussian vectors, like embeddings that
//! group by genre or topic. Used by tests, benchmarks and `fathom demo`, so
//! every run of them sees the same data.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

/// Cluster centres and uneven cluster weights, drawn from one seed.
struct Clusters {
    dim: usize,
    centres: Vec<f32>,
    weights: Vec<f64>,
    total: f64,
}

impl Clusters {
    fn new(dim: usize, clusters: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let unit = Normal::new(0.0f32, 1.0).expect("valid normal");
        let clusters = clusters.max(1);
        let centres = (0..clusters * dim).map(|_| unit.sample(&mut rng)).collect();
        // Zipf-like weights so cluster sizes differ, as genres do.
        let weights: Vec<f64> = (1..=clusters).map(|r| 1.0 / (r as f64).sqrt()).collect();
        let total = weights.iter().sum();
        Clusters {
            dim,
            centres,
            weights,
            total,
        }
    }

    /// Draw `n` vectors into `out`; the cluster of each goes to `labels`
    /// when given (the draw is the same either way).
    fn sample(
        &self,
        n: usize,
        rng: &mut StdRng,
        out: &mut Vec<f32>,
        mut labels: Option<&mut Vec<u32>>,
    ) {
        let spread = Normal::new(0.0f32, 0.35).expect("valid normal");
        for _ in 0..n {
            let mut pick = rng.random::<f64>() * self.total;
            let mut c = 0;
            while c + 1 < self.weights.len() && pick >= self.weights[c] {
                pick -= self.weights[c];
                c += 1;
            }
            if let Some(l) = labels.as_deref_mut() {
                l.push(c as u32);
            }
            let centre = &self.centres[c * self.dim..(c + 1) * self.dim];
            out.extend(centre.iter().map(|x| x + spread.sample(rng)));
        }
    }
}

/// `n` vectors of `dim` dimensions around `clusters` random centres, with
/// cluster sizes drawn unevenly (a few large clusters, many small ones).
pub fn clustered(n: usize, dim: usize, clusters: usize, seed: u64) -> Vec<f32> {
    let c = Clusters::new(dim, clusters, seed);
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(1));
    let mut out = Vec::with_capacity(n * dim);
    c.sample(n, &mut rng, &mut out, None);
    out
}

/// The vectors of `clustered(n, dim, clusters, seed)` (the very same) and
/// the cluster each row was drawn around.
pub fn clustered_labeled(n: usize, dim: usize, clusters: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let c = Clusters::new(dim, clusters, seed);
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(1));
    let mut out = Vec::with_capacity(n * dim);
    let mut labels = Vec::with_capacity(n);
    c.sample(n, &mut rng, &mut out, Some(&mut labels));
    (out, labels)
}

/// Queries from the same distribution as `clustered(.., dim, clusters, seed)`
/// (same centres) but drawn independently of the base vectors.
pub fn clustered_queries(nq: usize, dim: usize, clusters: usize, seed: u64) -> Vec<Vec<f32>> {
    let c = Clusters::new(dim, clusters, seed);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x9E37_79B9_7F4A_7C15);
    let mut out = Vec::with_capacity(nq * dim);
    c.sample(nq, &mut rng, &mut out, None);
    out.chunks_exact(dim.max(1)).map(<[f32]>::to_vec).collect()
}

/// Market codes, in the order an item's markets are written.
pub const MARKETS: [&str; 30] = [
    "US", "GB", "DE", "SE", "BR", "MX", "FR", "ES", "IT", "NL", "PL", "JP", "CA", "AU", "IN", "ID",
    "PH", "TR", "AR", "CL", "CO", "NO", "DK", "FI", "PT", "IE", "NZ", "ZA", "KR", "IS",
];

/// Languages, most common first (drawn Zipf).
pub const LANGS: [&str; 12] = [
    "en", "es", "pt", "de", "fr", "sv", "ja", "ko", "it", "nl", "pl", "tr",
];

/// Genres (each cluster has a main one).
pub const GENRES: [&str; 16] = [
    "pop",
    "rock",
    "hip-hop",
    "electronic",
    "latin",
    "jazz",
    "classical",
    "country",
    "rnb",
    "metal",
    "folk",
    "reggae",
    "ambient",
    "soundtrack",
    "kids",
    "sleep",
];

/// Record labels, drawn Zipf (the top one holds ~12% of the items).
pub const LABELS: usize = 2000;

/// Items per artist on average.
pub const ITEMS_PER_ARTIST: usize = 8;

/// Share of items sold in every market.
const ALL_MARKETS_SHARE: f64 = 0.3;
/// Share of explicit items.
const EXPLICIT_SHARE: f64 = 0.1;
/// Chance that an item has its cluster's main language / genre.
const CLUSTER_LANG_SHARE: f64 = 0.85;
const CLUSTER_GENRE_SHARE: f64 = 0.75;

/// The attributes of one synthetic item (see [`attributes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthItem {
    /// The cluster the item's vector was drawn around.
    pub cluster: u32,
    /// Bit `i` set: sold in `MARKETS[i]`.
    pub markets: u32,
    pub explicit: bool,
    pub lang: &'static str,
    pub genre: &'static str,
    /// 0..=100, skewed low.
    pub popularity: u8,
    /// 1960..=2026, skewed recent.
    pub year: u16,
    /// `label:N`, N in 0..LABELS.
    pub label: u32,
    /// `artist:N`: items of one artist lie near each other.
    pub artist: u32,
}

impl SynthItem {
    /// The item's market codes, in `MARKETS` order.
    pub fn market_codes(&self) -> impl Iterator<Item = &'static str> + '_ {
        MARKETS
            .iter()
            .enumerate()
            .filter(|(i, _)| self.markets & (1 << i) != 0)
            .map(|(_, m)| *m)
    }

    /// Append the item as one JSON object, `{"id":..,"lang":..,...}`.
    pub fn write_json(&self, id: &str, out: &mut String) {
        use std::fmt::Write;
        out.push_str("{\"id\":");
        push_json_string(id, out);
        let _ = write!(
            out,
            ",\"lang\":\"{}\",\"genre\":\"{}\",\"artist\":\"artist:{}\",\"label\":\"label:{}\",\"markets\":[",
            self.lang, self.genre, self.artist, self.label
        );
        for (i, m) in self.market_codes().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('"');
            out.push_str(m);
            out.push('"');
        }
        let _ = write!(
            out,
            "],\"explicit\":{},\"popularity\":{},\"year\":{}}}",
            self.explicit, self.popularity, self.year
        );
    }

    /// The item's attributes (without an id) as a JSON object.
    pub fn to_map(&self) -> serde_json::Map<String, serde_json::Value> {
        use serde_json::Value;
        let mut m = serde_json::Map::new();
        m.insert("lang".into(), self.lang.into());
        m.insert("genre".into(), self.genre.into());
        m.insert("artist".into(), format!("artist:{}", self.artist).into());
        m.insert("label".into(), format!("label:{}", self.label).into());
        m.insert(
            "markets".into(),
            Value::Array(self.market_codes().map(Value::from).collect()),
        );
        m.insert("explicit".into(), self.explicit.into());
        m.insert("popularity".into(), self.popularity.into());
        m.insert("year".into(), self.year.into());
        m
    }
}

/// `s` as a JSON string literal.
fn push_json_string(s: &str, out: &mut String) {
    use std::fmt::Write;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A Zipf draw over `0..n` (weight of rank r: 1 / (r+1)^s).
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Zipf {
        let mut acc = 0.0;
        let cdf = (1..=n.max(1))
            .map(|r| {
                acc += 1.0 / (r as f64).powf(s);
                acc
            })
            .collect();
        Zipf { cdf }
    }

    fn sample(&self, rng: &mut StdRng) -> usize {
        let total = *self.cdf.last().expect("n >= 1");
        let u = rng.random::<f64>() * total;
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1)
    }
}

/// Catalog attributes for rows drawn by [`clustered_labeled`]: `vectors`
/// (`dim` each) and their cluster `labels`. Seeded: the same inputs and
/// seed give the same attributes.
///
/// - `markets`: 30% of items in all 30 markets, the rest in 1–4 drawn Zipf;
/// - `explicit`: 10% true, independent;
/// - `lang`, `genre`: each cluster has a main language (Zipf over
///   [`LANGS`]) and genre that most of its items share, so they cluster;
/// - `popularity`: int(100·u³), skewed low (`>= 90`: ~3.5%);
/// - `year`: 1960–2026, skewed recent (`>= 2024`: ~25%);
/// - `label`: Zipf over 2,000 labels, independent of the vector;
/// - `artist`: per cluster, one centroid per ~8 items drawn from the
///   cluster's rows; an item's artist is its nearest centroid, so an
///   artist's items lie near each other (~n/8 artists, sizes skewed).
pub fn attributes(vectors: &[f32], labels: &[u32], dim: usize, seed: u64) -> Vec<SynthItem> {
    let n = labels.len();
    assert_eq!(vectors.len(), n * dim, "vectors and labels disagree");
    let clusters = labels.iter().map(|&c| c as usize + 1).max().unwrap_or(0);
    let mut rng = StdRng::seed_from_u64(seed ^ 0xA77E_1B07_E5A7_7E57);
    let langs = Zipf::new(LANGS.len(), 1.0);
    let genres = Zipf::new(GENRES.len(), 0.5);
    let markets = Zipf::new(MARKETS.len(), 1.0);
    let label_zipf = Zipf::new(LABELS, 1.0);
    let cluster_lang: Vec<usize> = (0..clusters).map(|_| langs.sample(&mut rng)).collect();
    let cluster_genre: Vec<usize> = (0..clusters).map(|_| genres.sample(&mut rng)).collect();
    let artists = artists(vectors, labels, dim, clusters, &mut rng);
    let all = (1u32 << MARKETS.len()) - 1;
    labels
        .iter()
        .zip(artists)
        .map(|(&c, artist)| {
            let market_mask = if rng.random::<f64>() < ALL_MARKETS_SHARE {
                all
            } else {
                let want = rng.random_range(1..=4u32);
                let mut m = 0u32;
                while m.count_ones() < want {
                    m |= 1 << markets.sample(&mut rng);
                }
                m
            };
            let explicit = rng.random::<f64>() < EXPLICIT_SHARE;
            let lang = if rng.random::<f64>() < CLUSTER_LANG_SHARE {
                cluster_lang[c as usize]
            } else {
                langs.sample(&mut rng)
            };
            let genre = if rng.random::<f64>() < CLUSTER_GENRE_SHARE {
                cluster_genre[c as usize]
            } else {
                genres.sample(&mut rng)
            };
            let u: f64 = rng.random();
            let popularity = (100.0 * u * u * u) as u8;
            // P(year >= 2024) = P(67·u^2.24 < 3) ≈ 0.25.
            let u: f64 = rng.random();
            let year = 2026 - (67.0 * u.powf(2.24)) as u16;
            SynthItem {
                cluster: c,
                markets: market_mask,
                explicit,
                lang: LANGS[lang],
                genre: GENRES[genre],
                popularity,
                year,
                label: label_zipf.sample(&mut rng) as u32,
                artist,
            }
        })
        .collect()
}

/// Flat nearest-centroid search up to this many centroids; a two-level
/// search (nearest group head, then nearest centroid of its group) above.
const FLAT_CENTROIDS: usize = 48;

/// The artist of every row: per cluster, `size / 8` centroids drawn from
/// the cluster's rows, numbered globally; each row takes its nearest.
fn artists(
    vectors: &[f32],
    labels: &[u32],
    dim: usize,
    clusters: usize,
    rng: &mut StdRng,
) -> Vec<u32> {
    use rand::seq::SliceRandom;
    let row = |i: u32| &vectors[i as usize * dim..(i as usize + 1) * dim];
    let dist = |a: &[f32], b: &[f32]| crate::distance::f32_distance(crate::Metric::L2, a, b);
    let nearest = |q: &[f32], among: &[u32]| -> usize {
        let mut best = (f32::INFINITY, 0);
        for (j, &c) in among.iter().enumerate() {
            let d = dist(q, row(c));
            if d < best.0 {
                best = (d, j);
            }
        }
        best.1
    };
    let mut members: Vec<Vec<u32>> = vec![Vec::new(); clusters];
    for (i, &c) in labels.iter().enumerate() {
        members[c as usize].push(i as u32);
    }
    let mut out = vec![0u32; labels.len()];
    let mut next_artist = 0u32;
    for rows in &members {
        if rows.is_empty() {
            continue;
        }
        let m = (rows.len() + ITEMS_PER_ARTIST / 2) / ITEMS_PER_ARTIST;
        let m = m.max(1);
        let mut pick = rows.clone();
        pick.partial_shuffle(rng, m);
        let centroids = &pick[..m];
        if m <= FLAT_CENTROIDS {
            for &r in rows {
                out[r as usize] = next_artist + nearest(row(r), centroids) as u32;
            }
        } else {
            // Group heads: the first sqrt(m) centroids; every centroid joins
            // its nearest head's group.
            let g = (m as f64).sqrt().ceil() as usize;
            let heads = &centroids[..g];
            let mut groups: Vec<Vec<u32>> = vec![Vec::new(); g];
            let mut group_ids: Vec<Vec<u32>> = vec![Vec::new(); g];
            for (j, &c) in centroids.iter().enumerate() {
                let h = nearest(row(c), heads);
                groups[h].push(c);
                group_ids[h].push(j as u32);
            }
            for &r in rows {
                let q = row(r);
                let h = nearest(q, heads);
                let j = nearest(q, &groups[h]);
                out[r as usize] = next_artist + group_ids[h][j];
            }
        }
        next_artist += m as u32;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(n: usize, seed: u64) -> (Vec<f32>, Vec<SynthItem>) {
        let (v, l) = clustered_labeled(n, 16, 40, seed);
        let a = attributes(&v, &l, 16, seed);
        (v, a)
    }

    #[test]
    fn labeled_draw_is_the_plain_draw() {
        let (v, l) = clustered_labeled(500, 8, 10, 3);
        assert_eq!(v, clustered(500, 8, 10, 3));
        assert_eq!(l.len(), 500);
        assert!(l.iter().all(|&c| c < 10));
    }

    #[test]
    fn attributes_are_seeded() {
        let (_, a) = items(3000, 7);
        let (_, b) = items(3000, 7);
        assert_eq!(a, b);
        let (_, c) = items(3000, 8);
        assert_ne!(a, c);
        let mut s = String::new();
        a[0].write_json("item:\"1\"", &mut s);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["id"], "item:\"1\"");
        let mut want = a[0].to_map();
        want.insert("id".into(), "item:\"1\"".into());
        assert_eq!(v, serde_json::Value::Object(want));
    }

    #[test]
    fn attribute_distributions_are_roughly_as_documented() {
        let n = 20_000;
        let (v, a) = items(n, 11);
        let share =
            |f: &dyn Fn(&SynthItem) -> bool| a.iter().filter(|x| f(x)).count() as f64 / n as f64;
        let near = |got: f64, want: f64, tol: f64| {
            assert!((got - want).abs() < tol, "{got} is not ~{want}");
        };
        near(share(&|x| x.explicit), 0.10, 0.02);
        near(share(&|x| x.markets.count_ones() == 30), 0.30, 0.02);
        assert!(a
            .iter()
            .all(|x| (1..=4).contains(&x.markets.count_ones()) || x.markets.count_ones() == 30));
        near(share(&|x| x.popularity >= 90), 0.035, 0.01);
        near(share(&|x| x.year >= 2024), 0.25, 0.03);
        assert!(a
            .iter()
            .all(|x| x.popularity <= 100 && (1960..=2026).contains(&x.year)));
        near(share(&|x| x.label == 0), 0.12, 0.02);
        assert!(a.iter().all(|x| (x.label as usize) < LABELS));
        // Markets: every one is well represented, the first most.
        let us = share(&|x| x.markets & 1 != 0);
        assert!((0.5..0.8).contains(&us), "US {us}");

        // A cluster's items mostly share one language.
        let mut agree = 0;
        for c in 0..40u32 {
            let in_c: Vec<&SynthItem> = a.iter().filter(|x| x.cluster == c).collect();
            let mut counts = std::collections::HashMap::new();
            for x in &in_c {
                *counts.entry(x.lang).or_insert(0usize) += 1;
            }
            agree += counts.values().max().copied().unwrap_or(0);
        }
        assert!(agree as f64 / n as f64 > 0.8, "{agree}");

        // About n/8 artists; an artist's items are nearer each other than
        // to other items of their cluster.
        let artists: std::collections::HashSet<u32> = a.iter().map(|x| x.artist).collect();
        let want = n / ITEMS_PER_ARTIST;
        assert!(
            artists.len() > want / 2 && artists.len() <= want + 40,
            "{}",
            artists.len()
        );
        let row = |i: usize| &v[i * 16..(i + 1) * 16];
        let d =
            |i: usize, j: usize| crate::distance::f32_distance(crate::Metric::L2, row(i), row(j));
        let (mut same, mut other, mut ns, mut no) = (0.0, 0.0, 0, 0);
        for i in (0..n).step_by(97) {
            for j in (0..n).step_by(7) {
                if i == j || a[i].cluster != a[j].cluster {
                    continue;
                }
                if a[i].artist == a[j].artist {
                    same += d(i, j);
                    ns += 1;
                } else {
                    other += d(i, j);
                    no += 1;
                }
            }
        }
        assert!(ns > 0 && no > 0);
        let (same, other) = (same / ns as f32, other / no as f32);
        assert!(same < 0.8 * other, "same artist {same}, other {other}");
    }
}
