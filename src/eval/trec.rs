//! TREC qrels and run files: the exchange format every IR evaluation tool reads, so a run written
//! by `cxr eval --run` can be checked with trec_eval itself.
//!
//! - qrels: `qid iter docid rel` per line, whitespace separated; `iter` is ignored, `rel` an
//!   integer. Blank lines are skipped.
//! - run: `qid Q0 docid rank score tag` per line. As in trec_eval, `Q0` and the rank are ignored
//!   (order comes from the score), fields after the tag are ignored, and blank lines and lines
//!   starting with `#` are skipped.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::metrics::trec_order;
use super::EvalError;

/// One retrieved document and its score. Only the score orders a ranking (see
/// [`super::trec_order`]); it is an `f32` because trec_eval keeps scores in a C `float`.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    pub docid: String,
    pub score: f32,
}

/// A run read from a file: query id to its documents, in file order.
pub type Run = BTreeMap<String, Vec<Ranked>>;

/// Relevance judgments: query id to (docid to relevance).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Qrels {
    by_query: HashMap<String, HashMap<String, i32>>,
}

impl Qrels {
    /// Reads a qrels file. A repeated (query, docid) pair is an error, as in trec_eval.
    pub fn load(path: &Path) -> Result<Self, EvalError> {
        let text = std::fs::read_to_string(path).map_err(|source| EvalError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse_from(&text, path)
    }

    /// Parses qrels text; errors name the source as `<qrels>`.
    pub fn parse(text: &str) -> Result<Self, EvalError> {
        Self::parse_from(text, Path::new("<qrels>"))
    }

    fn parse_from(text: &str, path: &Path) -> Result<Self, EvalError> {
        let mut by_query: HashMap<String, HashMap<String, i32>> = HashMap::new();
        // (qid, docid) -> line, only to report where a duplicate was first seen.
        let mut first_seen: HashMap<(String, String), usize> = HashMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let fields: Vec<&str> = raw.split_whitespace().collect();
            if fields.is_empty() {
                continue;
            }
            let syntax = |reason: String| EvalError::Syntax {
                path: path.to_owned(),
                line,
                reason,
            };
            let [qid, _iter, docid, rel] = fields[..] else {
                return Err(syntax(format!(
                    "expected 4 fields `qid iter docid rel`, found {}",
                    fields.len()
                )));
            };
            let rel: i32 = rel
                .parse()
                .map_err(|_| syntax(format!("relevance `{rel}` is not an integer")))?;
            let key = (qid.to_owned(), docid.to_owned());
            if let Some(&first_line) = first_seen.get(&key) {
                return Err(EvalError::DuplicateDoc {
                    path: path.to_owned(),
                    line,
                    qid: key.0,
                    docid: key.1,
                    first_line,
                });
            }
            by_query
                .entry(qid.to_owned())
                .or_default()
                .insert(docid.to_owned(), rel);
            first_seen.insert(key, line);
        }
        Ok(Self { by_query })
    }

    /// The judgments of one query, or `None` when the qrels do not mention it.
    pub fn judgments(&self, qid: &str) -> Option<&HashMap<String, i32>> {
        self.by_query.get(qid)
    }

    /// Query ids with judgments, sorted.
    pub fn query_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.by_query.keys().map(String::as_str).collect();
        ids.sort_unstable();
        ids
    }

    /// Number of queries with judgments.
    pub fn len(&self) -> usize {
        self.by_query.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_query.is_empty()
    }
}

/// Reads a TREC run file. A docid repeated within one query is an error, as in trec_eval
/// ("duplicate docs"); so is a score that is not a number.
pub fn read_run(path: &Path) -> Result<Run, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|source| EvalError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse_run_from(&text, path)
}

/// Parses run text; errors name the source as `<run>`.
pub fn parse_run(text: &str) -> Result<Run, EvalError> {
    parse_run_from(text, Path::new("<run>"))
}

fn parse_run_from(text: &str, path: &Path) -> Result<Run, EvalError> {
    let mut run = Run::new();
    let mut first_seen: HashMap<(String, String), usize> = HashMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let syntax = |reason: String| EvalError::Syntax {
            path: PathBuf::from(path),
            line,
            reason,
        };
        let fields: Vec<&str> = trimmed.split_whitespace().collect();
        let [qid, _q0, docid, _rank, score, _tag, ..] = fields[..] else {
            return Err(syntax(format!(
                "expected 6 fields `qid Q0 docid rank score tag`, found {}",
                fields.len()
            )));
        };
        // trec_eval reads the score with atof (a double) and stores it in a float: parse as f64
        // and narrow, so that the rounding is the same as trec_eval's.
        let wide: f64 = score
            .parse()
            .map_err(|_| syntax(format!("score `{score}` is not a number")))?;
        if wide.is_nan() {
            return Err(syntax(format!(
                "score `{score}` is NaN, which trec_eval cannot order"
            )));
        }
        let key = (qid.to_owned(), docid.to_owned());
        if let Some(&first_line) = first_seen.get(&key) {
            return Err(EvalError::DuplicateDoc {
                path: path.to_owned(),
                line,
                qid: key.0,
                docid: key.1,
                first_line,
            });
        }
        run.entry(qid.to_owned()).or_default().push(Ranked {
            docid: docid.to_owned(),
            // Narrowing to trec_eval's precision is the point.
            score: wide as f32,
        });
        first_seen.insert(key, line);
    }
    Ok(run)
}

/// A field of a run line must be one non-empty whitespace-free token, or the file cannot be
/// read back.
fn check_token(what: &str, value: &str) -> io::Result<()> {
    if value.is_empty() || value.chars().any(char::is_whitespace) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("run {what} `{value}` must be one non-empty token without whitespace"),
        ));
    }
    Ok(())
}

