//! `bench --guardrail both`: the same held conversations with guardrails off and on, in the same run, the
//! two systems side by side and the conversations interleaved (off, on, off, on, ...) so that drift hits
//! both alike. Reports the first token the client sees (send -> first delta) and the full answer, both
//! ways, with the input checks and interventions counted.
//!
//! With guardrails on, each turn checks its input with `ApplyGuardrail` beside context assembly (the
//! emulator's `guardrail_ms` per check, an assumption it documents) and asks for the answer with the
//! guardrail in asynchronous stream mode (deltas not held back). What is measured is what that costs the
//! shopper through our system: nothing beyond noise is the target.

use std::path::PathBuf;
use std::time::Duration;

use mangaassist_core::ports::memory::MemoryStore;
use serde_json::json;

use super::driver::run_turn;
use super::report::Recorder;
use super::stats::{Pcts, pcts, write_json};
use super::{Conversation, builtin_conversations};
use mangaassist_local::client::ChatClient;
use mangaassist_local::system::{LocalSystem, SourceLatency, SystemOptions, start, with_guardrails};

/// Which guardrail settings to run (`--guardrail`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GuardrailRun {
    Off,
    On,
    Both,
}

async fn system(on: bool) -> anyhow::Result<LocalSystem<MemoryStore>> {
    let mut opts = SystemOptions { sources: SourceLatency::design(), ..SystemOptions::default() };
    if on {
        with_guardrails(&mut opts);
    }
    start(MemoryStore::with_latency(Duration::from_millis(50)), opts).await
}

/// First-token and total samples of one setting.
#[derive(Default)]
struct Samples {
    ttft: Vec<f64>,
    total: Vec<f64>,
    errors: u64,
}

async fn converse(
    sys: &LocalSystem<MemoryStore>,
    conv: &Conversation,
    label: &str,
    into: &mut Samples,
    rec: &Recorder,
) {
    let mut client = match ChatClient::connect(&sys.ws_url()).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("  connect failed: {e:#}");
            into.errors += 1;
            return;
        }
    };
    for msg in &conv.messages {
        match run_turn(&mut client, msg).await {
            Ok(s) => {
                rec.record(label, &s);
                into.ttft.push(s.ttft_ms);
                into.total.push(s.total_ms);
            }
            Err(e) => {
                rec.record_error(label);
                eprintln!("  {label}: {e:#}");
                into.errors += 1;
            }
        }
    }
    client.close().await;
}

/// Runs the held conversations `rounds` times with the chosen settings; prints the table and, with `json`,
/// writes `ttft_ms_off`, `ttft_ms_on`, `total_ms_off`, `total_ms_on` ({p50,p95,p99}), the differences,
/// the input checks and interventions.
#[expect(clippy::print_stdout, reason = "the scenario's table is the command's output (progress goes to stderr)")]
pub async fn guardrail(
    run: GuardrailRun,
    quick: bool,
    json_path: Option<PathBuf>,
    rec: &Recorder,
) -> anyhow::Result<()> {
    let rounds = if quick { 2 } else { 12 };
    let convs = builtin_conversations();
    let off = match run {
        GuardrailRun::On => None,
        _ => Some(system(false).await?),
    };
    let on = match run {
        GuardrailRun::Off => None,
        _ => Some(system(true).await?),
    };
    let (mut s_off, mut s_on) = (Samples::default(), Samples::default());
    let started = std::time::Instant::now();
    let total_convs = rounds * convs.len();
    for round in 0..rounds {
        for (i, conv) in convs.iter().enumerate() {
            // Alternate which setting goes first, so neither always runs on a warmer system.
            let on_first = (round + i) % 2 == 1;
            for turn in 0..2 {
                match (turn == 0) == on_first {
                    true => {
                        if let Some(sys) = &on {
                            converse(sys, conv, "guardrails on", &mut s_on, rec).await;
                        }
                    }
                    false => {
                        if let Some(sys) = &off {
                            converse(sys, conv, "guardrails off", &mut s_off, rec).await;
                        }
                    }
                }
            }
            let done = round * convs.len() + i + 1;
            let elapsed = started.elapsed().as_secs_f64();
            let eta = elapsed / done as f64 * (total_convs - done) as f64;
            eprintln!("bench: guardrail {done}/{total_convs} conversations, {elapsed:.0} s elapsed, ETA {eta:.0} s");
        }
    }
    let checks = on.as_ref().map_or(0, |s| s.emulator.stats.guardrail_calls().len());
    let interventions =
        on.as_ref().map_or(0, |s| s.emulator.stats.guardrail_calls().iter().filter(|c| c.intervened).count());
    let row = |name: &str, s: &Samples| {
        let (t, w) = (pcts(&s.ttft), pcts(&s.total));
        println!(
            "| {name} | {} | {:.0} / {:.0} / {:.0} | {:.0} / {:.0} / {:.0} | {} |",
            s.ttft.len(),
            t.p50,
            t.p95,
            t.p99,
            w.p50,
            w.p95,
            w.p99,
            s.errors
        );
    };
    println!("| guardrails | turns | first token p50/p95/p99 ms | full answer p50/p95/p99 ms | errors |");
    println!("|---|---|---|---|---|");
    if off.is_some() {
        row("off", &s_off);
    }
    if on.is_some() {
        row("on (input check + async output)", &s_on);
    }
    let (t_off, t_on): (Pcts, Pcts) = (pcts(&s_off.ttft), pcts(&s_on.ttft));
    if run == GuardrailRun::Both {
        println!(
            "on - off: first token p50 {:+.0} ms, p95 {:+.0} ms; {checks} input checks, {interventions} interventions",
            t_on.p50 - t_off.p50,
            t_on.p95 - t_off.p95
        );
    }
    let doc = json!({
        "rounds": rounds,
        "ttft_ms_off": t_off,
        "ttft_ms_on": t_on,
        "total_ms_off": pcts(&s_off.total),
        "total_ms_on": pcts(&s_on.total),
        "difference_ms": { "p50": t_on.p50 - t_off.p50, "p95": t_on.p95 - t_off.p95 },
        "input_checks": checks,
        "interventions": interventions,
        "errors": s_off.errors + s_on.errors,
    });
    if let Some(path) = &json_path {
        write_json(path, &doc)?;
    }
    anyhow::ensure!(s_off.errors + s_on.errors == 0, "{} turns failed", s_off.errors + s_on.errors);
    Ok(())
}
