//! `bench --report FILE.html`: one self-contained HTML file (inline SVG and CSS, no script, no network) with
//! the run's settings, a table per variant (first token, total, model first token, context, tokens), the
//! first-token CDF of every variant on one chart, and the latency waterfall of each variant's median turn.
//!
//! The scenarios hand their turns to the [`Recorder`] they were given under a variant label (`coalesce
//! · 50 at once`, `compressed`, `provisioned`, `prefetch`...); it is off, and costs nothing, unless
//! `--report` turned it on ([`Recorder::on`]). [`Progress`] prints turns done, elapsed time and an ETA on stderr.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use mangaassist_core::gather::ContextConfig;
use serde_json::Value;

use super::driver::TurnSample;
use super::stats::{Dist, dist};
use mangaassist_local::web::waterfall::{Waterfall, waterfall};

/// The turns of one variant.
#[derive(Debug, Clone, Default)]
pub struct Variant {
    pub label: String,
    /// Client-side first token (send -> first delta), ms.
    pub ttft: Vec<f64>,
    /// Client-side total (send -> completed), ms.
    pub total: Vec<f64>,
    /// Each turn's `completed.metrics`, in the order of `ttft`.
    pub metrics: Vec<Value>,
    pub errors: u64,
}

/// A scenario's recording.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    pub scenario: String,
    /// `(setting, value)`, in the order given.
    pub settings: Vec<(String, String)>,
    /// In order of first appearance.
    pub variants: Vec<Variant>,
}

impl Recording {
    fn variant(&mut self, label: &str) -> &mut Variant {
        if let Some(i) = self.variants.iter().position(|v| v.label == label) {
            return &mut self.variants[i];
        }
        self.variants.push(Variant { label: label.to_owned(), ..Variant::default() });
        let last = self.variants.len() - 1;
        &mut self.variants[last]
    }
}

/// Where the scenarios record their turns for `--report`: built once by `main` and passed down to every
/// scenario and driver; clones share one recording. [`Recorder::off`] records nothing and costs nothing.
#[derive(Debug, Clone, Default)]
pub struct Recorder(Option<Arc<Mutex<Recording>>>);

impl Recorder {
    /// Records nothing (no `--report`).
    pub fn off() -> Self {
        Self(None)
    }

    /// Records the turns of `scenario`, described by `settings`.
    pub fn on(scenario: &str, settings: Vec<(String, String)>) -> Self {
        let rec = Recording { scenario: scenario.to_owned(), settings, variants: Vec::new() };
        Self(Some(Arc::new(Mutex::new(rec))))
    }

    fn with(&self, f: impl FnOnce(&mut Recording)) {
        if let Some(r) = &self.0
            && let Ok(mut r) = r.lock()
        {
            f(&mut r);
        }
    }

    /// Records one answered turn of `label`.
    pub fn record(&self, label: &str, sample: &TurnSample) {
        self.with(|r| {
            let v = r.variant(label);
            v.ttft.push(sample.ttft_ms);
            v.total.push(sample.total_ms);
            v.metrics.push(sample.completed["metrics"].clone());
        });
    }

    /// Records one failed turn of `label`.
    pub fn record_error(&self, label: &str) {
        self.with(|r| r.variant(label).errors += 1);
    }

    /// What was recorded so far (`None` when recording is off).
    pub fn recording(&self) -> Option<Recording> {
        self.0.as_ref().and_then(|r| r.lock().ok()).map(|r| r.clone())
    }

    /// Writes the report of what was recorded to `path`.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let rec = self.recording().context("Nothing was recorded (recording is off)")?;
        std::fs::write(path, render(&rec)).with_context(|| format!("Failed to write {}", path.display()))?;
        eprintln!("bench: wrote {}", path.display());
        Ok(())
    }
}

