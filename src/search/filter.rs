//! Metadata filters: `--filter view=PA --filter age=40..60`.
//!
//! A filter is a conjunction of conditions on the stored fields of a document. Values compare
//! case-insensitively; ranges (`a..b`, either end optional, both ends inclusive) compare as numbers
//! for `age` and as ISO dates (`YYYY-MM-DD`, which order as text) for `date`. A document without
//! the field does not match.

use std::collections::BTreeMap;

/// Why a filter expression was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FilterError {
    #[error("filter `{0}`: expected FIELD=VALUE or FIELD=FROM..TO")]
    Syntax(String),
    #[error("filter `{expr}`: unknown field `{field}` (known: {known})")]
    UnknownField {
        expr: String,
        field: String,
        known: String,
    },
    #[error("filter `{expr}`: `{value}` is not {expected}")]
    BadValue {
        expr: String,
        value: String,
        expected: &'static str,
    },
}

/// Fields a filter may name, with the kind of value each holds.
const FIELDS: &[(&str, Kind)] = &[
    ("view", Kind::Text),
    ("sex", Kind::Text),
    ("age", Kind::Number),
    ("date", Kind::Date),
    ("modality", Kind::Text),
    ("body_part", Kind::Text),
    ("study_uid", Kind::Text),
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Text,
    Number,
    Date,
}

#[derive(Debug, Clone, PartialEq)]
enum Condition {
    /// Any of the values (comma-separated in the expression: `view=PA,AP`).
    Equals(Vec<String>),
    Number(Option<f64>, Option<f64>),
    Date(Option<String>, Option<String>),
}

/// A conjunction of field conditions; the empty filter matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    conditions: Vec<(String, Condition)>,
}

impl Filter {
    /// Parses `FIELD=VALUE` expressions, all of which must hold.
    pub fn parse<S: AsRef<str>>(exprs: &[S]) -> Result<Self, FilterError> {
        let mut conditions = Vec::new();
        for expr in exprs {
            let expr = expr.as_ref();
            let (field, value) = expr
                .split_once('=')
                .map(|(f, v)| (f.trim().to_ascii_lowercase(), v.trim()))
                .filter(|(f, v)| !f.is_empty() && !v.is_empty())
                .ok_or_else(|| FilterError::Syntax(expr.to_string()))?;
            let field = if field == "body-part" {
                "body_part".to_string()
            } else {
                field
            };
            let kind = FIELDS
                .iter()
                .find(|(name, _)| *name == field)
                .map(|(_, k)| *k)
                .ok_or_else(|| FilterError::UnknownField {
                    expr: expr.to_string(),
                    field: field.clone(),
                    known: FIELDS
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
            let bad = |value: &str, expected| FilterError::BadValue {
                expr: expr.to_string(),
                value: value.to_string(),
                expected,
            };
            let condition = match (kind, value.split_once("..")) {
                (Kind::Number, Some((lo, hi))) => {
                    let num = |s: &str| -> Result<Option<f64>, FilterError> {
                        let s = s.trim();
                        if s.is_empty() {
                            Ok(None)
                        } else {
                            s.parse().map(Some).map_err(|_| bad(s, "a number"))
                        }
                    };
                    Condition::Number(num(lo)?, num(hi)?)
                }
                (Kind::Number, None) => {
                    let v: f64 = value.parse().map_err(|_| bad(value, "a number"))?;
                    Condition::Number(Some(v), Some(v))
                }
                (Kind::Date, range) => {
                    let (lo, hi) = range.unwrap_or((value, value));
                    let date = |s: &str| -> Result<Option<String>, FilterError> {
                        let s = s.trim();
                        if s.is_empty() {
                            Ok(None)
                        } else if is_iso_date(s) {
                            Ok(Some(s.to_string()))
                        } else {
                            Err(bad(s, "a date YYYY-MM-DD"))
                        }
                    };
                    Condition::Date(date(lo)?, date(hi)?)
                }
                (Kind::Text, _) => Condition::Equals(
                    value
                        .split(',')
                        .map(|v| v.trim().to_ascii_uppercase())
                        .filter(|v| !v.is_empty())
                        .collect(),
                ),
            };
            conditions.push((field, condition));
        }
        Ok(Self { conditions })
    }

    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty()
    }

    /// The fields its conditions read, which is all [`Filter::matches`] needs of a document.
    pub fn field_names(&self) -> Vec<&str> {
        self.conditions.iter().map(|(f, _)| f.as_str()).collect()
    }

    /// Whether a document with these stored fields passes every condition.
    pub fn matches(&self, fields: &BTreeMap<String, String>) -> bool {
        self.conditions
            .iter()
            .all(|(field, condition)| fields.get(field).is_some_and(|v| condition.holds(v)))
    }

    /// Per condition (in the order of [`Filter::field_names`]), whether each of `values[k]`
    /// (the values its field takes) passes it: a condition is evaluated once per distinct
    /// value of a column, not once per document.
    pub fn passing(&self, values: &[&[String]]) -> Vec<Vec<bool>> {
        self.conditions
            .iter()
            .zip(values)
            .map(|((_, condition), vs)| vs.iter().map(|v| condition.holds(v)).collect())
            .collect()
    }
}

impl Condition {
    fn holds(&self, value: &str) -> bool {
        match self {
            Condition::Equals(any) => any.contains(&value.trim().to_ascii_uppercase()),
            Condition::Number(lo, hi) => match value.trim().parse::<f64>() {
                Ok(v) => lo.is_none_or(|lo| v >= lo) && hi.is_none_or(|hi| v <= hi),
                Err(_) => false,
            },
            Condition::Date(lo, hi) => {
                let v = value.trim();
                is_iso_date(v)
                    && lo.as_deref().is_none_or(|lo| v >= lo)
                    && hi.as_deref().is_none_or(|hi| v <= hi)
            }
        }
    }
}

fn is_iso_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn conditions_combine() {
        let f = Filter::parse(&[
            "view=pa,AP",
            "sex=F",
            "age=40..60",
            "date=2019-01-01..2019-12-31",
        ])
        .unwrap();
        let yes = doc(&[
            ("view", "PA"),
            ("sex", "F"),
            ("age", "40"),
            ("date", "2019-06-30"),
        ]);
        assert!(f.matches(&yes));
        let mut no = yes.clone();
        no.insert("age".into(), "61".into());
        assert!(!f.matches(&no));
        let mut no = yes.clone();
        no.insert("date".into(), "2020-01-01".into());
        assert!(!f.matches(&no));
        let mut no = yes.clone();
        no.remove("sex");
        assert!(!f.matches(&no), "a missing field does not match");
        assert!(Filter::default().matches(&BTreeMap::new()));
    }

