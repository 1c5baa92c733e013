//! Filters over catalog attributes: parse an expression ([`parse`]), bind it
//! to a snapshot's schema (types checked, values looked up), and plan it:
//! how many items match, and whether to scan them exactly or walk the graph.
//!
//! The plan is also the admit-check of filtered traversal: a candidate enters
//! the results only if [`Admit::admit`] says so. Keyword and bool conditions
//! become roaring bitmaps (their cardinality is exact); numeric conditions
//! become sets of intervals of one field ([`Intervals`]): an `IN` list is a
//! set of points, ORs of comparisons on one field merge into one set and
//! ANDs intersect, so a check costs one binary search whatever the number of
//! values. Their cardinality is exact too (a binary search per interval in
//! the field's sorted rows), and their rows can be listed.
//!
//! Work that grows with the index (listing matches, complementing and
//! combining bitmaps) checks the call's [`Cancel`] every [`CHECK_EVERY`]
//! items, so a filter stops at its call's deadline as a traversal does.

mod parse;

pub use parse::{parse, Expr, Literal, Op, MAX_FILTER_LEN};

use std::borrow::Cow;
use std::cmp::Ordering;
use std::sync::OnceLock;

use fixedbitset::FixedBitSet;
use roaring::RoaringBitmap;

pub use crate::admit::{Admit, AdmitAll};
use crate::attributes::{Attributes, FieldEntry, FieldKind, Number};
use crate::error::Error;
use crate::search::{Cancel, NoCancel};

/// A filter that does not parse or does not fit the schema, with the
/// character position it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter error at position {position}: {message}")]
pub struct FilterError {
    pub position: usize,
    pub message: String,
}

impl FilterError {
    pub fn new(position: usize, message: impl Into<String>) -> Self {
        FilterError {
            position,
            message: message.into(),
        }
    }
}

/// How many items (rows listed, values looked up, intervals searched) pass
/// between two checks of the call's cancel.
pub const CHECK_EVERY: usize = 1024;

/// Fails with the cancel's error when it says stop.
fn check(cancel: &dyn Cancel) -> Result<(), Error> {
    if cancel.cancelled() {
        return Err(cancel.error());
    }
    Ok(())
}

/// One end of an interval: the value and whether it is included. An open
/// end is an infinity, included (no stored number is NaN: NaN is missing).
type End = (f64, bool);

/// Whether lower end `a` starts before lower end `b`: by value, and at the
/// same value an included end first.
fn lo_cmp(a: End, b: End) -> Ordering {
    a.0.partial_cmp(&b.0)
        .unwrap_or(Ordering::Equal)
        .then(b.1.cmp(&a.1))
}

/// Whether upper end `a` stops before upper end `b`: by value, and at the
/// same value an excluded end first.
fn hi_cmp(a: End, b: End) -> Ordering {
    a.0.partial_cmp(&b.0)
        .unwrap_or(Ordering::Equal)
        .then(a.1.cmp(&b.1))
}

fn above(lo: End, x: f64) -> bool {
    x > lo.0 || (x == lo.0 && lo.1)
}

fn below(hi: End, x: f64) -> bool {
    x < hi.0 || (x == hi.0 && hi.1)
}

/// Numbers a condition on one numeric field admits: intervals sorted by
/// their lower end, none empty, none overlapping or touching another.
/// Equality is numeric equality of f64 values, as `=` has always compared
/// (an int equals the float of the same value, -0 equals 0).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Intervals(Vec<(End, End)>);

impl Intervals {
    /// The union of any intervals: O(k log k).
    fn union_of(mut v: Vec<(End, End)>) -> Intervals {
        v.retain(|&(lo, hi)| lo.0 < hi.0 || (lo.0 == hi.0 && lo.1 && hi.1));
        v.sort_by(|a, b| lo_cmp(a.0, b.0));
        let mut out: Vec<(End, End)> = Vec::with_capacity(v.len());
        for (lo, hi) in v {
            match out.last_mut() {
                // Overlapping or touching the last: extend it.
                Some(last) if lo.0 < last.1 .0 || (lo.0 == last.1 .0 && (lo.1 || last.1 .1)) => {
                    if hi_cmp(hi, last.1) == Ordering::Greater {
                        last.1 = hi;
                    }
                }
                _ => out.push((lo, hi)),
            }
        }
        Intervals(out)
    }