/// Prints `bench: <label>: 120/520 turns · 34 s · ETA 1 min 53 s` on stderr every 5 s while turns run.
pub struct Progress {
    done: Arc<AtomicU64>,
    ticker: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// Starts reporting `expected` turns of `label` (the first line after 5 s: short runs print nothing).
    pub fn start(label: &str, expected: u64) -> Self {
        let done = Arc::new(AtomicU64::new(0));
        let (d, label) = (done.clone(), label.to_owned());
        let started = Instant::now();
        let ticker = tokio::spawn(async move {
            let mut every =
                tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(5), Duration::from_secs(5));
            loop {
                every.tick().await;
                eprintln!("bench: {label}: {}", progress_line(d.load(Ordering::Relaxed), expected, started.elapsed()));
            }
        });
        Self { done, ticker }
    }

    /// One more turn done (answered or failed).
    pub fn tick(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.ticker.abort();
    }
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 { format!("{} min {} s", s / 60, s % 60) } else { format!("{s} s") }
}

/// `120/520 turns · 34 s · ETA 1 min 53 s` (ETA from the rate so far).
pub fn progress_line(done: u64, expected: u64, elapsed: Duration) -> String {
    let eta = if done == 0 || done >= expected {
        "ETA –".to_owned()
    } else {
        let left = elapsed.as_secs_f64() * (expected - done) as f64 / done as f64;
        format!("ETA {}", human(Duration::from_secs_f64(left)))
    };
    format!("{done}/{expected} turns · {} · {eta}", human(elapsed))
}

// ---- Rendering -----------------------------------------------------------------------------------------

/// Distinct colours for variants, in order.
const PALETTE: [&str; 8] = ["#d6336c", "#2f6fd6", "#10a37f", "#f59e0b", "#8b5cf6", "#0ea5b7", "#6b7280", "#b45309"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2} s", v / 1000.0)
    } else if v >= 10.0 {
        format!("{v:.0} ms")
    } else if v > 0.0 && v < 0.1 {
        "<0.1 ms".to_owned()
    } else {
        format!("{v:.1} ms")
    }
}

/// The tick step for an axis of `max`: 1, 2, 2.5 or 5 times a power of ten, about 5 ticks.
fn nice_step(max: f64) -> f64 {
    let raw = (max / 5.0).max(1e-9);
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|k| k * p).find(|s| *s >= raw).unwrap_or(raw)
}

fn field(m: &Value, k: &str) -> Option<f64> {
    m[k].as_f64()
}

/// The turn whose client first token is the median of the variant's.
fn median_turn(v: &Variant) -> Option<usize> {
    let mut idx: Vec<usize> = (0..v.ttft.len()).collect();
    idx.sort_by(|&a, &b| v.ttft[a].total_cmp(&v.ttft[b]));
    idx.get(idx.len().checked_sub(1)? / 2).copied()
}

