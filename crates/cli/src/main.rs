//! `mangaassist`: run the whole system locally (`serve`), talk to it (`chat`, `token`), measure it (`bench`),
//! create the DynamoDB table (`create-table`). The system itself is the `mangaassist-local` library; this crate
//! is its command line and the end-to-end benchmark ([`bench`], one file per scenario).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use mangaassist_core::answer::relay::RelayMode;
use mangaassist_core::ports::memory::MemoryStore;
use mangaassist_local::emulators::bedrock::LatencyModel;
use mangaassist_local::system::{SystemOptions, start};

use crate::bench::report::Recorder;
use crate::bench::turns::BenchOptions;

mod bench;
mod chat;

#[derive(Parser)]
#[command(name = "mangaassist", version, about = "MangaAssist latency engine: local system, chat client, benchmark")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Latency {
    /// Published on-demand Claude figures (first token ~0.6 s, 75 tokens/s).
    Bedrock,
    /// Milliseconds: for demos and smoke tests.
    Fast,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Scenario {
    /// TTFT, total latency and our overhead; relay ablation.
    Turns,
    /// Raw vs compressed prompt tokens, CPU per compression; TTFT with compression on and off.
    Compression,
    /// A concurrency ramp against on-demand-only and provisioned routing, side by side.
    Spike,
    /// Sequential vs parallel context assembly under the design's latency profile.
    Context,
    /// Follow-up TTFT three ways: no prefetch, context prefetch, prefetch with pre-generated answers.
    Followups,
    /// One model for everything vs per-intent routing, and each request lever on and off, per intent.
    Models,
    /// 200 concurrent shoppers: client-visible throttles on-demand, with throttle retries, provisioned.
    Capacity,
    /// 200 signed-in shoppers and a flooding client with faults injected: lost, duplicate, cross-session.
    Abuse,
    /// Messages replayed as typed, with typing-time speculation on and off side by side.
    Typing,
    /// Idle gaps on the heavy-tail model: warm connections, the fresh-connection retry and hedging off and
    /// on side by side, and each alone; our CPU per turn.
    Tail,
    /// The tail scenario's CPU pass alone: our CPU per turn on the chat function's own thread, and the
    /// whole process's (100 turns each; `--quick` 20).
    Cpu,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Relay {
    Coalesce,
    PerToken,
    Both,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the whole system on embedded defaults (no AWS account) and print the WebSocket URL.
    Serve {
        /// The WebSocket gateway (and its `@connections` management API).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// The Bedrock emulator (for `AWS_ENDPOINT_URL_BEDROCK_RUNTIME` when running the function elsewhere).
        #[arg(long, default_value = "127.0.0.1:8081")]
        bedrock_listen: SocketAddr,
        #[arg(long, value_enum, default_value = "bedrock")]
        latency: Latency,
        #[arg(long, value_enum, default_value = "coalesce")]
        relay: Relay,
        /// Guardrails on answers and input (the emulator's documented policy), as the template deploys them.
        #[arg(long, value_enum, default_value = "on")]
        guardrail: OnOff,
        /// Answers that start while the shopper types (`ANSWER_SPECULATION`; off in the template by default).
        #[arg(long, value_enum, default_value = "on")]
        typed_ahead: OnOff,
        /// Allow a --listen or --bedrock-listen address other machines can reach (e.g. 0.0.0.0). They can then
        /// load the demo page, take guest tokens and chat as guests, and call the Bedrock emulator (no
        /// authentication) if it is exposed too; the development login still answers this machine only,
        /// and the @connections API only this run's SigV4 key. Without this flag such an address is refused.
        #[arg(long)]
        expose_on_network: bool,
    },
    /// Create the DynamoDB table (for running the chat function against moto_server or DynamoDB Local).
    CreateTable {
        #[arg(long, default_value = "http://127.0.0.1:5000")]
        endpoint: String,
        #[arg(long, default_value = "mangaassist")]
        table: String,
    },
    /// Print a token from a running `serve`: a user token (its development login) or a guest token.
    Token {
        /// The user to sign in as (user id `u-<NAME>`).
        #[arg(long, default_value = "local-shopper", conflicts_with = "guest")]
        user: String,
        /// A guest token instead (`POST /token`).
        #[arg(long)]
        guest: bool,
        /// The `serve` WebSocket URL (its HTTP origin answers).
        #[arg(long, default_value = "ws://127.0.0.1:8080/local")]
        url: String,
    },
    /// Chat from the terminal: each line you type is sent; tokens print as they stream.
    Chat {
        /// Without `token=` in it, a token for `--user` is fetched from the `serve` behind it.
        #[arg(long, default_value = "ws://127.0.0.1:8080/local")]
        url: String,
        /// The user to chat as (a local `serve`'s development login).
        #[arg(long, default_value = "local-shopper")]
        user: String,
        /// Send this one message and exit, instead of reading lines from stdin.
        #[arg(long, short)]
        message: Option<String>,
        /// Page context JSON sent with every message, e.g. '{"current_asin":"B0UZUMAKI1"}'.
        #[arg(long)]
        page_context: Option<String>,
        /// Print every server event as it arrives, one JSON object a line, instead of the answer and its line.
        #[arg(long)]
        json: bool,
    },
    /// Measure first-token latency, total latency and our overhead over real WebSocket connections
    /// (`--scenario turns`), or prompt compression (`--scenario compression`).
    Bench {
        #[arg(long, value_enum, default_value = "turns")]
        scenario: Scenario,
        /// compression: read requests from this JSONL file instead of generating them (format in README).
        #[arg(long)]
        corpus: Option<PathBuf>,
        /// compression: generated requests.
        #[arg(long, default_value_t = 2000)]
        requests: usize,
        /// compression: generator seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// compression: skip the end-to-end TTFT comparison.
        #[arg(long)]
        no_e2e: bool,
        /// A running system (e.g. a deployed stage's wss:// URL); default: start one in-process.
        #[arg(long)]
        url: Option<String>,
        /// Conversations per run (default: 10 at concurrency 1, 4 per connection otherwise; typing: 60).
        #[arg(long)]
        conversations: Option<usize>,
        #[arg(long, value_delimiter = ',', default_value = "1,50")]
        concurrency: Vec<usize>,
        /// Relay under test; `both` runs the coalescing relay and the post-per-token baseline side by side.
        #[arg(long, value_enum, default_value = "both")]
        relay: Relay,
        /// Emulated PostToConnection round trip, ms (the management API's latency as seen from Lambda).
        #[arg(long, default_value_t = 15)]
        post_latency_ms: u64,
        /// Finish in under 30 s (fewer conversations; coalescing relay only unless --relay is given).
        #[arg(long)]
        quick: bool,
        /// Replay conversations from a JSONL file: {"messages":[{"text":"...","page_context":{...}}]}.
        #[arg(long)]
        script: Option<PathBuf>,
        /// followups: the shopper's reading pause between an answer and the next message, ms.
        #[arg(long, default_value_t = 2500)]
        read_ms: u64,
        /// Also write the report as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Also write a self-contained HTML report (tables, first-token CDFs, median-turn waterfalls).
        #[arg(long)]
        report: Option<PathBuf>,
        /// First token with guardrails off, on, or both side by side in the same run (instead of `--scenario`;
        /// with `--scenario typing`, `on` runs both sides of that comparison with guardrails).
        #[arg(long, value_enum)]
        guardrail: Option<bench::guardrail::GuardrailRun>,
        /// typing: the conversations to replay, the built-in ones (`dev`, what the settle rule was chosen on)
        /// or the held-out ones (written for reporting only).
        #[arg(long, value_enum, default_value = "dev")]
        set: bench::typing::ConversationSet,
        /// tail: how the emulated endpoint drops an idle connection: closed (`graceful`), or abandoned without
        /// a FIN (`silent`: the pooled socket stalls its next request).
        #[arg(long, value_enum, default_value = "graceful")]
        drops: bench::tail::Drops,
    },
}

fn relay_modes(r: Relay) -> Vec<RelayMode> {
    match r {
        Relay::Coalesce => vec![RelayMode::Coalesce],
        Relay::PerToken => vec![RelayMode::PerToken],
        Relay::Both => vec![RelayMode::Coalesce, RelayMode::PerToken],
    }
}

/// The turn's settings as the chat Lambda reads them: its own reader ([`::chat::config::ChatConfig`]) over this
/// process's environment, so `serve` runs on the Lambda's defaults and takes the same variables (`HEDGE`,
/// `TYPING_SPECULATION`, the model ids, ...). One local difference: EMF records are off unless
/// `EMF_METRICS` is set (on Lambda they go to CloudWatch; here they would bury the console).
fn lambda_turn_config() -> anyhow::Result<mangaassist_core::turn::TurnConfig> {
    use mangaassist_adapters::env::{Env, FromEnv as _};
    let env = Env(|name: &str| std::env::var(name).ok().or_else(|| (name == "EMF_METRICS").then(|| "off".to_owned())));
    let cfg = ::chat::config::ChatConfig::read(&env).context("the chat function's settings (environment)")?;
    Ok(cfg.turn)
}

#[expect(clippy::print_stdout, reason = "the addresses to connect to are what `serve` prints")]
async fn serve(
    listen: SocketAddr,
    bedrock_listen: SocketAddr,
    latency: Latency,
    relay: Relay,
    guardrail: OnOff,
    typed_ahead: OnOff,
    expose_on_network: bool,
) -> anyhow::Result<()> {
    let public = mangaassist_local::system::check_exposure(&[listen, bedrock_listen], expose_on_network)?;
    let turn = lambda_turn_config()?;
    let mut opts =
        SystemOptions { gateway_addr: listen, bedrock_addr: bedrock_listen, turn, ..SystemOptions::default() };
    opts.turn.typed.enabled = typed_ahead == OnOff::On;
    if guardrail == OnOff::On {
        mangaassist_local::system::with_guardrails(&mut opts);
    }
    opts.emulator.latency = match latency {
        Latency::Bedrock => LatencyModel::bedrock_like(),
        Latency::Fast => LatencyModel::fast(),
    };
    opts.turn.relay.mode = relay_modes(relay)[0];
    opts.prefetch = true;
    if latency == Latency::Bedrock {
        opts.sources = mangaassist_local::system::SourceLatency::design();
    }
    let store = match latency {
        Latency::Bedrock => MemoryStore::with_latency(Duration::from_millis(50)),
        Latency::Fast => MemoryStore::default(),
    };
    let system = start(store, opts).await?;
    println!("MangaAssist is running on embedded defaults (in-memory store, no AWS account).");
    println!("WebSocket:        {} (connect with ?token=...)", system.bare_ws_url());
    println!(
        "Token issuer:     {} (JWKS at /.well-known/jwks.json; POST /local/login?user=NAME, POST /token)",
        system.issuer.issuer()
    );
    println!("Bedrock emulator: {}", system.emulator.url());
    println!("@connections:     {}", system.gateway.management_endpoint());
    let key = system.gateway.management_key();
    println!(
        "@connections key: AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} (SigV4, this run only: for a chat function run elsewhere)",
        key.access_key_id, key.secret_access_key
    );
    if !public.is_empty() {
        println!("{}", mangaassist_local::system::exposure_notice(listen, bedrock_listen, &public));
    }
    println!("Try:       mangaassist chat --url {}", system.bare_ws_url());
    println!("Token:     mangaassist token --user alice   (or --guest)");
    tokio::signal::ctrl_c().await.context("Failed to wait for Ctrl-C")?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cmd = Cli::parse().cmd;
    let (rec, report) = match &cmd {
        Cmd::Bench { report: Some(path), .. } => {
            (Recorder::on(scenario_name(&cmd), bench_settings(&cmd)), Some(path.clone()))
        }
        _ => (Recorder::off(), None),
    };
    let result = run(cmd, &rec).await;
    if let Some(path) = report {
        // Written even when the run failed: its turns are what explains the failure.
        rec.write(&path)?;
    }
    result
}

fn scenario_name(cmd: &Cmd) -> &'static str {
    let Cmd::Bench { scenario, guardrail, .. } = cmd else { return "" };
    if guardrail.is_some() && *scenario != Scenario::Typing {
        return "guardrail";
    }
    match scenario {
        Scenario::Turns => "turns",
        Scenario::Compression => "compression",
        Scenario::Spike => "spike",
        Scenario::Context => "context",
        Scenario::Followups => "followups",
        Scenario::Models => "models",
        Scenario::Capacity => "capacity",
        Scenario::Abuse => "abuse",
        Scenario::Typing => "typing",
        Scenario::Tail => "tail",
        Scenario::Cpu => "cpu",
    }
}

