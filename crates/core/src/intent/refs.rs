//! How a follow-up points at a product of the last answer: by position ("the first one", "#2", "no. 2",
//! "the last one", "the middle one", "second to last", "2つ目", "２番目", "最後の", "真ん中の",
//! "最後から2番目") or by title ("tell me more about Paper Diary", "紙の日記ってどんな話？", partial and
//! unambiguous: "the Diary one").
//!
//! Everything works on the [`fold`]ed text (full-width ASCII made half-width, lower case, curly quotes
//! straight) and reports where it found each reference as a byte range of that folded text, so that the
//! generic-vs-specific decision ([`crate::pregen`]) can take the reference out and look at what is left.
//! Pure functions of their inputs, a few microseconds each: they run on the turn's path.

use std::ops::Range;

use crate::ids::Asin;

mod titles;
pub(crate) use titles::blank;
pub use titles::{Listed, TitleMention, listed_from_answer, title_mentions};

/// `text` made comparable: full-width ASCII (`２つ目`, `ＮＯ．２`) and the ideographic space become their
/// half-width forms, curly quotes become straight, and everything is lower case. Half-width katakana is
/// left as it is (rare in typed Japanese).
pub fn fold(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            '\u{3000}' => ' ',
            '\u{2018}' | '\u{2019}' | '\u{00B4}' | '`' => '\'',
            '\u{201C}' | '\u{201D}' => '"',
            _ => c,
        })
        .flat_map(char::to_lowercase)
        .collect()
}

/// A reference by position to the previous answer's products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ordinal {
    /// 1-based.
    Nth(usize),
    Last,
    /// "The middle one": the centre of a list of odd length.
    Middle,
    /// "Second to last" (`NthFromLast(2)`), 1-based from the end.
    NthFromLast(usize),
    /// "The former" / "前者": the first of a list of two.
    Former,
    /// "The latter" / "後者": the second of a list of two.
    Latter,
}

impl Ordinal {
    /// The index this ordinal points at in a list of `len` products; `None` when it points past the list
    /// or is ambiguous there ("the middle one" of four, "the latter" of three).
    pub fn index(self, len: usize) -> Option<usize> {
        let i = match self {
            Self::Nth(n) => n.checked_sub(1)?,
            Self::Last => len.checked_sub(1)?,
            Self::Middle if len % 2 == 1 && len >= 3 => len / 2,
            Self::NthFromLast(k) => len.checked_sub(k)?,
            Self::Former if len == 2 => 0,
            Self::Latter if len == 2 => 1,
            _ => return None,
        };
        (i < len).then_some(i)
    }
}

/// An ordinal and where the folded text says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrdinalAt {
    pub ordinal: Ordinal,
    pub span: Range<usize>,
}

/// A word of the folded text: ASCII letters, digits and inner apostrophes, or a lone `#`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Word<'a> {
    pub text: &'a str,
    pub start: usize,
    pub end: usize,
    /// Punctuation (not only white space) separates it from the next word, or it ends the text.
    pub stop_after: bool,
}

/// The ASCII words of `folded` (Japanese and other scripts separate words like punctuation).
pub(crate) fn words(folded: &str) -> Vec<Word<'_>> {
    let mut out: Vec<Word<'_>> = Vec::new();
    let bytes = folded.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_alphanumeric() || b == b'#' {
            let start = i;
            i += 1;
            if b != b'#' {
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric()
                        || (bytes[i] == b'\'' && bytes.get(i + 1).is_some_and(u8::is_ascii_alphanumeric)))
                {
                    i += 1;
                }
            }
            out.push(Word { text: &folded[start..i], start, end: i, stop_after: false });
        } else {
            if !b.is_ascii_whitespace()
                && let Some(w) = out.last_mut()
                && w.end <= i
            {
                w.stop_after = true;
            }
            i += 1;
        }
    }
    if let Some(w) = out.last_mut() {
        w.stop_after = true;
    }
    out
}

