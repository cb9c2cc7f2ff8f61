//! `bench --scenario tail`: the first token's tail, with the levers of issue 26 off and on side by side.
//!
//! **The model and the connection.** The emulator runs the published heavy tail
//! ([`HeavyTail::published`]: p95 ≈ 2x and p99 ≈ 2.8x the median first token) and the published connection
//! cost ([`ConnectionModel::published`]: 100 ms for a new connection's handshake), with the endpoint's idle
//! timeout scaled down so a run takes minutes: **2 s instead of 60 s** (÷30). Everything that is set
//! relative to that idle timeout is scaled with it: the gaps before a turn after idle (**3 s**, 90 s at
//! scale), the chat client's pool idle timeout (**1.67 s**, the production 50 s) and the warm-up's idle
//! threshold (**0.67 s**, the production 20 s). What does not depend on it is not scaled: the handshake,
//! the first-byte deadline (2 s), the first-token timeout (5 s), the hedge delay (the learned p90), the
//! typing lead. `--drops silent` makes the endpoint drop idle connections without a FIN (the stale-socket
//! stall); the default closes them.
//!
//! **The conversations.** Each "container" (one local system: one Lambda container, one connection pool)
//! serves one conversation at a time, four turns each: after an idle gap (3 s after the previous answer),
//! then a warm one (300 ms after), again after a gap, again warm. The shopper types: a `typing` frame goes
//! [`TYPING_LEAD_MS`] before each message (it is what refreshes an idle container's connections). One model
//! for every intent (Claude Haiku 4.5, `jp.` profile), the same model's `global.` profile as the fallback
//! (the hedge's route), answers of ~40 tokens (the decode time is not under test), no summaries or
//! prefetch (their model calls would blur the count of extra calls).
//!
//! **The sides.** Five systems per container replay each conversation at the same moment: every lever off,
//! every lever on, and each lever alone (`by_lever`): `warm` (connections opened at start and refreshed on
//! `$connect`/`typing` after idle, the pool's idle timeout below the endpoint's), `retry` (the first-byte
//! deadline with one retry on a fresh connection), `hedge` (a second stream on the fallback route when the
//! first token is later than the route's learned p90, at most 10% of turns). A sixth side has every lever
//! on with Nova 2 Lite (`jp.` profile, first token ~0.5x Haiku's) as the fallback, so the hedge's stream is
//! a faster model's: with the same model on both routes, a hedge started at the p90 answers at best at
//! p90 + a median draw, which bounds how much of the model's own tail it can cut.
//!
//! **Measured.** Per turn: the client's first token (send -> first `delta`), the time until the emulator
//! received the turn's first model request (`to_model`), the same less the turn's context assembly
//! (`connect`: the hops, our code and the connection's cost, without the model's own draw or the
//! message-dependent context legs: what "a turn after an idle gap no slower than a warm one" compares), the
//! model requests the turn made, whether its first one met a new connection, and the hedge's report from
//! `completed.metrics`. Then our CPU per turn
//! (`completed.metrics.cpu_us`) in a separate pass with one container and every lever on, one turn at a
//! time: locally every emulated Lambda, both emulators and the clients share one process, so the process
//! CPU clock reads the invocation's own CPU only when nothing else is running (and even then it includes the
//! emulators' and the client's work for that turn: an upper bound).

use std::path::PathBuf;
use std::time::Duration;

use futures_util::future::join_all;
use mangaassist_adapters::bedrock::StreamOpen;
use mangaassist_core::answer::hedge::HedgeConfig;
use mangaassist_core::models::{CLAUDE_HAIKU_4_5, ModelRouting, NOVA_2_LITE};
use mangaassist_core::ports::memory::MemoryStore;
use mangaassist_local::client::ChatClient;
use mangaassist_local::emulators::bedrock::{ConnectionModel, EmulatorConfig, HeavyTail};
use mangaassist_local::system::{LocalSystem, SourceLatency, SystemOptions, start};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::driver::run_turn;
use super::report::Recorder;
use super::stats::{Pcts, pcts, write_json};
use super::{ScriptedMessage, builtin_conversations};

