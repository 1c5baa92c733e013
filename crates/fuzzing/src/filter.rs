//! Fuzz target `filter_expr`: arbitrary bytes as a filter expression.

use std::sync::OnceLock;

use fathom_engine::filter::{parse, Admit, Expr, FilterPlan, Literal, Op};
use fathom_engine::index::{Plan, SearchParams};
use fathom_engine::{Index, Metric, Storage};

use crate::fixture;

fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| fixture::index(Metric::Cosine, Storage::F32, true))
}

/// The bytes (lossily, as UTF-8: filters arrive as protobuf strings and
/// command-line arguments, both text) are parsed, then bound and planned
/// against the fixture's schema (keyword, multi-valued keyword, bool, int,
/// float; some rows missing some fields) and against no schema. What binds
/// is checked for consistency (the per-candidate admit-check agrees with
/// the listed matches; an exact count equals them), against a plain
/// evaluation of the parsed expression over the rows' JSON attributes by
/// the rules of docs/filters.md, and searched with each plan, which must
/// return exactly `min(k, matching)` admitted hits.
pub fn filter_expr(data: &[u8]) {
    let src = String::from_utf8_lossy(data);
    let parsed = parse(&src);
    assert!(
        parsed.is_ok() || FilterPlan::new(&src, None).is_err(),
        "a filter that does not parse planned without a schema"
    );
    let index = index();
    let bound = index.filter(&src);
    let plan = match (parsed, bound) {
        (Err(_), Ok(_)) => panic!("a filter that does not parse was bound"),
        (_, Err(_)) => return,
        (Ok(_), Ok(plan)) => plan,
    };
    let n = index.snapshot().len();
    let was_exact = plan.is_exact().then(|| plan.count());
    let matches = plan.matches().clone();
    if let Some(count) = was_exact {
        assert_eq!(count, matches.len(), "exact count and matches disagree");
    }
    assert_eq!(
        plan.count(),
        matches.len(),
        "count after listing the matches"
    );
    for row in 0..n as u32 {
        assert_eq!(
            plan.admit(row),
            matches.contains(row),
            "admit({row}) disagrees with the matches"
        );
    }
    assert!(matches.max().is_none_or(|m| (m as usize) < n));
    let expr = parse(&src).expect("it parsed above");
    for (row, attrs) in rows().iter().enumerate() {
        assert_eq!(
            matches.contains(row as u32),
            reference(&expr, attrs),
            "row {row} {attrs:?}: the plan and the documented semantics disagree"
        );
    }

    let query = index.snapshot().vectors_f32().row(3).to_vec();
    let mut out = Vec::new();
    for plan_kind in [Plan::Auto, Plan::Exact, Plan::Graph, Plan::Post] {
        for k in [1, 5, n] {
            let params = SearchParams {
                plan: plan_kind,
                ..SearchParams::new(k, 0)
            };
            index
                .search_filtered_into(&query, &params, Some(&plan), &mut out)
                .expect("a filtered search of an intact index");
            assert_eq!(
                out.len() as u64,
                (k as u64).min(matches.len()),
                "{plan_kind:?}, k = {k}: not min(k, matching) hits"
            );
            assert!(
                out.iter().all(|h| matches.contains(h.id)),
                "{plan_kind:?}: a hit the filter does not admit"
            );
        }
    }
}

/// The fixture rows' attributes, as the JSON they were built from.
fn rows() -> &'static [serde_json::Map<String, serde_json::Value>] {
    static ROWS: OnceLock<Vec<serde_json::Map<String, serde_json::Value>>> = OnceLock::new();
    ROWS.get_or_init(|| {
        (0..fixture::ROWS)
            .map(|i| serde_json::from_str(&fixture::attributes_json(i)).expect("JSON"))
            .collect()
    })
}

/// Whether a row matches `e`, by docs/filters.md: on a multi-valued field
/// `=` means "contains" and `IN` "contains any of"; a missing value matches
/// no positive condition; `NOT c` holds wherever `c` does not (missing
/// included); `f != v` is `NOT f = v`. Only called on expressions that
/// bound, so types agree.
fn reference(e: &Expr, row: &serde_json::Map<String, serde_json::Value>) -> bool {
    use serde_json::Value;
    let cmp = |field: &str, op: Op, lit: &Literal| -> bool {
        let Some(v) = row.get(field).filter(|v| !v.is_null()) else {
            return false;
        };
        match (v, lit) {
            (Value::String(s), Literal::Str(l)) => op == Op::Eq && s == l,
            (Value::Array(a), Literal::Str(l)) => {
                op == Op::Eq && a.iter().any(|x| x.as_str() == Some(l.as_str()))
            }
            (Value::Bool(b), Literal::Bool(l)) => op == Op::Eq && b == l,
            (Value::Number(x), Literal::Num(l, _)) => {
                let x = x.as_f64().expect("a finite fixture number");
                match op {
                    Op::Eq => x == *l,
                    Op::Ne => x != *l,
                    Op::Lt => x < *l,
                    Op::Le => x <= *l,
                    Op::Gt => x > *l,
                    Op::Ge => x >= *l,
                }
            }
            _ => false,
        }
    };
    match e {
        Expr::And(v) => v.iter().all(|e| reference(e, row)),
        Expr::Or(v) => v.iter().any(|e| reference(e, row)),
        Expr::Not(e) => !reference(e, row),
        Expr::In { field, values, .. } => values.iter().any(|(l, _)| cmp(field, Op::Eq, l)),
        Expr::Cmp {
            field,
            op: Op::Ne,
            value,
            ..
        } => !cmp(field, Op::Eq, value),
        Expr::Cmp {
            field, op, value, ..
        } => cmp(field, *op, value),
    }
}
