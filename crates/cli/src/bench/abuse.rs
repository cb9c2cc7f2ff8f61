//! `bench --scenario abuse`: 200 concurrent shoppers, each signed in at the local issuer, against the local
//! system with faults injected: the emulator's on-demand capacity throttles, Redis is down (the real Redis
//! adapter pointed at a closed port), 5% of DynamoDB writes are throttled, some clients leave mid-stream,
//! some try to resume another shopper's session, and one client floods. Two more adversaries run beside
//! them (issue 28): one user flooding `typing` frames on five connections (each admitted frame is paid
//! speculation work, so one user gets one typing rate whatever their connections), and guest-token churn
//! from one address (25 fresh guest tokens, two connections and three messages each: the per-address caps
//! hold it, whatever the per-guest limits say).
//!
//! It counts what must never happen: a message that ends in silence or whose completed answer is not in
//! the store (`lost`), a message answered twice (`duplicates`), a prompt holding another shopper's words
//! (`cross_session_reads`: every shopper's first message carries a code word no one else uses, and every
//! prompt the model received is searched for the others'); and what the well-behaved shoppers felt
//! (first-token percentiles) while the flood was refused (`flood_rejected`). Well-behaved clients resend a
//! message the service called retryable (same id, after `retry_after_ms` or a short backoff).
//! The capacity runs ([`super::capacity`]) are appended: client-visible throttles on-demand, with retries,
//! and on provisioned units.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mangaassist_adapters::redis_cache::{RedisCache, RedisConfig};
use mangaassist_core::answer::routes::Routes;
use mangaassist_core::cache::CounterKey;
use mangaassist_core::clock::{Clock as _, SystemClock};
use mangaassist_core::ids::{SessionId, UserId};
use mangaassist_core::ports::memory::MemoryStore;
use mangaassist_core::ports::{Counter, Store, TurnStatus};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::capacity::{CapacityReport, capacity, held_out_conversations};
use super::stats::{Pcts, pcts, write_json};
use super::{Conversation, builtin_conversations};
use mangaassist_local::client::ChatClient;
use mangaassist_local::faults::{FaultyStore, StoreFaults};
use mangaassist_local::system::{LocalSystem, SourceLatency, SystemOptions, start_full};

/// What `bench --scenario abuse` reports (`--json` keys).
#[derive(Debug, Clone, Serialize)]
pub struct AbuseReport {
    pub connections: usize,
    /// Messages the well-behaved shoppers sent (each counted once, however often resent).
    pub turns: u64,
    pub completed: u64,
    /// Messages that ended with a typed error after the client's retries, by code.
    pub refused: BTreeMap<String, u64>,
    /// Messages a client left mid-answer (stored as `client_gone`, not lost).
    pub left_mid_stream: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub cross_session_reads: u64,
    /// Attempts to resume another shopper's session that were given that session (must be 0).
    pub hijacked_sessions: u64,
    /// Client first-token latency of the well-behaved shoppers' completed messages (last attempt).
    pub ttft_ms: Pcts,
    pub flood_sent: u64,
    pub flood_rejected: u64,
    pub flood_answered: u64,
    /// `typing` frames one user sent on five connections, and how many were admitted (speculated), against
    /// the per-user cap of the minutes the flood spanned.
    pub typing_flood_sent: u64,
    pub typing_flood_admitted: u64,
    pub typing_flood_cap: u64,
    /// Events the typing flood's connections received (a typing frame is never answered: must be 0).
    pub typing_flood_answered: u64,
    /// Guest churn from one address: connections tried / accepted, messages sent / answered / refused, and
    /// messages that ended in silence (must be 0).
    pub churn_connects: u64,
    pub churn_connected: u64,
    pub churn_sent: u64,
    pub churn_answered: u64,
    pub churn_refused: u64,
    pub churn_silent: u64,
    pub resends: u64,
    pub injected_store_faults: u64,
    pub bedrock_throttles: u64,
    pub wall_s: f64,
    pub capacity: Option<CapacityReport>,
}

type System = LocalSystem<Arc<FaultyStore<MemoryStore>>, RedisCache>;

