//! JSON Schemas of the API, derived from the Rust types the handlers deserialize and serialize
//! (`schemars`, OpenAPI 3.0 flavour): a field added to a request or response type appears in
//! `/openapi.json` by itself. The constraints serde cannot see (patterns, enums, ranges, the
//! amount that is a string or an integer) are the `schema_with` functions below, next to the
//! values the handlers accept.

use schemars::gen::{SchemaGenerator, SchemaSettings};
use schemars::schema::Schema;
use schemars::JsonSchema;
use serde_json::{json, Value};

/// The schema of `T`, inlined (no `$ref`), as OpenAPI 3.0 reads it (`nullable` for options).
pub fn of<T: JsonSchema>() -> Value {
    let mut settings = SchemaSettings::openapi3();
    settings.inline_subschemas = true;
    let mut gen = settings.into_generator();
    let schema = gen.subschema_for::<T>();
    let mut value = serde_json::to_value(schema).unwrap_or_else(|_| json!({"type": "object"}));
    if let Some(map) = value.as_object_mut() {
        map.remove("$schema");
        map.remove("title");
    }
    value
}

/// Every list's answer: `{"items": [...], "next": cursor or null}`.
#[derive(serde::Serialize, JsonSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass it back as `cursor` for the next page; null on the last.
    pub next: Option<String>,
}

/// The schema of a list of `T`.
pub fn page_of<T: JsonSchema>() -> Value {
    of::<Page<T>>()
}

/// A schema written as JSON, for the `schema_with` adapters.
pub(crate) fn to_schema(value: Value) -> Schema {
    serde_json::from_value(value).unwrap_or(Schema::Bool(true))
}

pub(crate) fn enum_of(values: impl IntoIterator<Item = &'static str>) -> Value {
    json!({"type": "string", "enum": values.into_iter().collect::<Vec<_>>()})
}

/// A league key of the catalog.
pub(crate) fn leagues() -> Value {
    enum_of(tipoff_actors::store::LEAGUE_CATALOG.iter().map(|l| l.key))
}

/// The base58 alphabet (no 0, O, I, l).
const BASE58: &str = "[1-9A-HJ-NP-Za-km-z]";

/// A wallet address: the 44- and 43-character base58 strings whose leading digit makes them
/// exactly 32 bytes (what the handler checks by decoding), never the system program. Rarer
/// addresses with leading `1`s are accepted too but not described.
pub(crate) fn pubkey() -> Value {
    json!({"type": "string", "pattern": format!("^([2-9A-H]{BASE58}{{43}}|[5-9A-HJ-NP-Za-km-z]{BASE58}{{42}})$"), "description": "base58 Solana address of a wallet (32 bytes; not the system program)"})
}

/// A transaction signature: 88- and 87-character base58 strings of exactly 64 bytes.
pub(crate) fn signature() -> Value {
    json!({"type": "string", "pattern": format!("^([2-5]{BASE58}{{87}}|[3-9A-HJ-NP-Za-km-z]{BASE58}{{86}})$"), "description": "base58 transaction signature (64 bytes); required by complete"})
}

/// An amount in base units: a string of digits, or an integer up to 2^53.
pub(crate) fn amount() -> Value {
    json!({"description": "base units of the token, as a string of digits (or an integer up to 2^53)", "oneOf": [{"type": "string", "pattern": "^[1-9][0-9]{0,17}$"}, {"type": "integer", "minimum": 1, "maximum": 9007199254740991_i64}]})
}

/// An optional text field: a string of at most `max` characters, or null.
pub(crate) fn optional_text(max: u32) -> Value {
    json!({"type": "string", "maxLength": max, "nullable": true})
}

// `schema_with` adapters for the request types.

pub(crate) fn amount_field(_: &mut SchemaGenerator) -> Schema {
    to_schema(amount())
}

pub(crate) fn pubkey_field(_: &mut SchemaGenerator) -> Schema {
    to_schema(pubkey())
}

pub(crate) fn signature_field(_: &mut SchemaGenerator) -> Schema {
    to_schema(json!({"nullable": true, "allOf": [signature()]}))
}

pub(crate) fn outcome_field(_: &mut SchemaGenerator) -> Schema {
    to_schema(enum_of(["home", "away"]))
}

/// A configured token's name (narrowed to this daemon's tokens when `/openapi.json` is served).
pub(crate) fn token_field(_: &mut SchemaGenerator) -> Schema {
    to_schema(json!({"type": "string", "description": "a configured token"}))
}

pub(crate) fn league_field(_: &mut SchemaGenerator) -> Schema {
    to_schema(leagues())
}

pub(crate) fn date_field(_: &mut SchemaGenerator) -> Schema {
    to_schema(json!({"type": "string", "format": "date"}))
}

pub(crate) fn name_field(_: &mut SchemaGenerator) -> Schema {
    to_schema(optional_text(100))
}

pub(crate) fn user_id_field(_: &mut SchemaGenerator) -> Schema {
    to_schema(json!({"type": "integer", "format": "int64", "minimum": 1}))
}

/// Base units as a string of digits.
pub(crate) fn units_field(_: &mut SchemaGenerator) -> Schema {
    to_schema(json!({"type": "string", "pattern": "^[0-9]+$"}))
}

/// Signed base units as a string (`-` for a debit).
pub(crate) fn signed_units_field(_: &mut SchemaGenerator) -> Schema {
    to_schema(json!({"type": "string", "pattern": "^-?[0-9]+$"}))
}

pub(crate) fn optional_units_field(_: &mut SchemaGenerator) -> Schema {
    to_schema(json!({"type": "string", "pattern": "^[0-9]+$", "nullable": true}))
}

pub(crate) fn game_state_field(_: &mut SchemaGenerator) -> Schema {
    to_schema(enum_of(
        tipoff_actors::domain::GameState::ALL.map(|g| g.as_str()),
    ))
}

pub(crate) fn market_state_field(_: &mut SchemaGenerator) -> Schema {
    to_schema(enum_of(super::read::MARKET_STATES.iter().copied()))
}

pub(crate) fn search_mode_field(_: &mut SchemaGenerator) -> Schema {
    to_schema(enum_of(["hybrid", "keyword"]))
}

pub(crate) fn withdrawal_state_field(_: &mut SchemaGenerator) -> Schema {
    to_schema(enum_of(
        tipoff_actors::store::WITHDRAWAL_STATES.iter().copied(),
    ))
}

pub(crate) fn quarantine_state_field(_: &mut SchemaGenerator) -> Schema {
    to_schema(enum_of(
        tipoff_actors::store::QUARANTINE_STATES.iter().copied(),
    ))
}

/// Base units per token, as strings: `{"usdc": "1500"}`.
pub(crate) fn pools_field(_: &mut SchemaGenerator) -> Schema {
    to_schema(
        json!({"type": "object", "additionalProperties": {"type": "string", "pattern": "^[0-9]+$"}}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(JsonSchema)]
    #[allow(dead_code)]
    struct Sample {
        id: i64,
        name: Option<String>,
        #[schemars(schema_with = "amount_field")]
        amount: Value,
    }

    #[test]
    fn a_type_becomes_an_inline_openapi_schema() {
        let s = of::<Sample>();
        assert_eq!(s["type"], "object");
        assert_eq!(s["required"], json!(["amount", "id"]));
        assert_eq!(s["properties"]["id"]["type"], "integer");
        assert_eq!(s["properties"]["name"]["nullable"], true);
        assert!(s["properties"]["amount"]["oneOf"].is_array());
        assert!(s.get("$schema").is_none() && s.get("definitions").is_none());
    }
}
