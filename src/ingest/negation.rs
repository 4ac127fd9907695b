//! Negation and uncertainty in report text, so that report search can index what a report
//! asserts rather than every finding it mentions.
//!
//! Most radiology reports that name a finding deny it ("No pneumothorax or pleural effusion."),
//! so a plain BM25 index ranks denials as high as findings. This module follows the NegEx
//! algorithm of Chapman et al. (2001), "A simple algorithm for identifying negated findings and
//! diseases in discharge summaries", J Biomed Inform 34(5):301-310: trigger phrases open a
//! *scope* of neighbouring words that they negate. The trigger lists below are our own, written
//! for chest radiograph reports; the code is not derived from any NegEx implementation.
//!
//! How a report is read:
//!
//! - **Sentences** end at a newline, `;`, or `.`/`!`/`?`/`:` followed by white space or the end
//!   of the text. A period inside a token ("1.5 cm", "e.g") never ends one, nor does the period
//!   after a known abbreviation ("e.g.", "i.e.", "vs.", "approx.", "Dr.").
//! - **Tokens** are words (letters and digits, with inner `-`, `'`, `.`, `/`: "x-XXXX", "1.5",
//!   "and/or") and single punctuation marks. IU's de-identification token `XXXX` is an ordinary
//!   word: it counts towards a scope's length and carries no meaning of its own.
//! - **Triggers** are matched case-insensitively on whole words, longest first, left to right:
//!   - *pre-negation* ("no", "without", "negative for", "no evidence of"...) negates the words
//!     after it;
//!   - *post-negation* ("... is not seen", "... are absent", "... unlikely") negates the words
//!     before it;
//!   - a few verbs ("resolved", "removed", "cleared", "ruled out") are pre-negation when words
//!     follow them in the sentence ("resolved left effusion") and post-negation otherwise
//!     ("the left effusion resolved.");
//!   - *uncertainty* triggers ("possible", "cannot exclude", "... cannot be excluded") mark
//!     their scope uncertain;
//!   - *pseudo-triggers* ("no change", "no significant interval change", "not only",
//!     "no increase") look like negations but are not: their words stay asserted and what
//!     follows is not negated ("no change in the small left effusion" asserts an effusion);
//!   - *terminators* ("but", "however", "although", "except", "which", "secondary to"...) only
//!     end scopes.
//! - **Scope** runs from a trigger to the next trigger of any kind, a terminator, the sentence
//!   end, or an item of more than [`MAX_SCOPE_WORDS`] words, whichever comes first. The window
//!   counts words since the last list separator (comma, "and", "or", "nor"), so a long list
//!   stays in scope while a long run-on phrase does not: in "No pneumothorax, effusion,
//!   or consolidation" all three are negated. A comma or "and" ends the scope when what lies
//!   beyond it is a clause of its own: it starts with a determiner or pronoun ("the", "there",
//!   "it"...), has a verb that is not a "seen"-type participle ("the heart *is* normal", but not
//!   "consolidation *is* seen"), or a normality word ("normal", "clear", "unremarkable",
//!   "stable"...). So "No pneumothorax, heart size normal" keeps "heart size normal", and
//!   "The heart is normal and pneumothorax is not seen" negates only "pneumothorax".
//!   "with" is *not* a terminator: in chest reports it mostly introduces the negation
//!   ("lungs are clear with no effusion"), and "No X with Y" usually denies both.
//! - **Polarity** of a word: uncertainty wins over negation where scopes overlap (keeping a
//!   word is the safe error for search). Trigger words take their trigger's polarity
//!   (negation triggers are dropped with their scope), pseudo-triggers and terminators are
//!   asserted.
//!
//! [`asserted_text`] keeps asserted *and uncertain* words: a report saying "cannot exclude
//! pneumonia" should be found by a search for pneumonia, ranked by BM25 like any other mention.
//! Only negated words are dropped. A fully negated report ("No acute cardiopulmonary
//! abnormality.") yields an empty string.

use std::sync::OnceLock;

/// Most words a scope reaches within one list item (counted from the trigger or the last
/// comma, "and", "or", "nor"). Chapman et al. used a 5-word window on discharge summaries;
/// chest report lists run longer ("No focal consolidation, suspicious pulmonary opacity, large
/// pleural effusion, or pneumothorax is identified"), so the window applies per item and
/// sentence ends, terminators and clause breaks do most of the bounding.
pub const MAX_SCOPE_WORDS: usize = 8;

/// What a report says about the words of a span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Polarity {
    /// Stated as present, or simply not negated ("Heart size normal.").
    Asserted,
    /// Inside the scope of a negation trigger, or the trigger itself ("No pneumothorax").
    Negated,
    /// Hedged: "possible", "cannot exclude" and their scopes.
    Uncertain,
}

