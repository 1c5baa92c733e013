//! Catalog attributes: a typed, columnar store built from one JSON object per
//! item, and the zero-copy view that filters read.
//!
//! Types are inferred per field from the values seen:
//! - string → `keyword` (dictionary-encoded, one posting list per value);
//! - array of strings → `keywords` (multi-valued: an item may hold several);
//! - bool → `bool` (two postings, `false` and `true`);
//! - integer → `int` (i64 column); float → `float` (f64 column). A field that
//!   mixes integers and floats is a float field: JSON writes `3` for `3.0`.
//!
//! Any other mix, a nested object, or an array holding anything but strings is
//! an error naming the field and the line. `null` and an absent field both
//! mean "no value".
//!
//! In the snapshot (format version 2, `docs/format.md`):
//! - keyword and bool values live in one dictionary, each field's values a
//!   sorted run, with a serialized roaring bitmap per value: a condition's
//!   cardinality is known before any search starts;
//! - numeric fields are columns of `n` 8-byte values (missing: `i64::MIN` or
//!   NaN), plus the rows that have a value sorted by it, so a range maps to a
//!   contiguous run of rows by binary search: its cardinality is exact and its
//!   rows can be listed without a scan.

pub mod bitset;
pub mod filter;

use std::collections::HashMap;
use std::sync::OnceLock;

use roaring::RoaringBitmap;
use serde_json::{Map, Value};

/// How a field's values are typed and stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Keyword = 0,
    Keywords = 1,
    Bool = 2,
    Int = 3,
    Float = 4,
}

impl FieldKind {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => FieldKind::Keyword,
            1 => FieldKind::Keywords,
            2 => FieldKind::Bool,
            3 => FieldKind::Int,
            4 => FieldKind::Float,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            FieldKind::Keyword => "keyword",
            FieldKind::Keywords => "keywords",
            FieldKind::Bool => "bool",
            FieldKind::Int => "int",
            FieldKind::Float => "float",
        }
    }

    /// Stored as values with postings (keyword, keywords, bool).
    pub fn is_dictionary(self) -> bool {
        matches!(
            self,
            FieldKind::Keyword | FieldKind::Keywords | FieldKind::Bool
        )
    }

    pub fn is_numeric(self) -> bool {
        matches!(self, FieldKind::Int | FieldKind::Float)
    }
}

/// The sentinel of a missing integer. Inputs holding it are refused.
pub const MISSING_INT: i64 = i64::MIN;

/// One field of the schema, as the manifest stores it.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub struct FieldEntry {
    pub name: String,
    /// `FieldKind as u8`.
    pub kind: u8,
    /// Dictionary fields: their values are `first_value .. first_value + values`
    /// in the value dictionary, sorted by bytes.
    pub first_value: u32,
    pub values: u32,
    /// Numeric fields: the column number (`n` values each), and where the
    /// field's rows sorted by value start in `attr_sorted`.
    pub column: u32,
    pub sorted_start: u64,
    /// Items that hold a value for this field.
    pub present: u64,
}

impl FieldEntry {
    pub fn kind(&self) -> FieldKind {
        FieldKind::from_u8(self.kind).unwrap_or(FieldKind::Keyword)
    }
}

/// A built attribute store, ready for the snapshot writer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttributeTable {
    pub fields: Vec<FieldEntry>,
    /// The value dictionary of every dictionary field, field by field.
    pub values: Vec<String>,
    /// One serialized roaring bitmap per dictionary value.
    pub postings: Vec<Vec<u8>>,
    /// Numeric columns, `n` 8-byte values each (i64, or f64 bits).
    pub columns: Vec<u64>,
    /// Per numeric field, the rows holding a value, sorted by (value, row).
    pub sorted: Vec<u32>,
    /// One JSON object per item, as given (for display and GetItems).
    pub json: Vec<String>,
}

/// An attribute type error, located by field and 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeError {
    pub line: usize,
    pub field: String,
    pub reason: String,
}

