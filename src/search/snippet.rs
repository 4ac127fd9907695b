//! The report sentence shown beside a hit.

/// The sentence of a report that best matches the query (most shared word stems), cut to
/// `max_chars`; the first sentence when none matches.
pub fn snippet(report: &str, query: &str, max_chars: usize) -> String {
    let stems = |s: &str| -> Vec<String> {
        s.split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.len() > 2)
            .map(|w| w.to_lowercase().chars().take(5).collect())
            .collect()
    };
    let q = stems(query);
    let sentences = report
        .split_inclusive(['.', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let mut best = ("", 0usize);
    for (i, s) in sentences.enumerate() {
        let overlap = stems(s).iter().filter(|w| q.contains(w)).count();
        if i == 0 || overlap > best.1 {
            best = (s, overlap);
        }
    }
    let s = best.0;
    if s.chars().count() <= max_chars {
        s.to_string()
    } else {
        let cut: String = s.chars().take(max_chars.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}
