//! What every service's settings type is made of. Each service owns one settings struct (in
//! its own module): its fields are the settings (a field's serde name is the setting's name,
//! `schedule_interval` in the TOML file, `TIPOFF_SCHEDULE_INTERVAL` in the environment), its
//! `Default` holds the defaults, its doc comments are the documentation, a field's own rule
//! (not zero, a range) is its deserializer, and rules across fields are [`Section::check`].
//! The daemon composes its configuration from these types and nothing else; the reload
//! fingerprint of a service is its settings' serialization ([`fingerprint`]), so a new field
//! is never missed by a reload.

use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use secrecy::{ExposeSecret, SecretString};
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::restart::Backoff;

/// A settings type: one per service, composed by the daemon's configuration.
pub trait Section: Serialize + DeserializeOwned + JsonSchema + Default {
    /// Rules across fields (a field's own rule is in its deserializer).
    fn check(&self) -> Result<(), Invalid> {
        Ok(())
    }
}

/// A setting whose value breaks a rule: the setting's name and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub key: &'static str,
    pub message: String,
}

impl Invalid {
    pub fn new(key: &'static str, message: impl Into<String>) -> Self {
        Invalid {
            key,
            message: message.into(),
        }
    }
}

/// One rule for every backoff's two settings: the cap is not below the base.
pub fn backoff(
    base: Duration,
    cap: Duration,
    base_key: &'static str,
    cap_key: &'static str,
) -> Result<Backoff, Invalid> {
    Backoff::checked(base, cap)
        .map_err(|_| Invalid::new(cap_key, format!("must not be smaller than {base_key}")))
}

/// A settings value as text that changes whenever any of its settings does (secrets enter as
/// a digest): what a reload compares to decide whether a service restarts.
pub fn fingerprint<T: Serialize>(settings: &T) -> String {
    serde_json::to_string(settings).expect("settings serialize")
}

/// The settings of `a` and `b` that differ, by name (from their serialization).
pub fn changed_keys<T: Serialize>(a: &T, b: &T) -> Vec<String> {
    let (a, b) = (serde_json::to_value(a), serde_json::to_value(b));
    match (a, b) {
        (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) => a
            .iter()
            .filter(|(k, v)| b.get(*k) != Some(v))
            .map(|(k, _)| k.clone())
            .collect(),
        _ => Vec::new(),
    }
}

/// A secret setting: never printed by `Debug` or `check-config`; it serializes as a digest,
/// so fingerprints notice a change without holding the value.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(SecretString::from(value.into()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// SHA-256 of the value.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.expose().as_bytes()).into()
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.digest() == other.digest()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("sha256:{}", hex::encode(self.digest())))
    }
}

impl JsonSchema for Secret {
    fn schema_name() -> String {
        "Secret".into()
    }

    fn json_schema(_: &mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema {
        schemars::schema::SchemaObject {
            instance_type: Some(schemars::schema::InstanceType::String.into()),
            format: Some("password".into()),
            ..Default::default()
        }
        .into()
    }
}

/// An optional secret: an empty value is none.
pub fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    let text = Option::<String>::deserialize(d)?.unwrap_or_default();
    Ok((!text.trim().is_empty()).then(|| Secret::new(text.trim())))
}

/// Durations: `250ms`, `5s`, `5m`, `6h`, `1d` (humantime), or a number of seconds.
pub mod duration {
    use super::*;

    pub fn parse(text: &str) -> Result<Duration, String> {
        let t = text.trim();
        if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
            return t
                .parse()
                .map(Duration::from_secs)
                .map_err(|_| format!("`{text}` is too large"));
        }
        humantime::parse_duration(t)
            .map_err(|_| format!("`{text}` is not a duration (use e.g. 250ms, 5s, 5m, 6h, 1d)"))
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        humantime_serde::serialize(d, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as 250ms, 5s, 5m, 6h or 1d")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                parse(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Ok(Duration::from_secs(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                u64::try_from(v)
                    .map(Duration::from_secs)
                    .map_err(|_| E::custom(format!("`{v}` is not a duration")))
            }
        }
        d.deserialize_any(V)
    }
}

/// `#[serde(with = "Dur")]`: a duration setting (see [`duration`]); its schema is a string.
pub struct Dur;

impl Dur {
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        duration::serialize(d, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        duration::deserialize(d)
    }
}

