//! `cxr search`: one query from the flags, or many from a file or stdin, each answered as it is
//! read; text output for people, `--json` for programs.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use cxr_index::Index;
use cxr_search::ingest;
use cxr_search::model::DualEncoder;
use cxr_search::search::{self, SearchOptions, Searcher};

use crate::ranking::{open_reranker, NoticePrinter, RankingArgs, RerankArgs, RerankSetup};
use crate::{decode_options_for, open_for_search, ModelArgs};

#[derive(Args)]
pub(crate) struct SearchArgs {
    /// Index folder.
    index: PathBuf,
    /// Free-text query, e.g. "small left pleural effusion".
    #[arg(
        long,
        conflicts_with_all = ["image", "queries"],
        required_unless_present_any = ["image", "queries"]
    )]
    text: Option<String>,
    /// Example image (DICOM, PNG or JPEG).
    #[arg(long, conflicts_with = "queries")]
    image: Option<PathBuf>,
    /// Many queries, one per line, from FILE or `-` (stdin), each answered as it is read: a
    /// line of text is a text query; a JSON object gives `text` or `image` (a path) and an
    /// optional `id` to echo. The model and the index are loaded once. A bad line is reported
    /// and skipped.
    #[arg(long, value_name = "FILE")]
    queries: Option<PathBuf>,
    /// Number of results.
    #[arg(short, long, default_value_t = 10)]
    k: usize,
    /// Keep only documents whose metadata matches, e.g. `view=PA`, `sex=F`, `age=40..60`,
    /// `date=2019-01-01..2019-12-31`, `modality=CR`, `body_part=CHEST`; repeat to combine.
    #[arg(long = "filter", value_name = "FIELD=VALUE")]
    filters: Vec<String>,
    /// One hit per study.
    #[arg(long, value_name = "study", value_parser = ["study"])]
    group_by: Option<String>,
    #[command(flatten)]
    ranking: RankingArgs,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    pub(crate) rerank: RerankArgs,
    #[arg(long)]
    json: bool,
}

pub(crate) fn cmd_search(args: SearchArgs) -> Result<ExitCode> {
    if args.rerank.rerank.is_some() && args.image.is_some() {
        bail!(
            "--rerank scores image-text pairs (the reranker's match head): it applies to --text \
             queries, not to --image ones"
        );
    }
    let (index, model) = open_for_search(&args.index, &args.model)?;
    let searcher = Searcher::new(&index, model.as_ref())
        .with_context(|| format!("searching {}", args.index.display()))?;
    let setup = open_reranker(&args.rerank, &args.index, &args.model, model.as_ref())?;
    let depth = setup.as_ref().map_or(0, |s| s.depth);
    let mut opts = SearchOptions::top(args.k.max(depth));
    opts.filter = search::Filter::parse(&args.filters)?;
    opts.group_by_study = args.group_by.is_some();
    args.ranking.apply(&mut opts);
    let session = SearchSession {
        index: &index,
        model: model.as_ref(),
        searcher,
        setup,
        opts,
        k: args.k,
        json: args.json,
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let Some(source) = &args.queries else {
        let query = match (&args.text, &args.image) {
            (Some(text), _) => BatchQuery::Text(text.clone()),
            (None, Some(path)) => BatchQuery::Image(path.clone()),
            (None, None) => bail!("give --text, --image or --queries"),
        };
        let found = session.answer(&query, None, &mut out)?;
        return Ok(if found {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    };
    // One query per line, answered as it is read (and flushed), so that a program can keep
    // this process open on a pipe and pay for the model and the index once.
    use std::io::BufRead;
    let reader: Box<dyn BufRead> = if source.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(source)
                .with_context(|| format!("opening queries {}", source.display()))?,
        ))
    };
    let mut failed = 0usize;
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("reading queries {}", source.display()))?;
        let answered = BatchQuery::parse(&line).and_then(|query| match query {
            Some((query, id)) => session.answer(&query, id.as_deref(), &mut out).map(|_| ()),
            None => Ok(()),
        });
        if let Err(e) = answered {
            failed += 1;
            let reason = format!("{e:#}");
            eprintln!("cxr: {} line {}: {reason}", source.display(), n + 1);
            if args.json {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"line": n + 1, "error": reason})
                )?;
            }
        }
        out.flush()?;
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// One query of `cxr search`: from `--text` / `--image`, or a line of `--queries`.
enum BatchQuery {
    Text(String),
    Image(PathBuf),
}

impl BatchQuery {
    /// A line of `--queries`: plain text is a text query; a JSON object gives `text` or `image`
    /// (a file path) and an optional `id`, echoed in the answer. Blank lines are skipped (`None`).
    fn parse(line: &str) -> Result<Option<(BatchQuery, Option<String>)>> {
        let line = line.trim();
        if line.is_empty() {
            return Ok(None);
        }
        if !line.starts_with('{') {
            return Ok(Some((BatchQuery::Text(line.to_string()), None)));
        }
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Line {
            id: Option<String>,
            text: Option<String>,
            image: Option<PathBuf>,
        }
        let parsed: Line = serde_json::from_str(line).context("not a query object")?;
        let query = match (parsed.text, parsed.image) {
            (Some(text), None) => BatchQuery::Text(text),
            (None, Some(image)) => BatchQuery::Image(image),
            _ => bail!("a query object needs exactly one of \"text\" and \"image\""),
        };
        Ok(Some((query, parsed.id)))
    }
}

