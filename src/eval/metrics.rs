//! NDCG@k and P@k as trec_eval 9 computes `ndcg_cut.k` and `P.k` (see the module docs of
//! [`crate::eval`] for the semantics and where they come from in trec_eval's code).

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

use super::report::QueryScores;
use super::trec::Ranked;

/// trec_eval's comparison (`comp_sim_docno` in `form_res_rels.c`): higher score first; equal
/// scores by docid in decreasing byte order. `-0.0` and `0.0` tie, as they do under C's `<` and
/// `>`. trec_eval has no defined order for NaN; here NaN sorts after every number.
fn trec_cmp(a: &Ranked, b: &Ranked) -> Ordering {
    let by_score = match (a.score.is_nan(), b.score.is_nan()) {
        (false, false) => b.score.partial_cmp(&a.score).unwrap_or(Ordering::Equal),
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (true, true) => Ordering::Equal,
    };
    by_score.then_with(|| b.docid.cmp(&a.docid))
}

/// The ranking trec_eval evaluates: `run` sorted by [`Ranked::score`] (highest first), ties
/// broken by docid in decreasing byte order, and each docid kept once, at its best position
/// (trec_eval itself refuses a run with a repeated docid).
///
/// The order `run` comes in does not matter, just as trec_eval ignores a run file's rank column.
pub fn trec_order(run: &[Ranked]) -> Vec<&Ranked> {
    let mut sorted: Vec<&Ranked> = run.iter().collect();
    sorted.sort_by(|a, b| trec_cmp(a, b));
    let mut seen: HashSet<&str> = HashSet::with_capacity(sorted.len());
    sorted.retain(|r| seen.insert(r.docid.as_str()));
    sorted
}

/// Gain of a judged relevance value: the value itself when positive, else 0.
fn gain(rel: i32) -> f64 {
    if rel > 0 {
        f64::from(rel)
    } else {
        0.0
    }
}

/// Discount of a 1-based rank: `1 / log2(rank + 1)`.
///
/// trec_eval releases before the `i + 2` fix in `m_ndcg_cut.c` gave rank 2 a discount of 1 (the
/// Järvelin-Kekäläinen `b = 2` variant); current trec_eval, and `pytrec_eval-terrier` which the
/// tests compare against, use `log2(rank + 1)` throughout.
fn discount(rank: usize) -> f64 {
    // Ranks are small (<= k); the conversion is exact.
    1.0 / ((rank + 1) as f64).log2()
}

/// `ndcg_cut.k` of trec_eval: DCG of the top `k` of `run` (in [`trec_order`]), divided by the
/// DCG of the best possible ranking of all judged documents of the query.
///
/// `judged` maps docid to relevance for this query; docids absent from it are non-relevant. A
/// query without any document of relevance > 0, and `k == 0`, give 0.
pub fn ndcg_at_k(run: &[Ranked], judged: &HashMap<String, i32>, k: usize) -> f64 {
    if k == 0 {
        return 0.0;
    }
    let dcg: f64 = trec_order(run)
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, r)| gain(judged.get(&r.docid).copied().unwrap_or(0)) * discount(i + 1))
        .sum();

    let mut ideal: Vec<i32> = judged.values().copied().filter(|&rel| rel > 0).collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, &rel)| gain(rel) * discount(i + 1))
        .sum();

    if idcg > 0.0 {
        dcg / idcg
    } else {
        // No relevant document: trec_eval leaves DCG (necessarily 0) undivided.
        0.0
    }
}

/// `P.k` of trec_eval: documents of relevance >= 1 among the top `k` of `run` (in
/// [`trec_order`]), divided by `k` even when fewer than `k` were retrieved. `k == 0` gives 0.
pub fn precision_at_k(run: &[Ranked], judged: &HashMap<String, i32>, k: usize) -> f64 {
    if k == 0 {
        return 0.0;
    }
    let relevant = trec_order(run)
        .iter()
        .take(k)
        .filter(|r| judged.get(&r.docid).is_some_and(|&rel| rel >= 1))
        .count();
    // Both are small counts; the conversions are exact.
    relevant as f64 / k as f64
}