impl std::fmt::Display for AttributeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {}: field {:?}: {}",
            self.line, self.field, self.reason
        )
    }
}

enum Column {
    /// Dictionary field: value → rows holding it (ascending, as rows arrive).
    Dict {
        kind: FieldKind,
        ids: HashMap<String, u32>,
        rows: Vec<Vec<u32>>,
    },
    Int(Vec<i64>),
    Float(Vec<f64>),
}

struct FieldBuild {
    name: String,
    column: Column,
    present: u64,
}

/// Accumulates attributes row by row, inferring types as it goes.
#[derive(Default)]
pub struct AttributesBuilder {
    rows: u32,
    fields: Vec<FieldBuild>,
    by_name: HashMap<String, usize>,
    json: Vec<String>,
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_i64() => "int",
        Value::Number(_) => "float",
        Value::String(_) => "keyword",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

impl AttributesBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.rows as usize
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Whether any row held any field.
    pub fn has_fields(&self) -> bool {
        !self.fields.is_empty()
    }

    /// Add the next row's attributes; `line` (1-based) locates errors.
    pub fn push(&mut self, obj: &Map<String, Value>, line: usize) -> Result<(), AttributeError> {
        let row = self.rows;
        for (name, value) in obj {
            let err = |reason: String| AttributeError {
                line,
                field: name.clone(),
                reason,
            };
            if value.is_null() {
                continue;
            }
            let kind = match value {
                Value::String(_) => FieldKind::Keyword,
                Value::Array(a) => {
                    if let Some(bad) = a.iter().find(|x| !x.is_string()) {
                        return Err(err(format!(
                            "an array may hold only strings, found a {}",
                            json_kind(bad)
                        )));
                    }
                    FieldKind::Keywords
                }
                Value::Bool(_) => FieldKind::Bool,
                Value::Number(n) if n.is_i64() => FieldKind::Int,
                Value::Number(n) if n.is_u64() => {
                    return Err(err(format!("integer {n} does not fit in i64")))
                }
                Value::Number(_) => FieldKind::Float,
                Value::Object(_) => return Err(err("nested objects are not supported".into())),
                Value::Null => unreachable!("skipped above"),
            };
            let idx = match self.by_name.get(name) {
                Some(&i) => i,
                None => {
                    let column = match kind {
                        FieldKind::Int => Column::Int(vec![MISSING_INT; row as usize]),
                        FieldKind::Float => Column::Float(vec![f64::NAN; row as usize]),
                        k => Column::Dict {
                            kind: k,
                            ids: HashMap::new(),
                            rows: Vec::new(),
                        },
                    };
                    self.fields.push(FieldBuild {
                        name: name.clone(),
                        column,
                        present: 0,
                    });
                    self.by_name.insert(name.clone(), self.fields.len() - 1);
                    self.fields.len() - 1
                }
            };
            let f = &mut self.fields[idx];
            // An integer column meeting a float becomes a float column.
            if let (Column::Int(col), FieldKind::Float) = (&f.column, kind) {
                let floats = col
                    .iter()
                    .map(|&x| if x == MISSING_INT { f64::NAN } else { x as f64 })
                    .collect();
                f.column = Column::Float(floats);
            }
            match (&mut f.column, kind) {
                (Column::Int(col), FieldKind::Int) => {
                    let x = value.as_i64().unwrap_or(MISSING_INT);
                    if x == MISSING_INT {
                        return Err(err(format!("{x} is reserved for a missing value")));
                    }
                    col.resize(row as usize, MISSING_INT);
                    col.push(x);
                }
                (Column::Float(col), FieldKind::Int | FieldKind::Float) => {
                    let x = value.as_f64().unwrap_or(f64::NAN);
                    col.resize(row as usize, f64::NAN);
                    col.push(x);
                }
                (Column::Dict { kind: k, ids, rows }, _) if *k == kind => {
                    let mut add = |s: &str| {
                        let next = rows.len() as u32;
                        let id = *ids.entry(s.to_string()).or_insert(next);
                        if id == next {
                            rows.push(Vec::new());
                        }
                        let r = &mut rows[id as usize];
                        if r.last() != Some(&row) {
                            r.push(row);
                        }
                    };
                    match value {
                        Value::String(s) => add(s),
                        Value::Bool(b) => add(if *b { "true" } else { "false" }),
                        Value::Array(a) => a.iter().filter_map(Value::as_str).for_each(add),
                        _ => {}
                    }
                }
                (column, kind) => {
                    let was = match column {
                        Column::Dict { kind, .. } => kind.name(),
                        Column::Int(_) => "int",
                        Column::Float(_) => "float",
                    };
                    return Err(err(format!(
                        "is {} here but {was} on earlier lines",
                        kind.name()
                    )));
                }
            }
            f.present += 1;
        }
        self.json.push(Value::Object(obj.clone()).to_string());
        self.rows += 1;
        Ok(())
    }

