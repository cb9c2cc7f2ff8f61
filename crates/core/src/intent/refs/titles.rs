//! References by title: the products of the last answer (their titles in both languages, read from the
//! answer's own wording) and where a message names one of them, whole or by a distinctive part.

use std::ops::Range;

use super::*;

/// A product of the last answer with the titles it may be named by (either may be empty, e.g. when only
/// the answer's own wording of it is known).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Listed {
    pub asin: Asin,
    pub title_en: String,
    pub title_ja: String,
}

/// A title of the last answer's list named in a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TitleMention {
    pub asin: Asin,
    /// Where, in the [`fold`]ed message.
    pub span: Range<usize>,
    /// The whole title (else a distinctive part of it: "Diary" for "Paper Diary", "日記" for "紙の日記").
    pub whole: bool,
}

/// Words of a title too common to name it alone.
const TITLE_STOP: &[&str] = &["the", "a", "an", "of", "and", "no", "to", "in", "on", "wa", "ga", "de", "to"];

/// Words that, even when part of a title, name a position or ask for something ("Last" in "Last Diary").
fn positional(word: &str) -> bool {
    nth_word(word).is_some()
        || REF_NOUNS.contains(&word)
        || matches!(word, "last" | "final" | "middle" | "latter" | "former" | "top" | "bottom" | "next")
}

fn is_kanji_or_katakana(c: char) -> bool {
    matches!(c as u32, 0x30A0..=0x30FF | 0x4E00..=0x9FFF | 0x3400..=0x4DBF)
}

