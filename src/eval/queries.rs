//! The query-set format of the benchmark: JSON Lines, one query a line, with `id`, `corpus`,
//! `group` and exactly one of `text` or `image` (a path relative to the query file's folder).
//! Other fields are ignored so the format can grow without breaking older binaries.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::EvalError;

/// One benchmark query.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub id: String,
    /// The corpus the query is judged against (`nih`, `covid`, `iu`, ...).
    pub corpus: String,
    /// What the query tests (`finding`, `negation-trap`, `image`, ...); the report averages per
    /// group.
    pub group: String,
    pub kind: QueryKind,
}

/// What is searched for.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryKind {
    Text(String),
    /// An example image, its path already resolved against the query file's folder.
    Image(PathBuf),
}

#[derive(serde::Deserialize)]
struct RawQuery {
    id: String,
    corpus: String,
    group: String,
    text: Option<String>,
    image: Option<String>,
}

/// Reads a query set; with `corpus`, keeps only that corpus's queries (and fails when there are
/// none, naming the corpora the file has, since an empty evaluation is always a mistake).
pub fn load_queries(path: &Path, corpus: Option<&str>) -> Result<Vec<Query>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|source| EvalError::Io {
        path: path.to_owned(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new(""));
    let all = parse_queries_from(&text, path, base)?;
    let Some(corpus) = corpus else {
        return Ok(all);
    };
    let mut available: Vec<&str> = all.iter().map(|q| q.corpus.as_str()).collect();
    available.sort_unstable();
    available.dedup();
    let available = available.join(", ");
    let kept: Vec<Query> = all.iter().filter(|q| q.corpus == corpus).cloned().collect();
    if kept.is_empty() {
        return Err(EvalError::NoQueries {
            path: path.to_owned(),
            corpus: corpus.to_owned(),
            available,
        });
    }
    Ok(kept)
}

/// Parses query-set text; image paths are resolved against `base` and errors name the source as
/// `<queries>`.
pub fn parse_queries(text: &str, base: &Path) -> Result<Vec<Query>, EvalError> {
    parse_queries_from(text, Path::new("<queries>"), base)
}

fn parse_queries_from(text: &str, path: &Path, base: &Path) -> Result<Vec<Query>, EvalError> {
    let mut queries = Vec::new();
    let mut first_seen: HashMap<String, usize> = HashMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let syntax = |reason: String| EvalError::Syntax {
            path: path.to_owned(),
            line,
            reason,
        };
        let q: RawQuery = serde_json::from_str(raw).map_err(|e| syntax(format!("{e}")))?;
        for (name, value) in [("id", &q.id), ("corpus", &q.corpus), ("group", &q.group)] {
            if value.trim().is_empty() {
                return Err(syntax(format!("`{name}` is empty")));
            }
        }
        // A query id goes into a whitespace-separated run file.
        if q.id.chars().any(char::is_whitespace) {
            return Err(syntax(format!("query id `{}` contains whitespace", q.id)));
        }
        let kind = match (q.text, q.image) {
            (Some(text), None) if !text.trim().is_empty() => QueryKind::Text(text),
            (Some(_), None) => return Err(syntax("`text` is empty".to_owned())),
            (None, Some(image)) if !image.trim().is_empty() => QueryKind::Image(base.join(image)),
            (None, Some(_)) => return Err(syntax("`image` is empty".to_owned())),
            (Some(_), Some(_)) => {
                return Err(syntax(
                    "has both `text` and `image`; a query is one or the other".to_owned(),
                ))
            }
            (None, None) => return Err(syntax("has neither `text` nor `image`".to_owned())),
        };
        if let Some(&first_line) = first_seen.get(&q.id) {
            return Err(EvalError::DuplicateQuery {
                path: path.to_owned(),
                line,
                qid: q.id,
                first_line,
            });
        }
        first_seen.insert(q.id.clone(), line);
        queries.push(Query {
            id: q.id,
            corpus: q.corpus,
            group: q.group,
            kind,
        });
    }
    Ok(queries)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SET: &str = r#"{"id": "t1", "corpus": "nih", "group": "finding", "text": "effusion"}

{"id": "i1", "corpus": "nih", "group": "image", "image": "../data/x.png", "note": "extra"}
{"id": "t2", "corpus": "iu", "group": "normal", "text": "normal chest"}
"#;

    #[test]
    fn parses_text_and_image_queries() {
        let qs = parse_queries(SET, Path::new("bench")).expect("valid set");
        assert_eq!(qs.len(), 3);
        assert_eq!(qs[0].kind, QueryKind::Text("effusion".into()));
        assert_eq!(
            qs[1].kind,
            QueryKind::Image(Path::new("bench").join("../data/x.png"))
        );
        assert_eq!(qs[2].corpus, "iu");
        assert_eq!(qs[2].group, "normal");
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            (r#"{"id": "a", "corpus": "c", "group": "g"}"#, "neither"),
            (
                r#"{"id": "a", "corpus": "c", "group": "g", "text": "t", "image": "i"}"#,
                "both",
            ),
            (r#"{"id": "a", "corpus": "c", "text": "t"}"#, "group"),
            (
                r#"{"id": "a b", "corpus": "c", "group": "g", "text": "t"}"#,
                "whitespace",
            ),
            (
                r#"{"id": "a", "corpus": "c", "group": "g", "text": " "}"#,
                "empty",
            ),
            ("not json", "expected"),
        ];
        for (line, needle) in cases {
            let text = format!("\n{line}\n");
            let err = parse_queries(&text, Path::new("")).unwrap_err().to_string();
            assert!(err.starts_with("<queries>:2: "), "{err}");
            assert!(err.contains(needle), "{err} lacks {needle}");
        }
        let dup = "{\"id\":\"a\",\"corpus\":\"c\",\"group\":\"g\",\"text\":\"t\"}\n".repeat(2);
        let err = parse_queries(&dup, Path::new("")).unwrap_err().to_string();
        assert!(
            err.contains(":2: query `a` appears twice (first on line 1)"),
            "{err}"
        );
    }
}