    /// Encode the columns and postings of all rows pushed.
    pub fn finish(self) -> AttributeTable {
        let n = self.rows as usize;
        let mut fields: Vec<FieldBuild> = self.fields;
        fields.sort_by(|a, b| a.name.cmp(&b.name));
        let mut t = AttributeTable {
            json: self.json,
            ..AttributeTable::default()
        };
        let mut columns = 0u32;
        for f in fields {
            let mut e = FieldEntry {
                name: f.name,
                kind: 0,
                first_value: t.values.len() as u32,
                values: 0,
                column: 0,
                sorted_start: t.sorted.len() as u64,
                present: f.present,
            };
            match f.column {
                Column::Dict { kind, ids, rows } => {
                    e.kind = kind as u8;
                    let mut vals: Vec<(String, u32)> = ids.into_iter().collect();
                    vals.sort_unstable();
                    e.values = vals.len() as u32;
                    // A multi-valued field counts items, not values.
                    if kind == FieldKind::Keywords {
                        let mut any = RoaringBitmap::new();
                        rows.iter().for_each(|r| any.extend(r.iter().copied()));
                        e.present = any.len();
                    }
                    for (v, id) in vals {
                        let bm = RoaringBitmap::from_sorted_iter(rows[id as usize].iter().copied())
                            .unwrap_or_default();
                        let mut bytes = Vec::with_capacity(bm.serialized_size());
                        bm.serialize_into(&mut bytes)
                            .expect("writing to a Vec cannot fail");
                        t.values.push(v);
                        t.postings.push(bytes);
                    }
                }
                Column::Int(mut col) => {
                    e.kind = FieldKind::Int as u8;
                    col.resize(n, MISSING_INT);
                    let mut rows: Vec<u32> = (0..n as u32)
                        .filter(|&r| col[r as usize] != MISSING_INT)
                        .collect();
                    rows.sort_by_key(|&r| (col[r as usize], r));
                    e.column = columns;
                    columns += 1;
                    t.columns.extend(col.iter().map(|&x| x as u64));
                    t.sorted.extend(rows);
                }
                Column::Float(mut col) => {
                    e.kind = FieldKind::Float as u8;
                    col.resize(n, f64::NAN);
                    let mut rows: Vec<u32> = (0..n as u32)
                        .filter(|&r| !col[r as usize].is_nan())
                        .collect();
                    rows.sort_by(|&a, &b| {
                        col[a as usize].total_cmp(&col[b as usize]).then(a.cmp(&b))
                    });
                    e.column = columns;
                    columns += 1;
                    t.columns.extend(col.iter().map(|x| x.to_bits()));
                    t.sorted.extend(rows);
                }
            }
            t.fields.push(e);
        }
        t
    }
}

