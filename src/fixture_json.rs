//! Readers of the JSON reference fixtures (tests/fixtures/*_reference.json) that the
//! in-crate reference tests share; each test module still embeds its own fixture.
use serde_json::Value;

/// `v` as a JSON list, or a panic naming it.
pub fn list(v: &Value) -> &Vec<Value> {
    v.as_array().unwrap_or_else(|| panic!("not a list: {v}"))
}

/// A JSON list of numbers.
pub fn floats(v: &Value) -> Vec<f64> {
    list(v).iter().map(|x| x.as_f64().unwrap()).collect()
}

/// A JSON list of non-negative integers.
pub fn usizes(v: &Value) -> Vec<usize> {
    list(v)
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}
