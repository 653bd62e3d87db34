//! The files under `deploy/` are checked by the tools that will read them:
//! the Prometheus alerting rules with `promtool check rules` and their unit
//! tests with `promtool test rules`, and the whole directory with
//! `deploy/check.sh` (nginx -t on the load-balancer configuration, YAML,
//! dashboard JSON, systemd unit). Skipped with a message where promtool or
//! nginx is missing, unless services are required (CI).

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
    run(Command::new("promtool")
        .args(["test", "rules"])
        .arg(dir.join("alerts_test.yml")));
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
