//! Reading the settings: flat names from the file and the environment,
//! placed into [`Config`]'s sections by a table derived from the sections'
//! own field lists.

use figment::Figment;
use figment::providers::Serialized;
use figment::value::{Dict, Value};
use serde::Deserialize;

use super::sections::{
    AccountSettings, DatabaseSettings, HealthSettings, KeySettings, LandingSettings,
    MonitoringSettings, RedisSettings, ServerSettings, TikTokSettings,
};
use super::{Config, ConfigProblem};

pub(super) const ENV_PREFIX: &str = "HUNTAZE_";
const DEFAULT_FILE: &str = "huntaze.toml";

/// `HUNTAZE_*` variables that are not settings but are read by other code, so
/// they are known names. The test harness's switches are set in CI's
/// environment, which the server binary inherits when tests spawn it.
pub(super) const OTHER_VARIABLES: &[&str] = &[
    // The configuration file's path (read here, before the settings).
    "HUNTAZE_CONFIG",
    // tests/api/support: services the integration tests use.
    "HUNTAZE_TEST_REQUIRE_SERVICES",
    "HUNTAZE_TEST_PG_URL",
    "HUNTAZE_TEST_REDIS_URL",
    // tests/api/pg_tls.rs: the CA that signed PostgreSQL's certificate.
    "HUNTAZE_TEST_PG_CA_FILE",
    // tests/api/api_fuzz.rs: where `.ci/run` installed the OpenAPI tools.
    "HUNTAZE_TEST_PYTHON_VENV",
    // src/memory.rs: marks the unit test's own measuring subprocess.
    "HUNTAZE_TRIM_PROBE",
];

/// The serde field names of one section struct.
type FieldList = fn() -> &'static [&'static str];

/// The fields of [`Config`] that are sections, with their field lists. A
/// field of [`Config`] not named here is a setting of its own.
const SECTIONS: &[(&str, FieldList)] = &[
    ("server", fields_of::<ServerSettings>),
    ("database", fields_of::<DatabaseSettings>),
    ("redis", fields_of::<RedisSettings>),
    ("keys", fields_of::<KeySettings>),
    ("accounts", fields_of::<AccountSettings>),
    ("tiktok", fields_of::<TikTokSettings>),
    ("health", fields_of::<HealthSettings>),
    ("monitoring", fields_of::<MonitoringSettings>),
    ("landing", fields_of::<LandingSettings>),
];

/// One setting: its flat name (lowercase, without the prefix) and the
/// section of [`Config`] holding it (`None`: a field of [`Config`] itself).
pub(super) struct Setting {
    pub(super) name: &'static str,
    pub(super) section: Option<&'static str>,
}

/// Every setting, in [`Config`]'s field order.
pub(super) fn settings() -> &'static [Setting] {
    static TABLE: std::sync::OnceLock<Vec<Setting>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        fields_of::<Config>()
            .iter()
            .flat_map(|&field| match SECTIONS.iter().find(|(s, _)| *s == field) {
                Some(&(section, fields)) => fields()
                    .iter()
                    .map(|&name| Setting {
                        name,
                        section: Some(section),
                    })
                    .collect::<Vec<_>>(),
                None => vec![Setting {
                    name: field,
                    section: None,
                }],
            })
            .collect()
    })
}

/// The settings' flat names (lowercase, without the prefix).
pub(super) fn config_fields() -> &'static [&'static str] {
    static NAMES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| settings().iter().map(|s| s.name).collect())
}

/// The names of the fields `T`'s derived `Deserialize` asks for (its serde
/// names, after any `rename`).
fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    /// A deserializer that only records the field names it is asked for.
    struct Names<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Names<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: serde::de::Visitor<'de>>(
            self,
            _: V,
        ) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("field names only"))
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(serde::de::Error::custom("field names only"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Names(&mut fields));
    fields
}

/// Flat `name = value` pairs placed into [`Config`]'s shape: each setting
/// under its section, or at the top for [`Config`]'s own.
fn nested(flat: &Dict) -> Dict {
    let mut out = Dict::new();
    for (name, value) in flat {
        let section = settings()
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.section);
        match section {
            Some(section) => {
                let entry = out
                    .entry(section.to_owned())
                    .or_insert_with(|| Value::from(Dict::new()));
                if let Value::Dict(_, dict) = entry {
                    dict.insert(name.clone(), value.clone());
                }
            }
            None => {
                out.insert(name.clone(), value.clone());
            }
        }
    }
    out
}