    /// The numbers in both: one merge pass, O(a + b).
    fn intersect(&self, other: &Intervals) -> Intervals {
        let (a, b) = (&self.0, &other.0);
        let (mut i, mut j) = (0, 0);
        let mut out = Vec::new();
        while i < a.len() && j < b.len() {
            let lo = if lo_cmp(a[i].0, b[j].0) == Ordering::Greater {
                a[i].0
            } else {
                b[j].0
            };
            let (hi, a_first) = if hi_cmp(a[i].1, b[j].1) == Ordering::Less {
                (a[i].1, true)
            } else {
                (b[j].1, false)
            };
            if lo.0 < hi.0 || (lo.0 == hi.0 && lo.1 && hi.1) {
                out.push((lo, hi));
            }
            if a_first {
                i += 1;
            } else {
                j += 1;
            }
        }
        Intervals(out)
    }

    /// Whether `x` lies in one of the intervals: one binary search.
    #[inline]
    fn contains(&self, x: f64) -> bool {
        let i = self.0.partition_point(|&(lo, _)| above(lo, x));
        i > 0 && below(self.0[i - 1].1, x)
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// A bound condition tree, evaluated per candidate.
#[derive(Debug, Clone)]
enum Pred<'a> {
    Set(Cow<'a, RoaringBitmap>),
    /// The items whose value in a numeric field lies in `set`.
    Num {
        field: &'a FieldEntry,
        col: &'a [u64],
        set: Intervals,
    },
    And(Vec<Pred<'a>>),
    Or(Vec<Pred<'a>>),
    Not(Box<Pred<'a>>),
}

impl Pred<'_> {
    fn eval(&self, attrs: &Attributes<'_>, row: u32) -> bool {
        match self {
            Pred::Set(b) => b.contains(row),
            Pred::Num { field, col, set } => attrs
                .number(field, col, row)
                .map(Number::as_f64)
                .is_some_and(|x| set.contains(x)),
            Pred::And(ps) => ps.iter().all(|p| p.eval(attrs, row)),
            Pred::Or(ps) => ps.iter().any(|p| p.eval(attrs, row)),
            Pred::Not(p) => !p.eval(attrs, row),
        }
    }
}

/// A condition reduced as far as bitmaps allow.
enum Reduced<'a> {
    /// Exactly the matching items.
    Exact(Cow<'a, RoaringBitmap>),
    /// A per-candidate check, with an estimate of how many match and,
    /// where known, a superset of the matches that is cheap to list.
    Residual {
        pred: Pred<'a>,
        estimate: f64,
        driver: Option<Driver<'a>>,
    },
}

/// A superset of the matching items that can be listed cheaply: the union
/// of some bitmaps and some runs of a field's sorted rows.
#[derive(Clone, Default)]
struct Driver<'a> {
    bitmaps: Vec<Cow<'a, RoaringBitmap>>,
    runs: Vec<&'a [u32]>,
    /// The sum of their sizes (at least the size of the union).
    len: u64,
}

impl<'a> Driver<'a> {
    fn bitmap(b: Cow<'a, RoaringBitmap>) -> Self {
        Driver {
            len: b.len(),
            bitmaps: vec![b],
            runs: Vec::new(),
        }
    }

    fn join(&mut self, other: Driver<'a>) {
        self.bitmaps.extend(other.bitmaps);
        self.runs.extend(other.runs);
        self.len += other.len;
    }

    /// The listed items that pass `keep`, sorted, each once.
    fn list(
        &self,
        keep: impl Fn(u32) -> bool,
        cancel: &dyn Cancel,
    ) -> Result<RoaringBitmap, Error> {
        let rows = self
            .bitmaps
            .iter()
            .flat_map(|b| b.iter())
            .chain(self.runs.iter().flat_map(|r| r.iter().copied()));
        let mut kept = collect_checked(rows, keep, cancel)?;
        kept.sort_unstable();
        kept.dedup();
        Ok(RoaringBitmap::from_sorted_iter(kept).unwrap_or_default())
    }
}

/// The rows of `rows` that pass `keep`, checking `cancel` as it goes.
fn collect_checked(
    rows: impl Iterator<Item = u32>,
    keep: impl Fn(u32) -> bool,
    cancel: &dyn Cancel,
) -> Result<Vec<u32>, Error> {
    let mut kept = Vec::new();
    for (i, r) in rows.enumerate() {
        if i % CHECK_EVERY == 0 {
            check(cancel)?;
        }
        if keep(r) {
            kept.push(r);
        }
    }
    Ok(kept)
}

/// A filter bound to one snapshot and planned: what it admits and how many
/// items match. Shared by every query of a batch, so it is `Sync`: the exact
/// matches are computed at most once, on first need.
pub struct FilterPlan<'a> {
    attrs: Attributes<'a>,
    /// The matching items, once known exactly.
    matches: OnceLock<Cow<'a, RoaringBitmap>>,
    /// Until then, the per-candidate check and a listable superset.
    residual: Option<(Pred<'a>, Option<Driver<'a>>)>,
    /// Estimated matches while `matches` is unset.
    estimate: u64,
    /// `matches` as one bit per item, for traversal ([`Self::dense`]).
    dense: OnceLock<FixedBitSet>,
    /// Dictionary values every match holds ([`Self::required_values`]).
    required: Vec<u32>,
}

impl std::fmt::Debug for FilterPlan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilterPlan")
            .field("count", &self.count())
            .field("exact", &self.is_exact())
            .finish()
    }
}