/// A run of consecutive tokens of one polarity: byte offsets into the analysed text, from the
/// first token's start to the last token's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    pub polarity: Polarity,
}

/// One sentence: byte offsets into the analysed text (trimmed, with its final punctuation) and
/// its spans in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sentence {
    pub start: usize,
    pub end: usize,
    pub spans: Vec<Span>,
}

impl Sentence {
    /// The sentence's text within `report`, the text it was analysed from.
    pub fn text<'a>(&self, report: &'a str) -> &'a str {
        &report[self.start..self.end]
    }
}

/// Splits `report` into sentences and labels every span asserted, negated or uncertain.
pub fn analyse(report: &str) -> Vec<Sentence> {
    split_sentences(report)
        .into_iter()
        .filter_map(|(start, end)| {
            let tokens = tokenize(report, start, end);
            if tokens.is_empty() {
                return None;
            }
            let polarity = label(&tokens);
            let mut spans: Vec<Span> = Vec::new();
            for (t, p) in tokens.iter().zip(polarity) {
                match spans.last_mut() {
                    Some(s) if s.polarity == p => s.end = t.end,
                    _ => spans.push(Span {
                        start: t.start,
                        end: t.end,
                        polarity: p,
                    }),
                }
            }
            Some(Sentence { start, end, spans })
        })
        .collect()
}

/// The report without its negated spans: asserted and uncertain words in their order, each
/// kept sentence ending with a period. Empty when everything is negated.
pub fn asserted_text(report: &str) -> String {
    let mut out = String::new();
    for sentence in analyse(report) {
        let kept: Vec<&str> = sentence
            .spans
            .iter()
            .filter(|s| s.polarity != Polarity::Negated)
            .map(|s| trim_punct(&report[s.start..s.end]))
            .filter(|s| !s.is_empty())
            .collect();
        if !kept.iter().any(|s| has_content(s)) {
            // Nothing but the frame of a negated statement ("There is.", "1.").
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        for (i, piece) in kept.iter().enumerate() {
            // A sentence's final mark after a dropped span attaches to the word before it.
            if i > 0 && !piece.starts_with(['.', '!', '?', ')']) {
                out.push(' ');
            }
            out.push_str(piece);
        }
        if !out.ends_with(['.', '!', '?']) {
            out.push('.');
        }
    }
    out
}

/// The words a text denies, lower-cased, in order: the negated scopes without their triggers
/// ("no", "without", "is not seen"), function words or numbers. "No pneumothorax or large
/// effusion." gives `pneumothorax`, `large`, `effusion`. What a report denies is indexed apart
/// from what it asserts, and a query's denied words ask for reports that deny them.
pub fn negated_words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (start, end) in split_sentences(text) {
        let tokens = tokenize(text, start, end);
        let mut is_trigger = vec![false; tokens.len()];
        for m in find_triggers(&tokens) {
            is_trigger[m.start..m.end]
                .iter_mut()
                .for_each(|b| *b = true);
        }
        for ((token, polarity), trigger) in tokens.iter().zip(label(&tokens)).zip(is_trigger) {
            let Some(word) = token.word() else { continue };
            if polarity == Polarity::Negated
                && !trigger
                && !FUNCTION_WORDS.contains(&word)
                && !word.chars().all(|c| c.is_ascii_digit())
            {
                out.push(word.to_string());
            }
        }
    }
    out
}

/// Words that carry no finding: a kept sentence made only of them (and numbers) is dropped.
const FUNCTION_WORDS: &[&str] = &[
    "a",
    "an",
    "the",
    "there",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "does",
    "do",
    "did",
    "has",
    "have",
    "it",
    "this",
    "these",
    "of",
    "to",
    "in",
    "on",
    "with",
    "and",
    "or",
    "also",
    "again",
    "specifically",
    "otherwise",
    "identified",
    "seen",
    "noted",
    "present",
];

/// Whether `s` has a word that is neither a number nor a function word.
fn has_content(s: &str) -> bool {
    s.split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty() && !w.chars().all(|c| c.is_ascii_digit()))
        .any(|w| !FUNCTION_WORDS.contains(&w.to_lowercase().as_str()))
}

/// Drops punctuation a removed span left dangling: "Heart normal, [no effusion]" keeps
/// "Heart normal", not "Heart normal,". Keeps a final `.`, `!` or `?`.
fn trim_punct(s: &str) -> &str {
    let dangling = |c: char| c.is_whitespace() || matches!(c, ',' | ';' | ':');
    s.trim_matches(dangling)
}

// ---------------------------------------------------------------------------------------------
// Sentences and tokens

