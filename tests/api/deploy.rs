//! The files under `deploy/` are checked by the tools that will read them:
//! the Prometheus alerting rules with `promtool check rules` and their unit
//! tests with `promtool test rules`, and the whole directory with
//! `deploy/check.sh` (nginx -t on the load-balancer configuration, YAML,
//! dashboard JSON, systemd unit). Skipped with a message where promtool or
//! nginx is missing, unless services are required (CI). And every metric
//! the Grafana dashboard and the Prometheus rules read is one a running
//! server exposes or a recording rule defines.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn tools_present(test: &str) -> bool {
    let missing: Vec<&str> = [
        ("promtool", "/usr/bin/promtool"),
        ("nginx", "/usr/sbin/nginx"),
    ]
    .into_iter()
    .filter(|(_, path)| !Path::new(path).exists())
    .map(|(name, _)| name)
    .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        !crate::support::pg::services_required(),
        "{missing:?} required (HUNTAZE_TEST_REQUIRE_SERVICES=1): apt-get install prometheus nginx"
    );
    eprintln!("SKIPPED {test}: {missing:?} not installed (apt-get install prometheus nginx)");
    false
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run tool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn prometheus_rules_pass_promtool_and_their_unit_tests() {
    if !tools_present("deploy::prometheus") {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus");
    let out = run(Command::new("promtool")
        .args(["check", "rules"])
        .arg(dir.join("alerts.yml")));
    assert!(out.contains("SUCCESS"), "{out}");
    for tests in ["alerts_test.yml", "slo_test.yml"] {
        run(Command::new("promtool")
            .args(["test", "rules"])
            .arg(dir.join(tests)));
    }
}

#[test]
fn every_deploy_file_passes_its_checker() {
    if !tools_present("deploy::check") {
        return;
    }
    let out = run(
        Command::new("bash").arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/check.sh"))
    );
    assert!(out.contains("deploy/: all checks passed"), "{out}");
    assert!(out.contains("syntax is ok"), "nginx -t ran: {out}");
}

/// Words of PromQL that are neither metrics nor functions called with `(`
/// right after them: aggregations (`sum by (x) (…)`) and binary keywords.
const NOT_METRICS: [&str; 20] = [
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
];
/// Keywords followed by a list of label names.
const GROUPING: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names a PromQL expression reads: its identifiers that are
/// not function calls, keywords, label names (grouping lists, matchers),
/// strings, ranges, numbers or Grafana variables.
fn metric_names(expr: &str, out: &mut BTreeSet<String>) {
    let b = expr.as_bytes();
    let skip_to = |from: usize, close: u8| {
        let mut i = from + 1;
        let mut quote = None;
        while i < b.len() {
            match (quote, b[i]) {
                (Some(_), b'\\') => i += 1,
                (Some(q), c) if c == q => quote = None,
                (None, b'"' | b'\'' | b'`') => quote = Some(b[i]),
                (None, c) if c == close => return i + 1,
                _ => {}
            }
            i += 1;
        }
        b.len()
    };
    let word_char = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' | b'\'' | b'`' => i = skip_to(i, b[i]),
            b'{' => i = skip_to(i, b'}'),
            b'[' => i = skip_to(i, b']'),
            b'$' => {
                i += 1;
                while i < b.len() && word_char(b[i]) {
                    i += 1;
                }
            }
            c if c.is_ascii_digit() || c == b'.' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
            }
            c if word_char(c) => {
                let start = i;
                while i < b.len() && word_char(b[i]) {
                    i += 1;
                }
                let word = &expr[start..i];
                let mut next = i;
                while next < b.len() && b[next].is_ascii_whitespace() {
                    next += 1;
                }
                let call = b.get(next) == Some(&b'(');
                if call && GROUPING.contains(&word) {
                    i = skip_to(next, b')');
                } else if !call && !NOT_METRICS.contains(&word) && !GROUPING.contains(&word) {
                    out.insert(word.to_owned());
                }
            }
            _ => i += 1,
        }
    }
}

#[test]
fn metric_names_are_told_from_functions_labels_and_keywords() {
    let mut names = BTreeSet::new();
    metric_names(
        r#"sum by (le, x) (rate(a_bucket{job=~"h.*", code="5.."}[$__rate_interval])) / on () group_left b:c:rate5m >= bool 14.4 * (1 - 0.999) unless min(d offset 10m) and e - time() < 1e3"#,
        &mut names,
    );
    let names: Vec<_> = names.into_iter().collect();
    assert_eq!(names, ["a_bucket", "b:c:rate5m", "d", "e"]);
}

