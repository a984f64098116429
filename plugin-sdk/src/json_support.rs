use serde::de::DeserializeOwned;

use crate::{Message, RouteError};

impl Message<'_> {
    /// Parses the value as JSON into `T`.
    ///
    /// A null value or malformed JSON is a [`RouteError::Reject`] whose
    /// reason says what is wrong (with line and column), so plugins can
    /// write `let order: Order = msg.json()?;`. A value that is not UTF-8
    /// is malformed JSON even where `T` skips the bytes that are not (as
    /// the Python and TypeScript SDKs see it).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, RouteError> {
        let value = self
            .value()
            .ok_or_else(|| RouteError::reject("value is null, expected JSON"))?;
        let text = std::str::from_utf8(value)
            .map_err(|e| RouteError::reject(format!("value is not valid JSON: not UTF-8: {e}")))?;
        serde_json::from_str(text)
            .map_err(|e| RouteError::reject(format!("value is not valid JSON: {e}")))
    }

    /// Parses the value as an untyped JSON document.
    pub fn json_value(&self) -> Result<serde_json::Value, RouteError> {
        self.json()
    }
}

/// The field at a dotted `path` (`"customer.address.city"`) of a JSON
/// document; array elements are addressed by index (`"items.0.sku"`).
///
/// ```
/// let doc = switchyard_sdk::json::json!({"a": {"b": [10, 20]}});
/// assert_eq!(switchyard_sdk::json_field(&doc, "a.b.1"), Some(&20.into()));
/// ```
#[must_use]
pub fn json_field<'v>(doc: &'v serde_json::Value, path: &str) -> Option<&'v serde_json::Value> {
    path.split('.').try_fold(doc, |node, part| match node {
        serde_json::Value::Object(map) => map.get(part),
        serde_json::Value::Array(items) => items.get(part.parse::<usize>().ok()?),
        _ => None,
    })
}

/// Like [`json_field`], but mutable.
pub fn json_field_mut<'v>(
    doc: &'v mut serde_json::Value,
    path: &str,
) -> Option<&'v mut serde_json::Value> {
    path.split('.').try_fold(doc, |node, part| match node {
        serde_json::Value::Object(map) => map.get_mut(part),
        serde_json::Value::Array(items) => items.get_mut(part.parse::<usize>().ok()?),
        _ => None,
    })
}
