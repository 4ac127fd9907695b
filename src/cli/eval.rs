//! `cxr eval`: a query set with graded relevance scored as trec_eval does (NDCG@k, P@k), and
//! the TREC run file.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use cxr_search::eval;
use cxr_search::ingest;
use cxr_search::search::{self, SearchOptions, Searcher};

use crate::ranking::{open_reranker, NoticePrinter, RankingArgs, RerankArgs};
use crate::{decode_options_for, open_for_search, ModelArgs};

#[derive(Args)]
pub(crate) struct EvalArgs {
    /// Index folder.
    index: PathBuf,
    /// Queries (JSONL: id, corpus, group, text or image).
    #[arg(long)]
    queries: PathBuf,
    /// TREC qrels (qid 0 docid rel).
    #[arg(long)]
    qrels: PathBuf,
    /// Keep only the queries of this corpus.
    #[arg(long)]
    corpus: Option<String>,
    /// Cut-off of NDCG@k and P@k.
    #[arg(long, default_value_t = 5)]
    k: usize,
    /// Write the ranking as a TREC run file.
    #[arg(long)]
    run: Option<PathBuf>,
    #[command(flatten)]
    ranking: RankingArgs,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    pub(crate) rerank: RerankArgs,
    #[arg(long)]
    json: bool,
}

pub(crate) fn cmd_eval(args: EvalArgs) -> Result<ExitCode> {
    let queries = eval::load_queries(&args.queries, args.corpus.as_deref())?;
    if queries.is_empty() {
        bail!(
            "{}: no queries{}",
            args.queries.display(),
            args.corpus
                .as_deref()
                .map(|c| format!(" of corpus `{c}`"))
                .unwrap_or_default()
        );
    }
    let qrels = eval::Qrels::load(&args.qrels)?;
    let (index, model) = open_for_search(&args.index, &args.model)?;
    let searcher = Searcher::new(&index, model.as_ref())?;
    let setup = open_reranker(&args.rerank, &args.index, &args.model, model.as_ref())?;
    // Rank deeper than k so the run file is useful beyond the cut-off.
    let mut opts = SearchOptions::top(args.k.max(100).max(setup.as_ref().map_or(0, |s| s.depth)));
    args.ranking.apply(&mut opts);
    let mut notices = NoticePrinter::default();
    let (mut rerank_seconds, mut reranked_queries, mut image_queries) = (0f64, 0usize, 0usize);
    let mut run_out = match &args.run {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => None,
    };
    let mut scores = Vec::new();
    for q in &queries {
        let Some(judged) = qrels.judgments(&q.id) else {
            eprintln!("cxr: query {} has no judgments in the qrels; skipped", q.id);
            continue;
        };
        let mut reranked = false;
        let hits = match &q.kind {
            eval::QueryKind::Text(text) => {
                let mut hits = searcher.search_text(text, &opts)?;
                if let (Some(s), Some(m)) = (&setup, model.as_ref()) {
                    let started = std::time::Instant::now();
                    let outcome =
                        search::rerank(&index, m, &s.reranker, text, &mut hits, s.depth, &s.roots)?;
                    rerank_seconds += started.elapsed().as_secs_f64();
                    reranked_queries += 1;
                    reranked = true;
                    notices.print(&outcome.notices);
                }
                hits
            }
            eval::QueryKind::Image(path) => {
                image_queries += 1;
                let decoded = ingest::decode_file(path, &decode_options_for(model.as_ref()))
                    .with_context(|| format!("query {}", q.id))?;
                searcher.search_image(&decoded.image, &opts)?.hits
            }
        };
        // trec_eval orders a run by score; after reranking the first-stage scores no longer
        // follow the list's order, so a reranked list is scored by rank (n, n-1, ..., 1).
        let n = hits.len();
        let ranked: Vec<eval::Ranked> = hits
            .iter()
            .enumerate()
            .map(|(i, h)| eval::Ranked {
                docid: h.id.clone(),
                score: if reranked { (n - i) as f32 } else { h.score },
            })
            .collect();
        if let Some(w) = run_out.as_mut() {
            eval::write_run(w, &q.id, &ranked, "cxr")?;
        }
        scores.push(eval::QueryScores {
            id: q.id.clone(),
            group: q.group.clone(),
            ndcg: eval::ndcg_at_k(&ranked, judged, args.k),
            p: eval::precision_at_k(&ranked, judged, args.k),
        });
    }
    if let Some(mut w) = run_out {
        w.flush()?;
    }
    if let Some(s) = &setup {
        if image_queries > 0 {
            eprintln!(
                "cxr: --rerank scores image-text pairs: {image_queries} image queries were ranked \
                 by the first stage alone"
            );
        }
        if reranked_queries > 0 {
            eprintln!(
                "cxr: reranked the top {} hits of {reranked_queries} text queries ({}): {:.1} ms \
                 per query for the second stage (image decoding and the reranker)",
                s.depth,
                s.dir.display(),
                rerank_seconds * 1000.0 / reranked_queries as f64
            );
        }
    }
    let report = eval::EvalReport::from_scores(args.k, scores);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        report.write_table(&mut out)?;
    }
    Ok(ExitCode::SUCCESS)
}