/// The endpoint's idle timeout, scaled (60 s on AWS front ends).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(2);
/// The idle gap before a turn "after idle": longer than [`IDLE_TIMEOUT`].
pub const GAP: Duration = Duration::from_secs(3);
/// The pause before a warm turn (after the previous answer).
pub const WARM_GAP: Duration = Duration::from_millis(300);
/// The chat client's pool idle timeout, scaled like the endpoint's (production: 50 s of 60 s).
pub const POOL_IDLE: Duration = Duration::from_millis(1_667);
/// The warm-up's idle threshold, scaled (production: 20 s of 60 s).
pub const WARM_IDLE: Duration = Duration::from_millis(667);
/// A `typing` frame goes this long before its message.
pub const TYPING_LEAD_MS: u64 = 600;
/// Tokens per answer: the decode time is not under test.
const ANSWER_TOKENS: u32 = 40;
/// Containers (local systems) per side, each serving one conversation at a time.
const CONTAINERS: usize = 4;

/// How the endpoint drops an idle connection (`--drops`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Drops {
    /// Closed (FIN): the client's pool sees it and opens a new connection, paying the handshake.
    Graceful,
    /// Abandoned without FIN or RST: the pooled socket looks alive and its next request stalls.
    Silent,
}

/// Which levers a side has on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Levers {
    warm: bool,
    retry: bool,
    hedge: bool,
    /// The fallback (the hedge's route) is Nova 2 Lite (`jp.` profile, first token ~0.5x Haiku's) instead
    /// of Haiku's own `global.` profile.
    lite_fallback: bool,
}

const fn levers(warm: bool, retry: bool, hedge: bool) -> Levers {
    Levers { warm, retry, hedge, lite_fallback: false }
}

/// The sides, in the order they are reported: off, on, each lever alone, then every lever on with the
/// faster fallback.
const SIDES: [(&str, Levers); 6] = [
    ("off", levers(false, false, false)),
    ("on", levers(true, true, true)),
    ("warm", levers(true, false, false)),
    ("retry", levers(false, true, false)),
    ("hedge", levers(false, false, true)),
    (LITE, Levers { lite_fallback: true, ..levers(true, true, true) }),
];

/// The side with every lever on and Nova 2 Lite as the hedge's route.
const LITE: &str = "on, Nova 2 Lite fallback";

/// The options of a side's system.
fn options(levers: Levers, drops: Drops) -> SystemOptions {
    let connection = ConnectionModel {
        idle_timeout: Some(IDLE_TIMEOUT),
        silent: drops == Drops::Silent,
        ..ConnectionModel::published()
    };
    let emulator = EmulatorConfig {
        answer_tokens: ANSWER_TOKENS,
        tail: Some(HeavyTail::published()),
        connection,
        ..EmulatorConfig::default()
    };
    let mut opts = SystemOptions { emulator, sources: SourceLatency::design(), ..SystemOptions::default() };
    let t = &mut opts.turn;
    t.models = ModelRouting::single(format!("jp.{CLAUDE_HAIKU_4_5}"), 400);
    t.fallback_model_id =
        Some(if levers.lite_fallback { format!("jp.{NOVA_2_LITE}") } else { format!("global.{CLAUDE_HAIKU_4_5}") });
    t.summary.model_id = None;
    t.speculation.enabled = false;
    t.failover.hedge =
        if levers.hedge { HedgeConfig { enabled: true, ..HedgeConfig::default() } } else { HedgeConfig::off() };
    opts.warm = levers.warm.then_some(WARM_IDLE);
    opts.pool_idle = levers.warm.then_some(POOL_IDLE);
    opts.stream_open = if levers.retry { StreamOpen::default() } else { StreamOpen::off() };
    opts
}