/// Whether `typed` is `word` or one slip away from it: a swap of two neighbours (`thrid`, `abotu`) for
/// words of four letters or more, and also one letter added, dropped or changed for words of six or
/// more (`secnd`, `detials`, `plese`). Shorter words must match exactly: `gore` is not `more`.
pub(crate) fn near(typed: &str, word: &str) -> bool {
    if typed == word {
        return true;
    }
    let (a, b) = (typed.as_bytes(), word.as_bytes());
    if b.len() < 4 || !a.is_ascii() {
        return false;
    }
    if a.len() == b.len() {
        let Some(i) = (0..a.len()).find(|&i| a[i] != b[i]) else { return true };
        // One letter changed (long words), or two neighbours swapped.
        if a[i + 1..] == b[i + 1..] {
            return b.len() >= 6;
        }
        return i + 1 < a.len() && a[i] == b[i + 1] && a[i + 1] == b[i] && a[i + 2..] == b[i + 2..];
    }
    if b.len() < 6 || a.len().abs_diff(b.len()) != 1 {
        return false;
    }
    let (long, short) = if a.len() > b.len() { (a, b) } else { (b, a) };
    let first = (0..short.len()).find(|&i| long[i] != short[i]).unwrap_or(short.len());
    long[first + 1..] == short[first..]
}

const EN_NTH: &[(&str, usize)] = &[
    ("first", 1),
    ("1st", 1),
    ("second", 2),
    ("2nd", 2),
    ("third", 3),
    ("3rd", 3),
    ("fourth", 4),
    ("4th", 4),
    ("fifth", 5),
    ("5th", 5),
    ("sixth", 6),
    ("6th", 6),
    ("seventh", 7),
    ("7th", 7),
    ("eighth", 8),
    ("8th", 8),
    ("ninth", 9),
    ("9th", 9),
    ("tenth", 10),
    ("10th", 10),
];

const EN_NUMBERS: &[&str] = &["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"];

/// Nouns that name an item of the list: "the first *one*", "the second *title*".
pub(crate) const REF_NOUNS: &[&str] = &[
    "one",
    "ones",
    "one's",
    "title",
    "titles",
    "manga",
    "mangas",
    "book",
    "books",
    "series",
    "pick",
    "option",
    "item",
    "entry",
    "recommendation",
    "suggestion",
    "choice",
    "result",
    "work",
    "comic",
    "story",
];

/// Words after "first"/"last" that make it about something else than the list ("the first volume",
/// "last time", "first of all", "middle school").
const NOT_THE_LIST: &[&str] = &[
    "volume",
    "volumes",
    "vol",
    "vols",
    "time",
    "times",
    "edition",
    "editions",
    "chapter",
    "chapters",
    "arc",
    "arcs",
    "season",
    "seasons",
    "episode",
    "episodes",
    "half",
    "few",
    "couple",
    "print",
    "printing",
    "page",
    "pages",
    "issue",
    "issues",
    "part",
    "parts",
    "place",
    "impression",
    "of",
    "week",
    "month",
    "year",
    "night",
    "school",
    "grade",
    "class",
    "minute",
    "release",
    "released",
    "run",
    "panel",
    "panels",
    "scene",
    "scenes",
    "cover",
];

/// Words that may follow a bare "the last" / "the middle" when it still means the list item.
const AFTER_BARE: &[&str] = &[
    "you",
    "on",
    "in",
    "from",
    "please",
    "pls",
    "plz",
    "about",
    "then",
    "too",
    "also",
    "and",
    "is",
    "sounds",
    "looks",
    "seems",
    "mentioned",
    "listed",
    "recommended",
    "suggested",
    "there",
];

fn number(word: &str, words_ok: bool) -> Option<usize> {
    if let Ok(n) = word.parse::<usize>() {
        return (1..=10).contains(&n).then_some(n);
    }
    if !words_ok {
        return None;
    }
    EN_NUMBERS.iter().position(|w| *w == word).map(|i| i + 1)
}

/// "first" .. "tenth"; a swapped pair of letters is forgiven (`thrid`), nothing else: "eight" and
/// "forth" are not positions.
fn nth_word(word: &str) -> Option<usize> {
    EN_NTH.iter().find(|(o, _)| word.len() == o.len() && near(word, o)).map(|(_, n)| *n)
}