/// Both metrics for one query of the query set. `judged` is the query's qrels
/// ([`super::Qrels::judgments`]); an empty `run` scores 0 on both.
pub fn score_query(
    id: &str,
    group: &str,
    run: &[Ranked],
    judged: &HashMap<String, i32>,
    k: usize,
) -> QueryScores {
    QueryScores {
        id: id.to_owned(),
        group: group.to_owned(),
        ndcg: ndcg_at_k(run, judged, k),
        p: precision_at_k(run, judged, k),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(docid: &str, score: f32) -> Ranked {
        Ranked {
            docid: docid.to_owned(),
            score,
        }
    }

    fn judged(pairs: &[(&str, i32)]) -> HashMap<String, i32> {
        pairs.iter().map(|&(d, rel)| (d.to_owned(), rel)).collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    /// Worked by hand. Qrels: a = 2, b = 0, c = 1, d = 2 (d is never retrieved).
    /// Run: a 0.9, b 0.8, c 0.7, so ranks 1, 2, 3.
    ///
    /// DCG@5  = 2/log2(2) + 0/log2(3) + 1/log2(4) = 2 + 0 + 0.5 = 2.5
    /// Ideal: judged gains sorted 2, 2, 1 (0 adds nothing):
    /// IDCG@5 = 2/log2(2) + 2/log2(3) + 1/log2(4) = 2 + 1.2618595071429148 + 0.5
    ///        = 3.7618595071429148
    /// NDCG@5 = 2.5 / 3.7618595071429148 = 0.66456496...
    /// P@5    = 2 relevant (a, c) / 5 = 0.4, although only 3 documents were retrieved.
    #[test]
    fn three_documents_by_hand() {
        let run = [r("a", 0.9), r("b", 0.8), r("c", 0.7)];
        let j = judged(&[("a", 2), ("b", 0), ("c", 1), ("d", 2)]);
        let idcg = 2.0 + 2.0 / 3f64.log2() + 0.5;
        assert!(close(idcg, 3.761_859_507_142_914_8));
        let ndcg = ndcg_at_k(&run, &j, 5);
        assert!(close(ndcg, 2.5 / idcg), "{ndcg}");
        assert!((ndcg - 0.664_564_96).abs() < 1e-8, "{ndcg}");
        assert!(close(precision_at_k(&run, &j, 5), 0.4));
    }

    #[test]
    fn ties_break_by_docid_decreasing_and_input_order_is_ignored() {
        let run = [r("d1", 1.0), r("d10", 1.0), r("d9", 1.0), r("top", 2.0)];
        let ids: Vec<&str> = trec_order(&run).iter().map(|r| r.docid.as_str()).collect();
        assert_eq!(ids, ["top", "d9", "d10", "d1"]);
    }

    #[test]
    fn negative_zero_ties_with_zero_and_nan_sorts_last() {
        let run = [r("a", 0.0), r("n", f32::NAN), r("b", -0.0), r("m", -1.0)];
        let ids: Vec<&str> = trec_order(&run).iter().map(|r| r.docid.as_str()).collect();
        assert_eq!(ids, ["b", "a", "m", "n"]);
    }

    #[test]
    fn duplicates_keep_the_best_position() {
        let run = [r("x", 0.1), r("y", 0.5), r("x", 0.9)];
        let order: Vec<(&str, f32)> = trec_order(&run)
            .iter()
            .map(|r| (r.docid.as_str(), r.score))
            .collect();
        assert_eq!(order, [("x", 0.9), ("y", 0.5)]);
        // A duplicate does not earn gain twice.
        let j = judged(&[("x", 1)]);
        assert!(close(ndcg_at_k(&run, &j, 5), 1.0));
        assert!(close(precision_at_k(&run, &j, 5), 0.2));
    }

    #[test]
    fn no_relevant_document_empty_run_and_zero_k_give_zero() {
        let none = judged(&[("a", 0), ("b", -1)]);
        let run = [r("a", 1.0), r("b", 0.5)];
        assert_eq!(ndcg_at_k(&run, &none, 5), 0.0);
        assert_eq!(precision_at_k(&run, &none, 5), 0.0);
        let some = judged(&[("a", 1)]);
        assert_eq!(ndcg_at_k(&[], &some, 5), 0.0);
        assert_eq!(precision_at_k(&[], &some, 5), 0.0);
        assert_eq!(ndcg_at_k(&run, &some, 0), 0.0);
        assert_eq!(precision_at_k(&run, &some, 0), 0.0);
    }

    #[test]
    fn cutoff_applies_to_run_and_ideal() {
        // Relevant doc at rank 3 with k = 2 earns nothing; the ideal is cut at 2 as well.
        let run = [r("n1", 3.0), r("n2", 2.0), r("rel", 1.0)];
        let j = judged(&[("rel", 1), ("rel2", 1), ("rel3", 1)]);
        assert_eq!(ndcg_at_k(&run, &j, 2), 0.0);
        let ndcg3 = ndcg_at_k(&run, &j, 3);
        let expect = 0.5 / (1.0 + 1.0 / 3f64.log2() + 0.5);
        assert!(close(ndcg3, expect), "{ndcg3} vs {expect}");
    }
}
