//! The generic-vs-specific decision on the labelled follow-up corpus (`tests/data/followups/`): precision
//! and recall of "generic" (served the pre-generated overview), and false serves (a specific question, or
//! another product, served an overview), on the development part and on the held-out part, which was
//! written before the decision and never tuned on.
//!
//! `cargo test -p mangaassist-core pregen::corpus -- --nocapture` prints the figures.
//!
//! Two wirings are measured: **full** (what `pregen::ask_after` decides when the turn gives it the list's
//! titles and what was asked before: what the gather step does) and **ordinals only** (`pregen::ask` on
//! ordinals alone, nothing known of the previous message: the wiring before titles were resolved).

use crate::ids::Asin;
use crate::intent::{Listed, classify, extract};
use crate::pregen::{Ask, Before, ask, ask_after};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Product {
    asin: String,
    title_en: String,
    title_ja: String,
}

#[derive(Debug, Deserialize)]
struct Message {
    text: String,
    #[serde(default)]
    expect: Option<String>,
    #[serde(default)]
    refers: Option<usize>,
}

#[derive(Debug, Deserialize)]
struct Conversation {
    id: String,
    list: Vec<Product>,
    messages: Vec<Message>,
}

fn load(name: &str) -> Vec<Conversation> {
    let path = format!("{}/tests/data/followups/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Wiring {
    Full,
    Today,
}

#[derive(Debug, Default)]
struct Tally {
    follow_ups: usize,
    generic: usize,
    true_serves: usize,
    /// A specific question, or the wrong product, served an overview.
    false_serves: Vec<String>,
    misses: Vec<String>,
    /// Follow-ups that name one product, and those resolved to it.
    named: usize,
    resolved_right: usize,
    /// Follow-ups that name one product but were not resolved to it (full wiring).
    unresolved: Vec<String>,
}

impl Tally {
    fn precision(&self) -> f64 {
        let served = self.true_serves + self.false_serves.len();
        if served == 0 { 1.0 } else { self.true_serves as f64 / served as f64 }
    }

    fn recall(&self) -> f64 {
        if self.generic == 0 { 1.0 } else { self.true_serves as f64 / self.generic as f64 }
    }
}

fn evaluate(convs: &[Conversation], wiring: Wiring) -> Tally {
    let mut t = Tally::default();
    for c in convs {
        let listed: Vec<Listed> = c
            .list
            .iter()
            .map(|p| Listed {
                asin: Asin::parse(&p.asin).unwrap(),
                title_en: p.title_en.clone(),
                title_ja: p.title_ja.clone(),
            })
            .collect();
        let previous: Vec<Asin> = listed.iter().map(|l| l.asin.clone()).collect();
        for (k, m) in c.messages.iter().enumerate().skip(1) {
            let Some(expect) = m.expect.as_deref() else { continue };
            let want = m.refers.map(|r| previous[r - 1].clone());
            let early = extract(&m.text, &[]);
            let intent = classify(&m.text, &early);
            let got = match wiring {
                Wiring::Full => {
                    let mut e = early.clone();
                    e.resolve_listed(&m.text, &listed);
                    if want.is_some() {
                        t.named += 1;
                        t.resolved_right += usize::from(e.resolved == want);
                        if e.resolved != want {
                            t.unresolved.push(format!("{} {} -> {:?}", c.id, m.text, e.resolved));
                        }
                    }
                    let before = if k == 1 { Before::List } else { Before::FollowUp(&c.messages[k - 1].text, &listed) };
                    ask_after(&m.text, intent, &e, before)
                }
                Wiring::Today => {
                    let e = extract(&m.text, &previous);
                    if want.is_some() {
                        t.named += 1;
                        t.resolved_right += usize::from(e.resolved == want);
                    }
                    ask(&m.text, intent, &e)
                }
            };
            t.follow_ups += 1;
            let generic = expect == "pregen";
            t.generic += usize::from(generic);
            let line = format!("{} [{expect} {:?}] {} -> {got:?}", c.id, m.refers, m.text);
            match got {
                Ask::Overview(a) if generic && Some(&a) == want.as_ref() => t.true_serves += 1,
                Ask::Overview(_) => t.false_serves.push(line),
                _ if generic => t.misses.push(line),
                _ => {}
            }
        }
    }
    t
}

fn report(part: &str, convs: &[Conversation]) -> (Tally, Tally) {
    let full = evaluate(convs, Wiring::Full);
    let today = evaluate(convs, Wiring::Today);
    for (name, t) in [("full", &full), ("ordinals only", &today)] {
        eprintln!(
            "{part:8} {name:5} follow-ups {:3} generic {:3} served {:3} false serves {} misses {:3} precision {:.3} recall {:.3} \
             resolved {}/{}",
            t.follow_ups,
            t.generic,
            t.true_serves,
            t.false_serves.len(),
            t.misses.len(),
            t.precision(),
            t.recall(),
            t.resolved_right,
            t.named,
        );
    }
    for l in &full.false_serves {
        eprintln!("  FALSE SERVE {l}");
    }
    for l in &full.misses {
        eprintln!("  miss {l}");
    }
    for l in &full.unresolved {
        eprintln!("  unresolved {l}");
    }
    (full, today)
}

#[test]
fn development_follow_ups_are_never_served_an_overview_they_did_not_ask_for_and_most_generic_ones_are() {
    let convs = load("dev.jsonl");
    let (full, today) = report("dev", &convs);
    assert!(full.follow_ups >= 150, "the development part has {} follow-ups", full.follow_ups);
    assert!(full.false_serves.is_empty() && today.false_serves.is_empty(), "false serves");
    assert!(full.recall() >= 0.90, "recall {:.3}", full.recall());
}

#[test]
fn held_out_follow_ups_are_never_served_an_overview_they_did_not_ask_for_and_most_generic_ones_are() {
    let convs = load("heldout.jsonl");
    let (full, today) = report("held-out", &convs);
    assert!(full.follow_ups >= 100, "the held-out part has {} follow-ups", full.follow_ups);
    assert!(full.false_serves.is_empty() && today.false_serves.is_empty(), "false serves");
    assert!(full.recall() >= 0.70, "recall {:.3}", full.recall());
}
