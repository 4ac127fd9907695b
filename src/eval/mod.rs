//! Evaluation: the query-set format, TREC qrels and run files, NDCG@k and P@k, and the report of
//! `cxr eval`.
//!
//! Why it exists: the benchmark (`../shared/bench/README.md`) states its numbers "as trec_eval
//! computes them", and published ELIXR-style results are trec_eval numbers. A metric that differs
//! from trec_eval in a corner (tie order, unjudged documents, short rankings) makes our numbers
//! incomparable with the reference points, so this module reproduces trec_eval 9's
//! `ndcg_cut.k` and `P.k` exactly and is tested against trec_eval's own C code (through
//! `pytrec_eval-terrier`, see `tools/make_trec_fixture.py` and `tests/eval_trec.rs`).
//!
//! trec_eval semantics reproduced here (from its `form_res_rels.c`, `m_ndcg_cut.c`, `m_P.c`,
//! `get_trec_results.c`):
//!
//! - Scores are single precision: trec_eval reads a run's score with `atof` and keeps it in a C
//!   `float`, so two scores that differ only beyond `f32` precision tie. [`Ranked::score`] is an
//!   `f32` for that reason.
//! - The rank column of a run is ignored. Documents are ordered by score, highest first, and ties
//!   are broken by docid in *decreasing* byte order (`strcmp(b, a)`): among equal scores `d9`
//!   comes before `d10`, which comes before `d1`. See [`trec_order`].
//! - Relevance is the qrels value; a document missing from the qrels counts as non-relevant
//!   (gain 0). A negative qrels value (trec_eval: "in pool but unjudged") also has gain 0 and is
//!   never relevant.
//! - `ndcg_cut.k`: DCG@k = sum over the top k of `gain / log2(rank + 1)` with `gain = rel` for
//!   `rel > 0` and 0 otherwise; the ideal DCG@k is the same sum over *all* judged documents of
//!   the query sorted by decreasing relevance, whether retrieved or not. A query whose qrels hold
//!   no document with `rel > 0` has ideal DCG 0 and scores 0.
//! - `P.k`: relevant (`rel >= 1`) documents among the top k, divided by k, even when fewer than k
//!   documents were retrieved.
//! - A docid retrieved twice for one query makes trec_eval refuse the whole run
//!   ("duplicate docs"). [`read_run`] refuses such a file too. The in-memory metric functions,
//!   which our own search feeds, keep the first occurrence in trec order (the highest-scored one)
//!   and ignore the rest, rather than failing an evaluation over a fusion artefact.
//!
//! Which queries count: trec_eval (without `-c`) averages over the queries present in both the
//! run and the qrels. `cxr eval` instead evaluates every query of the query set that has
//! judgments in the qrels, and a query with judgments whose search returned nothing scores 0 on
//! both metrics (what trec_eval gives such a query with `-c`). Queries of the set without
//! judgments are not scored (the caller should warn), and qrels for queries outside the set are
//! ignored. So a system cannot raise its mean by returning nothing for hard queries.

mod metrics;
mod queries;
mod report;
mod trec;

use std::path::PathBuf;

pub use metrics::{ndcg_at_k, precision_at_k, score_query, trec_order};
pub use queries::{load_queries, parse_queries, Query, QueryKind};
pub use report::{EvalReport, GroupScores, QueryScores, Scores};
pub use trec::{parse_run, read_run, write_run, Qrels, Ranked, Run};

/// Why a query set, qrels or run file could not be used. Each variant names the file, and the
/// line (1-based) where the problem is on one line.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    Syntax {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{path}:{line}: query `{qid}` appears twice (first on line {first_line})")]
    DuplicateQuery {
        path: PathBuf,
        line: usize,
        qid: String,
        first_line: usize,
    },
    #[error(
        "{path}:{line}: document `{docid}` appears twice for query `{qid}` (first on line \
         {first_line}); trec_eval refuses such a file"
    )]
    DuplicateDoc {
        path: PathBuf,
        line: usize,
        qid: String,
        docid: String,
        first_line: usize,
    },
    #[error("{path}: no query for corpus `{corpus}` (the file has: {available})")]
    NoQueries {
        path: PathBuf,
        corpus: String,
        available: String,
    },
}