/// The run's settings, as the report shows them.
fn bench_settings(cmd: &Cmd) -> Vec<(String, String)> {
    let Cmd::Bench { url, conversations, concurrency, relay, post_latency_ms, quick, script, .. } = cmd else {
        return Vec::new();
    };
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let now = aws_smithy_types::DateTime::from_secs(i64::try_from(secs).unwrap_or(0))
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_default();
    let mut v = vec![
        ("scenario".to_owned(), scenario_name(cmd).to_owned()),
        ("started".to_owned(), now),
        ("system".to_owned(), url.clone().unwrap_or_else(|| "in-process (emulators, embedded stores)".to_owned())),
        ("quick".to_owned(), quick.to_string()),
        ("cores".to_owned(), std::thread::available_parallelism().map_or(0, |n| n.get()).to_string()),
        ("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
    ];
    if scenario_name(cmd) == "turns" {
        let relay = match relay {
            Relay::Coalesce => "coalesce",
            Relay::PerToken => "per_token",
            Relay::Both if *quick => "coalesce",
            Relay::Both => "coalesce and per_token",
        };
        let list = concurrency.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        v.push(("relay".to_owned(), relay.to_owned()));
        v.push(("concurrency".to_owned(), list));
        v.push(("PostToConnection latency".to_owned(), format!("{post_latency_ms} ms")));
        v.push(("conversations per run".to_owned(), conversations.map_or("default".to_owned(), |n| n.to_string())));
    }
    v.push(("conversations".to_owned(), script.as_ref().map_or("built-in".to_owned(), |p| p.display().to_string())));
    v
}

#[expect(
    clippy::print_stdout,
    reason = "`token` and `create-table` print their result, `bench --scenario capacity` its table"
)]
async fn run(cmd: Cmd, rec: &Recorder) -> anyhow::Result<()> {
    match cmd {
        Cmd::Serve { listen, bedrock_listen, latency, relay, guardrail, typed_ahead, expose_on_network } => {
            serve(listen, bedrock_listen, latency, relay, guardrail, typed_ahead, expose_on_network).await
        }
        Cmd::CreateTable { endpoint, table } => {
            let sdk = mangaassist_adapters::sdk::local(&endpoint).await;
            let store = mangaassist_adapters::dynamo::DynamoStore::new(&sdk, &table);
            mangaassist_adapters::dynamo::ensure_table(store.client(), &table)
                .await
                .with_context(|| format!("Failed to create table {table} at {endpoint}"))?;
            println!("table {table} is ready at {endpoint}");
            Ok(())
        }
        Cmd::Chat { url, user, message, page_context, json } => {
            chat::chat(&url, &user, message, page_context, json).await
        }
        Cmd::Token { user, guest, url } => {
            let token = mangaassist_local::client::fetch_token(&url, (!guest).then_some(user.as_str())).await?;
            println!("{token}");
            Ok(())
        }
        Cmd::Bench { scenario: Scenario::Typing, guardrail, quick, conversations, json, set, .. } => {
            let guardrails = match guardrail {
                None | Some(bench::guardrail::GuardrailRun::Off) => false,
                Some(bench::guardrail::GuardrailRun::On) => true,
                Some(bench::guardrail::GuardrailRun::Both) => {
                    anyhow::bail!("--scenario typing takes --guardrail on or off")
                }
            };
            // Boxed: two systems replaying side by side make a ~25 KB future.
            Box::pin(bench::typing::typing(quick, conversations, guardrails, set, json, rec)).await
        }
        Cmd::Bench { scenario: Scenario::Tail, quick, conversations, drops, json, .. } => {
            // Boxed: twenty systems replaying side by side make a large future.
            Box::pin(bench::tail::tail(quick, conversations, drops, json, rec)).await
        }
        Cmd::Bench { scenario: Scenario::Cpu, quick, json, .. } => {
            bench::tail::cpu(if quick { 20 } else { 100 }, json, rec).await
        }
        Cmd::Bench { guardrail: Some(run), quick, json, .. } => {
            bench::guardrail::guardrail(run, quick, json, rec).await
        }
        Cmd::Bench { scenario: Scenario::Compression, corpus, requests, seed, no_e2e, quick, json, .. } => {
            bench::compression::compression(
                bench::compression::CompressionOptions {
                    corpus,
                    requests: if quick { requests.min(500) } else { requests },
                    seed,
                    e2e: !no_e2e,
                    quick,
                    json,
                },
                rec,
            )
            .await
        }
        Cmd::Bench { scenario: Scenario::Context, quick, json, .. } => bench::context::context(quick, json, rec).await,
        Cmd::Bench { scenario: Scenario::Followups, quick, script, read_ms, json, .. } => {
            bench::followups::followups(quick, script, read_ms, json, rec).await
        }
        Cmd::Bench { scenario: Scenario::Models, quick, json, .. } => bench::models::models(quick, json, rec).await,
        Cmd::Bench { scenario: Scenario::Abuse, quick, json, .. } => bench::abuse::abuse(quick, json).await,
        Cmd::Bench { scenario: Scenario::Capacity, quick, json, .. } => {
            let report = bench::capacity::capacity(quick).await?;
            print!("{}", report.table());
            match json {
                Some(path) => bench::stats::write_json(&path, &report),
                None => Ok(()),
            }
        }
        Cmd::Bench { scenario: Scenario::Spike, quick, json, .. } => {
            let steps = if quick { vec![5, 50] } else { vec![5, 10, 20, 50] };
            bench::spike::spike(bench::spike::SpikeOptions { steps, model_units: 2, json }, rec).await
        }
        Cmd::Bench { url, conversations, concurrency, relay, post_latency_ms, quick, script, json, .. } => {
            let relay = if quick && relay == Relay::Both { Relay::Coalesce } else { relay };
            bench::turns::turns(
                BenchOptions {
                    url,
                    script,
                    conversations,
                    concurrency,
                    relay: relay_modes(relay),
                    quick,
                    post_latency: Duration::from_millis(post_latency_ms),
                    json,
                },
                rec,
            )
            .await
        }
    }
}