    #[test]
    fn open_ranges_and_exact_numbers() {
        let f = Filter::parse(&["age=..18"]).unwrap();
        assert!(f.matches(&doc(&[("age", "3")])));
        assert!(!f.matches(&doc(&[("age", "30")])));
        let f = Filter::parse(&["age=65"]).unwrap();
        assert!(f.matches(&doc(&[("age", "65")])));
        let f = Filter::parse(&["body-part=chest"]).unwrap();
        assert!(f.matches(&doc(&[("body_part", "CHEST")])));
    }

    #[test]
    fn errors_name_the_expression_and_the_fix() {
        let e = Filter::parse(&["view"]).unwrap_err();
        assert!(e.to_string().contains("FIELD=VALUE"));
        let e = Filter::parse(&["colour=red"]).unwrap_err();
        assert!(e.to_string().contains("known: view"), "{e}");
        let e = Filter::parse(&["age=old..60"]).unwrap_err();
        assert!(e.to_string().contains("`old` is not a number"), "{e}");
        let e = Filter::parse(&["date=2019"]).unwrap_err();
        assert!(e.to_string().contains("YYYY-MM-DD"), "{e}");
    }

    /// Evaluating conditions per distinct value of a column agrees with evaluating them per
    /// document.
    #[test]
    fn passing_agrees_with_matches() {
        let f = Filter::parse(&["view=pa", "age=40..60", "date=..2019-12-31"]).unwrap();
        let docs = [
            doc(&[("view", "PA"), ("age", "45"), ("date", "2019-03-01")]),
            doc(&[("view", "AP"), ("age", "45"), ("date", "2019-03-01")]),
            doc(&[("view", "pa"), ("age", "61"), ("date", "2019-03-01")]),
            doc(&[("view", "PA"), ("age", "40"), ("date", "2020-01-01")]),
            doc(&[("view", "PA"), ("date", "2019-03-01")]),
        ];
        let names = f.field_names();
        let columns: Vec<Vec<String>> = names
            .iter()
            .map(|n| docs.iter().filter_map(|d| d.get(*n).cloned()).collect())
            .collect();
        let values: Vec<&[String]> = columns.iter().map(Vec::as_slice).collect();
        let passing = f.passing(&values);
        for d in &docs {
            let by_value = names
                .iter()
                .zip(&passing)
                .zip(&columns)
                .all(|((n, pass), col)| {
                    d.get(*n)
                        .and_then(|v| col.iter().position(|c| c == v))
                        .is_some_and(|k| pass[k])
                });
            assert_eq!(by_value, f.matches(d), "{d:?}");
        }
        assert_eq!(docs.iter().filter(|d| f.matches(d)).count(), 1);
    }
}