/// Words after which a period does not end a sentence (compared without the period).
const ABBREVIATIONS: &[&str] = &["e.g", "i.e", "vs", "approx", "dr", "mr", "mrs", "ms", "fig"];

/// Byte ranges of the sentences of `text`, trimmed, in order; empty ones left out.
fn split_sentences(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut push = |from: usize, to: usize| {
        let piece = &text[from..to];
        let lead = piece.len() - piece.trim_start().len();
        let trail = piece.len() - piece.trim_end().len();
        if from + lead < to - trail {
            out.push((from + lead, to - trail));
        }
    };
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let next = chars.peek().map(|&(_, n)| n);
        let ends = match c {
            '\n' | '\r' | ';' => true,
            '.' | '!' | '?' | ':' => {
                next.is_none_or(char::is_whitespace) && !(c == '.' && is_abbreviation(&text[..i]))
            }
            _ => false,
        };
        if ends {
            let end = i + c.len_utf8();
            push(start, end);
            start = end;
        }
    }
    push(start, text.len());
    out
}

/// Whether `before` (the text up to a period) ends with a known abbreviation.
fn is_abbreviation(before: &str) -> bool {
    let word: String = before
        .chars()
        .rev()
        .take_while(|c| c.is_alphanumeric() || *c == '.')
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    ABBREVIATIONS.iter().any(|a| word.eq_ignore_ascii_case(a))
}

#[derive(Debug, Clone)]
struct Token {
    start: usize,
    end: usize,
    /// Lower-cased word; `None` for punctuation.
    word: Option<String>,
    /// The mark, for punctuation.
    punct: Option<char>,
}

impl Token {
    fn word(&self) -> Option<&str> {
        self.word.as_deref()
    }
}

/// Words and punctuation of `text[start..end]`. A word is a run of letters and digits, with
/// `-`, `'`, `.` or `/` allowed between two of them.
fn tokenize(text: &str, start: usize, end: usize) -> Vec<Token> {
    let s = &text[start..end];
    let chars: Vec<(usize, char)> = s.char_indices().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c.is_alphanumeric() {
            let mut j = i + 1;
            while j < chars.len() {
                let d = chars[j].1;
                let inner = matches!(d, '-' | '\'' | '.' | '/' | '\u{2019}')
                    && chars.get(j + 1).is_some_and(|&(_, e)| e.is_alphanumeric());
                if d.is_alphanumeric() || inner {
                    j += 1;
                } else {
                    break;
                }
            }
            let to = chars.get(j).map_or(s.len(), |&(b, _)| b);
            tokens.push(Token {
                start: start + at,
                end: start + to,
                word: Some(s[at..to].to_lowercase().replace('\u{2019}', "'")),
                punct: None,
            });
            i = j;
        } else {
            tokens.push(Token {
                start: start + at,
                end: start + at + c.len_utf8(),
                word: None,
                punct: Some(c),
            });
            i += 1;
        }
    }
    tokens
}

// ---------------------------------------------------------------------------------------------
// Triggers

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    PreNeg,
    PostNeg,
    /// Pre-negation when words follow in the sentence, post-negation otherwise.
    EitherNeg,
    PreUncertain,
    PostUncertain,
    Pseudo,
    Terminator,
}

/// Negate what follows.
const PRE_NEGATION: &[&str] = &[
    "no",
    "not",
    "without",
    "never",
    "nor",
    "neither",
    "negative for",
    "free of",
    "clear of",
    "absence of",
    "no evidence of",
    "no evidence for",
    "no evidence to suggest",
    "no radiographic evidence of",
    "no definite evidence of",
    "no convincing evidence of",
    "no sign of",
    "no signs of",
    "no findings of",
    "no findings to suggest",
    "no longer",
    "without evidence of",
    "without signs of",
    "rules out",
    "removal of",
    "interval removal of",
    "resolution of",
    "interval resolution of",
    "fails to reveal",
    "failed to reveal",
    "does not show",
    "did not show",
    "does not demonstrate",
    "did not demonstrate",
    "isn't",
    "aren't",
    "wasn't",
    "weren't",
    "doesn't",
    "don't",
    "didn't",
    "denies",
    "denied",
];

/// Negate what precedes.
const POST_NEGATION: &[&str] = &[
    "not seen",
    "is not seen",
    "are not seen",
    "was not seen",
    "were not seen",
    "not identified",
    "not visualized",
    "not visualised",
    "not appreciated",
    "not demonstrated",
    "not present",
    "not evident",
    "not detected",
    "not noted",
    "not visible",
    "not apparent",
    "not definitely seen",
    "not clearly seen",
    "no longer seen",
    "no longer visualized",
    "no longer present",
    "no longer identified",
    "no longer evident",
    "is absent",
    "are absent",
    "absent",
    "has resolved",
    "have resolved",
    "has cleared",
    "have cleared",
    "has been removed",
    "have been removed",
    "is unlikely",
    "are unlikely",
    "unlikely",
    "is negative",
    "are negative",
    "was negative",
    "were negative",
    "is excluded",
    "are excluded",
    "has been excluded",
];