/// What `cxr search` sets up once (index, model, reranker, options) and every query reuses.
struct SearchSession<'a> {
    index: &'a Index,
    model: Option<&'a DualEncoder>,
    searcher: Searcher<'a>,
    setup: Option<RerankSetup<'a>>,
    opts: SearchOptions,
    k: usize,
    json: bool,
}

impl SearchSession<'_> {
    /// Answers one query on `out`; returns whether anything was found.
    fn answer(&self, query: &BatchQuery, id: Option<&str>, out: &mut impl Write) -> Result<bool> {
        let index = self.index;
        let started = std::time::Instant::now();
        let mut matched_by = None;
        let (mut hits, query_text) = match query {
            BatchQuery::Text(text) => {
                warn_if_denials_unindexed(index, text);
                (self.searcher.search_text(text, &self.opts)?, text.clone())
            }
            BatchQuery::Image(path) => {
                if self.setup.is_some() {
                    bail!("--rerank applies to text queries, not to image ones");
                }
                let decoded = ingest::decode_file(path, &decode_options_for(self.model))?;
                let answer = self.searcher.search_image(&decoded.image, &self.opts)?;
                matched_by = Some(answer.matched_by);
                (answer.hits, String::new())
            }
        };
        let mut reranked = None;
        if let (Some(s), Some(m), BatchQuery::Text(text)) = (&self.setup, self.model, query) {
            let outcome =
                search::rerank(index, m, &s.reranker, text, &mut hits, s.depth, &s.roots)?;
            NoticePrinter::default().print(&outcome.notices);
            reranked = Some(outcome.scored);
        }
        hits.truncate(self.k);
        let millis = started.elapsed().as_secs_f64() * 1000.0;
        // The sentence shown is the one that matches what the query asks for, not what it denies.
        let parsed = search::ParsedQuery::parse(&query_text);
        let snippet_query = if parsed.asserted.trim().is_empty() {
            query_text.clone()
        } else {
            parsed.asserted.clone()
        };
        if self.json {
            let results: Vec<serde_json::Value> = hits
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    let fields = index.doc(h.ord).map(|d| d.fields.clone());
                    let mut v = serde_json::to_value(h).unwrap_or_default();
                    v["rank"] = (i + 1).into();
                    v["fields"] = serde_json::to_value(fields).unwrap_or_default();
                    v
                })
                .collect();
            let mut value = serde_json::json!({"took_ms": millis, "results": results});
            if let Some(id) = id {
                value["id"] = id.into();
            }
            if let Some(m) = matched_by {
                value["matched_by"] = image_match_name(m).into();
            }
            if let (Some(scored), Some(s)) = (reranked, &self.setup) {
                value["reranked"] = serde_json::json!({
                    "depth": s.depth,
                    "scored": scored,
                    "reranker": s.dir.display().to_string(),
                });
            }
            writeln!(out, "{value}")?;
            return Ok(!hits.is_empty());
        }
        if let Some(id) = id {
            writeln!(out, "# {id}")?;
        }
        for (i, h) in hits.iter().enumerate() {
            let doc = index.doc(h.ord);
            let field = |k: &str| {
                doc.as_ref()
                    .and_then(|d| d.fields.get(k))
                    .map(String::as_str)
                    .unwrap_or("-")
            };
            let report = doc
                .as_ref()
                .map(|d| report_text(&d.fields))
                .unwrap_or_default();
            let snip = search::snippet(&report, &snippet_query, 90);
            let second = match (reranked, h.rerank) {
                (None, _) => String::new(),
                (Some(_), Some(p)) => format!("rerank {p:.4}  "),
                (Some(_), None) => format!("{:<13}  ", "rerank -"),
            };
            writeln!(
                out,
                "{:>3}  {:<40}  {:.4}  {second}{:<9} {:<9} {}",
                i + 1,
                h.id,
                h.score,
                ranked_by(h),
                field("view"),
                snip
            )?;
        }
        if let (Some(scored), Some(s)) = (reranked, &self.setup) {
            writeln!(
                out,
                "reranked: the top {} first-stage hits ({scored} with an image) by image-text \
                 match probability ({})",
                s.depth,
                s.dir.display()
            )?;
        }
        Ok(!hits.is_empty())
    }
}

fn image_match_name(m: search::ImageMatch) -> &'static str {
    match m {
        search::ImageMatch::Findings => "findings",
        search::ImageMatch::Appearance => "appearance",
    }
}

/// Indexes made before denied findings were indexed apart cannot answer "no pneumothorax".
fn warn_if_denials_unindexed(index: &Index, query: &str) {
    if search::ParsedQuery::parse(query).has_negation()
        && !index.has_text_field(cxr_index::TextField::Negated)
    {
        eprintln!(
            "cxr: warning: this index was built before denied findings were indexed; the \
             report text cannot answer what the query denies. Rebuild it to search them."
        );
    }
}

/// Which lists ranked a hit and where, e.g. `v3 t1` (vector rank 3, text rank 1).
fn ranked_by(h: &search::Hit) -> String {
    let mut parts = Vec::with_capacity(2);
    if let Some((rank, _)) = h.vector {
        parts.push(format!("v{rank}"));
    }
    if let Some((rank, _)) = h.text {
        parts.push(format!("t{rank}"));
    }
    parts.join(" ")
}

/// The report sections of a stored document, in reading order.
fn report_text(fields: &std::collections::BTreeMap<String, String>) -> String {
    let order = ["findings", "impression", "report", "text", "clinical_notes"];
    order
        .iter()
        .filter_map(|k| fields.get(*k))
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(" ")
}