/// `#[serde(with = "NonZero")]`: a duration setting that must not be zero (an interval, a
/// timeout).
pub struct NonZero;

impl NonZero {
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        duration::serialize(d, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match duration::deserialize(d)? {
            d if d.is_zero() => Err(de::Error::custom("must be greater than zero")),
            d => Ok(d),
        }
    }
}

macro_rules! string_schema {
    ($($t:ty),*) => {$(
        impl JsonSchema for $t {
            fn schema_name() -> String {
                "Duration".into()
            }
            fn json_schema(g: &mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema {
                String::json_schema(g)
            }
        }
    )*};
}
string_schema!(Dur, NonZero);

/// A whole number of at least `MIN`.
pub fn at_least<'de, const MIN: u64, T, D>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + TryFrom<u64> + PartialOrd,
{
    between::<MIN, { u64::MAX }, T, D>(d)
}

/// A whole number from `MIN` to `MAX`.
pub fn between<'de, const MIN: u64, const MAX: u64, T, D>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + TryFrom<u64> + PartialOrd,
{
    let n = T::deserialize(d)?;
    if T::try_from(MIN).is_ok_and(|min| n < min) {
        return Err(de::Error::custom(format!("must be at least {MIN}")));
    }
    if T::try_from(MAX).is_ok_and(|max| n > max) {
        return Err(de::Error::custom(format!("must be at most {MAX}")));
    }
    Ok(n)
}

/// A list: a TOML array, or one string of comma-separated items (the environment's form).
pub fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Clone, Copy)]
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list, or comma-separated items")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<String>, E> {
            Ok(v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect())
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Vec<String>, E> {
            Ok(vec![v.to_string()])
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Vec<String>, E> {
            Ok(vec![v.to_string()])
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element::<String>()? {
                items.extend(self.visit_str::<A::Error>(&item)?);
            }
            Ok(items)
        }
    }
    d.deserialize_any(V)
}

/// A switch: `true`/`on`/`1` or `false`/`off`/`0`; empty is unset (the default applies).
pub fn switch<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Option<bool>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("true or false")
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Option<bool>, E> {
            Ok(Some(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<bool>, E> {
            match v.trim() {
                "" => Ok(None),
                "true" | "on" | "1" => Ok(Some(true)),
                "false" | "off" | "0" => Ok(Some(false)),
                other => Err(E::custom(format!("`{other}` is not one of true, false"))),
            }
        }
        fn visit_none<E: de::Error>(self) -> Result<Option<bool>, E> {
            Ok(None)
        }
    }
    d.deserialize_any(V)
}

/// An optional `http://` or `https://` URL, without a trailing `/`; empty is none.
pub fn http_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = Option::<String>::deserialize(d)?.unwrap_or_default();
    match text.trim() {
        "" => Ok(None),
        u => check_http_url(u)
            .map(|u| Some(u.trim_end_matches('/').to_string()))
            .map_err(de::Error::custom),
    }
}

/// A required `http://` or `https://` URL, without a trailing `/`.
pub fn required_http_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    http_url(d)?.ok_or_else(|| de::Error::custom("must not be empty"))
}

/// A list of `http://` or `https://` URLs.
pub fn http_urls<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    list(d)?
        .into_iter()
        .map(|u| check_http_url(&u).map(str::to_string))
        .collect::<Result<_, _>>()
        .map_err(de::Error::custom)
}

fn check_http_url(u: &str) -> Result<&str, String> {
    match url::Url::parse(u) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => Ok(u),
        _ => Err(format!(
            "`{}` is not an http:// or https:// URL",
            crate::redact::url(u)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_or_seconds() {
        assert_eq!(
            duration::parse("250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(duration::parse("5").unwrap(), Duration::from_secs(5));
        assert_eq!(duration::parse("6h").unwrap(), Duration::from_secs(21600));
        assert_eq!(
            duration::parse("30d").unwrap(),
            Duration::from_secs(30 * 86400)
        );
        assert_eq!(duration::parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(duration::parse("5 parsecs").is_err());
        assert!(duration::parse("").is_err());
    }

    #[test]
    fn a_secret_never_shows_and_serializes_as_a_digest() {
        let s = Secret::new("hunter2hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        let text = fingerprint(&s);
        assert!(
            !text.contains("hunter2") && text.starts_with("\"sha256:"),
            "{text}"
        );
        assert_ne!(text, fingerprint(&Secret::new("hunter3hunter3")));
    }
}
