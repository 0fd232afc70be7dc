//! The wire format's fixtures (`tests/golden/v1/`, one body of each kind as version 1
//! wrote them): each still parses into its type and writes back unchanged. Fixtures
//! are never rewritten; a new version adds a directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use flowstate_query_client::{
    BatchRequest, BatchResponse, Consistency, ErrorBody, StatesResponse, ValueResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/golden/v1/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Parses fixture `name` as `T`, checks it writes back to the same JSON, returns it.
fn round_trip<T: DeserializeOwned + Serialize>(name: &str) -> T {
    let json = fixture(name);
    let parsed: T = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(serde_json::to_value(&parsed).unwrap(), json, "{name}");
    parsed
}

#[test]
fn version_1_bodies_read_and_write_back_unchanged() {
    let states: StatesResponse = round_trip("states");
    assert_eq!(states.processes, 2);
    assert_eq!(
        states.states[1].namespace_type.as_deref(),
        Some("TimeWindow")
    );
    assert_eq!(states.states[1].ttl_ms, Some(3_600_000));
    assert_eq!(states.states[0].user_key_type.as_deref(), Some("String"));
    let value: ValueResponse = round_trip("value");
    assert_eq!(
        (value.consistency, value.checkpoint, value.watermark),
        (Consistency::Live, 3, Some(499))
    );
    let request: BatchRequest = round_trip("batch_request");
    assert_eq!(request.consistency, Consistency::Committed);
    assert_eq!(request.keys.len(), 3);
    let response: BatchResponse = round_trip("batch_response");
    assert_eq!(response.values[1].value, None);
    let error: ErrorBody = round_trip("error");
    assert_eq!(
        (error.error.as_str(), error.checkpoint),
        ("no_value", Some(3))
    );
}

#[test]
fn a_batch_request_names_only_keys_by_default() {
    let r: BatchRequest = serde_json::from_str(r#"{"keys": [1]}"#).unwrap();
    assert_eq!(r.consistency, Consistency::Live);
    assert!(r.user_key.is_none() && r.namespace.is_none());
    // Unknown fields are refused (a misspelt `consistency` must not read live).
    assert!(
        serde_json::from_str::<BatchRequest>(r#"{"keys": [1], "consistence": "committed"}"#)
            .is_err()
    );
}