impl<'a> FilterPlan<'a> {
    /// Parse, bind and plan `src` against a snapshot's attributes (`None`
    /// when the snapshot has none: every field is then unknown).
    pub fn new(src: &str, attrs: Option<Attributes<'a>>) -> Result<FilterPlan<'a>, FilterError> {
        match Self::new_within(src, attrs, &NoCancel) {
            Ok(plan) => Ok(plan),
            Err(Error::Filter(e)) => Err(e),
            // Nothing else fails without a cancel.
            Err(e) => Err(FilterError::new(0, e.to_string())),
        }
    }

    /// As [`Self::new`], stopping with `cancel`'s error (the deadline or
    /// the cancel flag of the call the filter is for) once it says so:
    /// checked before binding and every [`CHECK_EVERY`] items of the work
    /// after, so that no planning runs past its call's end.
    pub fn new_within(
        src: &str,
        attrs: Option<Attributes<'a>>,
        cancel: &dyn Cancel,
    ) -> Result<FilterPlan<'a>, Error> {
        let expr = parse(src)?;
        let Some(attrs) = attrs else {
            let at = first_field(&expr);
            return Err(FilterError::new(
                at.1,
                format!("unknown field {:?}: this index has no attributes", at.0),
            )
            .into());
        };
        check(cancel)?;
        let pred = bind(&expr, &attrs, cancel)?;
        let mut required = Vec::new();
        required_values(&expr, &attrs, &mut required);
        let n = attrs.n as u64;
        let plan = match reduce(pred, &attrs, cancel)? {
            Reduced::Exact(b) => FilterPlan {
                matches: OnceLock::from(b),
                residual: None,
                estimate: 0,
                dense: OnceLock::new(),
                required,
                attrs,
            },
            Reduced::Residual {
                pred,
                estimate,
                driver,
            } => FilterPlan {
                matches: OnceLock::new(),
                estimate: (estimate.round() as u64).min(n),
                residual: Some((pred, driver)),
                dense: OnceLock::new(),
                required,
                attrs,
            },
        };
        // A short listable superset: count the matches exactly now.
        if let Some((_, Some(d))) = &plan.residual {
            if d.len <= n / 8 {
                plan.matches_within(cancel)?;
            }
        }
        Ok(plan)
    }

    /// Dictionary values every matching item holds: those of the filter's
    /// top-level `field = value` terms (and one-value `IN` lists), ANDed
    /// with the rest. A graph over one of them holds every match.
    pub fn required_values(&self) -> &[u32] {
        &self.required
    }