/// The kanji/katakana runs of a Japanese title (`紙の日記` -> `紙`, `日記`).
fn ja_runs(title: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in title.char_indices() {
        match (is_kanji_or_katakana(c), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push(&title[s..i]);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push(&title[s..]);
    }
    out
}

/// Where the title's words stand in `ws`, one slip per long word allowed.
fn find_words(ws: &[Word<'_>], title: &[&str]) -> Vec<Range<usize>> {
    if title.is_empty() || ws.len() < title.len() {
        return Vec::new();
    }
    (0..=ws.len() - title.len())
        .filter(|&i| title.iter().enumerate().all(|(k, t)| near(ws[i + k].text, t)))
        .map(|i| ws[i].start..ws[i + title.len() - 1].end)
        .collect()
}

/// The titles of `listed` that `folded` (a [`fold`]ed message) names: whole titles (case- and
/// width-insensitive, a slip per long word allowed), else the distinctive parts that belong to one
/// product of the list only. Parts shared by two listed titles ("Paper" of "Paper Diary" and "Paper
/// Kitchen"), and words that name a position ("Last" of "Last Diary") name nothing. In order of
/// appearance, never overlapping.
pub fn title_mentions(folded: &str, listed: &[Listed]) -> Vec<TitleMention> {
    let ws = words(folded);
    let mut out: Vec<TitleMention> = Vec::new();
    let overlaps =
        |out: &[TitleMention], r: &Range<usize>| out.iter().any(|m| m.span.start < r.end && r.start < m.span.end);
    for l in listed {
        for title in [&l.title_en, &l.title_ja] {
            let t = fold(title);
            let tw: Vec<&str> = words(&t).iter().map(|w| w.text).filter(|w| *w != "#").collect();
            let latin = t.chars().all(|c| c.is_ascii() || c.is_whitespace());
            let spans = if latin {
                // A one-word title that names a position ("Last") would take "the last one".
                if tw.len() == 1 && positional(tw[0]) { Vec::new() } else { find_words(&ws, &tw) }
            } else {
                let t = t.trim();
                if t.chars().count() < 2 {
                    Vec::new()
                } else {
                    folded.match_indices(t).map(|(i, m)| i..i + m.len()).collect()
                }
            };
            for span in spans {
                if !overlaps(&out, &span) {
                    out.push(TitleMention { asin: l.asin.clone(), span, whole: true });
                }
            }
        }
    }
    // Parts, only where no whole title was named.
    if out.is_empty() {
        let parts = |l: &Listed| -> Vec<String> {
            let mut v: Vec<String> = Vec::new();
            let en = fold(&l.title_en);
            v.extend(
                words(&en)
                    .iter()
                    .map(|w| w.text)
                    .filter(|w| w.len() >= 4 && !TITLE_STOP.contains(w) && !positional(w))
                    .map(str::to_owned),
            );
            let ja = fold(&l.title_ja);
            v.extend(
                ja_runs(&ja)
                    .into_iter()
                    .filter(|r| r.chars().count() >= 2 && !JA_WORDS.iter().any(|(w, _, _)| r.contains(w)))
                    .map(str::to_owned),
            );
            v
        };
        let all: Vec<(usize, Vec<String>)> = listed.iter().enumerate().map(|(i, l)| (i, parts(l))).collect();
        for (i, mine) in &all {
            for part in mine {
                let shared = all.iter().any(|(j, theirs)| j != i && theirs.iter().any(|p| p == part || near(p, part)));
                if shared {
                    continue;
                }
                let spans = if part.is_ascii() {
                    find_words(&ws, &[part.as_str()])
                } else {
                    folded.match_indices(part.as_str()).map(|(s, m)| s..s + m.len()).collect()
                };
                for span in spans {
                    if !overlaps(&out, &span) {
                        out.push(TitleMention { asin: listed[*i].asin.clone(), span, whole: false });
                    }
                }
            }
        }
    }
    out.sort_by_key(|m| m.span.start);
    out
}

/// `folded` with `spans` replaced by spaces (same length, so other spans stay valid).
pub(crate) fn blank(folded: &str, spans: impl IntoIterator<Item = Range<usize>>) -> String {
    let mut bytes = folded.as_bytes().to_vec();
    for r in spans {
        if r.end <= bytes.len() && folded.is_char_boundary(r.start) && folded.is_char_boundary(r.end) {
            bytes[r].fill(b' ');
        }
    }
    String::from_utf8(bytes).unwrap_or_default()
}

/// The products of an answer with the title it calls each by: the words just before `(ASIN)` (or
/// `（ASIN）`, `(ASIN: ...)`, `ASIN ...` in brackets) back to the start of the line, a list number, a
/// bullet or a colon, without markdown emphasis or Japanese quotes. A product the answer names without
/// a title gets empty titles. The title goes to `title_ja` when it is written in Japanese.
pub fn listed_from_answer(answer: &str, products: &[Asin]) -> Vec<Listed> {
    products
        .iter()
        .map(|asin| {
            let title =
                answer.match_indices(asin.as_str()).find_map(|(at, _)| title_before(&answer[..at])).unwrap_or_default();
            let ja = title.chars().any(|c| matches!(c as u32, 0x3040..=0x30FF | 0x4E00..=0x9FFF));
            let (title_en, title_ja) = if ja { (String::new(), title) } else { (title, String::new()) };
            Listed { asin: asin.clone(), title_en, title_ja }
        })
        .collect()
}

/// The title before an ASIN's opening bracket (see [`listed_from_answer`]): a bold or quoted span when
/// the text just before is one; else the line (from its list marker), or, in running English text, the
/// capitalized words just before the bracket ("You might also enjoy Ghost Requiem (ASIN ...)").
fn title_before(before: &str) -> Option<String> {
    let b = before.trim_end();
    let b = b.strip_suffix("ASIN:").or_else(|| b.strip_suffix("ASIN")).unwrap_or(b).trim_end();
    let b = b.strip_suffix(['(', '（', '['])?.trim_end();
    let enclosed = |open: &str, close: &str| {
        let inner = b.strip_suffix(close)?;
        let start = inner.rfind(open)?;
        Some(inner[start + open.len()..].trim().to_owned())
    };
    if let Some(t) = enclosed("**", "**").or_else(|| enclosed("「", "」")).or_else(|| enclosed("『", "』")) {
        return (!t.is_empty() && t.chars().count() <= 80).then_some(t);
    }
    let line = b.rsplit(['\n', ':', '：', '。', '|', '、']).next().unwrap_or(b).trim_start();
    // A list marker: "1. ", "2) ", "- ", "* ", "・".
    let numbered = line.trim_start_matches(|c: char| c.is_ascii_digit());
    let marked = numbered.len() < line.len() && numbered.starts_with(['.', ')']);
    let line = if marked { &numbered[1..] } else { line };
    let bullet = line.trim_start().starts_with(['-', '*', '・', '•']);
    let line = line.trim_start().trim_start_matches(['-', '*', '・', '•']).trim();
    let title = line.trim_matches(|c: char| matches!(c, '*' | '_' | '"' | ' '));
    if title.is_empty() {
        return None;
    }
    let japanese = title.chars().any(|c| matches!(c as u32, 0x3040..=0x30FF | 0x4E00..=0x9FFF));
    if marked || bullet {
        return (title.chars().count() <= 80).then(|| title.to_owned());
    }
    if japanese {
        return (title.chars().count() <= 20).then(|| title.to_owned());
    }
    // Running English text: the capitalized run before the bracket (small words inside it allowed).
    let ws: Vec<&str> = title.split_whitespace().collect();
    let small = |w: &str| matches!(w, "of" | "the" | "no" | "and" | "to" | "a" | "in" | "on");
    let mut start = ws.len();
    while start > 0 {
        let w = ws[start - 1];
        let capital = w.starts_with(|c: char| c.is_uppercase() || c.is_ascii_digit());
        let inner = small(w) && start < ws.len() && start >= 2 && ws[start - 2].starts_with(char::is_uppercase);
        if !(capital || inner) {
            break;
        }
        start -= 1;
    }
    (start < ws.len()).then(|| ws[start..].join(" "))
}