/// The whole document.
pub fn render(rec: &Recording) -> String {
    let mut h = String::new();
    let title = format!("MangaAssist bench: {}", rec.scenario);
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" \
         content=\"width=device-width, initial-scale=1\"><title>{}</title><style>{CSS}</style></head><body>\
         <header><h1>{}</h1><p>First-token latency as the client saw it (send to first <code>delta</code>), per \
         variant; every figure is measured in this run.</p></header>",
        esc(&title),
        esc(&title)
    );
    h.push_str("<section><h2>Settings</h2><table class=\"settings\">");
    for (k, v) in &rec.settings {
        let _ = write!(h, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
    }
    h.push_str("</table></section>");

    let variants: Vec<&Variant> = rec.variants.iter().collect();
    if variants.is_empty() {
        h.push_str(
            "<section><h2>Turns</h2><p class=\"note\">This scenario recorded no chat turns (its figures are the \
             tables it printed: the capacity and abuse scenarios, or compression with <code>--no-e2e</code>).</p>\
             </section></body></html>\n",
        );
        return h;
    }
    h.push_str(
        "<section><h2>Turns per variant</h2><div class=\"scroll\"><table class=\"data\"><thead><tr>\
        <th>variant</th><th>turns</th><th>errors</th><th>first token p50 / p95 / p99</th><th>total p50 / p95</th>\
        <th>model first token p50</th><th>context p50</th><th>prompt tokens p50</th><th>out tokens / turn</th>\
        </tr></thead><tbody>",
    );
    for (i, v) in variants.iter().enumerate() {
        let t = dist(&v.ttft);
        let total = dist(&v.total);
        let col = |k: &str| -> Dist { dist(&v.metrics.iter().filter_map(|m| field(m, k)).collect::<Vec<_>>()) };
        let out: f64 =
            v.metrics.iter().filter_map(|m| field(m, "output_tokens")).sum::<f64>() / v.metrics.len().max(1) as f64;
        let _ = write!(
            h,
            "<tr><td><span class=\"swatch\" style=\"background:{}\"></span>{}</td><td>{}</td><td>{}</td>\
             <td>{} / {} / {}</td><td>{} / {}</td><td>{}</td><td>{}</td><td>{:.0}</td><td>{out:.0}</td></tr>",
            PALETTE[i % PALETTE.len()],
            esc(&v.label),
            v.ttft.len(),
            v.errors,
            ms(t.p50),
            ms(t.p95),
            ms(t.p99),
            ms(total.p50),
            ms(total.p95),
            ms(col("model_first_token_ms").p50),
            ms(col("assembly_ms").p50),
            col("prompt_tokens").p50,
        );
    }
    h.push_str("</tbody></table></div></section>");

    h.push_str("<section><h2>First-token CDF</h2>");
    h.push_str(&cdf_svg(&variants));
    h.push_str("</section>");

    h.push_str(
        "<section><h2>Where a median turn's wait goes</h2><p class=\"note\">Each variant's turn with the \
        median first token; server times from the moment the gateway handed over the message. Dashed red: the \
        leg's deadline.</p>",
    );
    let deadlines = ContextConfig::default();
    for (i, v) in variants.iter().enumerate() {
        let Some(t) = median_turn(v) else { continue };
        let w = waterfall(&v.metrics[t], &deadlines, None);
        let _ = write!(
            h,
            "<h3><span class=\"swatch\" style=\"background:{}\"></span>{}: first token {} at the client</h3>",
            PALETTE[i % PALETTE.len()],
            esc(&v.label),
            ms(v.ttft[t])
        );
        h.push_str(&waterfall_svg(&w));
    }
    h.push_str("</section><footer>Written by <code>mangaassist bench --report</code>.</footer></body></html>\n");
    h
}

/// One chart: a step line per variant, x = first token (ms), y = share of turns at or below it.
fn cdf_svg(variants: &[&Variant]) -> String {
    let (w, ht, left, right, top, bottom) = (760.0, 340.0, 56.0, 16.0, 14.0, 40.0);
    let max = variants.iter().flat_map(|v| v.ttft.iter().copied()).fold(1.0, f64::max) * 1.05;
    let step = nice_step(max);
    let x = |v: f64| left + (w - left - right) * v / max;
    let y = |p: f64| top + (ht - top - bottom) * (1.0 - p);
    let mut s = format!(
        "<svg class=\"chart cdf\" viewBox=\"0 0 {w} {ht}\" role=\"img\" aria-label=\"First-token CDF per variant\" \
         xmlns=\"http://www.w3.org/2000/svg\">"
    );
    for p in [0.0, 0.25, 0.5, 0.75, 0.95, 1.0] {
        let _ = write!(
            s,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{:.1}\" y2=\"{:.1}\" class=\"grid\"/><text x=\"{}\" y=\"{:.1}\" \
             class=\"tick\" text-anchor=\"end\">p{:.0}</text>",
            w - right,
            y(p),
            y(p),
            left - 6.0,
            y(p) + 4.0,
            p * 100.0
        );
    }
    let mut v = 0.0;
    while v <= max {
        let _ = write!(
            s,
            "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{top}\" y2=\"{}\" class=\"grid\"/><text x=\"{:.1}\" y=\"{}\" \
             class=\"tick\" text-anchor=\"middle\">{}</text>",
            x(v),
            x(v),
            ht - bottom,
            x(v),
            ht - bottom + 16.0,
            if v == 0.0 { "0".to_owned() } else { ms(v) }
        );
        v += step;
    }
    let _ = write!(
        s,
        "<text x=\"{:.1}\" y=\"{}\" class=\"axis\" text-anchor=\"middle\">first token at the client</text>",
        left + (w - left - right) / 2.0,
        ht - 4.0
    );
    for (i, var) in variants.iter().enumerate() {
        let mut t = var.ttft.clone();
        t.sort_by(f64::total_cmp);
        if t.is_empty() {
            continue;
        }
        let n = t.len() as f64;
        let mut d = format!("M{:.1},{:.1}", x(t[0]), y(0.0));
        for (k, v) in t.iter().enumerate() {
            let _ = write!(d, " H{:.1} V{:.1}", x(*v), y((k + 1) as f64 / n));
        }
        let _ = write!(
            s,
            "<path d=\"{d}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\" class=\"series\" data-variant=\"{}\"/>",
            PALETTE[i % PALETTE.len()],
            esc(&var.label)
        );
    }
    // Legend, bottom right inside the plot (a CDF climbs from bottom left to top right).
    let n = variants.len() as f64;
    for (i, var) in variants.iter().enumerate() {
        let ly = ht - bottom - 12.0 - 18.0 * (n - 1.0 - i as f64);
        let _ = write!(
            s,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"12\" height=\"4\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{:.1}\" \
             class=\"legend\" text-anchor=\"end\">{}</text>",
            w - right - 16.0,
            ly - 4.0,
            PALETTE[i % PALETTE.len()],
            w - right - 22.0,
            ly + 1.0,
            esc(&var.label)
        );
    }
    s.push_str("</svg>");
    s
}