    /// Items matching (exact when [`Self::is_exact`], else an estimate).
    pub fn count(&self) -> u64 {
        self.matches.get().map_or(self.estimate, |b| b.len())
    }

    pub fn is_exact(&self) -> bool {
        self.matches.get().is_some()
    }

    /// Fraction of the index that matches.
    pub fn selectivity(&self) -> f64 {
        self.count() as f64 / self.attrs.n.max(1) as f64
    }

    /// The exact matches, computed on first call: lists the superset, or
    /// every item when there is none, and checks each.
    pub fn matches(&self) -> &RoaringBitmap {
        match self.matches_within(&NoCancel) {
            Ok(m) => m,
            // Listing fails only when cancelled, and NoCancel never is.
            Err(_) => self
                .matches
                .get_or_init(|| Cow::Owned(RoaringBitmap::new())),
        }
    }

    /// As [`Self::matches`], stopping with `cancel`'s error once it says so
    /// (checked every [`CHECK_EVERY`] items listed). A stopped listing
    /// leaves the plan as it was: a later call lists them again.
    pub fn matches_within(&self, cancel: &dyn Cancel) -> Result<&RoaringBitmap, Error> {
        if let Some(m) = self.matches.get() {
            return Ok(m);
        }
        let listed = match &self.residual {
            None => RoaringBitmap::new(),
            Some((pred, Some(driver))) => driver.list(|r| pred.eval(&self.attrs, r), cancel)?,
            Some((pred, None)) => {
                let rows = collect_checked(
                    0..self.attrs.n as u32,
                    |r| pred.eval(&self.attrs, r),
                    cancel,
                )?;
                RoaringBitmap::from_sorted_iter(rows).unwrap_or_default()
            }
        };
        Ok(self.matches.get_or_init(|| Cow::Owned(listed)))
    }
}

impl FilterPlan<'_> {
    /// The exact matches as one bit per item, built on first call (once per
    /// plan, so once for a whole batch); `None` while they are not known
    /// exactly. A traversal probes the filter for every neighbour it meets,
    /// hundreds of times per query: a bit test costs a fraction of a roaring
    /// lookup (profiled on words-dev-384 with a 10% filter, roaring's
    /// `contains` and its caller took a quarter of the query's time).
    pub fn dense(&self) -> Option<&FixedBitSet> {
        let matches = self.matches.get()?;
        Some(
            self.dense
                .get_or_init(|| crate::bitset::dense_of(matches, self.attrs.n)),
        )
    }
}

impl Admit for FilterPlan<'_> {
    #[inline]
    fn admit(&self, node: u32) -> bool {
        match (self.matches.get(), &self.residual) {
            (Some(b), _) => b.contains(node),
            (None, Some((p, _))) => p.eval(&self.attrs, node),
            (None, None) => false,
        }
    }
}

/// Collect into `out` the dictionary values `e` requires of every match:
/// its `field = value` terms and one-value `IN` lists, through ANDs.
fn required_values(e: &Expr, attrs: &Attributes<'_>, out: &mut Vec<u32>) {
    let value = |field: &str, v: &Literal| {
        let f = attrs.field(field).filter(|f| f.kind().is_dictionary())?;
        dictionary_value(attrs, f, Op::Eq, v, 0).ok().flatten()
    };
    match e {
        Expr::And(v) => v.iter().for_each(|e| required_values(e, attrs, out)),
        Expr::Cmp {
            field,
            op: Op::Eq,
            value: v,
            ..
        } => out.extend(value(field, v)),
        Expr::In { field, values, .. } if values.len() == 1 => {
            out.extend(value(field, &values[0].0))
        }
        _ => {}
    }
}

fn first_field(e: &Expr) -> (&str, usize) {
    match e {
        Expr::And(v) | Expr::Or(v) => first_field(&v[0]),
        Expr::Not(e) => first_field(e),
        Expr::Cmp { field, at, .. } | Expr::In { field, at, .. } => (field, *at),
    }
}