/// The `expr` of every rule in a Prometheus rule file (inline or a `|`
/// block), and the names its `record` rules define.
fn rule_file(text: &str) -> (Vec<String>, BTreeSet<String>) {
    let (mut exprs, mut records) = (Vec::new(), BTreeSet::new());
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if let Some(name) = t
            .strip_prefix("- record:")
            .or_else(|| t.strip_prefix("record:"))
        {
            records.insert(name.trim().to_owned());
        }
        let Some(expr) = t.strip_prefix("expr:") else {
            continue;
        };
        let expr = expr.trim();
        if expr != "|" {
            exprs.push(expr.to_owned());
            continue;
        }
        let indent = line.len() - t.len();
        let mut block = String::new();
        while let Some(next) = lines.peek() {
            let inner = next.trim_start();
            if !inner.is_empty() && next.len() - inner.len() <= indent {
                break;
            }
            block.push_str(inner);
            block.push('\n');
            lines.next();
        }
        exprs.push(block);
    }
    (exprs, records)
}

/// Every `expr` in the Grafana dashboard.
fn dashboard_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

/// Series Prometheus makes itself rather than scraping them.
const PROMETHEUS_OWN: [&str; 2] = ["up", "ALERTS"];

/// Expects, from a server with every optional part on (HTTPS, Redis, the
/// TikTok client and its circuit, the query cache) after traffic that
/// includes a 5xx and a retried webhook (the SLO page to a closed port),
/// every metric the dashboard and the rules read. `huntaze_errors_total`
/// comes with the error groups: it is excused only while their route
/// (`/api/monitoring/errors`) does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_rules_read_is_exposed_or_recorded() {
    use crate::support::tls::{Leaf, TestCa};
    if !crate::support::tls::available("every_metric_the_dashboard_and_rules_read")
        || !crate::support::redis::available("every_metric_the_dashboard_and_rules_read").await
    {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let (rule_exprs, records) =
        rule_file(&std::fs::read_to_string(root.join("prometheus/alerts.yml")).unwrap());
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("grafana/huntaze-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut exprs = rule_exprs;
    dashboard_exprs(&dashboard, &mut exprs);
    let mut used = BTreeSet::new();
    for e in &exprs {
        metric_names(e, &mut used);
    }
    assert!(used.contains("huntaze_slo_requests_total"), "{used:?}");
    assert!(
        used.contains("huntaze:slo_availability_bad:ratio_rate1h"),
        "{used:?}"
    );

    let mut ca = TestCa::new("huntaze metrics test CA");
    let pair = ca.issue(&Leaf::default());
    let prefix = crate::support::redis::fresh_prefix();
    let app = crate::monitoring::app_with_token()
        .https(&ca, &pair)
        .tiktok_sandbox()
        .config(move |c| {
            c.redis.url = Some(crate::support::redis::url().into());
            c.redis.prefix = prefix;
            c.monitoring.alert_eval_ms = 100;
            c.monitoring.alert_for_ms = 0;
            c.monitoring.alert_min_requests = 1;
            c.monitoring.alert_webhook_url = Some("http://127.0.0.1:9/hook".to_owned());
            c.monitoring.alert_webhook_timeout_ms = 200;
        })
        .spawn()
        .await;
    for path in ["/", "/api/test/sleep?ms=0", "/api/test/panic", "/platforms"] {
        app.client.get(app.url(path)).send().await.unwrap();
    }
    let retried = crate::support::eventually(std::time::Duration::from_secs(20), || async {
        crate::monitoring::metrics_text(&app)
            .await
            .contains("retries_total{operation=\"alert_webhook\"}")
    })
    .await;
    assert!(retried, "the SLO page's webhook was retried");
    let errors_route = app
        .client
        .get(app.url("/api/monitoring/errors?range=1h"))
        .bearer_auth(crate::monitoring::TOKEN)
        .send()
        .await
        .unwrap()
        .status();
    let not_built_yet: &[&str] = if errors_route == 404 {
        &["huntaze_errors_total"]
    } else {
        &[]
    };
    let text = crate::monitoring::metrics_text(&app).await;
    let exposed: BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let missing: Vec<_> = used
        .iter()
        .filter(|n| {
            !exposed.contains(n.as_str())
                && !records.contains(*n)
                && !PROMETHEUS_OWN.contains(&n.as_str())
                && !not_built_yet.contains(&n.as_str())
        })
        .collect();
    assert!(
        missing.is_empty(),
        "read by deploy/grafana or deploy/prometheus but neither exposed nor recorded: {missing:?}\n{text}"
    );
}
