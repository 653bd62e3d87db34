//! The loader: names, values, the file and the environment.

use std::path::Path;

use super::Config;
use super::load::{ENV_PREFIX, OTHER_VARIABLES, config_fields};

#[test]
fn a_setting_spelled_twice_in_different_case_is_an_error_either_way() {
    for order in [
        [
            ("HUNTAZE_ENV", "production"),
            ("huntaze_env", "development"),
        ],
        [
            ("huntaze_env", "development"),
            ("HUNTAZE_ENV", "production"),
        ],
    ] {
        let (_, problems) = Config::load_from(
            order
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        assert!(
            problems.iter().any(|p| p.fatal
                && p.setting == "HUNTAZE_ENV"
                && p.message.contains("more than once")),
            "{problems:?}"
        );
    }
}

/// Reads `vars` (plus `HUNTAZE_CONFIG` naming a file with `toml`, when
/// given) and returns the problems as `setting: message` lines.
fn read(vars: &[(&str, &str)], toml: Option<&str>) -> (Config, Vec<String>, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("huntaze.toml");
    let mut vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    if let Some(text) = toml {
        std::fs::write(&file, text).unwrap();
        vars.push(("HUNTAZE_CONFIG".into(), file.display().to_string()));
    }
    let (config, problems) = Config::load_from(vars);
    assert!(problems.iter().all(|p| p.fatal));
    let lines = problems.iter().map(ToString::to_string).collect();
    (config, lines, file.display().to_string())
}

#[test]
fn every_setting_is_a_known_name() {
    let fields = config_fields();
    assert!(fields.len() > 80, "{fields:?}");
    for name in [
        "env",
        "database_url",
        "trusted_proxies",
        "request_timeout_ms",
    ] {
        assert!(fields.contains(&name), "{name}");
    }
}

#[test]
fn a_misspelt_name_is_reported_with_the_closest_setting() {
    let (config, problems, _) = read(
        &[
            ("HUNTAZE_DATABSE_URL", "postgres://u:pw@h/db"),
            ("HUNTAZE_ZZZ", "1"),
            ("PATH", "/bin"),
            ("HUNTAZE_TEST_REQUIRE_SERVICES", "1"),
        ],
        None,
    );
    assert_eq!(
        problems,
        [
            "HUNTAZE_DATABSE_URL: is not a setting; did you mean HUNTAZE_DATABASE_URL?",
            "HUNTAZE_ZZZ: is not a setting",
        ]
    );
    assert!(config.database.url.is_none());
}

#[test]
fn every_bad_value_is_reported_by_full_name_without_the_value() {
    let (config, problems, file) = read(
        &[
            ("HUNTAZE_REQUEST_TIMEOUT_MS", "abc-secret"),
            ("HUNTAZE_ALERT_P95_MS", "fast-secret"),
            ("HUNTAZE_INSTANCE_ID", "12"),
            ("HUNTAZE_HEALTH_INTERVAL_MS", "250"),
        ],
        Some("metrics_enabled = \"maybe-secret\"\nlisten = \"127.0.0.1:9\"\n"),
    );
    assert_eq!(
        problems,
        [
            "HUNTAZE_ALERT_P95_MS: must be a number".to_owned(),
            format!("`metrics_enabled` in {file}: must be true or false"),
            "HUNTAZE_REQUEST_TIMEOUT_MS: must be a whole number of 0 or more".to_owned(),
        ]
    );
    assert!(problems.iter().all(|p| !p.contains("secret")));
    // The good values around them are still read.
    assert_eq!(config.health.interval_ms, 250);
    assert_eq!(config.instance_id.as_deref(), Some("12"));
    assert_eq!(config.server.listen, "127.0.0.1:9");
}

#[test]
fn the_environment_wins_over_the_file() {
    let (config, problems, _) = read(
        &[("HUNTAZE_REQUEST_TIMEOUT_MS", "7")],
        Some("request_timeout_ms = 5\nhealth_interval_ms = 6\n"),
    );
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(config.server.request_timeout_ms, 7);
    assert_eq!(config.health.interval_ms, 6);
}

#[test]
fn an_unknown_key_in_the_file_names_key_and_file() {
    let (_, problems, file) = read(&[], Some("reqest_timeout_ms = 5\n"));
    assert_eq!(
        problems,
        [format!(
            "`reqest_timeout_ms` in {file}: is not a setting; did you mean `request_timeout_ms`?"
        )]
    );
}

#[test]
fn a_file_that_is_not_toml_is_reported_without_its_text() {
    let (_, problems, file) = read(&[], Some("listen = \"ok\"\nsecret_key = \"hunter2\n"));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with(&format!("{file}: is not valid TOML (line 2)")),
        "{problems:?}"
    );
    assert!(!problems[0].contains("hunter2"), "{problems:?}");
}