fn schema(attrs: &Attributes<'_>) -> String {
    attrs
        .fields
        .iter()
        .map(|f| format!("{} ({})", f.name, f.kind().name()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Check types against the schema and look values up.
fn bind<'a>(e: &Expr, attrs: &Attributes<'a>, cancel: &dyn Cancel) -> Result<Pred<'a>, Error> {
    let field_of = |name: &str, at: usize| {
        attrs.field(name).ok_or_else(|| {
            FilterError::new(
                at,
                format!("unknown field {name:?}; fields: {}", schema(attrs)),
            )
        })
    };
    Ok(match e {
        Expr::And(v) => and_of(
            v.iter()
                .map(|e| bind(e, attrs, cancel))
                .collect::<Result<_, _>>()?,
        ),
        Expr::Or(v) => or_of(
            v.iter()
                .map(|e| bind(e, attrs, cancel))
                .collect::<Result<_, _>>()?,
        ),
        Expr::Not(e) => not_of(bind(e, attrs, cancel)?),
        Expr::In { field, at, values } => {
            let f = field_of(field, *at)?;
            in_list(attrs, f, values, cancel)?
        }
        Expr::Cmp {
            field,
            at,
            op,
            value,
            value_at,
        } => {
            let f = field_of(field, *at)?;
            match op {
                Op::Ne => not_of(condition(attrs, f, Op::Eq, value, *value_at)?),
                op => condition(attrs, f, *op, value, *value_at)?,
            }
        }
    })
}

/// `field IN (values)`: one bitmap of the values' postings (each value
/// once) for a dictionary field, one set of points for a numeric field.
fn in_list<'a>(
    attrs: &Attributes<'a>,
    f: &'a FieldEntry,
    values: &[(Literal, usize)],
    cancel: &dyn Cancel,
) -> Result<Pred<'a>, Error> {
    if f.kind().is_numeric() {
        let mut points = Vec::with_capacity(values.len());
        for (i, (v, at)) in values.iter().enumerate() {
            if i % CHECK_EVERY == 0 {
                check(cancel)?;
            }
            let Literal::Num(x, _) = v else {
                return Err(mismatch(f, v, *at).into());
            };
            points.push(((*x, true), (*x, true)));
        }
        return Ok(Pred::Num {
            field: f,
            col: attrs.column(f),
            set: Intervals::union_of(points),
        });
    }
    let mut ids = Vec::with_capacity(values.len());
    for (i, (v, at)) in values.iter().enumerate() {
        if i % CHECK_EVERY == 0 {
            check(cancel)?;
        }
        ids.extend(dictionary_value(attrs, f, Op::Eq, v, *at)?);
    }
    ids.sort_unstable();
    ids.dedup();
    if let [id] = ids[..] {
        return Ok(Pred::Set(Cow::Borrowed(attrs.posting(id))));
    }
    let mut b = RoaringBitmap::new();
    for id in ids {
        check(cancel)?;
        b |= attrs.posting(id);
    }
    Ok(Pred::Set(Cow::Owned(b)))
}

fn mismatch(f: &FieldEntry, value: &Literal, at: usize) -> FilterError {
    FilterError::new(
        at,
        format!(
            "field {:?} is {}, but the value is a {}",
            f.name,
            f.kind().name(),
            value.type_name()
        ),
    )
}

/// The dictionary number of `value` in a dictionary field (`None` when no
/// item holds it), after checking `op` and the value's type.
fn dictionary_value(
    attrs: &Attributes<'_>,
    f: &FieldEntry,
    op: Op,
    value: &Literal,
    at: usize,
) -> Result<Option<u32>, FilterError> {
    let kind = f.kind();
    if op != Op::Eq {
        return Err(FilterError::new(
            at,
            format!(
                "{} on {} field {:?}: only =, != and IN apply",
                op.symbol(),
                kind.name(),
                f.name
            ),
        ));
    }
    match (kind, value) {
        (FieldKind::Bool, Literal::Bool(b)) => {
            Ok(attrs.value_id(f, if *b { "true" } else { "false" }))
        }
        (FieldKind::Keyword | FieldKind::Keywords, Literal::Str(s)) => Ok(attrs.value_id(f, s)),
        _ => Err(mismatch(f, value, at)),
    }
}

