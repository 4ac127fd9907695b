//! End-to-end tests of the `cxr` binary on small archives the tests make themselves.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{cxr, make_model, make_model_seeded, text, REPORTS};

/// Three PNG radiograph stand-ins with distinct patterns, and clutter that must be reported.
fn make_archive(dir: &Path) -> PathBuf {
    let archive = dir.join("archive");
    std::fs::create_dir_all(archive.join("sub")).unwrap();
    for (name, f) in [("img1.png", 1u32), ("img2.png", 7), ("sub/img3.png", 13)] {
        image::GrayImage::from_fn(48, 40, |x, y| image::Luma([((x * f + y * 3) % 256) as u8]))
            .save(archive.join(name))
            .unwrap();
    }
    std::fs::write(archive.join("notes.png"), b"this is not an image").unwrap();
    let good = std::fs::read(archive.join("img1.png")).unwrap();
    std::fs::write(archive.join("cut.png"), &good[..good.len() / 3]).unwrap();
    archive
}

/// What most tests start from: a temporary folder holding the test model and the archive of
/// [`make_archive`], with their paths as the strings `cxr` takes.
struct Setup {
    dir: tempfile::TempDir,
    model: String,
    archive: String,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let model = path_str(&make_model(dir.path()));
        let archive = path_str(&make_archive(dir.path()));
        Setup {
            dir,
            model,
            archive,
        }
    }

    /// [`Setup::new`] with only the archive's readable images (its two bad files removed).
    fn readable() -> Self {
        let s = Setup::new();
        for name in ["notes.png", "cut.png"] {
            std::fs::remove_file(Path::new(&s.archive).join(name)).unwrap();
        }
        s
    }

    /// `name` in the temporary folder (not created).
    fn path(&self, name: &str) -> String {
        path_str(&self.dir.path().join(name))
    }

    /// Writes `contents` to `name` in the temporary folder.
    fn write(&self, name: &str, contents: &str) -> String {
        let path = self.path(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// `cxr index ARCHIVE --out IDX --model MODEL EXTRA...`, not yet checked.
    fn index(&self, idx: &str, extra: &[&str]) -> Output {
        let mut args = vec!["index", &self.archive, "--out", idx, "--model", &self.model];
        args.extend_from_slice(extra);
        cxr(&args)
    }

    /// `cxr search IDX --model MODEL --json ARGS...`, which must succeed: its answer.
    fn search_json(&self, idx: &str, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["search", idx, "--model", &self.model, "--json"];
        all.extend_from_slice(args);
        parse(&succeed(&all))
    }
}

fn path_str(path: &Path) -> String {
    path.to_str().expect("a UTF-8 temporary path").to_string()
}

/// Runs `cxr args`, asserts that it succeeded, and returns its stdout.
fn succeed(args: &[&str]) -> String {
    let o = cxr(args);
    let (out, err) = text(&o);
    assert!(o.status.success(), "cxr {args:?}\n{out}\n{err}");
    out
}

/// A `--json` output (one object).
fn parse(out: &str) -> serde_json::Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The document ids of a `--json` search answer, in rank order.
fn hit_ids(answer: &serde_json::Value) -> Vec<String> {
    answer["results"]
        .as_array()
        .expect("a results array")
        .iter()
        .map(|h| h["id"].as_str().expect("a string id").to_string())
        .collect()
}

#[test]
fn index_search_eval_and_resume() {
    let s = Setup::new();
    let r = s.write(
        "reports.csv",
        "filename,view,report\nimg1.png,PA,Small left pleural effusion.\nimg2.png,AP,Cardiomegaly.\n",
    );
    let idx = s.dir.path().join("idx");
    let i = &path_str(&idx);
    let (a, m) = (s.archive.as_str(), s.model.as_str());

    let o = s.index(i, &["--reports", &r, "--json"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    let summary = parse(&out);
    assert_eq!(summary["indexed"], 3);
    assert_eq!(summary["failed"], 2);
    // Each bad file is named with its reason, on stderr and in errors.jsonl.
    assert!(err.contains("notes.png"), "{err}");
    assert!(err.contains("cut.png"), "{err}");
    let errors = std::fs::read_to_string(idx.join("errors.jsonl")).unwrap();
    assert_eq!(errors.lines().count(), 2);

    // Text search ranks the report that says it first; the hit shows the report's sentence.
    let out = succeed(&[
        "search",
        i,
        "--text",
        "pleural effusion",
        "-k",
        "3",
        "--model",
        m,
    ]);
    let first = out.lines().next().unwrap();
    assert!(
        first.contains("img1") && first.contains("Small left pleural effusion"),
        "{out}"
    );

    // Image search by appearance finds the query image itself first.
    let v = s.search_json(
        i,
        &[
            "--image",
            &format!("{a}/sub/img3.png"),
            "--image-match",
            "appearance",
        ],
    );
    assert_eq!(v["results"][0]["id"], "img3");
    // By appearance an image query reports cosine similarity: the image itself scores 1.
    let score = v["results"][0]["score"].as_f64().unwrap();
    assert!((score - 1.0).abs() < 1e-3, "{score}");
    assert_eq!(v["results"][0]["fields"]["path"], "sub/img3.png");

    // Filters apply to both lists: only the AP image remains.
    let v = s.search_json(i, &["--text", "pleural effusion", "--filter", "view=AP"]);
    assert_eq!(hit_ids(&v), ["img2"]);
    let o = cxr(&[
        "search",
        i,
        "--text",
        "effusion",
        "--filter",
        "colour=red",
        "--model",
        m,
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("unknown field `colour`"));

    // Re-running indexes nothing twice.
    let rerun = || {
        let o = s.index(i, &["--reports", &r, "--json"]);
        let (out, err) = text(&o);
        (parse(&out), err)
    };
    let (summary, _) = rerun();
    assert_eq!(summary["indexed"], 0);
    assert_eq!(summary["skipped"], 3);
    assert_eq!(summary["documents"], 3);

    // A re-run recognises an indexed file by path, size and modification time without reading
    // it: same-length garbage with the old time restored is not even opened...
    let img1 = Path::new(a).join("img1.png");
    let (len, mtime) = {
        let meta = std::fs::metadata(&img1).unwrap();
        (meta.len() as usize, meta.modified().unwrap())
    };
    std::fs::write(&img1, vec![b'x'; len]).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&img1)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let (summary, err) = rerun();
    assert_eq!(summary["skipped"], 3, "{err}");
    assert!(!err.contains("img1.png"), "{err}");
    // ...while a file that changed is looked at again: garbage is reported, and the document
    // indexed from the good version stays.
    std::fs::write(&img1, b"garbage").unwrap();
    let (summary, err) = rerun();
    assert_eq!(summary["skipped"], 2, "{err}");
    assert_eq!(summary["documents"], 3, "{err}");
    assert!(err.contains("img1.png"), "{err}");

    // Evaluation with a run file.
    let queries = s.write(
        "q.jsonl",
        "{\"id\":\"q1\",\"corpus\":\"t\",\"group\":\"finding\",\"text\":\"effusion\"}\n\
         {\"id\":\"q2\",\"corpus\":\"t\",\"group\":\"image\",\"image\":\"archive/img2.png\"}\n",
    );
    let qrels = s.write("q.txt", "q1 0 img1 2\nq2 0 img2 1\n");
    let run = s.path("out.run");
    let v = parse(&succeed(&[
        "eval",
        i,
        "--queries",
        &queries,
        "--qrels",
        &qrels,
        "--run",
        &run,
        "--json",
        "--model",
        m,
        "--image-match",
        "appearance",
    ]));
    assert_eq!(v["k"], 5);
    assert_eq!(v["queries"][0]["ndcg"], 1.0);
    assert_eq!(v["queries"][1]["ndcg"], 1.0);
    let run_text = std::fs::read_to_string(&run).unwrap();
    assert!(run_text.starts_with("q1 Q0 img1 1 "), "{run_text}");
}

#[test]
fn report_only_corpus_and_empty_reports() {
    let dir = tempfile::tempdir().unwrap();
    let model = make_model(dir.path());
    let reports = dir.path().join("reports.jsonl");
    std::fs::write(&reports, REPORTS).unwrap();
    let i = &path_str(&dir.path().join("idx"));
    let o = cxr(&[
        "index",
        "--reports",
        &path_str(&reports),
        "--out",
        i,
        "--model",
        &path_str(&model),
        "--json",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let v = parse(&out);
    assert_eq!(v["report_only"], 3);
    assert_eq!(v["failed"], 1);
    assert!(err.contains("r4") && err.contains("empty report"), "{err}");

    // A report-only index needs no model to search.
    let out = succeed(&[
        "search",
        i,
        "--text",
        "cardiomegaly",
        "--model",
        "/nonexistent",
    ]);
    assert!(out.lines().next().unwrap().contains("r2"), "{out}");

    // No result: exit status 1.
    let o = cxr(&["search", i, "--text", "zzzz"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn denied_findings_are_searched_apart_from_asserted_ones() {
    let dir = tempfile::tempdir().unwrap();
    let reports = dir.path().join("reports.jsonl");
    std::fs::write(
        &reports,
        r#"{"id": "r1", "findings": "Small left pleural effusion. No pneumothorax."}
{"id": "r2", "findings": "Cardiomegaly. No pleural effusion."}
{"id": "r3", "findings": "Cardiomegaly with small right pleural effusion."}
{"id": "r4", "findings": "Large right pneumothorax."}
{"id": "r5", "findings": "The lungs are clear."}
"#,
    )
    .unwrap();
    let i = &path_str(&dir.path().join("idx"));
    succeed(&["index", "--reports", &path_str(&reports), "--out", i]);
    let ids = |query: &str| -> Vec<String> {
        let o = cxr(&["search", i, "--text", query, "--json"]);
        let (out, err) = text(&o);
        assert!(err.is_empty(), "{query}: {err}");
        hit_ids(&parse(&out))
    };
    // A finding asked for: the report that denies it is not a match.
    assert_eq!(ids("pneumothorax"), ["r4"]);
    // A finding asked to be absent: the report that denies it, not the one that asserts it.
    assert_eq!(ids("no pneumothorax"), ["r1"]);
    // Asserted and denied together: reports asserting the denied finding are left out.
    let mut both = ids("cardiomegaly");
    both.sort();
    assert_eq!(both, ["r2", "r3"]);
    assert_eq!(ids("cardiomegaly without pleural effusion"), ["r2"]);
    // Qualifiers do not narrow what is left out: any asserted effusion is.
    assert_eq!(ids("cardiomegaly without a large effusion"), ["r2"]);
}

#[test]
fn an_index_refuses_another_model() {
    let s = Setup::new();
    let i = &s.path("idx");
    let o = s.index(i, &[]);
    assert!(o.status.success(), "{:?}", text(&o));

    let other = path_str(&make_model_seeded(s.dir.path(), "other", 9));
    let o = cxr(&["search", i, "--text", "effusion", "--model", &other]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2));
    assert!(err.contains("model"), "{err}");
    let o = cxr(&["index", &s.archive, "--out", i, "--model", &other]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2));
    assert!(err.contains("was built by model"), "{err}");
}

#[test]
fn f16_vector_storage_is_chosen_at_creation_and_kept() {
    let s = Setup::new();
    let query = format!("{}/img2.png", s.archive);
    let mut results = Vec::new();
    for storage in ["f32", "f16"] {
        let i = &s.path(&format!("idx-{storage}"));
        let o = s.index(i, &["--vector-storage", storage]);
        assert!(o.status.success(), "{:?}", text(&o));
        let out = succeed(&["info", i]);
        assert!(out.contains(&format!("({storage})")), "{out}");
        succeed(&["check", i]);
        results.push(hit_ids(
            &s.search_json(i, &["--image", &query, "--image-match", "appearance"]),
        ));
        // A later run follows the index; asking for the other storage is refused.
        let other = if storage == "f32" { "f16" } else { "f32" };
        let o = s.index(i, &["--vector-storage", other]);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(&format!("stores {storage} vectors")), "{err}");
    }
    // The same ranking either way on three distinct images, the query image first.
    assert_eq!(results[0], results[1]);
    assert_eq!(results[0][0], "img2", "{:?}", results[0]);
}

/// An image query matched by findings (the default) ranks each image by the inner product of
/// its zero-shot margins with the query's, over every finding of the vocabulary: the order and
/// the ratios of the scores `cxr search` reports follow from the margins `cxr classify` prints.
#[test]
fn image_queries_match_by_zero_shot_margins() {
    let s = Setup::readable();
    let i = &s.path("idx");
    let o = s.index(i, &[]);
    assert!(o.status.success(), "{:?}", text(&o));
    let query = format!("{}/img2.png", s.archive);
    let findings = "normal,effusion,cardiomegaly,atelectasis,infiltration,consolidation,\
                    pneumonia,edema,pneumothorax,nodule/mass,emphysema,fibrosis,\
                    pleural thickening,hernia,covid-19";
    let out = succeed(&[
        "classify",
        &s.archive,
        &query,
        "--findings",
        findings,
        "--model",
        &s.model,
        "--json",
    ]);
    let margins: Vec<(String, Vec<f64>)> = out
        .lines()
        .map(parse)
        .map(|v| {
            let image = v["image"].as_str().unwrap().to_string();
            let m = v["margins"].as_object().unwrap();
            assert_eq!(m.len(), 15, "{v}");
            (image, m.values().map(|x| x.as_f64().unwrap()).collect())
        })
        .collect();
    // The query image is listed twice: once in the archive, once as itself.
    let of = |name: &str| &margins.iter().find(|(p, _)| p.ends_with(name)).unwrap().1;
    let q = of("img2.png");
    let agreement = |name: &str| -> f64 { of(name).iter().zip(q).map(|(a, b)| a * b).sum() };

    let v = s.search_json(i, &["--image", &query]);
    let hits: Vec<(String, f64)> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let id = h["id"].as_str().unwrap().to_string();
            (id, h["score"].as_f64().unwrap())
        })
        .collect();
    assert_eq!(hits.len(), 3, "{v}");
    let expected: Vec<f64> = hits
        .iter()
        .map(|(id, _)| agreement(&format!("{id}.png")))
        .collect();
    // Ranked by agreement, and each score is the agreement over one common factor.
    assert!(expected.windows(2).all(|w| w[0] >= w[1]), "{expected:?}");
    let factor = hits[0].1 / expected[0];
    let largest = expected.iter().fold(0f64, |m, e| m.max(e.abs()));
    for ((id, score), e) in hits.iter().zip(&expected) {
        assert!(
            (score / factor - e).abs() <= 1e-3 * largest,
            "{id}: score {score}, agreement {e}, factor {factor}"
        );
    }
    // The answer says what it matched by.
    assert_eq!(v["matched_by"], "findings");

    // By appearance the ranking is the cosine's: the query image itself first, at 1.
    let v = s.search_json(i, &["--image", &query, "--image-match", "appearance"]);
    assert_eq!(v["matched_by"], "appearance");
    assert_eq!(v["results"][0]["id"], "img2");
    assert!((v["results"][0]["score"].as_f64().unwrap() - 1.0).abs() < 1e-3);
}

/// `cxr embed` prints the vectors the index and the query path use: unit length, the image's
/// cosines as an image search by appearance reports them; an unreadable file is named and
/// skipped with exit status 1.
#[test]
fn embed_prints_the_vectors_search_uses() {
    let s = Setup::new();
    let i = &s.path("idx");
    s.index(i, &[]);
    let a = &s.archive;
    let (img1, img2, bad) = (
        format!("{a}/img1.png"),
        format!("{a}/img2.png"),
        format!("{a}/notes.png"),
    );
    let o = cxr(&[
        "embed",
        &img1,
        &img2,
        &bad,
        "--text",
        "pleural effusion",
        "--model",
        &s.model,
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    assert!(err.contains("notes.png"), "{err}");
    let lines: Vec<serde_json::Value> = out.lines().map(parse).collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[0]["text"], "pleural effusion");
    let vector = |v: &serde_json::Value| -> Vec<f64> {
        let e = v["embedding"].as_array().unwrap();
        e.iter().map(|x| x.as_f64().unwrap()).collect()
    };
    for line in &lines {
        let norm = vector(line).iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
    }
    assert!(lines[1]["image"].as_str().unwrap().ends_with("img1.png"));
    let (e1, e2) = (vector(&lines[1]), vector(&lines[2]));
    let cosine: f64 = e1.iter().zip(&e2).map(|(a, b)| a * b).sum();
    let v = s.search_json(i, &["--image", &img2, "--image-match", "appearance"]);
    let hit = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["id"] == "img1")
        .expect("img1 among the hits");
    let score = hit["score"].as_f64().unwrap();
    assert!((score - cosine).abs() < 1e-4, "{score} vs {cosine}");

    let o = cxr(&["embed", "--model", &s.model]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("nothing to embed"));
    let empty = s.path("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = cxr(&["embed", &empty, "--model", &s.model]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("no image"), "{:?}", text(&o));
}

#[test]
fn sealed_segments_are_searched_as_one_index() {
    let s = Setup::new();
    let query = format!("{}/img2.png", s.archive);
    let mut results = Vec::new();
    // One vector per segment: every image ends up in a sealed segment of its own.
    for rows in [None, Some("1")] {
        let i = &s.path(&format!("idx-{}", rows.unwrap_or("default")));
        let extra: Vec<&str> = rows.iter().flat_map(|r| ["--segment-rows", r]).collect();
        let o = s.index(i, &extra);
        assert!(o.status.success(), "{:?}", text(&o));
        let out = succeed(&["info", i]);
        let sealed = if rows.is_some() { 3 } else { 0 };
        assert!(
            out.contains(&format!("segments   {sealed} sealed")),
            "{out}"
        );
        succeed(&["check", i]);
        let v = s.search_json(i, &["--image", &query, "--image-match", "appearance"]);
        let ranked: Vec<(String, String)> = v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| (h["id"].to_string(), h["score"].to_string()))
            .collect();
        results.push(ranked);
        if rows.is_some() {
            let o = s.index(i, &["--segment-rows", "5"]);
            let (_, err) = text(&o);
            assert_eq!(o.status.code(), Some(2), "{err}");
            assert!(err.contains("seals segments at 1 vectors"), "{err}");
        }
    }
    // The same hits with the same scores, the query image first.
    assert_eq!(results[0], results[1]);
    assert_eq!(results[0][0].0, "\"img2\"", "{:?}", results[0]);
}

/// `--queries` answers a file or stdin of queries in one process, each as `--text` / `--image`
/// answers it alone, echoes ids, and reports a bad line without stopping.
#[test]
fn queries_from_a_file_or_stdin_are_answered_one_per_line() {
    use std::io::Write as _;
    let s = Setup::new();
    let r = s.write(
        "reports.csv",
        "filename,report\nimg1.png,Small left pleural effusion.\nimg2.png,Cardiomegaly.\n",
    );
    let i = &s.path("idx");
    let (a, m) = (s.archive.as_str(), s.model.as_str());
    let o = s.index(i, &["--reports", &r, "--key", "filename"]);
    assert!(o.status.success(), "{}", text(&o).1);
    let image = format!("{a}/img2.png");
    let by_text = s.search_json(i, &["--text", "small left pleural effusion"]);
    let by_image = s.search_json(i, &["--image", &image]);

    let file = s.write(
        "queries.txt",
        &format!(
            "small left pleural effusion\n\n{{\"id\": \"q2\", \"image\": {image:?}}}\n\
             {{\"text\": \"effusion\", \"image\": {image:?}}}\nnot json {{\n\
             {{\"id\": \"q5\", \"image\": \"{a}/missing.png\"}}\n{{\"id\": \"q6\", \"text\": \"cardiomegaly\"}}\n"
        ),
    );
    let o = cxr(&["search", i, "--model", m, "--json", "--queries", &file]);
    let (out, err) = text(&o);
    // Two bad lines (both text and image; a missing file) make the exit status 1.
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    let answers: Vec<serde_json::Value> = out.lines().map(parse).collect();
    // Lines 1, 3, 5 and 7 answered, lines 4 and 6 reported; the blank line is skipped. Line 5,
    // "not json {", is a text query like any plain line.
    assert_eq!(answers.len(), 6, "{out}");
    assert_eq!(hit_ids(&answers[0]), hit_ids(&by_text));
    assert_eq!(answers[1]["id"], "q2");
    assert_eq!(hit_ids(&answers[1]), hit_ids(&by_image));
    assert_eq!(hit_ids(&by_image).len(), 3, "{by_image}");
    assert_eq!(answers[2]["line"], 4);
    assert!(
        answers[2]["error"]
            .as_str()
            .unwrap()
            .contains("exactly one"),
        "{out}"
    );
    assert!(answers[3]["results"].is_array(), "{out}");
    assert_eq!(answers[4]["line"], 6);
    assert!(err.contains("line 6"), "{err}");
    assert_eq!(answers[5]["id"], "q6");

    // The same from stdin, in text mode: each answer headed by its id.
    let mut child = common::cxr_command()
        .args(["search", i, "--model", m, "--queries", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"{\"id\": \"first\", \"text\": \"cardiomegaly\"}\nsmall left pleural effusion\n",
        )
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.starts_with("# first\n"), "{out}");
    assert!(out.contains("Small left pleural effusion."), "{out}");
}

/// The HNSW parameters chosen at creation are recorded, shown by `cxr info`, and a later run
/// that asks for others is refused without touching the index.
#[test]
fn hnsw_parameters_are_chosen_when_the_index_is_created() {
    let s = Setup::new();
    let i = &s.path("idx");
    let create = ["--hnsw-m", "8", "--ef-construction", "40"];
    let o = s.index(i, &create);
    assert!(o.status.success(), "{}", text(&o).1);
    let out = succeed(&["info", i]);
    assert!(out.contains("HNSW, M 8, ef_construction 40"), "{out}");
    let manifest = parse(&succeed(&["info", i, "--json"]));
    assert_eq!(manifest["hnsw"]["max_nb_connection"], 8);
    assert_eq!(manifest["hnsw"]["ef_construction"], 40);
    // The same values, or none, are accepted on a re-run; others are refused.
    for ok in [&create[..], &[]] {
        let o = s.index(i, ok);
        assert!(o.status.success(), "{}", text(&o).1);
    }
    let o = s.index(i, &["--ef-construction", "50"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("was built with --ef-construction 40"), "{err}");
    let o = s.index(i, &["--hnsw-m", "1"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o).1);
    succeed(&["check", i]);
}

#[test]
fn files_whose_ids_clash_are_all_indexed_in_one_batch_or_across_batches() {
    let dir = tempfile::tempdir().unwrap();
    let m = &path_str(&make_model(dir.path()));
    let archive = dir.path().join("clash");
    // Three PNGs named alike in three folders: their natural id (the file stem) is the same.
    // With one file per batch, the ids given earlier in the run are the writer's to answer for.
    for (sub, f) in [("a", 3u32), ("b", 5), ("c", 11)] {
        std::fs::create_dir_all(archive.join(sub)).unwrap();
        image::GrayImage::from_fn(40, 40, |x, y| image::Luma([((x * f + y) % 256) as u8]))
            .save(archive.join(sub).join("scan.png"))
            .unwrap();
    }
    let a = &path_str(&archive);
    for batch in ["32", "1"] {
        let i = &path_str(&dir.path().join(format!("idx-{batch}")));
        let args = ["index", a, "--out", i, "--model", m, "--batch-size", batch];
        let o = cxr(&args);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{out}\n{err}");
        // The first keeps the natural id, the others get ID+PATH.
        assert!(out.contains("indexed 3 images"), "batch {batch}: {out}");
        assert!(err.contains("indexed as scan+b/scan.png"), "{err}");
        assert!(err.contains("indexed as scan+c/scan.png"), "{err}");
        // A re-run recognises each by its path.
        let out = succeed(&args);
        assert!(out.contains("indexed 0 images"), "batch {batch}: {out}");
        assert!(
            out.contains("skipped 3 already indexed"),
            "batch {batch}: {out}"
        );
    }
}

#[test]
fn nothing_indexable_exits_one_and_bad_usage_two() {
    let dir = tempfile::tempdir().unwrap();
    let model = make_model(dir.path());
    let junk = dir.path().join("junk");
    std::fs::create_dir(&junk).unwrap();
    std::fs::write(junk.join("a.png"), b"").unwrap();
    let i = &path_str(&dir.path().join("idx"));
    let o = cxr(&[
        "index",
        &path_str(&junk),
        "--out",
        i,
        "--model",
        &path_str(&model),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let o = cxr(&["index", "/no/such/folder", "--out", i]);
    assert_eq!(o.status.code(), Some(2));
    let (_, err) = text(&o);
    assert!(err.contains("/no/such/folder"), "{err}");
}

/// What the walk cannot follow (a broken link) is a failure named once, with its reason; the
/// files around it are indexed.
#[cfg(unix)]
#[test]
fn unwalkable_entries_are_reported_once_and_the_rest_is_indexed() {
    let s = Setup::readable();
    let archive = Path::new(&s.archive);
    std::os::unix::fs::symlink(archive.join("gone.png"), archive.join("sub/link.png")).unwrap();
    let idx = s.dir.path().join("idx");
    let o = s.index(&path_str(&idx), &["--json"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    let summary = parse(&out);
    assert_eq!(summary["indexed"], 3);
    assert_eq!(summary["failed"], 1);
    let named: Vec<&str> = err.lines().filter(|l| l.contains("link.png")).collect();
    assert_eq!(named.len(), 1, "{err}");
    assert!(
        named[0].ends_with("cannot walk: No such file or directory (os error 2)"),
        "{err}"
    );
    let errors = std::fs::read_to_string(idx.join("errors.jsonl")).unwrap();
    assert_eq!(errors.lines().count(), 1, "{errors}");
    assert!(errors.contains("link.png"), "{errors}");
}

/// An index written inside the archive it indexes is not taken for part of the archive, on
/// the first run or the next.
#[test]
fn an_index_inside_its_archive_is_not_walked() {
    let s = Setup::new();
    let idx = format!("{}/sub/idx", s.archive);
    for run in 0..2 {
        let o = s.index(&idx, &["--json"]);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{out}\n{err}");
        let summary = parse(&out);
        assert_eq!(summary["failed"], 2, "run {run}: {err}");
        assert_eq!(summary["documents"], 3, "run {run}: {err}");
        assert!(!err.contains("idx"), "run {run}: {err}");
    }
}

#[test]
fn check_passes_a_good_index_and_names_the_damage() {
    let s = Setup::new();
    let idx = s.dir.path().join("idx");
    let i = &path_str(&idx);
    let o = s.index(i, &[]);
    assert!(o.status.success(), "{:?}", text(&o));
    let out = succeed(&["check", i]);
    assert!(out.trim_end().ends_with(": ok"), "{out}");

    let vectors = std::fs::read_dir(&idx)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "f32"))
        .expect("vector file");
    let mut bytes = std::fs::read(&vectors).unwrap();
    bytes[5] ^= 0x40;
    std::fs::write(&vectors, bytes).unwrap();
    let o = cxr(&["check", i]);
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let fail = out
        .lines()
        .find(|l| l.starts_with("FAIL"))
        .expect("a failed item");
    assert!(
        fail.contains(vectors.file_name().unwrap().to_str().unwrap()),
        "{fail}"
    );
}

/// The life of an archive: a file changes, a file is copied, a file is removed; re-runs and
/// `cxr delete --missing` keep the index equal to the archive, and `cxr compact` reclaims the
/// space without changing what search returns.
#[test]
fn incremental_updates_delete_and_compact() {
    let s = Setup::readable();
    let archive = Path::new(&s.archive);
    let (a, i) = (s.archive.as_str(), &s.path("idx"));
    let index = || {
        let o = s.index(i, &["--json"]);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{out}\n{err}");
        (parse(&out), err)
    };
    let (v, _) = index();
    assert_eq!(v["indexed"], 3);

    // Unchanged: skipped. A copy under a new name: skipped as a duplicate, named.
    std::fs::copy(archive.join("img2.png"), archive.join("copy-of-img2.png")).unwrap();
    let (v, err) = index();
    assert_eq!(
        (v["indexed"].as_u64(), v["skipped"].as_u64()),
        (Some(0), Some(3))
    );
    assert_eq!(v["duplicates"], 1);
    assert!(err.contains("copy-of-img2.png") && err.contains("same content as img2.png"));

    // A file rewritten in place with other pixels replaces its document (same id, one copy).
    image::GrayImage::from_fn(48, 40, |x, _| image::Luma([(x * 5) as u8]))
        .save(archive.join("img1.png"))
        .unwrap();
    let (v, err) = index();
    assert_eq!(
        (v["indexed"].as_u64(), v["replaced"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(v["documents"], 3);
    assert!(err.contains("img1.png") && err.contains("changed since it was indexed"));

    // A removed file: --missing finds it (dry run first), an unknown id is named, exit 1.
    std::fs::remove_file(archive.join("sub/img3.png")).unwrap();
    let out = succeed(&["delete", i, "--missing", a, "--dry-run"]);
    assert!(
        out.starts_with("img3\n") && out.contains("would delete 1"),
        "{out}"
    );
    let o = cxr(&[
        "delete",
        i,
        "--missing",
        a,
        "--ids",
        "no-such-doc",
        "--json",
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    assert!(err.contains("no-such-doc: no such document"), "{err}");
    let v = parse(&out);
    assert_eq!(
        (v["deleted"].as_u64(), v["documents"].as_u64()),
        (Some(1), Some(2))
    );
    // An archive that is not there is refused rather than emptying the index.
    let o = cxr(&["delete", i, "--missing", "/no/such/archive"]);
    assert_eq!(o.status.code(), Some(2));

    let query = format!("{a}/img2.png");
    let search_ids = || hit_ids(&s.search_json(i, &["--image", &query]));
    let before = search_ids();
    assert_eq!(before.len(), 2);
    assert!(!before.contains(&"img3".to_string()));

    let v = parse(&succeed(&["compact", i, "--json"]));
    assert_eq!(
        (v["vectors_removed"].as_u64(), v["vector_count"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(search_ids(), before);
    succeed(&["check", i]);

    // Two new files with one content in one run: the first is indexed, the second is named
    // as its copy (the earlier copy of img2 still is one).
    image::GrayImage::from_fn(30, 30, |x, y| image::Luma([(x * y) as u8]))
        .save(archive.join("new-a.png"))
        .unwrap();
    std::fs::copy(archive.join("new-a.png"), archive.join("new-b.png")).unwrap();
    let (v, err) = index();
    assert_eq!(
        (v["indexed"].as_u64(), v["duplicates"].as_u64()),
        (Some(1), Some(2)),
        "{err}"
    );
    assert!(err.contains("new-b.png") && err.contains("same content as new-a.png"));

    // The same with the two files in batches of their own: the document added for the first
    // (not yet committed) answers for the second.
    image::GrayImage::from_fn(20, 20, |x, y| image::Luma([(x + 3 * y) as u8]))
        .save(archive.join("new-c.png"))
        .unwrap();
    std::fs::copy(archive.join("new-c.png"), archive.join("new-d.png")).unwrap();
    let o = s.index(i, &["--json", "--batch-size", "1"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    let v = parse(&out);
    assert_eq!(
        (v["indexed"].as_u64(), v["duplicates"].as_u64()),
        (Some(1), Some(3)),
        "{err}"
    );
    assert!(err.contains("same content as new-c.png"), "{err}");
}

/// Public checkpoint folders work with `--model` like the project's own: RAD-DINO's layout
/// (image only) indexes and answers image queries, refuses text queries with a clear message,
/// and the index records it; a text-only BERT cannot index images.
#[test]
fn checkpoint_folders_index_search_and_refuse_what_they_cannot_embed() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity");
    let dino = &path_str(&fixtures.join("dinov2"));
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    std::fs::create_dir(&archive).unwrap();
    let png = archive.join("a.png");
    std::fs::copy(fixtures.join("image.png"), &png).unwrap();
    let i = &path_str(&dir.path().join("idx"));
    let a = &path_str(&archive);
    succeed(&["index", a, "--out", i, "--model", dino]);

    let info = succeed(&["info", i]);
    assert!(info.contains("dinov2"), "{info}");

    let out = succeed(&["search", i, "--image", &path_str(&png), "--model", dino]);
    assert!(out.contains("a"), "{out}");
    // No text tower, no findings to match by: the image is matched by appearance, and says so.
    let png = path_str(&png);
    let v = parse(&succeed(&[
        "search", i, "--image", &png, "--model", dino, "--json",
    ]));
    assert_eq!(v["matched_by"], "appearance");
    assert_eq!(v["results"][0]["id"], "a");

    let o = cxr(&["search", i, "--text", "effusion", "--model", dino]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("no text tower"), "{err}");

    let o = cxr(&[
        "index",
        a,
        "--out",
        &path_str(&dir.path().join("idx2")),
        "--model",
        &path_str(&fixtures.join("bert")),
    ]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("text only"), "{err}");
}

/// `cxr search IDX --text effusion --rerank 5 --image-root ROOT --model MODEL EXTRA...`
fn reranked_query<'a>(
    idx: &'a str,
    model: &'a str,
    root: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "search",
        idx,
        "--text",
        "effusion",
        "--rerank",
        "5",
        "--image-root",
        root,
        "--model",
        model,
    ];
    args.extend_from_slice(extra);
    args
}

/// A tiny NIH-shaped data folder: bright images labelled Effusion, dark ones No Finding, in
/// `train/` (8) and `valid/` (4), with `labels.csv`.
fn make_nih_like(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    let root = data.join("nih1000");
    let mut csv = String::from("path,Finding Labels\n");
    for (split, n) in [("train", 8u32), ("valid", 4)] {
        std::fs::create_dir_all(root.join(split)).unwrap();
        for k in 0..n {
            let bright = k % 2 == 0;
            let name = format!("{split}/{k}.png");
            image::GrayImage::from_fn(32, 32, |x, y| {
                let base = if bright { 200 } else { 50 };
                image::Luma([(base + (x * 7 + y * 3 + k) % 40) as u8])
            })
            .save(root.join(&name))
            .unwrap();
            let label = if bright { "Effusion" } else { "No Finding" };
            csv.push_str(&format!("{name},{label}\n"));
        }
    }
    std::fs::write(root.join("labels.csv"), csv).unwrap();
    data
}

#[test]
fn rerank_trains_reorders_text_hits_and_refuses_what_it_cannot_score() {
    let s = Setup::new();
    let (a, m) = (s.archive.as_str(), s.model.as_str());
    let data = make_nih_like(s.dir.path());
    let out = succeed(&[
        "train-reranker",
        "--data",
        &path_str(&data),
        "--model",
        m,
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--width",
        "16",
        "--queries",
        "2",
        "--layers",
        "1",
        "-q",
    ]);
    assert!(out.contains("trained the reranker for 2 epochs"), "{out}");
    let model = Path::new(m);
    assert!(model.join("reranker/model.safetensors").is_file());
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model.join("reranker/config.json")).unwrap())
            .unwrap();
    assert_eq!(config["format"], "cxr-reranker");
    assert_eq!(config["training"]["history"].as_array().unwrap().len(), 2);

    let i = &s.path("idx");
    let o = s.index(i, &["-q"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let search = |extra: &[&str]| {
        let mut args = vec!["search", i, "--text", "pleural effusion", "--model", m];
        args.extend_from_slice(extra);
        cxr(&args)
    };

    // Every hit of the top 5 gets a match probability; the text output says it was reranked.
    let v = s.search_json(
        i,
        &[
            "--text",
            "pleural effusion",
            "--rerank",
            "5",
            "--image-root",
            a,
        ],
    );
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    let probs: Vec<f64> = results
        .iter()
        .map(|r| r["rerank"].as_f64().expect("a rerank score"))
        .collect();
    assert!(probs.windows(2).all(|w| w[0] >= w[1]), "{probs:?}");
    assert!(probs.iter().all(|p| (0.0..=1.0).contains(p)));
    assert_eq!(v["reranked"]["scored"], 3);
    let o = search(&["--rerank", "5", "--image-root", a]);
    let (out, _) = text(&o);
    assert!(
        out.contains("rerank 0.") && out.contains("reranked: the top 5"),
        "{out}"
    );
    // Without --rerank no hit has a rerank score.
    let (out, _) = text(&search(&["--json"]));
    assert!(!out.contains("\"rerank\""), "{out}");

    // A candidate whose file is gone keeps its place, named by document id.
    let moved = s.dir.path().join("img2.png");
    let img2 = Path::new(a).join("img2.png");
    std::fs::rename(&img2, &moved).unwrap();
    let o = search(&["--rerank", "5", "--image-root", a, "--json"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("document img2: not reranked") && err.contains("kept at its first-stage"),
        "{err}"
    );
    let v = parse(&out);
    let gone = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "img2")
        .unwrap();
    assert!(gone.get("rerank").is_none());
    std::fs::rename(&moved, &img2).unwrap();

    // Report-only documents cannot be reranked: said once, order kept.
    let reports = s.write("reports.jsonl", REPORTS);
    succeed(&[
        "index",
        "--reports",
        &reports,
        "--out",
        i,
        "--model",
        m,
        "-q",
    ]);
    let o = search(&["--rerank", "10", "--image-root", a]);
    let (_, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert_eq!(
        err.matches("report-only documents have no image to rerank")
            .count(),
        1,
        "{err}"
    );

    // Refusals, each with its reason.
    let refused = |args: &[&str], reason: &str| {
        let o = cxr(args);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(reason), "{err}");
    };
    let text_query = ["search", i, "--text", "pleural effusion", "--model", m];
    refused(
        &[
            &text_query[..],
            &["--rerank", "5", "--image-root", a, "--reranker", i],
        ]
        .concat(),
        "no reranker here",
    );
    refused(
        &[&text_query[..], &["--rerank", "5"]].concat(),
        "give --image-root",
    );
    let q = format!("{a}/img1.png");
    refused(
        &["search", i, "--image", &q, "--rerank", "5", "--model", m],
        "applies to --text queries",
    );
    let d = &s.path("deid");
    succeed(&["index", a, "--out", d, "--deidentify", "--model", m, "-q"]);
    refused(&reranked_query(d, m, a, &[]), "built with --deidentify");
    // A reranker trained for another model is refused.
    let other = &path_str(&make_model_seeded(s.dir.path(), "other", 4));
    let oi = &s.path("other-idx");
    succeed(&["index", a, "--out", oi, "--model", other, "-q"]);
    let reranker = path_str(&model.join("reranker"));
    refused(
        &reranked_query(oi, other, a, &["--reranker", &reranker]),
        "was trained for model",
    );

    // eval reranks text queries.
    let queries = s.write(
        "q.jsonl",
        r#"{"id": "q1", "corpus": "t", "group": "finding", "text": "pleural effusion"}
"#,
    );
    let qrels = s.write("qrels.txt", "q1 0 img1 2\nq1 0 img3 1\n");
    let run = s.path("rerank.run");
    let o = cxr(&[
        "eval",
        i,
        "--queries",
        &queries,
        "--qrels",
        &qrels,
        "--model",
        m,
        "--rerank",
        "3",
        "--image-root",
        a,
        "--run",
        &run,
    ]);
    let (_, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("reranked the top 3 hits of 1 text queries"),
        "{err}"
    );
    // The run (which trec_eval orders by score) ranks as the reranked search does: a run that
    // kept first-stage scores would undo the rerank in every metric.
    let run_text = std::fs::read_to_string(&run).unwrap();
    let field = |l: &str, n: usize| l.split_whitespace().nth(n).unwrap().to_string();
    let run_ids: Vec<String> = run_text.lines().take(3).map(|l| field(l, 2)).collect();
    let run_scores: Vec<f64> = run_text
        .lines()
        .map(|l| field(l, 4).parse().unwrap())
        .collect();
    assert!(run_scores.windows(2).all(|w| w[0] > w[1]), "{run_scores:?}");
    let v = s.search_json(
        i,
        &[
            "--text",
            "pleural effusion",
            "--rerank",
            "3",
            "--image-root",
            a,
            "-k",
            "3",
        ],
    );
    assert_eq!(run_ids, hit_ids(&v));
}