/// The attribute store of an open snapshot: borrowed sections plus a cache of
/// decoded postings (each decoded once, on first use).
pub struct Attributes<'a> {
    pub n: usize,
    pub fields: &'a [FieldEntry],
    pub value_offsets: &'a [u64],
    pub value_bytes: &'a [u8],
    pub posting_offsets: &'a [u64],
    pub posting_bytes: &'a [u8],
    pub columns: &'a [u64],
    pub sorted: &'a [u32],
    pub cache: &'a PostingCache,
}

/// Decoded postings, filled lazily: opening stays O(1).
#[derive(Default)]
pub struct PostingCache {
    slots: OnceLock<Box<[OnceLock<RoaringBitmap>]>>,
    /// Per field, each row's value (for group caps), built on first use.
    rows: OnceLock<Box<[OnceLock<RowValues>]>>,
}

/// One field's value number per row.
type RowValues = Box<[u32]>;

/// The value of a row that has none, in [`Attributes::row_values`].
pub const NO_VALUE: u32 = u32::MAX;

impl std::fmt::Debug for PostingCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PostingCache")
    }
}

/// One field of the schema, summarized for people and for `ListIndexes`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldSummary {
    pub name: String,
    pub kind: FieldKind,
    /// Items holding a value.
    pub present: u64,
    /// Distinct values (dictionary fields; 0 for numbers).
    pub distinct: u32,
    /// The most frequent values with their item counts (dictionary fields).
    pub top: Vec<(String, u64)>,
    /// The range (numeric fields).
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// A numeric attribute value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    Int(i64),
    Float(f64),
}

impl Number {
    pub fn as_f64(self) -> f64 {
        match self {
            Number::Int(i) => i as f64,
            Number::Float(f) => f,
        }
    }
}