/// One turn as measured.
#[derive(Debug, Clone, Serialize)]
struct Row {
    /// After an idle gap (else right after the previous answer).
    after_gap: bool,
    ttft_ms: f64,
    /// Send -> the turn's first model request received by the emulator.
    to_model_ms: f64,
    /// The same less the turn's context assembly (`completed.metrics.assembly_ms`), which depends on the
    /// message: the hops, our code and the connection's cost before the model is asked.
    connect_ms: f64,
    model_calls: u32,
    /// The turn's first model request (the first the endpoint received) came on a new connection: a
    /// handshake, or the retry after a stalled pooled one. (A hedge's own new connection does not count.)
    cold: bool,
    hedge_started: bool,
    hedged: bool,
    hedge_extra_tokens: u64,
    failovers: u64,
    cpu_us: u64,
}

/// What one side measured.
#[derive(Debug, Default)]
struct Run {
    rows: Vec<Row>,
    errors: u64,
}

/// A side's figures, as the JSON and the table report them.
#[derive(Debug, Clone, Serialize)]
struct SideReport {
    turns: usize,
    errors: u64,
    ttft_ms: Pcts,
    ttft_ms_after_gap: Pcts,
    ttft_ms_warm: Pcts,
    to_model_ms_after_gap: Pcts,
    to_model_ms_warm: Pcts,
    connect_ms_after_gap: Pcts,
    connect_ms_warm: Pcts,
    cold_connection_turns: usize,
    hedges_per_turn: f64,
    hedge_win_rate: f64,
    extra_tokens_per_turn: f64,
    extra_model_calls_per_turn: f64,
    failovers_per_turn: f64,
    /// Every turn, in the order the containers finished them.
    rows: Vec<Row>,
}

impl Run {
    fn report(&self) -> SideReport {
        let turns = self.rows.len();
        let n = turns.max(1) as f64;
        let of = |gap: bool, f: fn(&Row) -> f64| -> Vec<f64> {
            self.rows.iter().filter(|r| r.after_gap == gap).map(f).collect()
        };
        let hedges = self.rows.iter().filter(|r| r.hedge_started).count();
        SideReport {
            turns,
            errors: self.errors,
            ttft_ms: pcts(&self.rows.iter().map(|r| r.ttft_ms).collect::<Vec<_>>()),
            ttft_ms_after_gap: pcts(&of(true, |r| r.ttft_ms)),
            ttft_ms_warm: pcts(&of(false, |r| r.ttft_ms)),
            to_model_ms_after_gap: pcts(&of(true, |r| r.to_model_ms)),
            to_model_ms_warm: pcts(&of(false, |r| r.to_model_ms)),
            connect_ms_after_gap: pcts(&of(true, |r| r.connect_ms)),
            connect_ms_warm: pcts(&of(false, |r| r.connect_ms)),
            cold_connection_turns: self.rows.iter().filter(|r| r.cold).count(),
            hedges_per_turn: hedges as f64 / n,
            hedge_win_rate: self.rows.iter().filter(|r| r.hedged).count() as f64 / hedges.max(1) as f64,
            extra_tokens_per_turn: self.rows.iter().map(|r| r.hedge_extra_tokens).sum::<u64>() as f64 / n,
            extra_model_calls_per_turn: self
                .rows
                .iter()
                .map(|r| f64::from(r.model_calls.saturating_sub(1)))
                .sum::<f64>()
                / n,
            failovers_per_turn: self.rows.iter().map(|r| r.failovers).sum::<u64>() as f64 / n,
            rows: self.rows.clone(),
        }
    }
}

/// The JSON report (`--json`).
#[derive(Debug, Serialize)]
struct TailReport {
    ttft_ms_off: Pcts,
    ttft_ms_on: Pcts,
    /// Every lever on, the hedge's route Nova 2 Lite (the rest of that side in `sides`).
    ttft_ms_on_lite_fallback: Pcts,
    /// Turns whose model requests met a new connection (a handshake), every lever off and on.
    cold_connection_turns: Map<String, Value>,
    /// With every lever on: hedges started per turn, the share of them that answered, the tokens spent on
    /// the streams dropped, and model requests per turn beyond the first (hedges, retries, failovers).
    hedges_per_turn: f64,
    hedge_win_rate: f64,
    extra_tokens_per_turn: f64,
    extra_model_calls_per_turn: f64,
    /// Each lever alone.
    by_lever: Map<String, Value>,
    /// `completed.metrics.cpu_us` at one turn at a time (every lever on), µs.
    cpu_us: CpuPcts,
    /// Every side in full (`off`, `on`, each lever), and the run's settings.
    sides: Map<String, Value>,
    settings: Value,
}