impl Config {
    /// Reads `huntaze.toml` (or the file named by `HUNTAZE_CONFIG`) if present,
    /// then the process environment. The problems are everything that could
    /// not be read (all fatal); the configuration holds the defaults in
    /// their place so [`Config::problems`] can still report the rest.
    pub fn load() -> (Self, Vec<ConfigProblem>) {
        Self::load_from(std::env::vars_os().map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        }))
    }

    /// [`Config::load`] with the environment given as `(name, value)` pairs.
    pub fn load_from(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> (Self, Vec<ConfigProblem>) {
        let fields = config_fields();
        let mut problems = Vec::new();
        let mut env = Dict::new();
        let mut file_name = None;
        for (name, value) in vars {
            // Matched without regard to case, as the values themselves are.
            let Some(rest) = name
                .get(..ENV_PREFIX.len())
                .filter(|p| p.eq_ignore_ascii_case(ENV_PREFIX))
                .map(|_| &name[ENV_PREFIX.len()..])
            else {
                continue;
            };
            let key = rest.to_ascii_lowercase();
            if key == "config" {
                file_name = Some(value);
            } else if fields.contains(&key.as_str()) {
                // Two spellings of one setting (`HUNTAZE_ENV`, `huntaze_env`):
                // which one wins would depend on the environment's order.
                if env.contains_key(&key) {
                    problems.push(ConfigProblem::fatal(
                        format!("{ENV_PREFIX}{}", key.to_ascii_uppercase()),
                        "is set more than once (in different letter case); set it once",
                    ));
                }
                env.insert(key, Value::from(value));
            } else if !OTHER_VARIABLES.contains(&name.to_ascii_uppercase().as_str()) {
                let known = fields
                    .iter()
                    .copied()
                    .chain(OTHER_VARIABLES.iter().map(|v| &v[ENV_PREFIX.len()..]));
                let message = match closest(&key, known) {
                    Some(k) => format!(
                        "is not a setting; did you mean {ENV_PREFIX}{}?",
                        k.to_ascii_uppercase()
                    ),
                    None => "is not a setting".into(),
                };
                problems.push(ConfigProblem::fatal(name.clone(), message));
            }
        }

        let explicit = file_name.is_some();
        let file_name = file_name.unwrap_or_else(|| DEFAULT_FILE.into());
        let mut file = Dict::new();
        match std::fs::read_to_string(&file_name) {
            Ok(text) => match toml::from_str::<Dict>(&text) {
                Ok(dict) => file = dict,
                Err(e) => {
                    // The message only: toml's Display quotes the offending
                    // line, which may hold a secret.
                    let line = e
                        .span()
                        .map_or(0, |s| text[..s.start].matches('\n').count() + 1);
                    problems.push(ConfigProblem::fatal(
                        file_name.clone(),
                        format!("is not valid TOML (line {line}): {}", e.message().trim()),
                    ));
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {}
            Err(e) => problems.push(ConfigProblem::fatal(
                "HUNTAZE_CONFIG",
                format!("names {file_name}, which cannot be read: {e}"),
            )),
        }
        let file_setting = |key: &str| format!("`{key}` in {file_name}");
        file.retain(|key, _| {
            let known = fields.contains(&key.as_str());
            if !known {
                let message = match closest(key, fields.iter().copied()) {
                    Some(k) => format!("is not a setting; did you mean `{k}`?"),
                    None => "is not a setting".into(),
                };
                problems.push(ConfigProblem::fatal(file_setting(key), message));
            }
            known
        });

        // serde stops at the first bad value: drop each one it names and
        // read again, so every bad value is reported, each once.
        loop {
            let figment = Figment::from(Serialized::defaults(nested(&file)))
                .merge(Serialized::defaults(nested(&env)));
            // Lossy: a variable is text, converted only where the setting
            // wants a number or a boolean (an all-digit token stays text).
            let e = match figment.extract_lossy::<Config>() {
                Ok(config) => return (config, problems),
                Err(e) => e,
            };
            let message = type_message(&e.kind);
            // The path is `[section, setting]` or `[setting]`: the setting's
            // flat name is its last element either way.
            let key = e.path.last().cloned().unwrap_or_default();
            if env.remove(&key).is_some() {
                problems.push(ConfigProblem::fatal(
                    format!("{ENV_PREFIX}{}", key.to_ascii_uppercase()),
                    message,
                ));
            } else if file.remove(&key).is_some() {
                problems.push(ConfigProblem::fatal(file_setting(&key), message));
            } else {
                problems.push(ConfigProblem::fatal("configuration", message));
                return (Config::default(), problems);
            }
        }
    }
}

/// The known name most like `name`, if one is close enough to be a likely
/// misspelling.
fn closest<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    known
        .map(|k| (strsim::normalized_damerau_levenshtein(name, k), k))
        .filter(|(score, _)| *score >= 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

/// What a value should have been, in words. Built from the expected type
/// only: serde's own messages quote the value.
fn type_message(kind: &figment::error::Kind) -> String {
    use figment::error::Kind;
    let expected = match kind {
        Kind::InvalidType(_, expected) | Kind::InvalidValue(_, expected) => expected.as_str(),
        Kind::UnknownVariant(_, variants) => {
            return format!("must be one of: {}", variants.join(", "));
        }
        _ => return "is not a valid value".into(),
    };
    let words = match expected {
        "u8" => "a whole number from 0 to 255",
        "u32" => "a whole number from 0 to 4294967295",
        "u64" | "usize" => "a whole number of 0 or more",
        "f64" | "f32" => "a number",
        "a boolean" => "true or false",
        "a string" => "text",
        other => other,
    };
    format!("must be {words}")
}
