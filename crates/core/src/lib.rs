//! Domain logic of the MangaAssist latency engine. It knows nothing of AWS or sockets: every outside
//! dependency is a narrow trait in [`ports`], implemented by `mangaassist-adapters` (AWS SDK,
//! Redis, HTTP) and by `mangaassist-local` (embedded defaults for local runs and tests).
//!
//! # Layout
//! Folders follow the turn's steps, from the bottom up; each module uses only its own group and the groups
//! below it (checked by the `layout` tests at the end of this file):
//!
//! - values (top-level files): ids, errors, deadlines, the clock, intents, the wire protocol, safety, the
//!   tokenizer, models, metric records, pre-generated answers: what every step passes around.
//! - [`cache`]: what the cache holds, one type per entry with its key and TTL.
//! - [`ports`]: the traits a turn depends on (model, connection sink, store, context sources) and the
//!   embedded store.
//! - [`capacity`]: the provisioned-throughput reconciler and the route record it keeps.
//! - [`admit`]: who is talking and whether they may send now: sessions and limits.
//! - [`gather`]: the context of a turn, gathered in parallel under deadlines; conversation memory.
//! - [`prompt`]: compression to the token budget and the model request.
//! - [`answer`]: where the answer comes from (model route, pre-generated answer) and its relay.
//! - [`ahead`]: work ahead of the shopper: typing-time speculation, prefetch and pre-generation.
//! - [`turn`]: the pipeline of one chat turn, from frame to stored answer ([`turn::Engine`]).
//!
//! Beside them, for tests only (this crate's, and others' with the `testkit` feature): `testkit`, fakes of
//! every port with scripted behaviour, record fixtures, and the `Store` contract suite.

pub mod backoff;
pub mod clock;
pub mod deadline;
pub mod error;
pub mod ids;
pub mod intent;
pub mod metrics;
pub mod models;
pub mod pregen;
pub mod protocol;
pub mod safety;
pub mod tokenizer;

pub mod cache;
pub mod ports;

pub mod capacity;

pub mod admit;
pub mod ahead;
pub mod answer;
pub mod gather;
pub mod prompt;

pub mod turn;

#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

/// The layout rule of the `# Layout` section, checked on the sources: a module uses only its own group and
/// the groups below it, and the value modules at the bottom form no cycle.
#[cfg(test)]
mod layout {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    /// The groups from the bottom up; a top-level file is a value module.
    const GROUPS: [&str; 11] =
        ["", "cache", "ports", "capacity", "admit", "gather", "prompt", "answer", "ahead", "turn", "testkit"];

    fn rank(group: &str) -> Option<usize> {
        GROUPS.iter().position(|g| *g == group)
    }

    fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let p = entry.path();
            if p.is_dir() {
                sources(&p, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p);
            }
        }
    }

    /// `(module, names used as crate::NAME)` per source file, comments left out.
    fn uses() -> Vec<(String, String, BTreeSet<String>)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&root, &mut files);
        files
            .into_iter()
            .filter_map(|p| {
                let rel = p.strip_prefix(&root).ok()?.to_string_lossy().into_owned();
                let first = rel.split('/').next()?.trim_end_matches(".rs").to_owned();
                // A value module's own folder (`pregen/tests.rs`) belongs to the values; the test kit is its
                // own group, above everything it fakes.
                let in_folder = rel.contains('/') && !root.join(format!("{first}.rs")).exists();
                let group = if in_folder || first == "testkit" { first.clone() } else { String::new() };
                let text = std::fs::read_to_string(&p).ok()?;
                let mut used = BTreeSet::new();
                // Tests may use anything: a module is read up to its tests.
                let code = text.lines().take_while(|l| l.trim() != "#[cfg(test)]");
                for line in code.filter(|l| !l.trim_start().starts_with("//")) {
                    for (i, _) in line.match_indices("crate::") {
                        let name: String =
                            line[i + 7..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                        if !name.is_empty() {
                            used.insert(name);
                        }
                    }
                }
                let is_tests = rel.ends_with("tests.rs");
                (!is_tests && first != "lib").then_some((first, group, used))
            })
            .collect()
    }

    #[test]
    fn no_module_uses_a_group_above_its_own() {
        let mut wrong = Vec::new();
        for (module, group, used) in uses() {
            let own = rank(&group).unwrap_or_else(|| panic!("{module}: a folder not in the layout"));
            for name in used {
                let target = if rank(&name).is_some_and(|r| r > 0) { name.clone() } else { String::new() };
                if rank(&target).unwrap_or(0) > own {
                    wrong.push(format!("{module} ({group:?}) uses crate::{name}"));
                }
            }
        }
        assert!(wrong.is_empty(), "imports from a higher group: {wrong:#?}");
    }

    #[test]
    fn the_value_modules_form_no_cycle() {
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let all = uses();
        let values: BTreeSet<String> = all.iter().filter(|(_, g, _)| g.is_empty()).map(|(m, _, _)| m.clone()).collect();
        for (module, group, used) in all {
            if group.is_empty() {
                let deps: BTreeSet<String> = used.into_iter().filter(|u| values.contains(u) && *u != module).collect();
                edges.entry(module).or_default().extend(deps);
            }
        }
        // Kahn: repeatedly drop modules that use no remaining module.
        let mut left = edges.clone();
        while let Some(leaf) = left.iter().find(|(_, deps)| deps.is_empty()).map(|(m, _)| m.clone()) {
            left.remove(&leaf);
            left.values_mut().for_each(|d| {
                d.remove(&leaf);
            });
        }
        assert!(left.is_empty(), "a cycle among {:?}", left.keys().collect::<Vec<_>>());
    }
}