/// Negate what follows if anything does, else what precedes.
const EITHER_NEGATION: &[&str] = &["resolved", "cleared", "removed", "ruled out"];

/// Hedge what follows.
const PRE_UNCERTAINTY: &[&str] = &[
    "possible",
    "possibly",
    "probable",
    "probably",
    "likely",
    "questionable",
    "question of",
    "equivocal",
    "suspected",
    "presumed",
    "presumably",
    "may represent",
    "may be",
    "might be",
    "might represent",
    "could be",
    "could represent",
    "suspicious for",
    "concerning for",
    "worrisome for",
    "suggestive of",
    "suggesting",
    "suggests",
    "cannot exclude",
    "can not exclude",
    "can't exclude",
    "cannot rule out",
    "can not rule out",
    "can't rule out",
    "rule out",
    "r/o",
    "versus",
    "vs",
    "differential includes",
    "differential diagnosis includes",
];

/// Hedge what precedes.
const POST_UNCERTAINTY: &[&str] = &[
    "cannot be excluded",
    "can not be excluded",
    "can't be excluded",
    "could not be excluded",
    "not be excluded",
    "cannot be ruled out",
    "can not be ruled out",
    "could not be ruled out",
    "not be ruled out",
    "not excluded",
    "is not excluded",
    "are not excluded",
    "not entirely excluded",
    "not ruled out",
    "is suspected",
    "are suspected",
    "is possible",
    "is likely",
    "are likely",
    "is questioned",
];

/// Look like negations, are not.
const PSEUDO: &[&str] = &[
    "no change",
    "no changes",
    "no significant change",
    "no interval change",
    "no significant interval change",
    "no appreciable change",
    "no substantial change",
    "no definite change",
    "no suspicious change",
    "no further change",
    "no increase",
    "no significant increase",
    "no interval increase",
    "no decrease",
    "no improvement",
    "no worse",
    "not only",
    "not necessarily",
    "not changed",
    "not significantly changed",
    "not significantly different",
    "without change",
    "without significant change",
    "without interval change",
    "without improvement",
    "not certain if",
    "not certain whether",
    "gram negative",
];

/// End a scope and nothing else.
const TERMINATORS: &[&str] = &[
    "but",
    "however",
    "although",
    "though",
    "nevertheless",
    "yet",
    "still",
    "except",
    "aside from",
    "apart from",
    "other than",
    "which",
    "who",
    "whereas",
    "while",
    "secondary to",
    "due to",
    "cause of",
    "source of",
    "etiology of",
    "reason for",
    "origin of",
];

/// List connectors: stay inside a scope and do not count towards its length.
const CONNECTORS: &[&str] = &["and", "or", "nor", "and/or"];

/// A comma or "and" followed by a chunk starting with one of these opens a new clause.
const CLAUSE_STARTERS: &[&str] = &[
    "the", "there", "this", "these", "that", "those", "it", "its", "they", "he", "she",
];

/// Verbs that make a chunk a clause of its own.
const VERBS: &[&str] = &[
    "is",
    "are",
    "was",
    "were",
    "be",
    "appears",
    "appear",
    "remains",
    "remain",
    "measures",
    "measure",
    "has",
    "have",
    "had",
    "demonstrates",
    "shows",
    "show",
];

/// After a verb, these keep a chunk part of a list ("or consolidation is seen").
const SEEN: &[&str] = &[
    "seen",
    "identified",
    "noted",
    "present",
    "demonstrated",
    "visualized",
    "visualised",
    "evident",
    "appreciated",
    "detected",
    "shown",
    "visible",
    "apparent",
    "found",
    "observed",
];

/// Predicates of normality and stability: a chunk with one of them is a statement of its own
/// ("No effusion, heart size normal").
const PREDICATES: &[&str] = &[
    "normal",
    "normally",
    "clear",
    "unremarkable",
    "stable",
    "unchanged",
    "intact",
    "within",
    "grossly",
    "otherwise",
];

