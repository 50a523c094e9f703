//! What operators see: a real Prometheus (Debian's `prometheus`) scrapes a running pipeline — the
//! gateway, a processor for each of two manifest versions, the sink and the performance API —
//! and every query of every dashboard in `k8s/monitoring/dashboards/` and every alert
//! expression in `k8s/monitoring/pitgun-alerts.rules.yaml` (its threshold dropped: a healthy
//! pipeline must not page, but the series an alert watches must exist) returns a series.
//! A panel or alert over a metric nobody exports, or a label nobody sets, fails here.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A Prometheus server of the test's own, stopped (by its process id) when dropped.
struct Prometheus {
    child: Child,
    addr: String,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`host:port`, `/metrics`) every second.
    fn start(dir: &Path, targets: &[String]) -> Prometheus {
        let config = dir.join("prometheus.yml");
        let list = targets.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ");
        std::fs::write(
            &config,
            format!("global: {{scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: pitgun\n    static_configs:\n      - targets: [{list}]\n"),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus (Debian package `prometheus`; scripts/stack.sh install adds it) starts");
        Prometheus { child, addr }
    }

    /// The series `expr` returns now (the `result` of an instant query).
    fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let body = http_get(&self.addr, &format!("/api/v1/query?query={}", urlencode(expr)));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("Prometheus answered {body:?} to {expr}: {e}"));
        assert_eq!(v["status"], "success", "Prometheus refused {expr}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An alert's expression without its thresholds: the series it compares, one per operand of a
/// top-level `and` / `or` / `unless` (each must exist in a healthy pipeline, where none is above
/// its threshold).
fn watched_series(expr: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let (mut depth, mut from) = (0i32, 0);
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            _ if depth == 0 => {
                if let Some(op) = [" and ", " or ", " unless "].iter().find(|op| expr[i..].starts_with(**op)) {
                    parts.push(&expr[from..i]);
                    i += op.len();
                    from = i;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(&expr[from..]);
    parts
        .into_iter()
        .map(|part| {
            let mut p = part.trim();
            // `and on (labels) B`: the matching clause belongs to the operator, not to B.
            for clause in ["on", "ignoring"] {
                if let Some(rest) = p.strip_prefix(clause).map(str::trim_start).filter(|r| r.starts_with('(')) {
                    p = rest[rest.find(')').expect("closing parenthesis") + 1..].trim();
                }
            }
            without_threshold(p).to_string()
        })
        .collect()
}

/// `A > 5` → `A`: the last comparison at parenthesis depth 0 whose right side is a number.
fn without_threshold(expr: &str) -> &str {
    let (bytes, mut depth, mut cut) = (expr.as_bytes(), 0i32, None);
    for (i, b) in bytes.iter().enumerate() {
        match b {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            b'>' | b'<' | b'=' | b'!' if depth == 0 && cut.is_none_or(|c| i > c + 1) => cut = Some(i),
            _ => {}
        }
    }
    match cut {
        Some(i) if expr[i..].trim_start_matches(['>', '<', '=', '!']).trim().parse::<f64>().is_ok() => expr[..i].trim(),
        _ => expr,
    }
}

#[test]
fn threshold_dropping_keeps_the_watched_series() {
    assert_eq!(watched_series("sum by (a) (x) > 100000"), ["sum by (a) (x)"]);
    assert_eq!(watched_series("increase(x[5m]) == 0"), ["increase(x[5m])"]);
    assert_eq!(watched_series("a{s=~\"5..\"} / b >= 0.05"), ["a{s=~\"5..\"} / b"]);
    assert_eq!(watched_series("increase(a[30m]) > 0 and on (m, v) increase(b[30m]) > 0"), ["increase(a[30m])", "increase(b[30m])"]);
    assert_eq!(watched_series("histogram_quantile(0.9, sum by (le) (rate(x[5m])))"), ["histogram_quantile(0.9, sum by (le) (rate(x[5m])))"]);
    assert_eq!(watched_series("(sum(a) or vector(0)) / sum(b) > 0.05"), ["(sum(a) or vector(0)) / sum(b)"]);
}

/// Every `expr` of the dashboards, with their variables set to the running pipeline's values.
fn dashboard_queries(manifest: &str, version: &str) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    let dir = root().join("k8s/monitoring/dashboards");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert_eq!(files.len(), 3, "three dashboards in {}", dir.display());
    for file in files {
        let d: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        for panel in d["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                let expr = expr.replace("$__rate_interval", "30s").replace("$manifest", manifest).replace("$version", version);
                queries.push((format!("{name}: {}", panel["title"].as_str().unwrap()), expr));
            }
        }
    }
    queries
}

/// Every alert's name and expression (each `expr:` is one line; checked against the count).
fn alert_expressions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("k8s/monitoring/pitgun-alerts.rules.yaml")).unwrap();
    let names: Vec<&str> = text.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")).collect();
    let exprs: Vec<&str> = text.lines().filter_map(|l| l.trim().strip_prefix("expr: ")).collect();
    assert_eq!(names.len(), exprs.len(), "one single-line expr per alert");
    assert!(names.len() >= 13, "the rule file's alerts were read ({})", names.len());
    names.into_iter().map(String::from).zip(exprs.into_iter().map(String::from)).collect()
}

