//! Real servers on ephemeral ports: moto_server (DynamoDB), the Bedrock and gateway emulators, and a
//! recording `@connections` endpoint for handler tests.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mangaassist_adapters::dynamo::{DynamoStore, ensure_table};
use mangaassist_core::ids::SessionId;
use mangaassist_core::ports::{Store, TurnRecord};
use mangaassist_core::turn::TurnConfig;
use mangaassist_local::client::ChatClient;
use mangaassist_local::emulators::bedrock::{EmulatorConfig, LatencyModel};
use mangaassist_local::system::{LocalSystem, SystemOptions, start};
use serde_json::Value;

/// A moto_server process, killed when dropped.
pub struct Moto {
    _child: tokio::process::Child,
    pub url: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub async fn moto() -> Moto {
    let port = free_port();
    let child = tokio::process::Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("moto_server must be installed (pip install 'moto[server]'); .ci/run installs it");
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Moto { _child: child, url: format!("http://127.0.0.1:{port}") };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("moto_server did not start on port {port}");
}

/// A `DynamoStore` on a fresh table in `moto`.
pub async fn dynamo(moto: &Moto) -> DynamoStore {
    let sdk = mangaassist_adapters::sdk::local(&moto.url).await;
    let table = format!("t{}", uuid::Uuid::new_v4().simple());
    let store = DynamoStore::new(&sdk, &table);
    ensure_table(store.client(), &table).await.unwrap();
    store
}

/// The local system over a moto-backed store, with the given emulator latency.
pub async fn system(moto: &Moto, latency: LatencyModel) -> LocalSystem<DynamoStore> {
    system_with(moto, latency, |_| {}).await
}

/// The same, with the turn configuration adjusted by `f`.
pub async fn system_with(
    moto: &Moto,
    latency: LatencyModel,
    f: impl FnOnce(&mut TurnConfig),
) -> LocalSystem<DynamoStore> {
    let mut opts = SystemOptions {
        emulator: EmulatorConfig { latency, answer_tokens: 60, ..EmulatorConfig::default() },
        ..SystemOptions::default()
    };
    // Tests that are not about the limits send faster than a shopper types.
    opts.turn.limits.user.requests_per_minute = 1_000;
    f(&mut opts.turn);
    start(dynamo(moto).await, opts).await.unwrap()
}

/// Sends `text` and returns the `completed` event (panics on an error event).
pub async fn ask(client: &mut ChatClient, text: &str, page: Option<&Value>) -> Value {
    let id = client.send_message(text, page).await.unwrap();
    let events = events_until_end(client, &id).await;
    let last = events.last().unwrap().clone();
    assert_eq!(last["type"], "completed", "{last}");
    last
}

/// Slow enough to leave mid-answer: 40 tokens/s.
pub fn slow() -> LatencyModel {
    LatencyModel { overhead_ms: 20.0, prefill_ms_per_token: 0.0, decode_tokens_per_sec: 40.0, jitter: 0.0 }
}

pub const WAIT: Duration = Duration::from_secs(10);

/// Panics when a client event names something internal: an ARN, or a 12-digit AWS account id standing
/// alone (not inside a longer number, a UUID or a word). Every event the helpers read is checked.
pub fn assert_no_internal_ids(ev: &Value) {
    fn strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::String(s) => out.push(s),
            Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
            Value::Object(o) => o.values().for_each(|x| strings(x, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    strings(ev, &mut all);
    for s in all {
        assert!(!s.to_ascii_lowercase().contains("arn:"), "a client event carries an ARN: {ev}");
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if !b[i].is_ascii_digit() {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let touches = |c: Option<&u8>| c.is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'-');
            let alone = !touches(start.checked_sub(1).and_then(|p| b.get(p))) && !touches(b.get(i));
            assert!(!(i - start == 12 && alone), "a client event carries an account-like id: {ev}");
        }
    }
}

/// Events for `id` until its `completed`, `error` or `retract` (inclusive).
pub async fn events_until_end(client: &mut ChatClient, id: &str) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let ev = client.next_event(WAIT).await.unwrap();
        assert_no_internal_ids(&ev);
        if ev["message_id"].as_str() != Some(id) {
            continue;
        }
        let end = matches!(ev["type"].as_str(), Some("completed" | "error" | "retract"));
        out.push(ev);
        if end {
            return out;
        }
    }
}