#[test]
fn a_named_file_must_exist_and_the_default_one_may_not() {
    let (_, problems) =
        Config::load_from([("HUNTAZE_CONFIG".into(), "/nonexistent/h.toml".into())]);
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].setting, "HUNTAZE_CONFIG");
    assert!(problems[0].message.contains("/nonexistent/h.toml"));
}

/// docs/CONFIGURATION.md documents every setting, and names only
/// settings (or the other known variables) that exist. A group written
/// `HUNTAZE_A` / `_B` counts `_B` as `HUNTAZE_B`.
#[test]
fn the_configuration_document_names_every_setting_and_only_settings() {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/CONFIGURATION.md"),
    )
    .unwrap();
    let name = |from: &str| -> String {
        from.chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect()
    };
    let mut documented = std::collections::BTreeSet::new();
    for (at, _) in doc.match_indices(ENV_PREFIX) {
        let found = name(&doc[at..]);
        // The strictness example shows a misspelled name on purpose.
        if !doc[at + found.len()..].starts_with(": is not a setting") {
            documented.insert(found);
        }
    }
    let settings: Vec<String> = config_fields()
        .iter()
        .map(|f| format!("{ENV_PREFIX}{}", f.to_ascii_uppercase()))
        .collect();
    // `HUNTAZE_DB_MAX_CONNECTIONS` / `_MIN_CONNECTIONS`: the suffix
    // takes the place of the first name's last word or words; whichever
    // reading names a setting, else the one-word reading (reported).
    for line in doc.lines() {
        for (at, _) in line.match_indices("/ `_") {
            let suffix = name(&line[at + 3..]);
            let Some(first) = line[..at].rfind(ENV_PREFIX).map(|i| name(&line[i..])) else {
                continue;
            };
            let words: Vec<&str> = first.split('_').collect();
            let readings: Vec<String> = (1..words.len())
                .map(|k| format!("{}{suffix}", words[..words.len() - k].join("_")))
                .collect();
            let known = readings.iter().find(|r| settings.contains(r));
            documented.insert(known.unwrap_or(&readings[0]).clone());
        }
    }
    documented.remove(ENV_PREFIX);
    let missing: Vec<&String> = settings
        .iter()
        .filter(|s| !documented.contains(*s))
        .collect();
    assert!(
        missing.is_empty(),
        "not in docs/CONFIGURATION.md: {missing:?}"
    );
    let unknown: Vec<&String> = documented
        .iter()
        .filter(|d| !settings.contains(d) && !OTHER_VARIABLES.contains(&d.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "docs/CONFIGURATION.md names unknown settings: {unknown:?}"
    );
}

/// The deployment files and scripts set only names the server knows:
/// with unknown names fatal, a stale one would stop the service.
#[test]
fn deploy_and_bench_files_use_known_names() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    let mut dirs = vec![root.join("deploy"), root.join("bench"), root.join(".ci")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    let fields = config_fields();
    let mut unknown = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for (at, _) in text.match_indices(ENV_PREFIX) {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let key = name[ENV_PREFIX.len()..].to_ascii_lowercase();
            // `HUNTAZE_NAME` is bench/README.md's placeholder.
            let known = key.is_empty()
                || name == "HUNTAZE_NAME"
                || fields.contains(&key.as_str())
                || OTHER_VARIABLES.contains(&name.as_str());
            if !known {
                unknown.push(format!("{}: {name}", file.display()));
            }
        }
    }
    assert!(unknown.is_empty(), "{unknown:#?}");
}

#[test]
fn the_connection_settings_are_read_from_the_environment() {
    let (config, problems, _) = read(
        &[
            ("HUNTAZE_HEADER_READ_TIMEOUT_MS", "2000"),
            ("HUNTAZE_KEEP_ALIVE_IDLE_MS", "30000"),
            ("HUNTAZE_SEND_TIMEOUT_MS", "5000"),
            ("HUNTAZE_MAX_HEADER_BYTES", "16384"),
            ("HUNTAZE_MAX_CONNECTIONS", "500"),
        ],
        None,
    );
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(config.server.header_read_timeout_ms, 2_000);
    assert_eq!(config.server.keep_alive_idle_ms, 30_000);
    assert_eq!(config.server.send_timeout_ms, 5_000);
    assert_eq!(config.server.max_header_bytes, 16_384);
    assert_eq!(config.server.max_connections, Some(500));
}
