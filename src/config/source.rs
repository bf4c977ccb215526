//! Reading prefixed environment variables (envy) and parsing their values with the error messages
//! of docs/configuration.md §1: `invalid value for KINITRO_API_PORT: 'abc' (expected an integer)`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use thiserror::Error;

/// A configuration problem found at start-up (exit status 1).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// A variable whose value does not parse; secrets are named but never echoed.
    #[error("invalid value for {var}{shown} (expected {expected})")]
    InvalidValue {
        /// Full variable name.
        var: String,
        /// `: '<value>'`, or empty for secrets.
        shown: String,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// A check that combines several settings failed.
    #[error("{0}")]
    Invalid(String),
}

/// A value type a setting can have, with the words used when a value is refused.
pub trait SettingValue: Sized {
    /// What is accepted, as in `(expected an integer)`.
    const EXPECTED: &'static str;
    /// Parses the raw text, `None` when it is not acceptable.
    fn parse_setting(raw: &str) -> Option<Self>;
}

macro_rules! integer_setting {
    ($($t:ty => $what:literal),*) => {$(
        impl SettingValue for $t {
            const EXPECTED: &'static str = $what;
            fn parse_setting(raw: &str) -> Option<Self> {
                raw.trim().parse().ok()
            }
        }
    )*};
}
integer_setting!(
    u16 => "an integer between 0 and 65535",
    u32 => "a non-negative integer",
    u64 => "a non-negative integer",
    usize => "a non-negative integer",
    i64 => "an integer"
);

impl SettingValue for f64 {
    const EXPECTED: &'static str = "a number";
    fn parse_setting(raw: &str) -> Option<Self> {
        raw.trim().parse().ok().filter(|v: &f64| v.is_finite())
    }
}

impl SettingValue for bool {
    const EXPECTED: &'static str = "true, false, 1, 0, yes or no";
    fn parse_setting(raw: &str) -> Option<Self> {
        parse_bool(raw)
    }
}

impl SettingValue for String {
    const EXPECTED: &'static str = "text";
    fn parse_setting(raw: &str) -> Option<Self> {
        Some(raw.to_string())
    }
}

impl SettingValue for PathBuf {
    const EXPECTED: &'static str = "a path";
    fn parse_setting(raw: &str) -> Option<Self> {
        (!raw.is_empty()).then(|| PathBuf::from(raw))
    }
}

/// A list setting: a JSON array of strings (the upstream form) or a comma-separated string.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct List(pub Vec<String>);

impl SettingValue for List {
    const EXPECTED: &'static str = "a JSON array of strings or a comma-separated list";
    fn parse_setting(raw: &str) -> Option<Self> {
        parse_list(raw).map(List)
    }
}

/// A map setting: a JSON object of strings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StringMap(pub BTreeMap<String, String>);

impl SettingValue for StringMap {
    const EXPECTED: &'static str = "a JSON object of strings";
    fn parse_setting(raw: &str) -> Option<Self> {
        serde_json::from_str(raw).ok().map(StringMap)
    }
}

/// A duration or interval in seconds: finite and not negative.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Seconds(pub f64);

impl SettingValue for Seconds {
    const EXPECTED: &'static str = "a non-negative number of seconds";
    fn parse_setting(raw: &str) -> Option<Self> {
        f64::parse_setting(raw).filter(|v| *v >= 0.0).map(Seconds)
    }
}

impl Seconds {
    /// As a `std::time::Duration`.
    pub fn duration(self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.0)
    }
}

/// Parses the boolean forms of docs/configuration.md §1 (case-insensitive).
pub fn parse_bool(raw: &str) -> Option<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

/// Parses a list as a JSON array of strings or as comma-separated text; blanks are dropped.
pub fn parse_list(raw: &str) -> Option<Vec<String>> {
    let raw = raw.trim();
    if raw.starts_with('[') {
        return serde_json::from_str::<Vec<String>>(raw).ok();
    }
    Some(
        raw.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
    )
}