#[derive(Default)]
struct Tally {
    turns: u64,
    completed: u64,
    refused: BTreeMap<String, u64>,
    left: u64,
    silent: u64,
    resends: u64,
    hijacked: u64,
    ttft: Vec<f64>,
    /// message id -> (client, session): what was answered, to find in the store afterwards.
    answered: Vec<(String, usize, SessionId)>,
    /// message id -> client (every message, to attribute the prompts the model received).
    sent_by: HashMap<String, usize>,
    completions: HashMap<String, u32>,
    /// Events the shoppers' clients dropped as repeats (delivered twice by a retried post).
    repeats: u64,
}

/// The code word of client `i`.
fn code_word(i: usize) -> String {
    format!("kw{i:04}x")
}

/// Runs the scenario (`quick`: 40 connections and a smaller capacity run).
pub async fn abuse(quick: bool, json_path: Option<PathBuf>) -> anyhow::Result<()> {
    let connections: usize = if quick { 40 } else { 200 };
    let started = Instant::now();
    let mut opts = SystemOptions { sources: SourceLatency::design(), ..SystemOptions::default() };
    opts.turn.emf = false;
    let store = Arc::new(FaultyStore::new(
        MemoryStore::with_latency(Duration::from_millis(10)),
        StoreFaults { write_throttle: 0.05, ..StoreFaults::default() },
    ));
    // Redis down: the real adapter, aimed at a port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let cache = RedisCache::connect(&RedisConfig::new(format!("redis://127.0.0.1:{dead}"), false))?;
    let sys: System = start_full(store.clone(), cache, opts, Routes::default()).await?;
    let sys = Arc::new(sys);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let sessions: Arc<Mutex<HashMap<usize, SessionId>>> = Arc::default();
    let mut script = builtin_conversations();
    script.extend(held_out_conversations());

    eprintln!("bench: abuse: {connections} shoppers and one flooding client, faults injected");
    let flood = tokio::spawn(flood_client(sys.clone(), if quick { 100 } else { 300 }));
    let typist = tokio::spawn(typing_flood(sys.clone(), store.clone(), if quick { 40 } else { 100 }));
    let churn = tokio::spawn(guest_churn(sys.clone(), 25));
    let mut tasks = Vec::new();
    for i in 0..connections {
        let (sys, tally, sessions) = (sys.clone(), tally.clone(), sessions.clone());
        let conv = script[i % script.len()].clone();
        tasks.push(tokio::spawn(async move { shopper(i, &sys, &conv, &tally, &sessions).await }));
    }
    for t in tasks {
        if let Ok(Err(e)) = t.await {
            eprintln!("bench: abuse: a shopper could not run: {e:#}");
        }
    }
    let (flood_sent, flood_rejected, flood_answered) = flood.await.unwrap_or((0, 0, 0));
    let typing = typist.await.unwrap_or_default();
    let churned = churn.await.unwrap_or_default();
    // Let the last turns' writes and summaries land.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let t = tally.lock().await;
    let (mut lost, mut duplicates) = (t.silent, 0u64);
    for (id, _, session) in &t.answered {
        let turns = store.inner.recent_turns(session, 1000).await.unwrap_or_default();
        let stored = turns.iter().filter(|r| r.message_id.as_str() == id && r.status == TurnStatus::Complete).count();
        if stored == 0 {
            lost += 1;
        }
        duplicates += u64::try_from(stored.saturating_sub(1)).unwrap_or(0);
    }
    duplicates += t.completions.values().map(|&n| u64::from(n.saturating_sub(1))).sum::<u64>();
    // Frames delivered twice that the client dropped by `seq` count too: the server sent them.
    duplicates += t.repeats + churned.duplicates;
    lost += churned.silent;
    let cross_session_reads = cross_reads(&sys, &t.sent_by);
    let cap = capacity(quick).await.ok();
    let report = AbuseReport {
        connections,
        turns: t.turns,
        completed: t.completed,
        refused: t.refused.clone(),
        left_mid_stream: t.left,
        lost,
        duplicates,
        cross_session_reads,
        hijacked_sessions: t.hijacked,
        ttft_ms: pcts(&t.ttft),
        flood_sent,
        flood_rejected,
        flood_answered,
        typing_flood_sent: typing.sent,
        typing_flood_admitted: typing.admitted,
        typing_flood_cap: typing.cap,
        typing_flood_answered: typing.answered,
        churn_connects: churned.connects,
        churn_connected: churned.connected,
        churn_sent: churned.sent,
        churn_answered: churned.answered,
        churn_refused: churned.refused,
        churn_silent: churned.silent,
        resends: t.resends,
        injected_store_faults: store.injected(),
        bedrock_throttles: sys.emulator.stats.throttled(),
        wall_s: started.elapsed().as_secs_f64(),
        capacity: cap,
    };
    print_report(&report);
    if let Some(path) = &json_path {
        write_json(path, &report)?;
    }
    Ok(())
}