/// p50/p99 of the CPU per turn, µs.
#[derive(Debug, Clone, Copy, Serialize, Default)]
struct CpuPcts {
    /// The chat thread's own clock.
    p50: f64,
    p99: f64,
    /// The process clock on the shared runtime (emulators, gateway and client included).
    process_p50: f64,
    process_p99: f64,
    turns: usize,
}

/// One container of each side.
struct Container {
    systems: Vec<LocalSystem<MemoryStore>>,
}

async fn container(drops: Drops) -> anyhow::Result<Container> {
    let mut systems = Vec::with_capacity(SIDES.len());
    for (_, levers) in SIDES {
        systems.push(start(MemoryStore::with_latency(Duration::from_millis(50)), options(levers, drops)).await?);
    }
    Ok(Container { systems })
}

/// The messages of conversation `i`: four, from the built-in conversations in turn.
fn messages(i: usize) -> Vec<ScriptedMessage> {
    let all: Vec<ScriptedMessage> = builtin_conversations().into_iter().flat_map(|c| c.messages).collect();
    (0..4).map(|k| all[(i * 4 + k) % all.len()].clone()).collect()
}

/// Replays one conversation on one system: connect, then each message after its gap and a typing frame.
async fn conversation(
    system: &LocalSystem<MemoryStore>,
    msgs: &[ScriptedMessage],
    label: &str,
    rec: &Recorder,
) -> anyhow::Result<(Vec<Row>, u64)> {
    let mut client = ChatClient::connect(&system.ws_url()).await?;
    let (mut rows, mut errors) = (Vec::new(), 0);
    for (k, msg) in msgs.iter().enumerate() {
        let after_gap = k % 2 == 0;
        tokio::time::sleep(if after_gap { GAP } else { WARM_GAP }).await;
        let typing = json!({"action": "typing", "text": msg.text});
        client.send_raw(typing.to_string()).await?;
        tokio::time::sleep(Duration::from_millis(TYPING_LEAD_MS)).await;
        let sent = Instant::now();
        match run_turn(&mut client, msg).await {
            Ok(s) => {
                rec.record(label, &s);
                let requests = system.emulator.stats.for_message(&s.message_id);
                let first = requests.iter().min_by_key(|r| r.received_at);
                let to_model_ms =
                    first.map_or(0.0, |r| r.received_at.saturating_duration_since(sent).as_secs_f64() * 1000.0);
                let m = &s.completed["metrics"];
                rows.push(Row {
                    after_gap,
                    ttft_ms: s.ttft_ms,
                    to_model_ms,
                    connect_ms: to_model_ms - m["assembly_ms"].as_f64().unwrap_or(0.0),
                    model_calls: u32::try_from(requests.len()).unwrap_or(u32::MAX),
                    cold: first.is_some_and(|r| r.new_connection),
                    hedge_started: m["hedge_started"].as_bool().unwrap_or(false),
                    hedged: m["hedged"].as_bool().unwrap_or(false),
                    hedge_extra_tokens: m["hedge_extra_tokens"].as_u64().unwrap_or(0),
                    failovers: m["failovers"].as_u64().unwrap_or(0),
                    cpu_us: m["cpu_us"].as_u64().unwrap_or(0),
                });
            }
            Err(e) => {
                rec.record_error(label);
                eprintln!("  {label}: error: {e:#}");
                errors += 1;
            }
        }
    }
    client.close().await;
    Ok((rows, errors))
}

/// Runs conversations `c, c + CONTAINERS, ...` (below `n`) on container `c`, each on every side at once.
async fn serve_container(c: usize, cont: &Container, n: usize, rec: &Recorder) -> anyhow::Result<Vec<Run>> {
    let mut runs: Vec<Run> = SIDES.iter().map(|_| Run::default()).collect();
    for i in (c..n).step_by(CONTAINERS) {
        let msgs = messages(i);
        let sides = cont.systems.iter().zip(SIDES).map(|(sys, (label, _))| conversation(sys, &msgs, label, rec));
        for (run, res) in runs.iter_mut().zip(join_all(sides).await) {
            let (rows, errors) = res?;
            run.rows.extend(rows);
            run.errors += errors;
        }
        eprintln!("bench: tail, container {c}: conversation {} of {n} done", i + 1);
    }
    Ok(runs)
}