thread_local! {
    /// Variable names asked for while recording (see [`record_variables`]).
    static ASKED: std::cell::RefCell<Option<std::collections::BTreeSet<String>>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` and returns every variable name the [`Env`]s it used asked for: for a layered `Env`, the
/// name under its last (the service's own) prefix. The configuration code is thereby the list of
/// variables that documentation and example files are checked against.
pub fn record_variables(f: impl FnOnce()) -> std::collections::BTreeSet<String> {
    ASKED.with(|a| *a.borrow_mut() = Some(Default::default()));
    f();
    ASKED.with(|a| a.borrow_mut().take().unwrap_or_default())
}

/// One prefix's variables, keys lower case without the prefix (as envy delivers them).
#[derive(Debug, Clone)]
struct Layer {
    prefix: String,
    vars: BTreeMap<String, String>,
}

/// The environment a service reads: its prefixes in priority order (e.g. `KINITRO_RUN_` before
/// `KINITRO_API_` inside `kinitro run`), plus the generic `KINITRO_` variables.
#[derive(Debug, Clone)]
pub struct Env {
    layers: Vec<Layer>,
}

impl Env {
    /// Reads the process environment for these prefixes, highest priority first.
    pub fn from_process(prefixes: &[&str]) -> Self {
        Self::from_pairs(
            prefixes,
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    /// Builds the same from explicit pairs (tests and tools).
    pub fn from_pairs<I>(prefixes: &[&str], pairs: I) -> Self
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let pairs: Vec<(String, String)> = pairs.into_iter().collect();
        let layers = prefixes
            .iter()
            .map(|prefix| Layer {
                prefix: prefix.to_string(),
                vars: envy::prefixed(*prefix)
                    .from_iter::<_, BTreeMap<String, String>>(pairs.iter().cloned())
                    .unwrap_or_default(),
            })
            .collect();
        Self { layers }
    }

    /// The first layer's variable for `field` (upper case, without prefix) and its full name.
    fn raw(&self, field: &str) -> Option<(String, &str)> {
        if let Some(last) = self.layers.last() {
            let name = format!("{}{field}", last.prefix);
            ASKED.with(|a| {
                if let Some(set) = a.borrow_mut().as_mut() {
                    set.insert(name);
                }
            });
        }
        let key = field.to_ascii_lowercase();
        self.layers.iter().find_map(|l| {
            l.vars
                .get(&key)
                .map(|v| (format!("{}{}", l.prefix, field), v.as_str()))
        })
    }

    /// The full name of `field` in the highest-priority layer (for messages about defaults).
    pub fn name(&self, field: &str) -> String {
        format!(
            "{}{}",
            self.layers.first().map_or("", |l| l.prefix.as_str()),
            field
        )
    }

    /// The parsed value of `field`, `None` when no layer sets it.
    pub fn get<T: SettingValue>(&self, field: &str) -> Result<Option<T>, ConfigError> {
        self.get_checked(field, |_: &T| true, T::EXPECTED)
    }

    /// As [`Env::get`], refusing values that fail `check` with `expected` as the explanation.
    pub fn get_checked<T: SettingValue>(
        &self,
        field: &str,
        check: impl Fn(&T) -> bool,
        expected: &'static str,
    ) -> Result<Option<T>, ConfigError> {
        let Some((var, raw)) = self.raw(field) else {
            return Ok(None);
        };
        match T::parse_setting(raw).filter(|v| check(v)) {
            Some(v) => Ok(Some(v)),
            None => Err(ConfigError::InvalidValue {
                var,
                shown: format!(": '{raw}'"),
                expected,
            }),
        }
    }

    /// A secret: returned as text and, on error, named without its value.
    pub fn secret(
        &self,
        field: &str,
        check: impl Fn(&str) -> bool,
        expected: &'static str,
    ) -> Result<Option<String>, ConfigError> {
        let Some((var, raw)) = self.raw(field) else {
            return Ok(None);
        };
        if check(raw) {
            Ok(Some(raw.to_string()))
        } else {
            Err(ConfigError::InvalidValue {
                var,
                shown: String::new(),
                expected,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(
            &["KINITRO_RUN_", "KINITRO_API_"],
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn names_the_variable_and_the_expected_form() {
        let e = env(&[("KINITRO_API_PORT", "abc")]);
        let err = e.get::<u16>("PORT").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value for KINITRO_API_PORT: 'abc' (expected an integer between 0 and 65535)"
        );
    }

    #[test]
    fn earlier_prefix_wins_and_secrets_are_not_echoed() {
        let e = env(&[("KINITRO_API_PORT", "1"), ("KINITRO_RUN_PORT", "2")]);
        assert_eq!(e.get::<u16>("PORT").unwrap(), Some(2));
        let e = env(&[("KINITRO_API_API_KEY", "hunter2")]);
        let err = e.secret("API_KEY", |_| false, "a key").unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
        assert!(err.to_string().contains("KINITRO_API_API_KEY"));
    }

    #[test]
    fn value_forms() {
        for (raw, want) in [("TRUE", true), ("0", false), ("Yes", true), ("no", false)] {
            assert_eq!(parse_bool(raw), Some(want));
        }
        assert_eq!(parse_bool("maybe"), None);
        assert_eq!(
            parse_list(r#"["a","b"]"#),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(parse_list("a, b,"), Some(vec!["a".into(), "b".into()]));
        assert_eq!(parse_list("[1,2]"), None);
        assert_eq!(Seconds::parse_setting("-1"), None);
        assert_eq!(Seconds::parse_setting("2.5"), Some(Seconds(2.5)));
        assert_eq!(f64::parse_setting("inf"), None);
    }
}