/// Writes one query's ranking as TREC run lines `qid Q0 docid rank score tag`.
///
/// Lines come in [`trec_order`] with ranks 1, 2, ..., so the rank column agrees with the order
/// trec_eval computes from the scores, and a repeated docid is written once (at its best
/// position), so trec_eval accepts the file and scores what our metrics scored. Scores are
/// written in the shortest form that reads back to the same `f32`. A NaN score, or a qid, docid
/// or tag that is empty or contains whitespace, is an `InvalidInput` error.
pub fn write_run<W: Write + ?Sized>(
    w: &mut W,
    qid: &str,
    run: &[Ranked],
    tag: &str,
) -> io::Result<()> {
    check_token("query id", qid)?;
    check_token("tag", tag)?;
    for r in run {
        check_token("docid", &r.docid)?;
        if r.score.is_nan() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("run score of `{}` for query `{qid}` is NaN", r.docid),
            ));
        }
    }
    for (i, r) in trec_order(run).iter().enumerate() {
        writeln!(w, "{qid} Q0 {} {} {} {tag}", r.docid, i + 1, r.score)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qrels_parse_and_errors() {
        let q = Qrels::parse("q1 0 a 2\n\n  q1 0 b 0\nq2 0 a -1\n").expect("valid qrels");
        assert_eq!(q.len(), 2);
        assert_eq!(q.query_ids(), ["q1", "q2"]);
        assert_eq!(q.judgments("q1").and_then(|j| j.get("a")), Some(&2));
        assert_eq!(q.judgments("q2").and_then(|j| j.get("a")), Some(&-1));
        assert!(q.judgments("q3").is_none());

        let err = Qrels::parse("q1 0 a 1\nq1 0 a\n").unwrap_err().to_string();
        assert!(err.starts_with("<qrels>:2: expected 4 fields"), "{err}");
        let err = Qrels::parse("q1 0 a x\n").unwrap_err().to_string();
        assert!(err.contains(":1: relevance `x`"), "{err}");
        let err = Qrels::parse("q1 0 a 1\nq1 0 a 2\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains(":2: document `a` appears twice"), "{err}");
        assert!(err.contains("first on line 1"), "{err}");
    }

    #[test]
    fn run_parse_ignores_rank_comments_and_extra_fields() {
        let text = "# comment\nq1 Q0 a 7 0.5 t extra\n\nq1 Q0 b 1 1e0 t\nq2 Q0 a 1 -2 t\n";
        let run = parse_run(text).expect("valid run");
        assert_eq!(run.len(), 2);
        let q1 = &run["q1"];
        assert_eq!(q1[0].docid, "a");
        assert_eq!(q1[0].score, 0.5);
        assert_eq!(q1[1].score, 1.0);
        assert_eq!(run["q2"][0].score, -2.0);
    }

    #[test]
    fn run_parse_errors_name_the_line() {
        let err = parse_run("q1 Q0 a 1 0.5\n").unwrap_err().to_string();
        assert!(err.starts_with("<run>:1: expected 6 fields"), "{err}");
        let err = parse_run("q1 Q0 a 1 0.5 t\nq1 Q0 b 2 high t\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains(":2: score `high`"), "{err}");
        let err = parse_run("q1 Q0 a 1 NaN t\n").unwrap_err().to_string();
        assert!(err.contains("NaN"), "{err}");
        let err = parse_run("q1 Q0 a 1 0.5 t\nq2 Q0 a 1 0.5 t\nq1 Q0 a 3 0.1 t\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(":3: document `a` appears twice for query `q1`"),
            "{err}"
        );
    }

    #[test]
    fn run_scores_narrow_to_f32_like_trec_eval() {
        // 0.30000001 and 0.3 are different doubles but the same float: they tie.
        let run = parse_run("q Q0 a 1 0.30000001 t\nq Q0 b 2 0.3 t\n").expect("valid run");
        assert_eq!(run["q"][0].score, run["q"][1].score);
    }

    #[test]
    fn write_run_orders_ranks_and_round_trips() {
        let ranked = vec![
            Ranked {
                docid: "d1".into(),
                score: 0.25,
            },
            Ranked {
                docid: "d9".into(),
                score: 0.25,
            },
            Ranked {
                docid: "top".into(),
                score: 0.1 + 0.2,
            },
            Ranked {
                docid: "d1".into(),
                score: 0.01,
            },
        ];
        let mut out = Vec::new();
        write_run(&mut out, "q7", &ranked, "cxr").expect("write to memory");
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(
            text,
            "q7 Q0 top 1 0.3 cxr\nq7 Q0 d9 2 0.25 cxr\nq7 Q0 d1 3 0.25 cxr\n"
        );
        let back = parse_run(&text).expect("reads back");
        let expect: Vec<&Ranked> = trec_order(&ranked);
        let got: Vec<&Ranked> = back["q7"].iter().collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn write_run_rejects_unwritable_input() {
        let ok = Ranked {
            docid: "a".into(),
            score: 1.0,
        };
        let mut sink = Vec::new();
        assert!(write_run(&mut sink, "q 1", std::slice::from_ref(&ok), "t").is_err());
        assert!(write_run(&mut sink, "q", std::slice::from_ref(&ok), "").is_err());
        let bad = Ranked {
            docid: "a b".into(),
            score: 1.0,
        };
        assert!(write_run(&mut sink, "q", &[bad], "t").is_err());
        let nan = Ranked {
            docid: "a".into(),
            score: f32::NAN,
        };
        assert!(write_run(&mut sink, "q", &[nan], "t").is_err());
        assert!(sink.is_empty());
    }
}