impl<'a> Attributes<'a> {
    pub fn field(&self, name: &str) -> Option<&'a FieldEntry> {
        self.fields.iter().find(|f| f.name == name)
    }

    pub fn value(&self, v: u32) -> &'a str {
        let (a, b) = (
            self.value_offsets.get(v as usize).copied().unwrap_or(0) as usize,
            self.value_offsets.get(v as usize + 1).copied().unwrap_or(0) as usize,
        );
        self.value_bytes
            .get(a..b)
            .and_then(|s| std::str::from_utf8(s).ok())
            .unwrap_or("")
    }

    /// The dictionary field whose run holds dictionary value `v`.
    pub fn field_of_value(&self, v: u32) -> Option<&'a FieldEntry> {
        self.fields.iter().find(|f| {
            f.kind().is_dictionary() && (f.first_value..f.first_value + f.values).contains(&v)
        })
    }

    /// The dictionary number of `value` in a dictionary field.
    pub fn value_id(&self, f: &FieldEntry, value: &str) -> Option<u32> {
        let (lo, hi) = (f.first_value, f.first_value + f.values);
        let (mut a, mut b) = (lo, hi);
        while a < b {
            let mid = a + (b - a) / 2;
            match self.value(mid).cmp(value) {
                std::cmp::Ordering::Less => a = mid + 1,
                std::cmp::Ordering::Greater => b = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    /// The items holding dictionary value `v`.
    pub fn posting(&self, v: u32) -> &'a RoaringBitmap {
        static EMPTY: OnceLock<RoaringBitmap> = OnceLock::new();
        let total = self.posting_offsets.len().saturating_sub(1);
        let cache: &'a PostingCache = self.cache;
        let slots = cache
            .slots
            .get_or_init(|| (0..total).map(|_| OnceLock::new()).collect());
        match slots.get(v as usize) {
            Some(slot) => slot.get_or_init(|| {
                let a = self.posting_offsets[v as usize] as usize;
                let b = self.posting_offsets[v as usize + 1] as usize;
                // Checksummed at verify; a bitmap that does not decode (or
                // holds rows past `n`) is treated as empty rather than trusted.
                self.posting_bytes
                    .get(a..b)
                    .and_then(|bytes| RoaringBitmap::deserialize_from(bytes).ok())
                    .filter(|bm| bm.max().is_none_or(|m| (m as usize) < self.n))
                    .unwrap_or_default()
            }),
            None => EMPTY.get_or_init(RoaringBitmap::new),
        }
    }

    /// The `n` raw values of a numeric field's column.
    pub fn column(&self, f: &FieldEntry) -> &'a [u64] {
        if !f.kind().is_numeric() {
            return &[];
        }
        let start = f.column as usize * self.n;
        self.columns.get(start..start + self.n).unwrap_or(&[])
    }

    /// Rows holding a value, sorted by it.
    pub fn sorted_rows(&self, f: &FieldEntry) -> &'a [u32] {
        if !f.kind().is_numeric() {
            return &[];
        }
        let start = f.sorted_start as usize;
        self.sorted
            .get(start..start + f.present as usize)
            .unwrap_or(&[])
    }

    /// The value of row `row` in a numeric field, if present.
    #[inline]
    pub fn number(&self, f: &FieldEntry, col: &[u64], row: u32) -> Option<Number> {
        let raw = *col.get(row as usize)?;
        if f.kind == FieldKind::Int as u8 {
            let x = raw as i64;
            (x != MISSING_INT).then_some(Number::Int(x))
        } else {
            let x = f64::from_bits(raw);
            (!x.is_nan()).then_some(Number::Float(x))
        }
    }

    /// The rows whose value lies in `[lo, hi]` (either bound optional and
    /// either exclusive), as a contiguous run of [`Self::sorted_rows`].
    pub fn range_rows(
        &self,
        f: &FieldEntry,
        lo: Option<(f64, bool)>,
        hi: Option<(f64, bool)>,
    ) -> &'a [u32] {
        let rows = self.sorted_rows(f);
        let col = self.column(f);
        let is_int = f.kind == FieldKind::Int as u8;
        let val = |r: u32| -> f64 {
            let raw = col.get(r as usize).copied().unwrap_or(0);
            if is_int {
                raw as i64 as f64
            } else {
                f64::from_bits(raw)
            }
        };
        let start = match lo {
            None => 0,
            Some((b, inclusive)) => {
                rows.partition_point(|&r| if inclusive { val(r) < b } else { val(r) <= b })
            }
        };
        let end = match hi {
            None => rows.len(),
            Some((b, inclusive)) => {
                rows.partition_point(|&r| if inclusive { val(r) <= b } else { val(r) < b })
            }
        };
        rows.get(start..end.max(start)).unwrap_or(&[])
    }

    /// Values of a dictionary field with their item counts, most frequent
    /// first (for `inspect` and `ListIndexes`).
    pub fn top_values(&self, f: &FieldEntry, limit: usize) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = (f.first_value..f.first_value + f.values)
            .map(|id| (self.value(id).to_string(), self.posting(id).len()))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(limit);
        v
    }

    /// Every field as `inspect` and `ListIndexes` show it: its type and
    /// count, and its `top` most frequent values or its range.
    pub fn summaries(&self, top: usize) -> Vec<FieldSummary> {
        self.fields
            .iter()
            .map(|f| {
                let kind = f.kind();
                let range = self.min_max(f);
                FieldSummary {
                    name: f.name.clone(),
                    kind,
                    present: f.present,
                    distinct: f.values,
                    top: if kind.is_dictionary() {
                        self.top_values(f, top)
                    } else {
                        Vec::new()
                    },
                    min: range.map(|r| r.0.as_f64()),
                    max: range.map(|r| r.1.as_f64()),
                }
            })
            .collect()
    }

    /// Each row's value number in a single-valued dictionary field (keyword
    /// or bool), [`NO_VALUE`] where it has none: what a per-group cap reads
    /// per candidate. The snapshot stores postings only, so the column is
    /// inverted from them once per open index (4 bytes per item) on the
    /// first call for that field. `None` for other fields.
    pub fn row_values(&self, f: &FieldEntry) -> Option<&'a [u32]> {
        if !matches!(f.kind(), FieldKind::Keyword | FieldKind::Bool) {
            return None;
        }
        let at = self.fields.iter().position(|g| g.name == f.name)?;
        let cache: &'a PostingCache = self.cache;
        let slots = cache
            .rows
            .get_or_init(|| (0..self.fields.len()).map(|_| OnceLock::new()).collect());
        let col = slots[at].get_or_init(|| {
            let mut col = vec![NO_VALUE; self.n];
            for v in f.first_value..f.first_value + f.values {
                for row in self.posting(v) {
                    col[row as usize] = v;
                }
            }
            col.into_boxed_slice()
        });
        Some(col)
    }

    /// Smallest and largest value of a numeric field.
    pub fn min_max(&self, f: &FieldEntry) -> Option<(Number, Number)> {
        let rows = self.sorted_rows(f);
        let col = self.column(f);
        Some((
            self.number(f, col, *rows.first()?)?,
            self.number(f, col, *rows.last()?)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(s: &str) -> Map<String, Value> {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn infers_types_and_promotes_int_to_float() {
        let mut b = AttributesBuilder::new();
        b.push(
            &obj(r#"{"lang":"sv","markets":["SE","NO"],"explicit":false,"pop":3,"score":1}"#),
            1,
        )
        .unwrap();
        b.push(
            &obj(r#"{"lang":"en","markets":[],"explicit":true,"score":2.5}"#),
            2,
        )
        .unwrap();
        b.push(&obj(r#"{"lang":null}"#), 3).unwrap();
        let t = b.finish();
        let kinds: Vec<(&str, FieldKind, u64)> = t
            .fields
            .iter()
            .map(|f| (f.name.as_str(), f.kind(), f.present))
            .collect();
        assert_eq!(
            kinds,
            [
                ("explicit", FieldKind::Bool, 2),
                ("lang", FieldKind::Keyword, 2),
                ("markets", FieldKind::Keywords, 1),
                ("pop", FieldKind::Int, 1),
                ("score", FieldKind::Float, 2),
            ]
        );
        assert_eq!(t.values, ["false", "true", "en", "sv", "NO", "SE"]);
        // pop: row 0 = 3, rows 1 and 2 missing.
        let pop = &t.fields[3];
        let col = &t.columns[pop.column as usize * 3..][..3];
        assert_eq!(col[0] as i64, 3);
        assert_eq!(col[1] as i64, MISSING_INT);
        let score = &t.fields[4];
        let col = &t.columns[score.column as usize * 3..][..3];
        assert_eq!(f64::from_bits(col[0]), 1.0);
        assert_eq!(f64::from_bits(col[1]), 2.5);
        assert!(f64::from_bits(col[2]).is_nan());
    }

    #[test]
    fn type_errors_name_field_and_line() {
        let cases = [
            (r#"{"a":"x"}"#, r#"{"a":3}"#, "is int here but keyword"),
            (
                r#"{"a":["x"]}"#,
                r#"{"a":"x"}"#,
                "is keyword here but keywords",
            ),
            (r#"{"a":true}"#, r#"{"a":{"b":1}}"#, "nested objects"),
            (
                r#"{"a":["x"]}"#,
                r#"{"a":["x",2]}"#,
                "only strings, found a int",
            ),
            (
                r#"{"a":1}"#,
                r#"{"a":18446744073709551615}"#,
                "does not fit",
            ),
            (
                r#"{"a":1.5}"#,
                r#"{"a":"1.5"}"#,
                "is keyword here but float",
            ),
        ];
        for (first, second, want) in cases {
            let mut b = AttributesBuilder::new();
            b.push(&obj(first), 1).unwrap();
            let e = b.push(&obj(second), 2).unwrap_err();
            assert_eq!((e.line, e.field.as_str()), (2, "a"), "{second}");
            assert!(e.to_string().contains(want), "{e} lacks {want:?}");
        }
    }
}