/// English position words: see the module docs.
fn english(folded: &str) -> Vec<OrdinalAt> {
    let ws = words(folded);
    let text = |i: usize| ws.get(i).map(|w| w.text);
    let mut out = Vec::new();
    let mut i = 0;
    while i < ws.len() {
        let w = ws[i];
        let prev = i.checked_sub(1).and_then(text);
        let next = text(i + 1);
        // The reference extends over a leading "the" and a trailing "one"/"title"/...
        let from = if prev == Some("the") { ws[i - 1].start } else { w.start };
        let through = |j: usize| if text(j).is_some_and(|n| REF_NOUNS.contains(&n)) { j } else { j - 1 };
        let mut found = |ordinal: Ordinal, last_word: usize| {
            out.push(OrdinalAt { ordinal, span: from..ws[last_word].end });
            last_word + 1
        };
        // "#2", "no. 2", "number 2", "option three".
        if w.text == "#"
            && let Some(n) = next.and_then(|n| number(n, false))
        {
            i = found(Ordinal::Nth(n), through(i + 2));
            continue;
        }
        if let Some(n) = match w.text {
            "no" | "nr" => next.and_then(|n| number(n, false)),
            "number" | "num" | "option" | "item" | "choice" => next.and_then(|n| number(n, true)),
            _ => None,
        } {
            i = found(Ordinal::Nth(n), i + 1);
            continue;
        }
        if matches!(prev, Some("at" | "a")) || next.is_some_and(|n| NOT_THE_LIST.contains(&n)) {
            i += 1;
            continue;
        }
        // "second to last", "second last", "next to last", "penultimate".
        let to_last = |j: usize| match (text(j), text(j + 1)) {
            (Some("to"), Some("last")) => Some(j + 1),
            (Some("last"), _) => Some(j),
            _ => None,
        };
        if let (Some(k), Some(end)) = (nth_word(w.text).or((w.text == "next").then_some(2)), to_last(i + 1)) {
            i = found(Ordinal::NthFromLast(k), through(end + 1));
            continue;
        }
        if w.text == "penultimate" {
            i = found(Ordinal::NthFromLast(2), through(i + 1));
            continue;
        }
        // "first" .. "tenth": "the first", "first one", "the 2nd?"; not "the first two" (a range).
        if let Some(n) = nth_word(w.text) {
            if next.and_then(|n| number(n, true)).is_some_and(|n| n >= 2) {
                i += 2;
                continue;
            }
            i = found(Ordinal::Nth(n), through(i + 1));
            continue;
        }
        // "last", "final", "middle", "latter", "former", "top", "bottom": with a list noun, or after
        // "the" at the end of a phrase ("what about the last?").
        let edge = match w.text {
            "last" | "final" | "bottom" => Some(Ordinal::Last),
            "middle" => Some(Ordinal::Middle),
            "latter" => Some(Ordinal::Latter),
            "former" => Some(Ordinal::Former),
            "top" => Some(Ordinal::Nth(1)),
            _ => None,
        };
        if let Some(ordinal) = edge {
            let noun = next.is_some_and(|n| REF_NOUNS.contains(&n));
            let bare = prev == Some("the") && (w.stop_after || next.is_none_or(|n| AFTER_BARE.contains(&n)));
            if noun || bare {
                i = found(ordinal, through(i + 1));
                continue;
            }
        }
        // "the one at the end / bottom / top", "the one in the middle".
        if w.text == "one"
            && let (Some(p), Some("the"), Some(place)) = (next, text(i + 2), text(i + 3))
            && matches!(p, "at" | "in")
            && let Some(ordinal) = match place {
                "end" | "bottom" => Some(Ordinal::Last),
                "top" => Some(Ordinal::Nth(1)),
                "middle" => Some(Ordinal::Middle),
                _ => None,
            }
        {
            i = found(ordinal, i + 3);
            continue;
        }
        i += 1;
    }
    out
}

/// Japanese numerals before a counter suffix, longest first.
const JA_NUMERALS: &[(&str, usize)] = &[
    ("10", 10),
    ("十", 10),
    ("とお", 10),
    ("1", 1),
    ("一", 1),
    ("ひと", 1),
    ("2", 2),
    ("二", 2),
    ("ふた", 2),
    ("3", 3),
    ("三", 3),
    ("みっ", 3),
    ("4", 4),
    ("四", 4),
    ("よっ", 4),
    ("5", 5),
    ("五", 5),
    ("いつ", 5),
    ("6", 6),
    ("六", 6),
    ("むっ", 6),
    ("7", 7),
    ("七", 7),
    ("なな", 7),
    ("8", 8),
    ("八", 8),
    ("やっ", 8),
    ("9", 9),
    ("九", 9),
    ("ここの", 9),
];

/// Counter suffixes that make a numeral a position: `2つ目`, `2つめ`, `2番目`, `2個目`, `2作目`, `2冊目`.
const JA_SUFFIXES: &[&str] = &["作品目", "つ目", "つめ", "番目", "冊目", "個目", "作目", "本目"];

