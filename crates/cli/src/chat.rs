//! `mangaassist chat`: a terminal chat with a running system, one turn per line typed.

use std::time::Duration;

use anyhow::Context as _;
use mangaassist_local::client::ChatClient;
use serde_json::Value;
use tokio::io::AsyncBufReadExt;

/// Sends each line typed (or `message` alone) as the `serve` development login's `user`, printing the answers
/// as they stream.
pub async fn chat(
    url: &str,
    user: &str,
    message: Option<String>,
    page_context: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    let pc: Option<Value> =
        page_context.map(|s| serde_json::from_str(&s)).transpose().context("--page-context is not JSON")?;
    let url = mangaassist_local::client::authenticated(url, user).await?;
    let mut client = ChatClient::connect(&url).await?;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut one_shot = message;
    let interactive = one_shot.is_none();
    loop {
        let text = match one_shot.take() {
            Some(t) => t,
            None if interactive => {
                eprint!("> ");
                match lines.next_line().await? {
                    Some(l) if l.trim().is_empty() => continue,
                    Some(l) => l,
                    None => break,
                }
            }
            None => break,
        };
        chat_turn(&mut client, &url, &text, pc.as_ref(), json).await?;
        if !interactive {
            break;
        }
    }
    client.close().await;
    Ok(())
}

/// One message: the answer streams to stdout; then one line of figures and the products' titles on stderr
/// (so `> file` keeps only the answer). With `json`, every event of the turn as it arrived, on stdout.
#[expect(clippy::disallowed_methods, reason = "the answer streams to stdout, so `> file` keeps only the answer")]
async fn chat_turn(
    client: &mut ChatClient,
    url: &str,
    text: &str,
    page_context: Option<&Value>,
    json: bool,
) -> anyhow::Result<()> {
    use mangaassist_local::client::{product_titles, turn_line};
    use std::io::Write as _;
    let started = std::time::Instant::now();
    let id = client.send_message(text, page_context).await?;
    let (mut first, mut answer) = (None, String::new());
    let mut out = std::io::stdout();
    loop {
        let ev = client.next_event(Duration::from_secs(30)).await?;
        if ev["message_id"].as_str() != Some(id.as_str()) {
            continue;
        }
        if json {
            writeln!(out, "{ev}")?;
        }
        match ev["type"].as_str() {
            Some("delta") => {
                first.get_or_insert_with(|| started.elapsed().as_secs_f64() * 1000.0);
                let t = ev["text"].as_str().unwrap_or_default();
                answer.push_str(t);
                if !json {
                    write!(out, "{t}")?;
                }
            }
            Some("retract") => {
                // The guardrail replaced what was shown: say so, then show the replacement.
                answer = ev["message"].as_str().unwrap_or_default().to_owned();
                if !json {
                    writeln!(out)?;
                    eprintln!("[revised by the safety check; the answer above is withdrawn]");
                    writeln!(out, "{answer}")?;
                }
                // A retracted message ends here: no `completed` follows.
                break;
            }
            Some("completed") => {
                if json {
                    break;
                }
                writeln!(out)?;
                out.flush()?;
                eprintln!("  {}", turn_line(&ev["metrics"], first));
                let asins: Vec<String> = ev["products"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["asin"].as_str().map(str::to_owned))
                    .collect();
                let japanese = text.chars().any(|c| matches!(c as u32, 0x3040..=0x30FF | 0x4E00..=0x9FFF));
                let titles = product_titles(url, &asins, &answer, japanese).await;
                if !titles.is_empty() {
                    eprintln!("  products: {}", titles.join(" · "));
                }
                break;
            }
            Some("error") => {
                if !json {
                    if !answer.is_empty() {
                        writeln!(out)?;
                    }
                    let code = ev["code"].as_str().unwrap_or("error");
                    let mut line = format!("[{code}] {}", ev["message"].as_str().unwrap_or_default());
                    if let Some(ms) = ev["retry_after_ms"].as_u64() {
                        line.push_str(&format!(" (try again in {:.1} s)", ms as f64 / 1000.0));
                    }
                    eprintln!("{line}");
                }
                break;
            }
            _ => {}
        }
        out.flush()?;
    }
    out.flush()?;
    Ok(())
}