/// A waterfall: one row per part of the wait, to scale, deadlines dashed.
fn waterfall_svg(wf: &Waterfall) -> String {
    let (w, label_w, val_w, row_h, top) = (760.0, 130.0, 70.0, 22.0, 6.0);
    let ht = top + row_h * wf.bars.len() as f64 + 26.0;
    let axis = (wf.axis_ms - wf.origin_ms) * 1.04;
    let plot = w - label_w - val_w;
    let x = |v: f64| label_w + plot * (v - wf.origin_ms) / axis;
    let mut s = format!(
        "<svg class=\"chart waterfall\" viewBox=\"0 0 {w} {ht:.0}\" role=\"img\" aria-label=\"Latency waterfall\" \
         xmlns=\"http://www.w3.org/2000/svg\">"
    );
    for (i, b) in wf.bars.iter().enumerate() {
        let y = top + row_h * i as f64;
        let dur = b.duration_ms();
        let _ = write!(
            s,
            "<g class=\"row\" data-leg=\"{}\"><text x=\"0\" y=\"{:.1}\" class=\"label\">{}</text>\
             <rect x=\"{label_w}\" y=\"{:.1}\" width=\"{plot:.1}\" height=\"12\" class=\"track\"/>",
            b.key,
            y + 14.0,
            esc(b.label),
            y + 4.0
        );
        if dur > 0.0 {
            let _ = write!(
                s,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"12\" rx=\"2\" fill=\"{}\"/>",
                x(b.start_ms),
                y + 4.0,
                (plot * dur / axis).max(1.5),
                colour(b.key)
            );
        }
        if let Some(d) = b.deadline_ms {
            let _ = write!(
                s,
                "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" class=\"deadline\"/>",
                x(d),
                x(d),
                y + 1.0,
                y + 19.0
            );
        }
        if let Some(m) = &b.mark {
            let _ = write!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" class=\"mark\">{}</text>",
                x(b.end_ms) + 5.0,
                y + 14.0,
                esc(m)
            );
        }
        let _ = write!(
            s,
            "<text x=\"{w}\" y=\"{:.1}\" class=\"val\" text-anchor=\"end\">{}</text></g>",
            y + 14.0,
            if dur > 0.0 { ms(dur) } else { "–".to_owned() }
        );
    }
    let base = top + row_h * wf.bars.len() as f64 + 4.0;
    let step = nice_step(axis);
    let mut v = 0.0;
    while v <= axis {
        let _ = write!(
            s,
            "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{top}\" y2=\"{base:.1}\" class=\"grid\"/><text x=\"{:.1}\" \
             y=\"{:.1}\" class=\"tick\" text-anchor=\"middle\">{}</text>",
            x(v),
            x(v),
            x(v),
            base + 14.0,
            if v == 0.0 { "0".to_owned() } else { ms(v) }
        );
        v += step;
    }
    s.push_str("</svg>");
    s
}