/// All triggers as word sequences with their kind, longest first.
fn triggers() -> &'static [(Vec<&'static str>, Kind)] {
    static TRIGGERS: OnceLock<Vec<(Vec<&'static str>, Kind)>> = OnceLock::new();
    TRIGGERS.get_or_init(|| {
        let mut all: Vec<(Vec<&'static str>, Kind)> = Vec::new();
        for (list, kind) in [
            (PRE_NEGATION, Kind::PreNeg),
            (POST_NEGATION, Kind::PostNeg),
            (EITHER_NEGATION, Kind::EitherNeg),
            (PRE_UNCERTAINTY, Kind::PreUncertain),
            (POST_UNCERTAINTY, Kind::PostUncertain),
            (PSEUDO, Kind::Pseudo),
            (TERMINATORS, Kind::Terminator),
        ] {
            all.extend(
                list.iter()
                    .map(|t| (t.split_whitespace().collect::<Vec<_>>(), kind)),
            );
        }
        // Longest first; a stable sort keeps list order between equals.
        all.sort_by_key(|(words, _)| std::cmp::Reverse(words.len()));
        all
    })
}

/// A trigger found in a sentence: tokens `start..end`.
#[derive(Debug, Clone, Copy)]
struct Match {
    start: usize,
    end: usize,
    kind: Kind,
}

/// Longest trigger starting at each word, left to right, without overlaps.
fn find_triggers(tokens: &[Token]) -> Vec<Match> {
    let mut found = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let hit = tokens[i].word().and_then(|_| {
            triggers().iter().find(|(words, _)| {
                words.len() <= tokens.len() - i
                    && words
                        .iter()
                        .zip(&tokens[i..])
                        .all(|(w, t)| t.word() == Some(*w))
            })
        });
        match hit {
            Some((words, kind)) => {
                found.push(Match {
                    start: i,
                    end: i + words.len(),
                    kind: *kind,
                });
                i += words.len();
            }
            None => i += 1,
        }
    }
    found
}

fn is_in(word: Option<&str>, list: &[&str]) -> bool {
    word.is_some_and(|w| list.contains(&w))
}

/// Whether the token separates the items of a list: a comma or a connector.
fn is_list_separator(t: &Token) -> bool {
    t.punct == Some(',') || is_in(t.word(), CONNECTORS)
}

/// Whether the token is a comma or "and": where a list may end and a new clause begin.
fn is_break_point(t: &Token) -> bool {
    match &t.word {
        Some(w) => w == "and",
        None => t.punct == Some(','),
    }
}

/// Labels each token of one sentence.
fn label(tokens: &[Token]) -> Vec<Polarity> {
    let matches = find_triggers(tokens);
    let mut is_trigger = vec![false; tokens.len()];
    for m in &matches {
        is_trigger[m.start..m.end]
            .iter_mut()
            .for_each(|b| *b = true);
    }
    let mut negated = vec![false; tokens.len()];
    let mut uncertain = vec![false; tokens.len()];
    // Whether a word follows `from` before the next trigger.
    let has_words_after = |from: usize| {
        (from..tokens.len())
            .take_while(|&k| !is_trigger[k])
            .any(|k| tokens[k].word.is_some())
    };
    for m in &matches {
        let (forward, uncertainty) = match m.kind {
            Kind::PreNeg => (true, false),
            Kind::PostNeg => (false, false),
            Kind::EitherNeg => (has_words_after(m.end), false),
            Kind::PreUncertain => (true, true),
            Kind::PostUncertain => (false, true),
            Kind::Pseudo | Kind::Terminator => continue,
        };
        let target = if uncertainty {
            &mut uncertain
        } else {
            &mut negated
        };
        target[m.start..m.end].iter_mut().for_each(|b| *b = true);
        let scope = if forward {
            scope_forward(tokens, &is_trigger, m.end)
        } else {
            scope_backward(tokens, &is_trigger, m.start)
        };
        target[scope].iter_mut().for_each(|b| *b = true);
    }
    (0..tokens.len())
        .map(|k| {
            if uncertain[k] {
                Polarity::Uncertain
            } else if negated[k] {
                Polarity::Negated
            } else {
                Polarity::Asserted
            }
        })
        .collect()
}

/// Tokens `from..` that a pre-trigger ending at `from` reaches.
fn scope_forward(tokens: &[Token], is_trigger: &[bool], from: usize) -> std::ops::Range<usize> {
    let mut words = 0;
    let mut end = from;
    let mut k = from;
    while k < tokens.len() && !is_trigger[k] {
        let t = &tokens[k];
        if is_break_point(t) && k > from && opens_clause(&tokens[k + 1..], is_trigger, k + 1) {
            break;
        }
        if is_list_separator(t) {
            words = 0;
        } else if t.word().is_some() {
            words += 1;
            if words > MAX_SCOPE_WORDS {
                break;
            }
        }
        k += 1;
        end = k;
    }
    from..end
}

/// Tokens `..to` that a post-trigger starting at `to` reaches.
fn scope_backward(tokens: &[Token], is_trigger: &[bool], to: usize) -> std::ops::Range<usize> {
    let mut words = 0;
    let mut start = to;
    while start > 0 && !is_trigger[start - 1] {
        let t = &tokens[start - 1];
        if is_break_point(t) && start < to && closes_clause(&tokens[..start - 1], is_trigger) {
            // The "and" or comma joins the negated clause to the one before: it goes with it.
            start -= 1;
            break;
        }
        if is_list_separator(t) {
            words = 0;
        } else if t.word().is_some() {
            words += 1;
            if words > MAX_SCOPE_WORDS {
                break;
            }
        }
        start -= 1;
    }
    start..to
}

/// Whether the words after a comma or "and" (up to the next comma, connector or trigger) form
/// a clause of their own rather than the next item of a list.
fn opens_clause(rest: &[Token], is_trigger: &[bool], offset: usize) -> bool {
    let chunk: Vec<&Token> = rest
        .iter()
        .enumerate()
        .skip_while(|(_, t)| is_in(t.word(), CONNECTORS) || t.word().is_none())
        .take_while(|(j, t)| {
            !is_trigger[offset + j] && t.word().is_some() && !is_in(t.word(), CONNECTORS)
        })
        .map(|(_, t)| t)
        .collect();
    if chunk
        .first()
        .is_some_and(|t| is_in(t.word(), CLAUSE_STARTERS))
    {
        return true;
    }
    chunk.iter().enumerate().any(|(j, t)| {
        is_in(t.word(), PREDICATES)
            || (is_in(t.word(), VERBS) && !chunk.get(j + 1).is_some_and(|n| is_in(n.word(), SEEN)))
    })
}

/// Whether the words before a comma or "and" (back to the previous comma, connector or
/// trigger) are a clause of their own.
fn closes_clause(before: &[Token], is_trigger: &[bool]) -> bool {
    before
        .iter()
        .enumerate()
        .rev()
        .take_while(|(j, t)| !is_trigger[*j] && t.word().is_some() && !is_in(t.word(), CONNECTORS))
        .any(|(_, t)| is_in(t.word(), VERBS) || is_in(t.word(), PREDICATES))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The words of the asserted text, lower case, for order-insensitive checks.
    fn words(report: &str) -> Vec<String> {
        asserted_text(report)
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect()
    }

    fn keeps(report: &str, word: &str) -> bool {
        words(report).iter().any(|w| w == word)
    }

    /// Polarity of the first span containing `word` (case-insensitive, whole word).
    fn polarity_of(report: &str, word: &str) -> Polarity {
        let lower = report.to_lowercase();
        let at = lower
            .match_indices(word)
            .find(|(i, _)| {
                let before = lower[..*i].chars().next_back();
                let after = lower[i + word.len()..].chars().next();
                !before.is_some_and(char::is_alphanumeric)
                    && !after.is_some_and(char::is_alphanumeric)
            })
            .map(|(i, _)| i)
            .unwrap_or_else(|| panic!("{word} not in {report}"));
        analyse(report)
            .iter()
            .flat_map(|s| s.spans.iter())
            .find(|s| s.start <= at && at < s.end)
            .map(|s| s.polarity)
            .unwrap()
    }

    #[test]
    fn keeps_asserted_sentences_and_drops_denials() {
        assert_eq!(
            asserted_text("Heart size normal. No pneumothorax."),
            "Heart size normal."
        );
        assert_eq!(
            asserted_text(
                "Mild cardiomegaly. No pleural effusion. Degenerative changes of the spine."
            ),
            "Mild cardiomegaly. Degenerative changes of the spine."
        );
    }

    #[test]
    fn fully_negated_report_is_empty() {
        assert_eq!(asserted_text("No acute cardiopulmonary abnormality."), "");
        assert_eq!(
            asserted_text(
                "No acute cardiopulmonary disease. No evidence of metastatic disease to the lungs."
            ),
            ""
        );
        // The frame left by a negation carries nothing: no "There is." or "1.".
        assert_eq!(asserted_text("1. No acute cardiopulmonary process."), "");
        assert_eq!(
            asserted_text("There is no pneumothorax or pleural effusion."),
            ""
        );
        assert_eq!(asserted_text(""), "");
    }

    #[test]
    fn negated_lists_stay_negated() {
        for r in [
            "No pneumothorax, effusion, or consolidation.",
            "No pneumothorax, pleural effusion or focal airspace consolidation.",
            "There is no focal consolidation, pleural effusion, or pneumothorax.",
            "No focal consolidation, suspicious pulmonary opacity, large pleural effusion, or pneumothorax is identified.",
            "No displaced rib fractures, pneumothorax, or pleural effusion identified.",
            "The lungs are clear bilaterally with no focal infiltrate, pleural effusion, or pneumothorax.",
            "Lungs are clear without focal consolidation, pneumothorax, or effusion.",
            "No acute or active cardiac, pulmonary or pleural disease, pneumothorax or effusion.",
        ] {
            assert!(!keeps(r, "pneumothorax"), "{r} -> {}", asserted_text(r));
            assert!(!keeps(r, "effusion"), "{r} -> {}", asserted_text(r));
        }
        assert_eq!(
            asserted_text("The lungs are clear bilaterally with no focal infiltrate, pleural effusion, or pneumothorax."),
            "The lungs are clear bilaterally with."
        );
    }

    #[test]
    fn common_pre_negation_phrases() {
        for (r, finding) in [
            ("There is no evidence of pneumothorax.", "pneumothorax"),
            ("There are no XXXX of a pleural effusion.", "effusion"),
            ("Negative for pneumonia.", "pneumonia"),
            ("The lungs are free of focal airspace disease.", "airspace"),
            ("Lungs are clear of consolidation.", "consolidation"),
            ("No signs of edema.", "edema"),
            ("Absence of pleural fluid.", "fluid"),
            ("The heart is not enlarged.", "enlarged"),
            ("Resolved left lower lobe pneumonia.", "pneumonia"),
            ("Interval removal of the right chest tube.", "tube"),
            ("Without acute bony abnormality.", "bony"),
            ("No suspicious pulmonary nodules or masses.", "nodules"),
        ] {
            assert!(!keeps(r, finding), "{r} -> {}", asserted_text(r));
        }
    }

    #[test]
    fn post_negation_phrases() {
        for (r, finding) in [
            ("Pneumothorax is not seen.", "pneumothorax"),
            ("Pleural effusions are absent.", "effusions"),
            ("The left pleural effusion has resolved.", "effusion"),
            ("Focal consolidation not identified.", "consolidation"),
            ("Pneumothorax not visualized on this exam.", "pneumothorax"),
            ("Pneumonia is unlikely.", "pneumonia"),
            ("Effusion and pneumothorax are not seen.", "effusion"),
            (
                "Effusion, pneumothorax, or consolidation are not seen.",
                "effusion",
            ),
            ("The right basilar opacity resolved.", "opacity"),
        ] {
            assert!(!keeps(r, finding), "{r} -> {}", asserted_text(r));
        }
        // A clause of its own before the denied finding stays.
        assert_eq!(
            asserted_text("The heart is normal in size and pneumothorax is not seen."),
            "The heart is normal in size."
        );
        assert_eq!(
            asserted_text("Heart size normal, effusion is not seen."),
            "Heart size normal."
        );
    }

    #[test]
    fn pseudo_negations_are_not_negations() {
        let r = "No change in the small left effusion.";
        assert!(keeps(r, "effusion"), "{}", asserted_text(r));
        assert_eq!(polarity_of(r, "effusion"), Polarity::Asserted);
        for (r, finding) in [
            (
                "No significant interval change in cardiomegaly.",
                "cardiomegaly",
            ),
            (
                "No increase in the size of the right pneumothorax.",
                "pneumothorax",
            ),
            (
                "Not only atelectasis but also consolidation.",
                "atelectasis",
            ),
            ("The effusion is not significantly changed.", "effusion"),
            (
                "No change in moderate left pneumothorax with drainage catheter.",
                "pneumothorax",
            ),
        ] {
            assert!(keeps(r, finding), "{r} -> {}", asserted_text(r));
        }
    }

    #[test]
    fn uncertain_mentions_are_kept_and_marked() {
        let r = "Cannot exclude pneumonia.";
        assert_eq!(asserted_text(r), "Cannot exclude pneumonia.");
        assert_eq!(polarity_of(r, "pneumonia"), Polarity::Uncertain);
        for (r, finding) in [
            ("Early pneumonia cannot be excluded.", "pneumonia"),
            ("Small effusion not excluded.", "effusion"),
            ("Possible small left pleural effusion.", "effusion"),
            ("Opacity may represent atelectasis.", "atelectasis"),
            ("Findings suspicious for malignancy.", "malignancy"),
            ("Pneumothorax can not be ruled out.", "pneumothorax"),
        ] {
            assert!(keeps(r, finding), "{r} -> {}", asserted_text(r));
            assert_eq!(polarity_of(r, finding), Polarity::Uncertain, "{r}");
        }
        // An uncertainty trigger ends a negation scope.
        let r = "No pneumothorax, possible small effusion.";
        assert!(!keeps(r, "pneumothorax"));
        assert_eq!(polarity_of(r, "effusion"), Polarity::Uncertain);
    }

    #[test]
    fn terminators_and_clauses_end_scopes() {
        for (r, kept, dropped) in [
            (
                "No pneumothorax but small left effusion.",
                "effusion",
                "pneumothorax",
            ),
            (
                "No focal consolidation, however there is mild atelectasis.",
                "atelectasis",
                "consolidation",
            ),
            (
                "No effusion although the heart is enlarged.",
                "enlarged",
                "effusion",
            ),
            (
                "No pneumothorax and the heart size is normal.",
                "normal",
                "pneumothorax",
            ),
            ("No effusion, heart size normal.", "normal", "effusion"),
            (
                "No pleural effusion, the lungs are clear.",
                "clear",
                "effusion",
            ),
            (
                "No infiltrate except for left basilar atelectasis.",
                "atelectasis",
                "infiltrate",
            ),
        ] {
            assert!(keeps(r, kept), "{r} -> {}", asserted_text(r));
            assert!(!keeps(r, dropped), "{r} -> {}", asserted_text(r));
        }
    }

    #[test]
    fn normal_statements_survive() {
        let r =
            "The heart is normal in size. The mediastinum is unremarkable. The lungs are clear. \
                 There is no pleural effusion or pneumothorax. Normal chest x-XXXX.";
        assert_eq!(
            asserted_text(r),
            "The heart is normal in size. The mediastinum is unremarkable. The lungs are clear. \
             Normal chest x-XXXX."
        );
        let r = "Cardiac and mediastinal contours are within normal limits. No pneumothorax.";
        assert_eq!(
            asserted_text(r),
            "Cardiac and mediastinal contours are within normal limits."
        );
    }

    #[test]
    fn sentences_split_on_periods_newlines_semicolons_not_decimals_or_abbreviations() {
        let r = "Nodule measures 1.5 cm. No effusion; mild atelectasis\nNo pneumothorax";
        let texts: Vec<&str> = analyse(r).iter().map(|s| s.text(r)).collect();
        assert_eq!(
            texts,
            [
                "Nodule measures 1.5 cm.",
                "No effusion;",
                "mild atelectasis",
                "No pneumothorax"
            ]
        );
        assert_eq!(
            asserted_text(r),
            "Nodule measures 1.5 cm. mild atelectasis."
        );
        // "e.g." does not end the sentence, so the negation reaches past it.
        let r = "No acute findings, e.g. pneumothorax or effusion. Stable granuloma.";
        assert_eq!(analyse(r).len(), 2);
        assert_eq!(asserted_text(r), "Stable granuloma.");
    }

    #[test]
    fn a_negation_does_not_cross_a_sentence() {
        let r = "No pneumothorax. Small left pleural effusion.";
        assert_eq!(asserted_text(r), "Small left pleural effusion.");
        let r = "Heart size is normal. Pneumothorax is not seen. Atelectasis.";
        assert_eq!(asserted_text(r), "Heart size is normal. Atelectasis.");
    }

    #[test]
    fn xxxx_is_an_ordinary_word() {
        let r = "Calcified right hilar lymph XXXX. No XXXX pneumothorax.";
        assert_eq!(asserted_text(r), "Calcified right hilar lymph XXXX.");
        assert_eq!(polarity_of(r, "pneumothorax"), Polarity::Negated);
    }

    #[test]
    fn scope_window_ends_a_long_item() {
        // More than MAX_SCOPE_WORDS words with no list separator: the tail is not negated.
        let r = "No evidence of one two three four five six seven eight nine ten.";
        let kept = words(r);
        assert_eq!(kept, ["nine", "ten"]);
    }

    #[test]
    fn spans_cover_the_sentence_in_order() {
        let r = "Mild cardiomegaly without pulmonary edema, possible atelectasis.";
        let sentences = analyse(r);
        assert_eq!(sentences.len(), 1);
        let spans: Vec<(&str, Polarity)> = sentences[0]
            .spans
            .iter()
            .map(|s| (&r[s.start..s.end], s.polarity))
            .collect();
        assert_eq!(
            spans,
            [
                ("Mild cardiomegaly", Polarity::Asserted),
                ("without pulmonary edema,", Polarity::Negated),
                ("possible atelectasis.", Polarity::Uncertain),
            ]
        );
    }

    #[test]
    fn negated_words_leave_out_triggers_and_frames() {
        assert_eq!(
            negated_words("No pneumothorax or large pleural effusion. Heart is enlarged."),
            vec!["pneumothorax", "large", "pleural", "effusion"]
        );
        assert_eq!(
            negated_words("Pneumothorax is not seen. There is no evidence of consolidation."),
            vec!["pneumothorax", "consolidation"]
        );
        assert!(negated_words("Small left pleural effusion.").is_empty());
        assert!(negated_words("Possible small effusion.").is_empty());
        assert_eq!(
            negated_words("cardiomegaly without effusion"),
            vec!["effusion"]
        );
    }
}
