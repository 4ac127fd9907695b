//! `cxr eval`'s metrics against trec_eval itself.
//!
//! The expected values in tests/fixtures/eval/*-expected.json were computed by trec_eval 9.0.8's
//! C code (through pytrec_eval-terrier, see tools/make_trec_fixture.py) on the qrels and runs
//! beside them: a hand-made run that hits the corner cases, and a seeded random run over the
//! real dev qrels. Our NDCG@k and P@k must agree on every query, for k = 5 and k = 10.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use cxr_search::eval::{
    ndcg_at_k, parse_run, precision_at_k, read_run, score_query, write_run, EvalError, EvalReport,
    Qrels, QueryKind, Ranked, Run,
};

/// trec_eval prints 4 decimals; we hold ourselves to far less than that.
const TOL: f64 = 1e-9;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/eval")
        .join(name)
}

/// A file of the shared dev benchmark (`../shared/bench`), or `None` (the caller skips) when the
/// checkout has no `shared/` beside it. The benchmark is used in place, never copied.
fn bench(name: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/bench")
        .join(name);
    if path.is_file() {
        Some(path)
    } else {
        eprintln!("skipped: {} is absent", path.display());
        None
    }
}

/// Per query, measure name (`ndcg_cut_5`, `P_10`, ...) to trec_eval's value.
struct Expected {
    queries: BTreeMap<String, BTreeMap<String, f64>>,
    mean: BTreeMap<String, f64>,
}

fn measures(value: &serde_json::Value, what: &str) -> BTreeMap<String, f64> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not an object"))
        .iter()
        .map(|(m, v)| {
            let v = v
                .as_f64()
                .unwrap_or_else(|| panic!("{what}: {m} is not a number"));
            (m.clone(), v)
        })
        .collect()
}

fn load_expected(name: &str) -> Expected {
    let path = fixture(name);
    let text = std::fs::read_to_string(&path).expect("fixture readable");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("fixture is JSON");
    let queries = doc["queries"]
        .as_object()
        .expect("`queries` object")
        .iter()
        .map(|(qid, m)| (qid.clone(), measures(m, qid)))
        .collect();
    Expected {
        queries,
        mean: measures(&doc["mean"], "mean"),
    }
}

/// Compares our metrics with trec_eval's for every query of `expected`; a query missing from the
/// run is evaluated with an empty ranking (how `cxr eval` treats it).
fn check_against_trec_eval(qrels: &Qrels, run: &HashMap<String, Vec<Ranked>>, expected: &Expected) {
    assert!(!expected.queries.is_empty());
    for (qid, want) in &expected.queries {
        let judged = qrels
            .judgments(qid)
            .unwrap_or_else(|| panic!("{qid}: no judgments"));
        let ranked = run.get(qid).map(Vec::as_slice).unwrap_or(&[]);
        for k in [5, 10] {
            let ndcg = ndcg_at_k(ranked, judged, k);
            let p = precision_at_k(ranked, judged, k);
            let want_ndcg = want[&format!("ndcg_cut_{k}")];
            let want_p = want[&format!("P_{k}")];
            assert!(
                (ndcg - want_ndcg).abs() < TOL,
                "{qid}: NDCG@{k} = {ndcg}, trec_eval {want_ndcg}"
            );
            assert!(
                (p - want_p).abs() < TOL,
                "{qid}: P@{k} = {p}, trec_eval {want_p}"
            );
        }
    }
}

fn as_map(run: Run) -> HashMap<String, Vec<Ranked>> {
    run.into_iter().collect()
}

#[test]
fn hand_made_run_matches_trec_eval() {
    let qrels = Qrels::load(&fixture("hand-qrels.txt")).expect("qrels");
    let run = read_run(&fixture("hand-run.txt")).expect("run");
    let expected = load_expected("hand-expected.json");

    // trec_eval scores the queries in both files; h-empty is judged but has no run line and
    // was scored with an empty ranking; h-not-judged is in the run only and is not scored.
    let both: BTreeSet<&str> = run
        .keys()
        .map(String::as_str)
        .filter(|q| qrels.judgments(q).is_some())
        .chain(["h-empty"])
        .collect();
    let scored: BTreeSet<&str> = expected.queries.keys().map(String::as_str).collect();
    assert_eq!(both, scored);
    assert!(run.contains_key("h-not-judged") && qrels.judgments("h-not-judged").is_none());
    assert_eq!(qrels.query_ids().len(), scored.len());

    check_against_trec_eval(&qrels, &as_map(run), &expected);
}

#[test]
fn repeated_docid_is_refused_by_read_run_and_kept_once_by_the_metrics() {
    let path = fixture("hand-run-dup.txt");
    match read_run(&path) {
        Err(EvalError::DuplicateDoc {
            qid, docid, line, ..
        }) => {
            assert_eq!((qid.as_str(), docid.as_str()), ("h-dup", "a"));
            // The first repeated line: HAND_RUN's 57 lines, then `h-dup Q0 a ...`.
            assert_eq!(line, 58);
        }
        other => panic!("expected a duplicate-doc error, got {other:?}"),
    }

    // Read it leniently, duplicates included, and hand the rankings to the metrics as they are.
    let text = std::fs::read_to_string(&path).expect("fixture readable");
    let mut run: HashMap<String, Vec<Ranked>> = HashMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() || fields[0].starts_with('#') {
            continue;
        }
        let score: f64 = fields[4].parse().expect("numeric score");
        run.entry(fields[0].to_owned()).or_default().push(Ranked {
            docid: fields[2].to_owned(),
            score: score as f32,
        });
    }
    assert_eq!(run["h-dup"].len(), 6);
    let qrels = Qrels::load(&fixture("hand-qrels.txt")).expect("qrels");
    check_against_trec_eval(&qrels, &run, &load_expected("hand-dup-expected.json"));
}

