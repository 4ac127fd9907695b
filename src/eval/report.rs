//! The report of `cxr eval`: per-query scores, means per query group, and the overall mean.
//!
//! The JSON form (`--json`) is stable and is exactly
//! `{"k":5,"mean":{"ndcg":x,"p":y},"groups":{"G":{"ndcg":x,"p":y,"n":n}},"queries":[{"id":..,
//! "group":..,"ndcg":x,"p":y}]}` so that scripts and baselines can read it; the text form is an
//! aligned table for people.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde::{Deserialize, Serialize};

/// Mean NDCG@k and P@k over a set of queries.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub ndcg: f64,
    pub p: f64,
}

/// Mean NDCG@k and P@k over the `n` queries of one group.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GroupScores {
    pub ndcg: f64,
    pub p: f64,
    pub n: usize,
}

/// NDCG@k and P@k of one query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryScores {
    pub id: String,
    pub group: String,
    pub ndcg: f64,
    pub p: f64,
}

/// The whole evaluation. Means are macro-averages (every query weighs the same), as trec_eval's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub k: usize,
    pub mean: Scores,
    pub groups: BTreeMap<String, GroupScores>,
    pub queries: Vec<QueryScores>,
}

fn mean<'a>(scores: impl Iterator<Item = &'a QueryScores>) -> (Scores, usize) {
    let (mut ndcg, mut p, mut n) = (0.0, 0.0, 0usize);
    for s in scores {
        ndcg += s.ndcg;
        p += s.p;
        n += 1;
    }
    if n == 0 {
        return (Scores { ndcg: 0.0, p: 0.0 }, 0);
    }
    // n is a query count; the conversion is exact.
    let n_f = n as f64;
    (
        Scores {
            ndcg: ndcg / n_f,
            p: p / n_f,
        },
        n,
    )
}

impl EvalReport {
    /// Aggregates per-query scores (kept in the given order). With no query at all the means are
    /// 0; callers should treat that case as an error before getting here.
    pub fn from_scores(k: usize, queries: Vec<QueryScores>) -> Self {
        let (overall, _) = mean(queries.iter());
        let mut names: Vec<&str> = queries.iter().map(|q| q.group.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        let groups = names
            .into_iter()
            .map(|name| {
                let (s, n) = mean(queries.iter().filter(|q| q.group == name));
                (
                    name.to_owned(),
                    GroupScores {
                        ndcg: s.ndcg,
                        p: s.p,
                        n,
                    },
                )
            })
            .collect();
        Self {
            k,
            mean: overall,
            groups,
            queries,
        }
    }

    /// Writes the report as an aligned text table: one row per query, then one per group, then
    /// the mean over all queries.
    pub fn write_table<W: Write + ?Sized>(&self, w: &mut W) -> io::Result<()> {
        let ndcg_head = format!("NDCG@{}", self.k);
        let p_head = format!("P@{}", self.k);
        let num_w = ndcg_head.len().max(p_head.len()).max(6);
        let id_w = self
            .queries
            .iter()
            .map(|q| q.id.chars().count())
            .chain(["query".len(), "group".len(), "mean".len()])
            .max()
            .unwrap_or(5);
        let group_w = self
            .groups
            .keys()
            .map(|g| g.chars().count())
            .chain(["group".len()])
            .max()
            .unwrap_or(5);
        let n_w = self.queries.len().to_string().len().max(1);

        writeln!(
            w,
            "{:<id_w$}  {:<group_w$}  {:>num_w$}  {:>num_w$}",
            "query", "group", ndcg_head, p_head
        )?;
        for q in &self.queries {
            writeln!(
                w,
                "{:<id_w$}  {:<group_w$}  {:>num_w$.4}  {:>num_w$.4}",
                q.id, q.group, q.ndcg, q.p
            )?;
        }
        writeln!(w)?;
        let label_w = id_w.max(group_w);
        writeln!(
            w,
            "{:<label_w$}  {:>n_w$}  {:>num_w$}  {:>num_w$}",
            "group", "n", ndcg_head, p_head
        )?;
        for (name, g) in &self.groups {
            writeln!(
                w,
                "{:<label_w$}  {:>n_w$}  {:>num_w$.4}  {:>num_w$.4}",
                name, g.n, g.ndcg, g.p
            )?;
        }
        writeln!(
            w,
            "{:<label_w$}  {:>n_w$}  {:>num_w$.4}  {:>num_w$.4}",
            "mean",
            self.queries.len(),
            self.mean.ndcg,
            self.mean.p
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(id: &str, group: &str, ndcg: f64, p: f64) -> QueryScores {
        QueryScores {
            id: id.into(),
            group: group.into(),
            ndcg,
            p,
        }
    }

    fn sample() -> EvalReport {
        EvalReport::from_scores(
            5,
            vec![
                q("a", "finding", 1.0, 0.4),
                q("b", "finding", 0.5, 0.2),
                q("c", "normal", 0.0, 0.0),
                q("d", "negation-trap", 0.25, 1.0),
            ],
        )
    }

    #[test]
    fn means_are_per_query_and_per_group() {
        let r = sample();
        assert_eq!(r.mean.ndcg, 1.75 / 4.0);
        assert_eq!(r.mean.p, 1.6 / 4.0);
        let f = r.groups["finding"];
        assert_eq!((f.ndcg, f.p, f.n), (0.75, (0.4 + 0.2) / 2.0, 2));
        assert_eq!(r.groups["normal"].n, 1);
        assert_eq!(r.groups.len(), 3);
    }

    #[test]
    fn json_shape_is_exact() {
        let r = EvalReport::from_scores(5, vec![q("a", "g", 0.5, 0.25)]);
        let json = serde_json::to_string(&r).expect("serialises");
        assert_eq!(
            json,
            r#"{"k":5,"mean":{"ndcg":0.5,"p":0.25},"groups":{"g":{"ndcg":0.5,"p":0.25,"n":1}},"queries":[{"id":"a","group":"g","ndcg":0.5,"p":0.25}]}"#
        );
        let back: EvalReport = serde_json::from_str(&json).expect("reads back");
        assert_eq!(back, r);
    }

    #[test]
    fn empty_report_has_zero_means() {
        let r = EvalReport::from_scores(5, Vec::new());
        assert_eq!(r.mean, Scores { ndcg: 0.0, p: 0.0 });
        assert!(r.groups.is_empty());
        let mut out = Vec::new();
        r.write_table(&mut out).expect("write to memory");
    }

    #[test]
    fn table_is_aligned() {
        let mut out = Vec::new();
        sample().write_table(&mut out).expect("write to memory");
        let text = String::from_utf8(out).expect("utf-8");
        let expected = "\
query  group          NDCG@5     P@5
a      finding        1.0000  0.4000
b      finding        0.5000  0.2000
c      normal         0.0000  0.0000
d      negation-trap  0.2500  1.0000

group          n  NDCG@5     P@5
finding        2  0.7500  0.3000
negation-trap  1  0.2500  1.0000
normal         1  0.0000  0.0000
mean           4  0.4375  0.4000
";
        assert_eq!(text, expected, "\n{text}");
    }
}