/// Our CPU per turn: one container, every lever on, one turn at a time, warm turns, twice: the chat function
/// on a thread and runtime of its own, reading that thread's CPU clock (`p50`, `p99`: the handler's own
/// work, as `cpu_us` reads on Lambda), and on the process's shared runtime reading the process clock
/// (`process_p50`, `process_p99`: that plus the emulators, the gateway and the client: an upper bound).
async fn cpu_pass(drops: Drops, turns: usize, rec: &Recorder) -> anyhow::Result<CpuPcts> {
    let own = cpu_turns(drops, turns, true, rec).await?;
    let shared = cpu_turns(drops, turns, false, rec).await?;
    let (o, s) = (pcts(&own), pcts(&shared));
    Ok(CpuPcts { p50: o.p50, p99: o.p99, process_p50: s.p50, process_p99: s.p99, turns })
}

/// `completed.metrics.cpu_us` of `turns` turns, µs.
async fn cpu_turns(drops: Drops, turns: usize, chat_thread: bool, rec: &Recorder) -> anyhow::Result<Vec<f64>> {
    let opts = SystemOptions { chat_thread, ..options(SIDES[1].1, drops) };
    let system = start(MemoryStore::with_latency(Duration::from_millis(50)), opts).await?;
    let mut client = ChatClient::connect(&system.ws_url()).await?;
    let all: Vec<ScriptedMessage> = builtin_conversations().into_iter().flat_map(|c| c.messages).collect();
    let label = if chat_thread { "cpu, the chat thread's clock" } else { "cpu, the process clock" };
    let mut cpu = Vec::with_capacity(turns);
    for i in 0..turns {
        // A new shopper every ten turns: one would reach the per-minute message limit.
        if i > 0 && i % 10 == 0 {
            client.close().await;
            client = ChatClient::connect(&system.ws_url()).await?;
        }
        tokio::time::sleep(WARM_GAP).await;
        let s = run_turn(&mut client, &all[i % all.len()]).await?;
        rec.record(label, &s);
        cpu.push(s.completed["metrics"]["cpu_us"].as_f64().unwrap_or(0.0));
    }
    client.close().await;
    Ok(cpu)
}

/// `bench --scenario cpu`: the CPU pass alone (`turns` per clock), printed and written as `{"cpu_us": ..}`.
pub async fn cpu(turns: usize, json_path: Option<PathBuf>, rec: &Recorder) -> anyhow::Result<()> {
    let cpu = cpu_pass(Drops::Graceful, turns, rec).await?;
    print_cpu(&cpu);
    if let Some(path) = &json_path {
        write_json(path, &json!({ "cpu_us": cpu }))?;
    }
    Ok(())
}

#[expect(clippy::print_stdout, reason = "the scenario's result is the command's output")]
fn print_cpu(cpu: &CpuPcts) {
    println!(
        "our CPU per turn (one turn at a time, every lever on, {} turns): the chat thread p50 {:.0} µs, p99 {:.0} µs; the whole process p50 {:.0} µs, p99 {:.0} µs",
        cpu.turns, cpu.p50, cpu.p99, cpu.process_p50, cpu.process_p99
    );
}