/// Prompts the model received that hold a code word of a client other than the one that sent them.
fn cross_reads(sys: &System, sent_by: &HashMap<String, usize>) -> u64 {
    let mut n = 0;
    for (id, &client) in sent_by {
        for req in sys.emulator.stats.for_message(id) {
            let mut rest = req.prompt.as_str();
            while let Some(at) = rest.find("kw") {
                let word = rest.get(at..at + 7).unwrap_or_default();
                let is_code_word =
                    word.len() == 7 && word.ends_with('x') && word[2..6].bytes().all(|b| b.is_ascii_digit());
                if is_code_word && word != code_word(client) {
                    n += 1;
                }
                rest = &rest[at + 2..];
            }
        }
    }
    n
}

/// One well-behaved shopper (a few misbehave the way real clients do: leaving mid-answer, or asking for
/// another shopper's session).
async fn shopper(
    i: usize,
    sys: &System,
    conv: &Conversation,
    tally: &Mutex<Tally>,
    sessions: &Mutex<HashMap<usize, SessionId>>,
) -> anyhow::Result<()> {
    // Start spread over a second, like arriving shoppers.
    tokio::time::sleep(Duration::from_millis(fastrand::u64(0..1000))).await;
    let mut url = sys.ws_url_for(&format!("shopper-{i}"));
    let victim = (i % 10 == 9).then(|| i - 1);
    let mut victim_session = None;
    if let Some(v) = victim {
        for _ in 0..100 {
            if let Some(s) = sessions.lock().await.get(&v).cloned() {
                url = format!("{url}&session_id={s}");
                victim_session = Some(s);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut client = ChatClient::connect(&url).await?;
    client.send_raw(r#"{"action":"session"}"#).await?;
    let session = loop {
        let ev = client.next_event(Duration::from_secs(10)).await?;
        if ev["type"] == "session" {
            break SessionId::parse(ev["session_id"].as_str().unwrap_or_default())?;
        }
    };
    if victim_session.as_ref() == Some(&session) {
        tally.lock().await.hijacked += 1;
    }
    sessions.lock().await.insert(i, session.clone());
    let leaves_at = (i % 7 == 3).then_some(1usize);
    for (n, msg) in conv.messages.iter().enumerate() {
        let text = if n == 0 { format!("{} (my code word is {})", msg.text, code_word(i)) } else { msg.text.clone() };
        let id = uuid::Uuid::new_v4().to_string();
        tally.lock().await.turns += 1;
        tally.lock().await.sent_by.insert(id.clone(), i);
        if leaves_at == Some(n) {
            client.send_with_id(&id, &text, msg.page_context.as_ref()).await?;
            // Leave at the first delta (or whatever ends the message first).
            loop {
                let ev = client.next_event(Duration::from_secs(30)).await?;
                if ev["message_id"] == id.as_str() {
                    break;
                }
            }
            tally.lock().await.repeats += client.repeats_dropped();
            client.close().await;
            tally.lock().await.left += 1;
            return Ok(());
        }
        match ask(&mut client, &id, &text, msg.page_context.as_ref(), tally).await {
            Ok(End::Completed(ttft)) => {
                let mut t = tally.lock().await;
                t.completed += 1;
                t.ttft.push(ttft);
                t.answered.push((id, i, session.clone()));
            }
            Ok(End::Refused(code)) => *tally.lock().await.refused.entry(code).or_default() += 1,
            Err(_) => {
                tally.lock().await.silent += 1;
                return Ok(());
            }
        }
    }
    tally.lock().await.repeats += client.repeats_dropped();
    client.close().await;
    Ok(())
}

enum End {
    /// Completed; client first-token latency of the attempt that completed, ms.
    Completed(f64),
    /// A typed error after the retries.
    Refused(String),
}

/// Sends a message and resends it (same id) while the service says retryable, up to five attempts.
/// `Err`: silence (no `completed` or `error` within 30 s), or the connection failed.
async fn ask(
    client: &mut ChatClient,
    id: &str,
    text: &str,
    page: Option<&Value>,
    tally: &Mutex<Tally>,
) -> anyhow::Result<End> {
    for attempt in 1..=5u32 {
        let t0 = Instant::now();
        client.send_with_id(id, text, page).await?;
        let mut first = None;
        let end = loop {
            let ev = client.next_event(Duration::from_secs(30)).await?;
            if ev["message_id"] != id {
                continue;
            }
            match ev["type"].as_str() {
                Some("delta") => {
                    first.get_or_insert_with(|| t0.elapsed().as_secs_f64() * 1000.0);
                }
                Some("completed") => {
                    *tally.lock().await.completions.entry(id.to_owned()).or_default() += 1;
                    break Ok(first.unwrap_or(0.0));
                }
                Some("error") => break Err(ev),
                _ => {}
            }
        };
        match end {
            Ok(ttft) => return Ok(End::Completed(ttft)),
            Err(e) => {
                let code = e["code"].as_str().unwrap_or("?").to_owned();
                if e["retryable"] != true || attempt == 5 {
                    return Ok(End::Refused(code));
                }
                let wait = e["retry_after_ms"].as_u64().unwrap_or_else(|| 200 + fastrand::u64(0..600)).min(5_000);
                tally.lock().await.resends += 1;
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
        }
    }
    Ok(End::Refused("gave_up".to_owned()))
}

/// One client sending `n` messages as fast as it can, without waiting for answers: (sent, refused by a
/// limit, answered).
async fn flood_client(sys: Arc<System>, n: u64) -> (u64, u64, u64) {
    let Ok(mut c) = ChatClient::connect(&sys.ws_url_for("flooder")).await else { return (0, 0, 0) };
    let mut sent = 0;
    for k in 0..n {
        let frame = json!({"action": "sendMessage", "message_id": format!("flood-{k}"), "text": "free manga now?"});
        if c.send_raw(frame.to_string()).await.is_ok() {
            sent += 1;
        }
    }
    let (mut rejected, mut answered) = (0, 0);
    while rejected + answered < sent {
        let Ok(ev) = c.next_event(Duration::from_secs(30)).await else { break };
        match ev["type"].as_str() {
            Some("completed") => answered += 1,
            Some("error") if matches!(ev["code"].as_str(), Some("rate_limited" | "busy")) => rejected += 1,
            Some("error") => answered += 1,
            _ => {}
        }
    }
    (sent, rejected, answered)
}

/// What the typing flood did.
#[derive(Debug, Default)]
struct TypingFlood {
    sent: u64,
    admitted: u64,
    cap: u64,
    answered: u64,
}

/// One user ("typist") sending `per_connection` typing frames on each of five connections as fast as it
/// can; the frames admitted are read from the user's typing counters of the minutes the flood spanned.
async fn typing_flood(sys: Arc<System>, store: Arc<FaultyStore<MemoryStore>>, per_connection: u64) -> TypingFlood {
    let mut out = TypingFlood::default();
    let mut clients = Vec::new();
    for _ in 0..5 {
        if let Ok(c) = ChatClient::connect(&sys.ws_url_for("typist")).await {
            clients.push(c);
        }
    }
    let from = SystemClock.now_ms() / 60_000;
    for k in 0..per_connection {
        for (n, c) in clients.iter_mut().enumerate() {
            let frame = json!({"action": "typing", "text": format!("any horror manga like the one from {n} {k}")});
            if c.send_raw(frame.to_string()).await.is_ok() {
                out.sent += 1;
            }
        }
    }
    // Let the admitted ones finish their legs, then listen: a typing frame is never answered.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for c in &mut clients {
        while c.next_event(Duration::from_millis(200)).await.is_ok() {
            out.answered += 1;
        }
    }
    let to = SystemClock.now_ms() / 60_000;
    let Ok(user) = UserId::parse("u-typist") else { return out };
    for minute in from..=to {
        let c = Counter::new(&user, CounterKey::Typing { minute });
        out.admitted += u64::try_from(store.inner.counter(&c).await.unwrap_or(0)).unwrap_or(0);
    }
    out.cap = u64::from(sys.app.engine.cfg.limits.typing_per_minute) * (to - from + 1);
    out
}

/// What the guest churn did.
#[derive(Debug, Default)]
struct Churn {
    connects: u64,
    connected: u64,
    sent: u64,
    answered: u64,
    refused: u64,
    silent: u64,
    duplicates: u64,
}

/// `tokens` fresh guest tokens from one address, two connections each, three messages on each connection
/// (side by side, no resends).
async fn guest_churn(sys: Arc<System>, tokens: usize) -> Churn {
    let mut out = Churn::default();
    let mut clients = Vec::new();
    for _ in 0..tokens {
        let url = sys.guest_ws_url();
        for _ in 0..2 {
            out.connects += 1;
            if let Ok(c) = ChatClient::connect(&url).await {
                clients.push(c);
            }
        }
    }
    out.connected = clients.len() as u64;
    let runs = clients.into_iter().map(|mut c| async move {
        let mut r = Churn::default();
        for text in ["any horror manga?", "and comedy?", "something short?"] {
            let id = uuid::Uuid::new_v4().to_string();
            if c.send_with_id(&id, text, None).await.is_err() {
                continue;
            }
            r.sent += 1;
            let mut completed = 0u64;
            loop {
                let Ok(ev) = c.next_event(Duration::from_secs(30)).await else {
                    r.silent += 1;
                    break;
                };
                if ev["message_id"] != id.as_str() {
                    continue;
                }
                match ev["type"].as_str() {
                    Some("completed") => {
                        completed += 1;
                        r.answered += 1;
                        break;
                    }
                    Some("error") => {
                        r.refused += 1;
                        break;
                    }
                    _ => {}
                }
            }
            r.duplicates += completed.saturating_sub(1);
        }
        r.duplicates += c.repeats_dropped();
        c.close().await;
        r
    });
    for r in futures_util::future::join_all(runs).await {
        out.sent += r.sent;
        out.answered += r.answered;
        out.refused += r.refused;
        out.silent += r.silent;
        out.duplicates += r.duplicates;
    }
    out
}

#[expect(clippy::print_stdout, reason = "the scenario's table is the command's output (progress goes to stderr)")]
fn print_report(r: &AbuseReport) {
    println!("| abuse ({} shoppers + 1 flooder) | value |", r.connections);
    println!("|---|---|");
    println!("| messages sent (well-behaved) | {} |", r.turns);
    println!("| completed | {} |", r.completed);
    println!("| refused after retries (typed) | {:?} |", r.refused);
    println!("| left mid-stream (stored as client_gone) | {} |", r.left_mid_stream);
    println!("| lost | {} |", r.lost);
    println!("| duplicates | {} |", r.duplicates);
    println!("| cross-session reads | {} |", r.cross_session_reads);
    println!("| hijacked sessions | {} |", r.hijacked_sessions);
    println!("| first token p50 / p95 / p99 ms | {:.0} / {:.0} / {:.0} |", r.ttft_ms.p50, r.ttft_ms.p95, r.ttft_ms.p99);
    println!("| flood: sent / rejected / answered | {} / {} / {} |", r.flood_sent, r.flood_rejected, r.flood_answered);
    println!(
        "| typing flood (1 user, 5 connections): sent / admitted / per-user cap / answered | {} / {} / {} / {} |",
        r.typing_flood_sent, r.typing_flood_admitted, r.typing_flood_cap, r.typing_flood_answered
    );
    println!(
        "| guest churn (25 tokens, 1 address): connects tried / accepted | {} / {} |",
        r.churn_connects, r.churn_connected
    );
    println!(
        "| guest churn: messages sent / answered / refused / silent | {} / {} / {} / {} |",
        r.churn_sent, r.churn_answered, r.churn_refused, r.churn_silent
    );
    println!("| resends (retryable errors) | {} |", r.resends);
    println!("| injected DynamoDB throttles | {} |", r.injected_store_faults);
    println!("| Bedrock throttles (emulator capacity) | {} |", r.bedrock_throttles);
    println!("| wall | {:.1} s |", r.wall_s);
    if let Some(c) = &r.capacity {
        println!();
        println!("{}", c.table());
    }
}