/// What may follow a bare `2番` for it to be a position ("2番の", "2番は？"), not "1番人気".
const AFTER_BAN: &[&str] = &["の", "は", "って", "を", "が", "も", "、", ",", "?", "!", " ", "について"];

/// Words that are a position by themselves, with what must not follow them ("最後まで" is "to the end",
/// "最初の巻" the first volume, "ラストシーン" the last scene).
const JA_WORDS: &[(&str, Ordinal, &[&str])] = &[
    ("一番最初", Ordinal::Nth(1), &[]),
    ("最初", Ordinal::Nth(1), &["から", "の巻", "の話", "の方", "のほう"]),
    ("一番上", Ordinal::Nth(1), &[]),
    ("一番最後", Ordinal::Last, &[]),
    ("最後", Ordinal::Last, &["まで", "の巻", "の話", "の方", "のほう"]),
    ("一番下", Ordinal::Last, &[]),
    ("ラスト", Ordinal::Last, &["シーン", "バトル", "まで"]),
    ("真ん中", Ordinal::Middle, &[]),
    ("まんなか", Ordinal::Middle, &[]),
    ("真中", Ordinal::Middle, &[]),
    ("前者", Ordinal::Former, &[]),
    ("後者", Ordinal::Latter, &[]),
];

fn numeral_before(text: &str, at: usize) -> Option<(usize, usize)> {
    let before = &text[..at];
    JA_NUMERALS.iter().find(|(num, _)| before.ends_with(num)).map(|(num, n)| (at - num.len(), *n))
}

/// Japanese positions: see the module docs.
fn japanese(folded: &str) -> Vec<OrdinalAt> {
    let mut out: Vec<OrdinalAt> = Vec::new();
    let taken = |out: &[OrdinalAt], r: &Range<usize>| out.iter().any(|o| o.span.start < r.end && r.start < o.span.end);
    // "最後から2番目", "下から2つ目": counted from the end; "上から2つ目": from the top.
    for (anchor, from_end) in [("最後から", true), ("下から", true), ("上から", false)] {
        for (at, _) in folded.match_indices(anchor) {
            let rest = at + anchor.len();
            let Some((num, n)) = JA_NUMERALS.iter().find(|(num, _)| folded[rest..].starts_with(num)) else {
                continue;
            };
            let after = rest + num.len();
            if let Some(suffix) = JA_SUFFIXES.iter().find(|s| folded[after..].starts_with(*s)) {
                let ordinal = if from_end { Ordinal::NthFromLast(*n) } else { Ordinal::Nth(*n) };
                out.push(OrdinalAt { ordinal, span: at..after + suffix.len() });
            }
        }
    }
    for suffix in JA_SUFFIXES {
        for (at, _) in folded.match_indices(suffix) {
            if let Some((start, n)) = numeral_before(folded, at) {
                let span = start..at + suffix.len();
                if !taken(&out, &span) {
                    out.push(OrdinalAt { ordinal: Ordinal::Nth(n), span });
                }
            }
        }
    }
    for (at, _) in folded.match_indices('番') {
        let rest = &folded[at + '番'.len_utf8()..];
        let digit = folded[..at].bytes().last().filter(u8::is_ascii_digit);
        if let Some(d) = digit
            && (rest.is_empty() || AFTER_BAN.iter().any(|a| rest.starts_with(a)))
            && !folded[..at - 1].bytes().last().is_some_and(|b| b.is_ascii_digit())
        {
            let span = at - 1..at + '番'.len_utf8();
            if d != b'0' && !taken(&out, &span) {
                out.push(OrdinalAt { ordinal: Ordinal::Nth(usize::from(d - b'0')), span });
            }
        }
    }
    for (word, ordinal, not_before) in JA_WORDS {
        for (at, _) in folded.match_indices(word) {
            let span = at..at + word.len();
            let rest = &folded[span.end..];
            if !taken(&out, &span) && !not_before.iter().any(|n| rest.starts_with(n)) {
                out.push(OrdinalAt { ordinal: *ordinal, span });
            }
        }
    }
    out
}

/// Every position reference in `folded` (a [`fold`]ed message), in order of appearance.
pub fn ordinals(folded: &str) -> Vec<OrdinalAt> {
    let mut out = japanese(folded);
    out.extend(english(folded));
    out.sort_by_key(|o| o.span.start);
    out
}

#[cfg(test)]
mod tests;
