//! Every log line the suite produces, in the production format, checked as
//! strict JSON: one object per line and no key twice in any object (serde_json
//! keeps the last of a repeated key; strict parsers reject the line). Lines
//! that fail are kept until a test ends and fails with them; recent lines are
//! kept for tests that look for their own request's lines.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::io::Write;
use std::sync::{Mutex, MutexGuard};

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Recent lines kept for [`lines`]; older ones are dropped.
const KEEP: usize = 50_000;

static RECENT: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());
static REJECTED: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Human-readable logs go to the test's captured output (shown for failing
/// tests only, filtered by `RUST_LOG`, `warn` by default); the JSON lines of
/// every level the server writes are checked.
pub fn init() {
    let text = tracing_subscriber::fmt::layer()
        .with_test_writer()
        .with_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        );
    let json = huntaze::json_layer(Checked)
        .with_filter(tracing_subscriber::EnvFilter::new("info,huntaze=debug"));
    let _ = tracing_subscriber::registry()
        .with(text)
        .with(json)
        .try_init();
}

/// JSON lines written so far (the most recent [`KEEP`]) for which `keep`
/// is true.
pub fn lines(keep: impl Fn(&serde_json::Value) -> bool) -> Vec<serde_json::Value> {
    lock(&RECENT)
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v| keep(v))
        .collect()
}

/// Fails with the lines written so far that were not strict JSON (each
/// reported once).
pub fn assert_strict() {
    let rejected = std::mem::take(&mut *lock(&REJECTED));
    assert!(
        rejected.is_empty(),
        "log lines that strict JSON parsers reject:\n{}",
        rejected.join("\n")
    );
}

/// Why `line` is not one strict JSON object, if it is not.
pub fn strict_json_problem(line: &str) -> Option<String> {
    let mut de = serde_json::Deserializer::from_str(line);
    match de.deserialize_any(Strict).and_then(|is_object| {
        de.end()?;
        Ok(is_object)
    }) {
        Ok(true) => None,
        Ok(false) => Some("not a JSON object".into()),
        Err(e) => Some(e.to_string()),
    }
}

/// Walks a JSON value failing on a repeated key in any object; yields
/// whether the value was an object.
struct Strict;

impl<'de> de::DeserializeSeed<'de> for Strict {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element_seed(Strict)?.is_some() {}
        Ok(false)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format!("duplicate key `{key}`")));
            }
            map.next_value_seed(Strict)?;
        }
        Ok(true)
    }
}

/// The JSON layer's writer: collects one event's bytes, then checks and
/// keeps each line.
struct Checked;

impl<'a> MakeWriter<'a> for Checked {
    type Writer = Line;
    fn make_writer(&'a self) -> Line {
        Line(Vec::new())
    }
}

struct Line(Vec<u8>);

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if let Some(problem) = strict_json_problem(line) {
                lock(&REJECTED).push(format!("{problem}: {line}"));
            }
            let mut recent = lock(&RECENT);
            if recent.len() == KEEP {
                recent.pop_front();
            }
            recent.push_back(line.to_owned());
        }
    }
}

#[test]
fn a_repeated_key_is_caught_at_any_depth() {
    assert_eq!(strict_json_problem(r#"{"a":1,"b":{"c":[{"d":2}]}}"#), None);
    assert!(
        strict_json_problem(r#"{"message":"x","level":"WARN","message":"y"}"#)
            .unwrap()
            .contains("duplicate key `message`")
    );
    assert!(strict_json_problem(r#"{"a":[{"k":1,"k":2}]}"#).is_some());
    assert!(strict_json_problem(r#"{"a":1} trailing"#).is_some());
    assert!(strict_json_problem("[1]").is_some());
}