fn colour(key: &str) -> &'static str {
    match key {
        "connect" => "#9aa0b4",
        "memory" | "retrieval" | "cache" | "services" => "#2aa3c9",
        "context" => "#147a9c",
        "compress" => "#8b5cf6",
        "model" => "#f59e0b",
        "relay" => "#10b981",
        _ => "#c7cde0",
    }
}

const CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1d2033;\
background:#f4f5f9;margin:0;padding:24px;max-width:980px;margin:0 auto}header h1{font-size:22px;margin:0 0 4px}\
header p,.note{color:#6b7083;font-size:14px;margin:0 0 8px}section{background:#fff;border-radius:14px;padding:16px \
20px;margin:16px 0;box-shadow:0 1px 2px rgba(20,24,60,.06),0 4px 16px rgba(20,24,60,.06)}h2{font-size:15px;\
text-transform:uppercase;letter-spacing:.5px;color:#6b7083;margin:0 0 12px}h3{font-size:14px;margin:18px 0 4px}\
table{border-collapse:collapse;font-size:13px}.scroll{overflow-x:auto}table.data{width:100%}table.data th,\
table.data td{padding:6px 10px;border-bottom:1px solid #e3e5ee;text-align:right;white-space:nowrap;\
font-variant-numeric:tabular-nums}table.data th:first-child,table.data td:first-child{text-align:left}\
table.settings th{text-align:left;color:#6b7083;font-weight:500;padding:3px 16px 3px 0}table.settings td{padding:3px 0}\
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:8px}svg.chart{width:100%;\
height:auto;display:block}.grid{stroke:#e9ebf2;stroke-width:1}.tick{font-size:11px;fill:#6b7083}.axis{font-size:12px;\
fill:#6b7083}.legend{font-size:12px;fill:#1d2033}.label{font-size:12px;fill:#1d2033}.val{font-size:11px;fill:#6b7083}\
.mark{font-size:11px;fill:#0b7a47}.track{fill:#f3f4f8}.deadline{stroke:#e5484d;stroke-width:2;stroke-dasharray:3 2}\
footer{color:#6b7083;font-size:12px;text-align:center;margin-top:12px}code{font-size:12px}";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample(ttft: f64) -> TurnSample {
        TurnSample {
            ttft_ms: ttft,
            total_ms: ttft + 900.0,
            completed: json!({"metrics": {
                "first_token_ms": ttft - 5.0, "model_first_token_ms": ttft - 220.0, "total_ms": ttft + 890.0,
                "assembly_ms": 201.0, "compress_ms": 0.1, "relay_ms": 15.0, "output_tokens": 90, "prompt_tokens": 700,
                "legs": {"memory_ms": 50.0, "retrieval_ms": 200.0, "cache_ms": 1.0, "services_ms": 100.0},
                "cache_hits": [], "served": "model"
            }}),
            message_id: "m".to_owned(),
        }
    }

    fn recording() -> Recording {
        let mut rec = Recording {
            scenario: "context".into(),
            settings: vec![("latency".into(), "design".into())],
            ..Default::default()
        };
        for (label, base) in [("sequential", 900.0), ("parallel <fast>", 800.0)] {
            for k in 0..9 {
                let s = sample(base + f64::from(k) * 10.0);
                let v = rec.variant(label);
                v.ttft.push(s.ttft_ms);
                v.total.push(s.total_ms);
                v.metrics.push(s.completed["metrics"].clone());
            }
        }
        rec
    }

    #[test]
    fn the_report_is_one_html_document_with_a_cdf_line_per_variant_and_a_waterfall_each() {
        let html = render(&recording());
        assert!(html.starts_with("<!doctype html>") && html.trim_end().ends_with("</html>"));
        assert_eq!(html.matches("<svg class=\"chart cdf\"").count(), 1);
        assert_eq!(html.matches("class=\"series\"").count(), 2);
        assert_eq!(html.matches("<svg class=\"chart waterfall\"").count(), 2);
        assert_eq!(html.matches("<g class=\"row\"").count(), 2 * mangaassist_local::web::waterfall::KEYS.len());
        assert!(html.contains("parallel &lt;fast&gt;"), "labels are escaped");
        let without_ns = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
        assert!(!without_ns.contains("http://") && !without_ns.contains("https://"), "nothing is fetched");
        assert!(!html.contains("<script"), "no script, no network");
        assert!(balanced(&html), "unbalanced tags");
    }

    /// Tags that must open and close in pairs in a well-formed report.
    fn balanced(html: &str) -> bool {
        ["svg", "table", "section", "tr", "g"].iter().all(|t| {
            html.matches(&format!("<{t}>")).count() + html.matches(&format!("<{t} ")).count()
                == html.matches(&format!("</{t}>")).count()
        })
    }

    #[tokio::test]
    async fn a_recorded_run_writes_a_report_with_one_cdf_and_a_waterfall_per_variant() {
        use mangaassist_local::emulators::bedrock::LatencyModel;
        use mangaassist_local::system::{SystemOptions, start};
        let mut opts = SystemOptions::default();
        opts.emulator.latency = LatencyModel::fast();
        let system = start(mangaassist_core::ports::memory::MemoryStore::default(), opts).await.unwrap();
        let rec = Recorder::on("turns", vec![("quick".into(), "true".into())]);
        let script = super::super::builtin_conversations();
        let url = system.bare_ws_url();
        super::super::driver::run(&url, &script[..2], 2, 1, Some(&system.emulator), "coalesce", &rec).await;
        let path = std::env::temp_dir().join(format!("mangaassist-report-{}.html", std::process::id()));
        rec.write(&path).unwrap();
        let html = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(html.starts_with("<!doctype html>") && html.trim_end().ends_with("</html>"));
        assert!(balanced(&html), "unbalanced tags");
        assert_eq!(html.matches("<svg class=\"chart cdf\"").count(), 1, "one chart for the scenario's run");
        assert_eq!(html.matches("class=\"series\"").count(), 1);
        assert_eq!(html.matches("<svg class=\"chart waterfall\"").count(), 1);
        assert!(html.contains("coalesce · 1 at once"));
    }

    #[test]
    fn each_run_records_into_its_own_recorder_and_an_off_one_records_nothing() {
        let (a, b, off) = (Recorder::on("turns", Vec::new()), Recorder::on("context", Vec::new()), Recorder::off());
        let worker = a.clone();
        worker.record("coalesce", &sample(500.0));
        b.record_error("parallel");
        off.record("coalesce", &sample(500.0));
        let a = a.recording().unwrap();
        assert_eq!(
            (a.variants.len(), a.variants[0].ttft.as_slice()),
            (1, &[500.0][..]),
            "a clone shares the recording"
        );
        let b = b.recording().unwrap();
        assert_eq!((b.variants[0].label.as_str(), b.variants[0].errors, b.variants[0].ttft.len()), ("parallel", 1, 0));
        assert!(off.recording().is_none());
        assert!(off.write(&std::env::temp_dir().join("never-written.html")).is_err());
    }

    #[test]
    fn a_scenario_without_turns_says_so_instead_of_drawing_empty_charts() {
        let html = render(&Recording { scenario: "capacity".into(), ..Recording::default() });
        assert!(html.contains("recorded no chat turns") && !html.contains("<svg") && balanced(&html));
    }

    #[test]
    fn the_median_turn_is_the_middle_of_the_sorted_first_tokens() {
        let v = Variant { ttft: vec![30.0, 10.0, 20.0], ..Variant::default() };
        assert_eq!(median_turn(&v), Some(2));
        assert_eq!(median_turn(&Variant::default()), None);
    }

    #[test]
    fn progress_reports_turns_elapsed_and_an_eta_from_the_rate_so_far() {
        assert_eq!(progress_line(120, 480, Duration::from_secs(30)), "120/480 turns · 30 s · ETA 1 min 30 s");
        assert_eq!(progress_line(0, 10, Duration::from_secs(5)), "0/10 turns · 5 s · ETA –");
    }

    #[test]
    fn nice_steps_give_about_five_round_ticks() {
        assert_eq!(nice_step(1000.0), 200.0);
        assert_eq!(nice_step(2300.0), 500.0);
        assert_eq!(nice_step(120.0), 25.0);
    }
}