fn condition<'a>(
    attrs: &Attributes<'a>,
    f: &'a FieldEntry,
    op: Op,
    value: &Literal,
    at: usize,
) -> Result<Pred<'a>, FilterError> {
    if !f.kind().is_numeric() {
        return Ok(Pred::Set(
            match dictionary_value(attrs, f, op, value, at)? {
                Some(id) => Cow::Borrowed(attrs.posting(id)),
                None => Cow::Owned(RoaringBitmap::new()),
            },
        ));
    }
    let Literal::Num(x, _) = value else {
        return Err(mismatch(f, value, at));
    };
    let x = *x;
    let (inf, low) = ((f64::INFINITY, true), (f64::NEG_INFINITY, true));
    let (lo, hi) = match op {
        Op::Eq => ((x, true), (x, true)),
        Op::Lt => (low, (x, false)),
        Op::Le => (low, (x, true)),
        Op::Gt => ((x, false), inf),
        Op::Ge => ((x, true), inf),
        Op::Ne => unreachable!("rewritten as NOT ="),
    };
    Ok(Pred::Num {
        field: f,
        col: attrs.column(f),
        set: Intervals::union_of(vec![(lo, hi)]),
    })
}

fn not_of(p: Pred<'_>) -> Pred<'_> {
    match p {
        Pred::Not(inner) => *inner,
        p => Pred::Not(Box::new(p)),
    }
}

/// The numeric conditions of a list of parts, gathered per field.
struct PerField<'a> {
    fields: Vec<(&'a FieldEntry, &'a [u64], Vec<Intervals>)>,
}

impl<'a> PerField<'a> {
    fn new() -> Self {
        PerField { fields: Vec::new() }
    }

    fn add(&mut self, field: &'a FieldEntry, col: &'a [u64], set: Intervals) {
        match self
            .fields
            .iter_mut()
            .find(|(f, ..)| std::ptr::eq(*f, field))
        {
            Some((.., sets)) => sets.push(set),
            None => self.fields.push((field, col, vec![set])),
        }
    }
}

/// The parts of an AND or an OR, flattened (nested ANDs into an AND, ORs
/// into an OR) and sorted: numeric conditions by field, negated parts, the
/// rest.
struct Sorted<'a> {
    nums: PerField<'a>,
    negated: Vec<Pred<'a>>,
    rest: Vec<Pred<'a>>,
}

impl<'a> Sorted<'a> {
    fn of(parts: Vec<Pred<'a>>, nested: fn(Pred<'a>) -> Result<Vec<Pred<'a>>, Pred<'a>>) -> Self {
        let mut sorted = Sorted {
            nums: PerField::new(),
            negated: Vec::new(),
            rest: Vec::new(),
        };
        let mut add = |p| match p {
            Pred::Num { field, col, set } => sorted.nums.add(field, col, set),
            Pred::Not(inner) => sorted.negated.push(*inner),
            p => sorted.rest.push(p),
        };
        for p in parts {
            match nested(p) {
                Ok(inner) => inner.into_iter().for_each(&mut add),
                Err(p) => add(p),
            }
        }
        sorted
    }

    /// `rest`, with the negated parts joined by `join` under one NOT, then
    /// made one predicate by `wrap` when more than one is left.
    fn finish(
        mut self,
        join: fn(Vec<Pred<'a>>) -> Pred<'a>,
        wrap: fn(Vec<Pred<'a>>) -> Pred<'a>,
    ) -> Pred<'a> {
        match self.negated.len() {
            0 => {}
            1 => self.rest.push(not_of(self.negated.remove(0))),
            _ => self.rest.push(not_of(join(self.negated))),
        }
        if self.rest.len() == 1 {
            self.rest.remove(0)
        } else {
            wrap(self.rest)
        }
    }
}