#[test]
fn a_real_prometheus_finds_a_series_for_every_panel_and_alert() {
    let ns = Ns::new("observability");
    ns.create_topics(2);
    let pg = own_database("observability");
    let dir = tempfile::tempdir().unwrap();
    let data = simulate(dir.path(), "obs.ndjson", seed("observability"), 4, "90s", None);
    let envelopes = std::fs::read_to_string(&data).unwrap();

    let (_gateway, url, api_keys) = start_gateway(&ns, dir.path());
    let gateway_addr = url.trim_start_matches("http://").to_string();
    let mut targets = vec![gateway_addr];
    let mut services = Vec::new();
    for manifest in ["lap-performance.v1", "session-summary.v1"] {
        let metrics = format!("127.0.0.1:{}", free_port());
        let state = dir.path().join(manifest);
        let m = format!("manifests/pipelines/{manifest}.yaml");
        let p = Service::start(
            manifest,
            &["process", "--manifest", &m, "--state-dir", state.to_str().unwrap(), "--checkpoint-interval", "200ms", "--metrics-listen", &metrics],
            &ns,
        );
        p.wait_for_log("processor started", Duration::from_secs(60));
        services.push(p);
        targets.push(metrics);
    }
    let questdb = common::questdb_standin::QuestDbStandIn::start();
    let conf = questdb.conf();
    let sink_metrics = format!("127.0.0.1:{}", free_port());
    let sink = Service::start(
        "sink",
        &[
            "sink",
            "--manifest",
            "manifests/pipelines/lap-performance.v1.yaml",
            "--manifest",
            "manifests/pipelines/session-summary.v1.yaml",
            "--postgres",
            &pg,
            "--questdb",
            &conf,
            "--metrics-listen",
            &sink_metrics,
        ],
        &ns,
    );
    sink.wait_for_log("sink started", Duration::from_secs(60));
    targets.push(sink_metrics);
    let (_api, api_addr) = start_api(&pg, &ns);
    targets.push(api_addr.clone());

    let prometheus = Prometheus::start(dir.path(), &targets);
    post(&url, &std::fs::read_to_string(&api_keys).unwrap(), &envelopes.lines().collect::<Vec<_>>());
    // Rows reach PostgreSQL; the API answers from there.
    let deadline = Instant::now() + Duration::from_secs(90);
    while psql(&pg, "SELECT count(*) FROM runs").trim() != "4" {
        assert!(Instant::now() < deadline, "the sink did not write the 4 runs within 90 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    for path in ["/v1/runs", "/v1/leaderboard?track=monza", "/v1/runs/no-such-session"] {
        http_get_status(&api_addr, path);
    }

    // promtool reads each service's exposition as Prometheus does (the gateway's here; the
    // others' in their own tests).
    assert_promtool_metrics(&http_get(&targets[0], "/metrics"), "gateway");
    // Every target scraped and up, then a few more scrapes so rates have points.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let up: Vec<_> = prometheus.query("up == 1");
        if up.len() == targets.len() {
            break;
        }
        assert!(Instant::now() < deadline, "Prometheus scraped {} of {} targets as up: {up:?}", up.len(), targets.len());
        std::thread::sleep(Duration::from_millis(250));
    }
    std::thread::sleep(Duration::from_secs(6));

    let mut empty = Vec::new();
    let queries = dashboard_queries("lap-performance", "1");
    for (what, expr) in &queries {
        if prometheus.query(expr).is_empty() {
            empty.push(format!("panel {what}: {expr}"));
        }
    }
    let alerts = alert_expressions();
    for (alert, expr) in &alerts {
        for series in watched_series(expr) {
            if prometheus.query(&series).is_empty() {
                empty.push(format!("alert {alert}: {series}"));
            }
        }
    }
    eprintln!("{} dashboard queries and {} alert expressions asked of Prometheus at {}", queries.len(), alerts.len(), prometheus.addr);
    assert!(empty.is_empty(), "no series for:\n{}", empty.join("\n"));
    // Both manifest versions are told apart (the pipeline dashboard's variables).
    let versions = prometheus.query("count by (manifest, version) (pitgun_processor_events_in_total)");
    assert_eq!(versions.len(), 2, "the manifest and version labels of both processors: {versions:?}");
}