#[test]
fn seeded_run_over_dev_qrels_matches_trec_eval() {
    let Some(qrels_path) = bench("qrels-dev.txt") else {
        return;
    };
    let qrels = Qrels::load(&qrels_path).expect("qrels");
    let run = as_map(read_run(&fixture("dev-run.txt")).expect("run"));
    let expected = load_expected("dev-expected.json");
    assert_eq!(expected.queries.len(), 21);
    check_against_trec_eval(&qrels, &run, &expected);

    // The report's means are trec_eval's means over the same queries.
    for k in [5, 10] {
        let scores = expected
            .queries
            .keys()
            .map(|qid| {
                let judged = qrels.judgments(qid).expect("judged");
                score_query(qid, "all", &run[qid], judged, k)
            })
            .collect();
        let report = EvalReport::from_scores(k, scores);
        let want_ndcg = expected.mean[&format!("ndcg_cut_{k}")];
        let want_p = expected.mean[&format!("P_{k}")];
        assert!((report.mean.ndcg - want_ndcg).abs() < TOL, "k={k}");
        assert!((report.mean.p - want_p).abs() < TOL, "k={k}");
        assert_eq!(report.groups["all"].n, 21);
    }
}

#[test]
fn written_run_reads_back_to_the_same_scores() {
    let Some(qrels_path) = bench("qrels-dev.txt") else {
        return;
    };
    let qrels = Qrels::load(&qrels_path).expect("qrels");
    let run = read_run(&fixture("dev-run.txt")).expect("run");
    let mut out = Vec::new();
    for (qid, ranked) in &run {
        write_run(&mut out, qid, ranked, "cxr").expect("write to memory");
    }
    let text = String::from_utf8(out).expect("utf-8");

    // Ranks in the written file follow the order trec_eval computes from the scores.
    let mut last: Option<(&str, usize)> = None;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let rank: usize = f[3].parse().expect("integer rank");
        let expected_rank = match last {
            Some((q, r)) if q == f[0] => r + 1,
            _ => 1,
        };
        assert_eq!(rank, expected_rank, "{line}");
        last = Some((f[0], rank));
    }

    let back = as_map(parse_run(&text).expect("reads back"));
    check_against_trec_eval(&qrels, &back, &load_expected("dev-expected.json"));
}

#[test]
fn dev_query_set_loads_and_every_query_is_judged() {
    let Some(path) = bench("queries-dev.jsonl") else {
        return;
    };
    let all = cxr_search::eval::load_queries(&path, None).expect("queries");
    assert_eq!(all.len(), 21);
    let Some(qrels_path) = bench("qrels-dev.txt") else {
        return;
    };
    let qrels = Qrels::load(&qrels_path).expect("qrels");
    assert!(all.iter().all(|q| qrels.judgments(&q.id).is_some()));

    let iu = cxr_search::eval::load_queries(&path, Some("iu")).expect("iu queries");
    assert_eq!(iu.len(), 8);
    assert!(iu.iter().all(|q| q.corpus == "iu"));

    let nih = cxr_search::eval::load_queries(&path, Some("nih")).expect("nih queries");
    let images: Vec<&PathBuf> = nih
        .iter()
        .filter_map(|q| match &q.kind {
            QueryKind::Image(p) => Some(p),
            QueryKind::Text(_) => None,
        })
        .collect();
    assert_eq!(images.len(), 3);
    // Resolved against the query file's folder.
    let folder = path.parent().expect("bench folder");
    assert!(images.iter().all(|p| p.starts_with(folder)));
    assert_eq!(
        images[0],
        &folder.join("../data/nih1000/train/1_abnormal/00000090_003.png")
    );

    let err = cxr_search::eval::load_queries(&path, Some("mimic")).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("no query for corpus `mimic`"), "{msg}");
    assert!(msg.contains("covid, iu, nih"), "{msg}");
}

#[test]
fn report_groups_follow_the_query_set() {
    let Some(path) = bench("queries-dev.jsonl") else {
        return;
    };
    let queries = cxr_search::eval::load_queries(&path, None).expect("queries");
    let Some(qrels_path) = bench("qrels-dev.txt") else {
        return;
    };
    let qrels = Qrels::load(&qrels_path).expect("qrels");
    let run = as_map(read_run(&fixture("dev-run.txt")).expect("run"));
    let scores = queries
        .iter()
        .filter_map(|q| {
            let judged = qrels.judgments(&q.id)?;
            let ranked = run.get(&q.id).map(Vec::as_slice).unwrap_or(&[]);
            Some(score_query(&q.id, &q.group, ranked, judged, 5))
        })
        .collect();
    let report = EvalReport::from_scores(5, scores);
    assert_eq!(report.queries.len(), 21);
    assert_eq!(report.groups["image"].n, 3);
    assert_eq!(report.groups["finding"].n, 10);
    let n: usize = report.groups.values().map(|g| g.n).sum();
    assert_eq!(n, 21);
    let expected = load_expected("dev-expected.json");
    assert!((report.mean.ndcg - expected.mean["ndcg_cut_5"]).abs() < TOL);

    let json = serde_json::to_value(&report).expect("serialises");
    let keys: Vec<&str> = json
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 4);
    for key in ["k", "mean", "groups", "queries"] {
        assert!(json.get(key).is_some(), "{key}");
    }
    let mut table = Vec::new();
    report.write_table(&mut table).expect("write to memory");
    let table = String::from_utf8(table).expect("utf-8");
    assert!(table.lines().any(|l| l.starts_with("mean ")), "{table}");
}