/// An AND, flattened and simplified so that its cost per candidate does
/// not grow with the number of its conditions on one field: the numeric
/// conditions on each field intersect into one set, and the negated parts
/// join as one `NOT (a OR b ...)`.
fn and_of(parts: Vec<Pred<'_>>) -> Pred<'_> {
    let mut sorted = Sorted::of(parts, |p| match p {
        Pred::And(v) => Ok(v),
        p => Err(p),
    });
    for (field, col, mut sets) in std::mem::take(&mut sorted.nums.fields) {
        // Smallest first: each step then costs at most the smallest set
        // plus the next.
        sets.sort_by_key(Intervals::len);
        let mut sets = sets.into_iter();
        let first = sets.next().unwrap_or_default();
        let set = sets.fold(first, |acc, s| acc.intersect(&s));
        sorted.rest.push(Pred::Num { field, col, set });
    }
    sorted.finish(or_of, Pred::And)
}

/// An OR, flattened and simplified as [`and_of`]: the numeric conditions on
/// each field unite into one set, and the negated parts join as one
/// `NOT (a AND b ...)`.
fn or_of(parts: Vec<Pred<'_>>) -> Pred<'_> {
    let mut sorted = Sorted::of(parts, |p| match p {
        Pred::Or(v) => Ok(v),
        p => Err(p),
    });
    for (field, col, sets) in std::mem::take(&mut sorted.nums.fields) {
        let set = Intervals::union_of(sets.into_iter().flat_map(|s| s.0).collect());
        sorted.rest.push(Pred::Num { field, col, set });
    }
    sorted.finish(and_of, Pred::Or)
}

/// Bitmaps that may be one and the same posting, each taken once.
fn distinct_sets<'a>(sets: Vec<Cow<'a, RoaringBitmap>>) -> Vec<Cow<'a, RoaringBitmap>> {
    let mut seen = std::collections::HashSet::new();
    sets.into_iter()
        .filter(|b| match b {
            Cow::Borrowed(r) => seen.insert(std::ptr::from_ref::<RoaringBitmap>(r)),
            Cow::Owned(_) => true,
        })
        .collect()
}