fn to_value(v: &impl Serialize) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Runs the scenario: `conversations` conversations (default 48, `--quick` 8) on every side, then the CPU
/// pass, and prints the comparison and the targets' PASS/FAIL lines.
#[expect(clippy::print_stdout, reason = "the scenario's tables are the command's output (progress goes to stderr)")]
pub async fn tail(
    quick: bool,
    conversations: Option<usize>,
    drops: Drops,
    json_path: Option<PathBuf>,
    rec: &Recorder,
) -> anyhow::Result<()> {
    let n = conversations.unwrap_or(if quick { 8 } else { 48 });
    eprintln!(
        "bench: tail, {n} conversations x 4 turns on {CONTAINERS} containers per side, sides {:?}; idle timeout {IDLE_TIMEOUT:?}, gaps {GAP:?}, drops {drops:?}",
        SIDES.map(|s| s.0)
    );
    let mut containers = Vec::with_capacity(CONTAINERS);
    for _ in 0..CONTAINERS {
        containers.push(container(drops).await?);
    }
    let started = Instant::now();
    let results = join_all(containers.iter().enumerate().map(|(c, cont)| serve_container(c, cont, n, rec))).await;
    let mut runs: Vec<Run> = SIDES.iter().map(|_| Run::default()).collect();
    for res in results {
        for (run, r) in runs.iter_mut().zip(res?) {
            run.rows.extend(r.rows);
            run.errors += r.errors;
        }
    }
    let wall = started.elapsed();
    drop(containers);
    let cpu = cpu_pass(drops, if quick { 10 } else { 100 }, rec).await?;

    let reports: Vec<(&str, SideReport)> =
        SIDES.iter().zip(&runs).map(|((name, _), run)| (*name, run.report())).collect();
    let side = |name: &str| reports.iter().find(|(n, _)| *n == name).map(|(_, r)| r.clone());
    let (Some(off), Some(on), Some(lite)) = (side("off"), side("on"), side(LITE)) else {
        anyhow::bail!("no off, on or lite side")
    };

    let f = |p: &Pcts| format!("{:.0} / {:.0} / {:.0}", p.p50, p.p95, p.p99);
    println!(
        "| levers | turns | failed | first token p50/p95/p99 ms | after a gap p50/p95/p99 | warm p50/p95/p99 | before the model p95, gap / warm | cold-connection turns | hedges/turn | hedge wins | extra calls/turn | extra tokens/turn |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (name, r) in &reports {
        println!(
            "| {name} | {} | {} | {} | {} | {} | {:.0} / {:.0} | {} | {:.3} | {:.2} | {:.3} | {:.1} |",
            r.turns,
            r.errors,
            f(&r.ttft_ms),
            f(&r.ttft_ms_after_gap),
            f(&r.ttft_ms_warm),
            r.connect_ms_after_gap.p95,
            r.connect_ms_warm.p95,
            r.cold_connection_turns,
            r.hedges_per_turn,
            r.hedge_win_rate,
            r.extra_model_calls_per_turn,
            r.extra_tokens_per_turn
        );
    }
    print_cpu(&cpu);

    let p99_cut = 1.0 - on.ttft_ms.p99 / off.ttft_ms.p99.max(1.0);
    println!(
        "first token p99 {:.0} -> {:.0} ms with the levers on: {:.1}% lower (target >= 30%): {}",
        off.ttft_ms.p99,
        on.ttft_ms.p99,
        p99_cut * 100.0,
        pass(p99_cut >= 0.30)
    );
    let lite_cut = 1.0 - lite.ttft_ms.p99 / off.ttft_ms.p99.max(1.0);
    println!(
        "first token p99 {:.0} -> {:.0} ms with the levers on and Nova 2 Lite as the hedge's route: {:.1}% lower (target >= 30%): {}; {:.3} extra calls per turn; {:.1}% of turns answered by the hedge",
        off.ttft_ms.p99,
        lite.ttft_ms.p99,
        lite_cut * 100.0,
        pass(lite_cut >= 0.30),
        lite.extra_model_calls_per_turn,
        lite.hedges_per_turn * lite.hedge_win_rate * 100.0
    );
    println!(
        "extra model calls {:.3} per turn with the levers on (target <= 0.10): {}",
        on.extra_model_calls_per_turn,
        pass(on.extra_model_calls_per_turn <= 0.10)
    );
    // The model's own draw (the heavy tail) is left out: it is the same whatever the connection did, and at
    // p95 of ~100 turns it moves by hundreds of ms between two samples of the same distribution.
    let gap_cost = on.connect_ms_after_gap.p95 - on.connect_ms_warm.p95;
    println!(
        "after an idle gap vs warm, levers on, p95 of send -> model request less context assembly: {:.0} vs {:.0} ms, {gap_cost:+.0} ms (target <= +20): {}; with assembly {:.0} vs {:.0} ms; first token p95 {:.0} vs {:.0} ms (the model's own draw included)",
        on.connect_ms_after_gap.p95,
        on.connect_ms_warm.p95,
        pass(gap_cost <= 20.0),
        on.to_model_ms_after_gap.p95,
        on.to_model_ms_warm.p95,
        on.ttft_ms_after_gap.p95,
        on.ttft_ms_warm.p95
    );
    println!("our CPU per turn reported: {}", pass(cpu.turns > 0 && cpu.p50 > 0.0));

    if let Some(path) = &json_path {
        let mut by_lever = Map::new();
        let mut sides = Map::new();
        for (name, r) in &reports {
            sides.insert((*name).to_owned(), to_value(r));
            if !matches!(*name, "off" | "on" | LITE) {
                by_lever.insert((*name).to_owned(), to_value(r));
            }
        }
        let mut cold = Map::new();
        cold.insert("off".to_owned(), json!(off.cold_connection_turns));
        cold.insert("on".to_owned(), json!(on.cold_connection_turns));
        cold.insert("turns".to_owned(), json!(on.turns));
        let report = TailReport {
            ttft_ms_off: off.ttft_ms,
            ttft_ms_on: on.ttft_ms,
            ttft_ms_on_lite_fallback: lite.ttft_ms,
            cold_connection_turns: cold,
            hedges_per_turn: on.hedges_per_turn,
            hedge_win_rate: on.hedge_win_rate,
            extra_tokens_per_turn: on.extra_tokens_per_turn,
            extra_model_calls_per_turn: on.extra_model_calls_per_turn,
            by_lever,
            cpu_us: cpu,
            sides,
            settings: json!({
                "conversations": n,
                "containers_per_side": CONTAINERS,
                "idle_timeout_ms": IDLE_TIMEOUT.as_millis(),
                "gap_ms": GAP.as_millis(),
                "warm_gap_ms": WARM_GAP.as_millis(),
                "pool_idle_ms": POOL_IDLE.as_millis(),
                "warm_idle_ms": WARM_IDLE.as_millis(),
                "typing_lead_ms": TYPING_LEAD_MS,
                "handshake_ms": ConnectionModel::published().handshake.as_millis(),
                "drops": format!("{drops:?}").to_lowercase(),
                "answer_tokens": ANSWER_TOKENS,
                "wall_s": wall.as_secs_f64(),
            }),
        };
        write_json(path, &report)?;
    }
    // A side without the retry or warm connections may lose turns to a silently dropped socket (the stall
    // outlasts the first-token timeout): that is what `--drops silent` shows. A side with either may not.
    let errors: u64 = SIDES.iter().zip(&runs).filter(|((_, l), _)| l.retry || l.warm).map(|(_, r)| r.errors).sum();
    anyhow::ensure!(errors == 0, "{errors} turns failed on the sides with the retry or warm connections");
    Ok(())
}

fn pass(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scaled_settings_keep_the_order_of_the_real_ones() {
        // The pool drops a connection before the endpoint does, the warm-up refreshes before the pool drops,
        // a gap outlasts the endpoint's idle timeout and a warm turn does not.
        assert!(WARM_IDLE < POOL_IDLE && POOL_IDLE < IDLE_TIMEOUT && IDLE_TIMEOUT < GAP);
        assert!(WARM_GAP + Duration::from_millis(TYPING_LEAD_MS) < POOL_IDLE);
        let on = options(SIDES[1].1, Drops::Graceful);
        assert_eq!((on.warm, on.pool_idle), (Some(WARM_IDLE), Some(POOL_IDLE)));
        assert!(on.turn.failover.hedge.enabled && on.stream_open.first_byte.is_some());
        let off = options(SIDES[0].1, Drops::Silent);
        assert!(off.warm.is_none() && !off.turn.failover.hedge.enabled && off.stream_open.first_byte.is_none());
        assert!(off.emulator.connection.silent);
    }
}