pub fn deltas_text(events: &[Value]) -> String {
    events.iter().filter(|e| e["type"] == "delta").map(|e| e["text"].as_str().unwrap()).collect()
}

/// An `@connections` endpoint that accepts and records every POST (for handler tests that run without
/// a gateway).
#[derive(Clone, Default)]
pub struct Recorder {
    pub frames: Arc<Mutex<Vec<(String, Value)>>>,
}

pub async fn recording_endpoint() -> (String, Recorder) {
    use axum::extract::{Path, State};
    let rec = Recorder::default();
    let app = axum::Router::new()
        .route(
            "/prod/@connections/{id}",
            axum::routing::post(|State(r): State<Recorder>, Path(id): Path<String>, body: String| async move {
                r.frames.lock().unwrap().push((id, serde_json::from_str(&body).unwrap()));
                axum::http::StatusCode::OK
            }),
        )
        .with_state(rec.clone());
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/prod"), rec)
}

/// A redis-server process on 127.0.0.1, killed when dropped. It can be stopped and started again on the
/// same port, to test that clients reconnect by themselves.
pub struct Redis {
    child: Option<tokio::process::Child>,
    args: Vec<String>,
    pub port: u16,
    pub url: String,
}

fn spawn_redis(port: u16, extra: &[String]) -> tokio::process::Child {
    tokio::process::Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server must be installed (apt-get install -y redis-server); .ci/run installs it")
}

/// Sends one inline command to the Redis on `port` and returns the start of its reply.
pub async fn redis_command(port: u16, command: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(format!("{command}\r\n").as_bytes()).await?;
    let mut buf = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await.map_err(std::io::Error::other)??;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

async fn wait_for_pong(port: u16) {
    for _ in 0..200 {
        if redis_command(port, "PING").await.is_ok_and(|r| r.starts_with("+PONG")) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("redis-server did not start on port {port}");
}

impl Redis {
    /// Starts the server again (on the same port) if it is stopped, and waits for it.
    pub async fn start(&mut self) {
        if self.child.is_none() {
            self.child = Some(spawn_redis(self.port, &self.args));
        }
        wait_for_pong(self.port).await;
    }

    /// Kills the server (SIGKILL: no goodbye to clients).
    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().await.unwrap();
        }
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the server: connections stay open but nothing answers.
    pub fn freeze(&self, frozen: bool) {
        let pid = self.child.as_ref().and_then(|c| c.id()).unwrap();
        let sig = if frozen { "-STOP" } else { "-CONT" };
        assert!(std::process::Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success());
    }
}

/// A Redis configuration for a port where nothing listens yet; `start` it later.
pub fn redis_stopped() -> Redis {
    let port = free_port();
    Redis { child: None, args: Vec::new(), port, url: format!("redis://127.0.0.1:{port}") }
}

pub async fn redis() -> Redis {
    let mut r = redis_stopped();
    r.start().await;
    r
}

/// A one-node Redis Cluster owning every hash slot: multi-key commands across slots fail with `CROSSSLOT`,
/// as on ElastiCache Serverless.
pub async fn redis_cluster() -> Redis {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("mangaassist-redis-cluster-{port}"));
    std::fs::create_dir_all(&dir).unwrap();
    let args: Vec<String> = [
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        &format!("nodes-{port}.conf"),
        "--cluster-announce-ip",
        "127.0.0.1",
        "--dir",
        dir.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut r = Redis { child: None, args, port, url: format!("redis://127.0.0.1:{port}") };
    r.start().await;
    let reply = redis_command(port, "CLUSTER ADDSLOTSRANGE 0 16383").await.unwrap();
    assert!(reply.starts_with("+OK"), "{reply}");
    for _ in 0..200 {
        if redis_command(port, "CLUSTER INFO").await.is_ok_and(|r| r.contains("cluster_state:ok")) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the one-node cluster on port {port} did not become ready");
}

/// The session's stored turns once there are `n` of them (the turn is stored side by side with the event
/// that ends it, so a client can see the event a moment before the write lands); what is there after 2.5 s
/// otherwise.
pub async fn stored_turns<St: Store>(store: &St, session: &str, n: usize) -> Vec<TurnRecord> {
    let session = SessionId::parse(session).unwrap();
    let mut stored = Vec::new();
    for _ in 0..50 {
        stored = store.recent_turns(&session, 10).await.unwrap();
        if stored.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stored
}