/// Fold bitmap conditions together; keep the rest as a per-candidate check
/// with a cardinality estimate (exact per leaf, independence across leaves).
fn reduce<'a>(
    p: Pred<'a>,
    attrs: &Attributes<'a>,
    cancel: &dyn Cancel,
) -> Result<Reduced<'a>, Error> {
    let n = attrs.n as f64;
    Ok(match p {
        Pred::Set(b) => Reduced::Exact(b),
        Pred::Num { field, col, set } => {
            // The rows of each interval: a run of the field's sorted rows.
            let mut driver = Driver::default();
            for (i, &(lo, hi)) in set.0.iter().enumerate() {
                if i % CHECK_EVERY == 0 {
                    check(cancel)?;
                }
                let run = attrs.range_rows(field, Some(lo), Some(hi));
                if !run.is_empty() {
                    driver.len += run.len() as u64;
                    driver.runs.push(run);
                }
            }
            if driver.runs.is_empty() {
                return Ok(Reduced::Exact(Cow::Owned(RoaringBitmap::new())));
            }
            Reduced::Residual {
                estimate: driver.len as f64,
                driver: Some(driver),
                pred: Pred::Num { field, col, set },
            }
        }
        Pred::Not(inner) => match reduce(*inner, attrs, cancel)? {
            Reduced::Exact(b) => {
                check(cancel)?;
                let mut all = RoaringBitmap::new();
                all.insert_range(0..attrs.n as u32);
                Reduced::Exact(Cow::Owned(all - b.as_ref()))
            }
            Reduced::Residual { pred, estimate, .. } => Reduced::Residual {
                pred: Pred::Not(Box::new(pred)),
                estimate: n - estimate,
                driver: None,
            },
        },
        Pred::And(parts) => {
            let mut sets = Vec::new();
            let mut rest = Vec::new();
            let mut fraction = 1.0;
            let mut driver: Option<Driver<'a>> = None;
            for part in parts {
                check(cancel)?;
                match reduce(part, attrs, cancel)? {
                    Reduced::Exact(b) => sets.push(b),
                    Reduced::Residual {
                        pred,
                        estimate,
                        driver: d,
                    } => {
                        fraction *= estimate / n.max(1.0);
                        if let Some(d) = d {
                            if driver.as_ref().is_none_or(|cur| d.len < cur.len) {
                                driver = Some(d);
                            }
                        }
                        rest.push(pred);
                    }
                }
            }
            // Smallest first: every intersection is then at most that big.
            let mut sets = distinct_sets(sets);
            sets.sort_by_key(|b| b.len());
            let mut exact: Option<Cow<'a, RoaringBitmap>> = None;
            for b in sets {
                check(cancel)?;
                exact = Some(match exact {
                    Some(e) => Cow::Owned(e.as_ref() & b.as_ref()),
                    None => b,
                });
            }
            match exact {
                Some(b) if rest.is_empty() => Reduced::Exact(b),
                exact => {
                    let base = exact.as_ref().map_or(n, |b| b.len() as f64);
                    let mut pred = Pred::And(rest);
                    if let Some(b) = exact {
                        if driver.as_ref().is_none_or(|d| b.len() < d.len) {
                            driver = Some(Driver::bitmap(b.clone()));
                        }
                        // The bitmap is the cheaper check: test it first.
                        if let Pred::And(v) = &mut pred {
                            v.insert(0, Pred::Set(b));
                        }
                    }
                    Reduced::Residual {
                        pred,
                        estimate: base * fraction,
                        driver,
                    }
                }
            }
        }
        Pred::Or(parts) => {
            let mut sets = Vec::new();
            let mut rest = Vec::new();
            let mut estimate = 0.0;
            // The union of the parts' supersets, while every part has one.
            let mut driver = Some(Driver::default());
            for part in parts {
                check(cancel)?;
                match reduce(part, attrs, cancel)? {
                    Reduced::Exact(b) => sets.push(b),
                    Reduced::Residual {
                        pred,
                        estimate: e,
                        driver: d,
                    } => {
                        estimate += e;
                        match (&mut driver, d) {
                            (Some(all), Some(d)) => all.join(d),
                            _ => driver = None,
                        }
                        rest.push(pred);
                    }
                }
            }
            let mut union = RoaringBitmap::new();
            for b in distinct_sets(sets) {
                check(cancel)?;
                union |= b.as_ref();
            }
            if rest.is_empty() {
                return Ok(Reduced::Exact(Cow::Owned(union)));
            }
            estimate += union.len() as f64;
            if !union.is_empty() {
                let union: Cow<'a, RoaringBitmap> = Cow::Owned(union);
                if let Some(all) = &mut driver {
                    all.join(Driver::bitmap(union.clone()));
                }
                rest.insert(0, Pred::Set(union));
            }
            Reduced::Residual {
                pred: if rest.len() == 1 {
                    rest.remove(0)
                } else {
                    Pred::Or(rest)
                },
                estimate: estimate.min(n),
                driver,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(x: f64) -> (End, End) {
        ((x, true), (x, true))
    }

    #[test]
    fn intervals_merge_touching_ends_and_keep_gaps() {
        let s = Intervals::union_of(vec![
            pt(3.0),
            ((1.0, true), (3.0, false)),
            pt(-0.0),
            pt(0.0),
            ((5.0, false), (6.0, true)),
            ((4.0, true), (5.0, false)),
            ((7.0, false), (7.0, true)),
        ]);
        assert_eq!(
            s.0,
            vec![
                pt(0.0),
                ((1.0, true), (3.0, true)),
                ((4.0, true), (5.0, false)),
                ((5.0, false), (6.0, true)),
            ]
        );
        for (x, inside) in [
            (-0.0, true),
            (0.5, false),
            (1.0, true),
            (2.9, true),
            (3.0, true),
            (4.5, true),
            (5.0, false),
            (6.0, true),
            (7.0, false),
            (f64::NAN, false),
        ] {
            assert_eq!(s.contains(x), inside, "{x}");
        }
        let t = Intervals::union_of(vec![((2.0, false), (f64::INFINITY, true))]);
        let both = s.intersect(&t);
        assert_eq!(
            both.0,
            vec![
                ((2.0, false), (3.0, true)),
                ((4.0, true), (5.0, false)),
                ((5.0, false), (6.0, true)),
            ]
        );
        assert!(Intervals::union_of(vec![((5.0, false), (5.0, true))])
            .0
            .is_empty());
    }
}
