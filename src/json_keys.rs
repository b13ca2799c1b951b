//! JSON read from users' files names no key twice in an object: serde_json keeps the last
//! of a repeated key silently, so a file that says two things is refused instead (a
//! dataset.json listing modality "0" twice, a config giving `lr` twice).
use serde::Deserialize;

/// `json` parsed only to find a repeated key: the error names it, with its line and column
/// (and so does any syntax error).
pub(crate) fn refuse_repeated_keys(json: &[u8]) -> Result<(), serde_json::Error> {
    serde_json::from_slice::<NoDuplicateKeys>(json).map(|_| ())
}

/// Any JSON in which no object names a key twice.
struct NoDuplicateKeys;

impl<'de> Deserialize<'de> for NoDuplicateKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoDuplicateKeys)
    }
}

impl<'de> serde::de::Visitor<'de> for NoDuplicateKeys {
    type Value = NoDuplicateKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_unit<E>(self) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<NoDuplicateKeys>()?.is_some() {}
        Ok(self)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            // Before its value: the error's position is then the repeated key's.
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!("key `{key}` given twice")));
            }
            map.next_value::<NoDuplicateKeys>()?;
        }
        Ok(self)
    }
}
