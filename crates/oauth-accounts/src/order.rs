//! Keeping a file's key order on write-back: serde_json's map (without its `preserve_order`
//! feature, which would change every crate of the workspace) sorts keys, so the order is read
//! separately ([`Shape`]) and replayed when serializing ([`Ordered`]). Keys the file did not have
//! come after the file's own, sorted.

use std::collections::HashSet;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::Value;

/// The key order of a JSON document; values are not kept.
#[derive(Debug)]
pub(crate) enum Shape {
    Object(Vec<(String, Shape)>),
    Array(Vec<Shape>),
    Leaf,
}

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ShapeVisitor)
    }
}

struct ShapeVisitor;

impl<'de> Visitor<'de> for ShapeVisitor {
    type Value = Shape;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Shape, E> {
        Ok(Shape::Leaf)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Shape, E> {
        Ok(Shape::Leaf)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Shape, E> {
        Ok(Shape::Leaf)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Shape, E> {
        Ok(Shape::Leaf)
    }
    fn visit_str<E>(self, _: &str) -> Result<Shape, E> {
        Ok(Shape::Leaf)
    }
    fn visit_unit<E>(self) -> Result<Shape, E> {
        Ok(Shape::Leaf)
    }
    fn visit_none<E>(self) -> Result<Shape, E> {
        Ok(Shape::Leaf)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Shape>()? {
            items.push(item);
        }
        Ok(Shape::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        let mut entries = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Shape>()? {
            entries.push((k, v));
        }
        Ok(Shape::Object(entries))
    }
}

/// A value serialized in the key order of `shape` where it has one.
pub(crate) struct Ordered<'a>(pub(crate) &'a Value, pub(crate) Option<&'a Shape>);

impl Serialize for Ordered<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(map) => {
                let known: &[(String, Shape)] = match self.1 {
                    Some(Shape::Object(entries)) => entries,
                    _ => &[],
                };
                let mut out = s.serialize_map(Some(map.len()))?;
                let mut done: HashSet<&str> = HashSet::with_capacity(map.len());
                for (key, shape) in known {
                    if let Some(v) = map.get(key)
                        && done.insert(key)
                    {
                        out.serialize_entry(key, &Ordered(v, Some(shape)))?;
                    }
                }
                for (key, v) in map {
                    if !done.contains(key.as_str()) {
                        out.serialize_entry(key, &Ordered(v, None))?;
                    }
                }
                out.end()
            }
            Value::Array(items) => {
                let shapes: &[Shape] = match self.1 {
                    Some(Shape::Array(shapes)) => shapes,
                    _ => &[],
                };
                let mut out = s.serialize_seq(Some(items.len()))?;
                for (i, item) in items.iter().enumerate() {
                    out.serialize_element(&Ordered(item, shapes.get(i)))?;
                }
                out.end()
            }
            other => other.serialize(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_the_original_order_and_appends_new_keys() {
        let original = r#"{"z":1,"a":{"y":[{"q":1,"b":2}],"c":3},"m":null}"#;
        let shape: Shape = serde_json::from_str(original).expect("shape");
        let mut value: Value = serde_json::from_str(original).expect("value");
        value["new"] = Value::from(1);
        value["a"]["aa"] = Value::from(2);
        let out = serde_json::to_string(&Ordered(&value, Some(&shape))).expect("json");
        assert_eq!(
            out,
            r#"{"z":1,"a":{"y":[{"q":1,"b":2}],"c":3,"aa":2},"m":null,"new":1}"#
        );
    }
}
