//! The connection list as the backend writes it, read straight from the answer's text.
//!
//! `composio_list_connections` is what a shell polls (every few seconds, while its
//! integrations page is open), so its answer is read in one pass with no `serde_json::Value`
//! in between: only the members a connection is made of are kept, the rest is skipped.
//!
//! Accepted, as the backend and its past versions write it: the list bare, or under
//! `connections` (first) or `items`; a connection's id under `id`, `connectionId`,
//! `connection_id` or `nanoid`; its toolkit under `toolkit`, `toolkitSlug`, `toolkit_slug`,
//! `appName`, `app_name` or `app`, as text or as an object with `slug`, `key`, `name` or `id`;
//! `status` (`unknown` when absent); `createdAt` or `created_at`. The first of the names that
//! holds text wins; text is trimmed, blank text counts as absent, a number is text. A member
//! given twice counts with its last value, as in any JSON object read into a map.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{Connection, ConnectionList, malformed};
use crate::error::Result;

/// The envelope's `data`, classified.
pub(super) enum RawList {
    Items(Vec<RawConnection>),
    /// An object with neither list.
    NoList,
    /// `null`, or no `data` at all.
    NoData,
    NotAList,
}

pub(super) enum RawConnection {
    Object(Box<Slots>),
    NotObject,
}

/// What a connection object held under each known name, in [`Field`] order.
#[derive(Default)]
pub(super) struct Slots([Option<String>; FIELDS]);

/// The known names of a connection's members; their order within each group is precedence.
#[derive(Clone, Copy, PartialEq)]
enum Field {
    Id,
    ConnectionId,
    ConnectionIdSnake,
    Nanoid,
    Toolkit,
    ToolkitSlug,
    ToolkitSlugSnake,
    AppName,
    AppNameSnake,
    App,
    Status,
    CreatedAt,
    CreatedAtSnake,
}

const FIELDS: usize = 13;
const ID: [Field; 4] = [
    Field::Id,
    Field::ConnectionId,
    Field::ConnectionIdSnake,
    Field::Nanoid,
];
const TOOLKIT: [Field; 6] = [
    Field::Toolkit,
    Field::ToolkitSlug,
    Field::ToolkitSlugSnake,
    Field::AppName,
    Field::AppNameSnake,
    Field::App,
];
const CREATED_AT: [Field; 2] = [Field::CreatedAt, Field::CreatedAtSnake];

impl Field {
    fn named(name: &str) -> Option<Self> {
        Some(match name {
            "id" => Self::Id,
            "connectionId" => Self::ConnectionId,
            "connection_id" => Self::ConnectionIdSnake,
            "nanoid" => Self::Nanoid,
            "toolkit" => Self::Toolkit,
            "toolkitSlug" => Self::ToolkitSlug,
            "toolkit_slug" => Self::ToolkitSlugSnake,
            "appName" => Self::AppName,
            "app_name" => Self::AppNameSnake,
            "app" => Self::App,
            "status" => Self::Status,
            "createdAt" => Self::CreatedAt,
            "created_at" => Self::CreatedAtSnake,
            _ => return None,
        })
    }

    fn is_toolkit(self) -> bool {
        TOOLKIT.contains(&self)
    }
}

impl Slots {
    /// The first of `fields` that held text, taken out.
    fn take_first(&mut self, fields: &[Field]) -> Option<String> {
        fields.iter().find_map(|f| self.0[*f as usize].take())
    }
}

/// The list, each connection checked: the same messages for the same faults, whatever the
/// shape.
pub(super) fn normalize(list: RawList) -> Result<ConnectionList> {
    let items = match list {
        RawList::Items(items) => items,
        RawList::NoList => return Err(malformed("no `connections` list in data")),
        RawList::NoData => return Err(malformed("no data")),
        RawList::NotAList => return Err(malformed("data is not a `connections` list")),
    };
    let connections = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| connection(i, item))
        .collect::<Result<_>>()?;
    Ok(ConnectionList { connections })
}

fn connection(i: usize, item: RawConnection) -> Result<Connection> {
    let RawConnection::Object(mut slots) = item else {
        return Err(malformed(format!("connections[{i}] is not an object")));
    };
    let id = slots
        .take_first(&ID)
        .ok_or_else(|| malformed(format!("connections[{i}] has no id")))?;
    let toolkit = slots
        .take_first(&TOOLKIT)
        .ok_or_else(|| malformed(format!("connections[{i}] has no toolkit")))?;
    Ok(Connection {
        id,
        toolkit,
        status: slots
            .take_first(&[Field::Status])
            .unwrap_or_else(|| "unknown".to_string()),
        created_at: slots.take_first(&CREATED_AT),
    })
}

/// A visitor's `visit_*` methods for booleans, numbers and strings, each answering `$value`.
macro_rules! scalars_are {
    ($value:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> std::result::Result<Self::Value, E> {
            Ok($value)
        }

        fn visit_i64<E: de::Error>(self, _: i64) -> std::result::Result<Self::Value, E> {
            Ok($value)
        }

        fn visit_u64<E: de::Error>(self, _: u64) -> std::result::Result<Self::Value, E> {
            Ok($value)
        }

        fn visit_f64<E: de::Error>(self, _: f64) -> std::result::Result<Self::Value, E> {
            Ok($value)
        }

        fn visit_str<E: de::Error>(self, _: &str) -> std::result::Result<Self::Value, E> {
            Ok($value)
        }
    };
}

impl<'de> Deserialize<'de> for RawList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(ListVisitor)
    }
}

struct ListVisitor;

impl<'de> Visitor<'de> for ListVisitor {
    type Value = RawList;

    scalars_are!(RawList::NotAList);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the connection list")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> std::result::Result<RawList, A::Error> {
        list(seq).map(RawList::Items)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<RawList, A::Error> {
        let (mut connections, mut items) = (None, None);
        while let Some(key) = map.next_key::<ListKey>()? {
            match key {
                ListKey::Connections => connections = map.next_value::<MaybeList>()?.0,
                ListKey::Items => items = map.next_value::<MaybeList>()?.0,
                ListKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(connections
            .or(items)
            .map_or(RawList::NoList, RawList::Items))
    }

    fn visit_unit<E: de::Error>(self) -> std::result::Result<RawList, E> {
        Ok(RawList::NoData)
    }
}

fn list<'de, A: SeqAccess<'de>>(mut seq: A) -> std::result::Result<Vec<RawConnection>, A::Error> {
    let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(256));
    while let Some(item) = seq.next_element()? {
        items.push(item);
    }
    Ok(items)
}

/// The two names a wrapped list may have.
enum ListKey {
    Connections,
    Items,
    Other,
}

impl<'de> Deserialize<'de> for ListKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        fn named(name: &str) -> ListKey {
            match name {
                "connections" => ListKey::Connections,
                "items" => ListKey::Items,
                _ => ListKey::Other,
            }
        }
        d.deserialize_str(KeyVisitor(named))
    }
}

/// A member name, mapped as it is read (borrowed or escaped alike).
struct KeyVisitor<T>(fn(&str) -> T);

impl<'de, T> Visitor<'de> for KeyVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> std::result::Result<T, E> {
        Ok((self.0)(name))
    }
}

/// A list under a wrapping name, or `None` when that member is not an array.
struct MaybeList(Option<Vec<RawConnection>>);

impl<'de> Deserialize<'de> for MaybeList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(MaybeListVisitor).map(MaybeList)
    }
}

struct MaybeListVisitor;

impl<'de> Visitor<'de> for MaybeListVisitor {
    type Value = Option<Vec<RawConnection>>;

    scalars_are!(None);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> std::result::Result<Self::Value, A::Error> {
        list(seq).map(Some)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<Self::Value, A::Error> {
        TextVisitor.visit_map(map).map(|_| None)
    }

    fn visit_unit<E: de::Error>(self) -> std::result::Result<Self::Value, E> {
        Ok(None)
    }
}

impl<'de> Deserialize<'de> for RawConnection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(ConnectionVisitor)
    }
}

struct ConnectionVisitor;

impl<'de> Visitor<'de> for ConnectionVisitor {
    type Value = RawConnection;

    scalars_are!(RawConnection::NotObject);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a connection")
    }

    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut slots = Box::<Slots>::default();
        while let Some(FieldKey(field)) = map.next_key()? {
            let Some(field) = field else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            slots.0[field as usize] = if field.is_toolkit() {
                map.next_value::<ToolkitName>()?.0
            } else {
                map.next_value::<Text>()?.0
            };
        }
        Ok(RawConnection::Object(slots))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> std::result::Result<Self::Value, A::Error> {
        TextVisitor.visit_seq(seq).map(|_| RawConnection::NotObject)
    }

    fn visit_unit<E: de::Error>(self) -> std::result::Result<Self::Value, E> {
        Ok(RawConnection::NotObject)
    }
}

/// A known member name of a connection (`None`: any other).
struct FieldKey(Option<Field>);

impl<'de> Deserialize<'de> for FieldKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        fn named(name: &str) -> FieldKey {
            FieldKey(Field::named(name))
        }
        d.deserialize_str(KeyVisitor(named))
    }
}

/// The rank of a name a toolkit object may give its slug under (`None`: any other name).
struct ToolkitKey(Option<usize>);

impl<'de> Deserialize<'de> for ToolkitKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        fn named(name: &str) -> ToolkitKey {
            ToolkitKey(
                ["slug", "key", "name", "id"]
                    .iter()
                    .position(|n| *n == name),
            )
        }
        d.deserialize_str(KeyVisitor(named))
    }
}

/// A value read as text: a non-blank string (trimmed) or a number; anything else is `None`.
struct Text(Option<String>);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(TextVisitor).map(Text)
    }
}

/// A toolkit: text, or an object naming it under `slug`, `key`, `name` or `id` (first wins).
struct ToolkitName(Option<String>);

impl<'de> Deserialize<'de> for ToolkitName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(ToolkitVisitor).map(ToolkitName)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("text")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<Self::Value, E> {
        let s = s.trim();
        Ok((!s.is_empty()).then(|| s.to_string()))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> std::result::Result<Self::Value, E> {
        Ok(Some(n.to_string()))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> std::result::Result<Self::Value, E> {
        Ok(Some(n.to_string()))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> std::result::Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(n).map(|n| n.to_string()))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> std::result::Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> std::result::Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

struct ToolkitVisitor;

impl<'de> Visitor<'de> for ToolkitVisitor {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a toolkit")
    }

    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        // slug, key, name, id: the first that holds text.
        let mut names: [Option<String>; 4] = Default::default();
        while let Some(ToolkitKey(rank)) = map.next_key()? {
            match rank {
                Some(rank) => names[rank] = map.next_value::<Text>()?.0,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(names.into_iter().flatten().next())
    }

    fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<Self::Value, E> {
        TextVisitor.visit_str(s)
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> std::result::Result<Self::Value, E> {
        TextVisitor.visit_i64(n)
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> std::result::Result<Self::Value, E> {
        TextVisitor.visit_u64(n)
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> std::result::Result<Self::Value, E> {
        TextVisitor.visit_f64(n)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> std::result::Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> std::result::Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> std::result::Result<Self::Value, A::Error> {
        TextVisitor.visit_seq(seq)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::super::{first_text, list_in, toolkit_name};
    use super::*;

    /// The reading this module replaced, over a `Value`: the oracle the one-pass reading must
    /// agree with, shape for shape.
    fn reference(data: Value) -> Result<ConnectionList> {
        let items = list_in(data, &["connections", "items"], "connections")?;
        let mut connections = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let Value::Object(object) = item else {
                return Err(malformed(format!("connections[{i}] is not an object")));
            };
            let id = first_text(object, &["id", "connectionId", "connection_id", "nanoid"])
                .ok_or_else(|| malformed(format!("connections[{i}] has no id")))?;
            let toolkit = [
                "toolkit",
                "toolkitSlug",
                "toolkit_slug",
                "appName",
                "app_name",
                "app",
            ]
            .iter()
            .find_map(|k| object.get(*k).and_then(toolkit_name))
            .ok_or_else(|| malformed(format!("connections[{i}] has no toolkit")))?;
            connections.push(Connection {
                id,
                toolkit,
                status: first_text(object, &["status"]).unwrap_or_else(|| "unknown".into()),
                created_at: first_text(object, &["createdAt", "created_at"]),
            });
        }
        Ok(ConnectionList { connections })
    }

    fn one_pass(text: &str) -> Result<ConnectionList> {
        normalize(serde_json::from_str(text).expect("any JSON reads"))
    }

    #[test]
    fn agrees_with_the_value_reading_on_every_shape() {
        let shapes = [
            r#"null"#,
            r#"true"#,
            r#"3"#,
            r#""x""#,
            r#"[]"#,
            r#"{}"#,
            r#"{"other":[{"id":"a","toolkit":"b"}]}"#,
            r#"[{"id":"a","toolkit":"b"}]"#,
            r#"{"connections":[{"id":"a","toolkit":"b"}],"items":[{"id":"c","toolkit":"d"}]}"#,
            r#"{"connections":{"id":"a"},"items":[{"id":"c","toolkit":"d"}]}"#,
            r#"{"connections":"x","items":"y"}"#,
            r#"{"connections":[{"id":"a","toolkit":"b"}],"connections":5,"items":[{"id":"c","toolkit":"d"}]}"#,
            r#"{"items":[{"id":"c","toolkit":"d"}],"connections":[{"id":"a","toolkit":"b"}]}"#,
            r#"[1]"#,
            r#"[null]"#,
            r#"[[1,2]]"#,
            r#"[{"id":"a","toolkit":"b"},"x"]"#,
            r#"[{"toolkit":"b"}]"#,
            r#"[{"id":"a"}]"#,
            r#"[{"id":"  ","connectionId":" x ","toolkit":"b"}]"#,
            r#"[{"id":null,"connection_id":7,"toolkit":"b"}]"#,
            r#"[{"id":1.5,"toolkit":"b"},{"id":-3,"toolkit":"b"},{"id":1e3,"toolkit":"b"},{"id":18446744073709551615,"toolkit":"b"},{"id":123456789012345678901234,"toolkit":"b"}]"#,
            r#"[{"id":true,"nanoid":"n","toolkit":"b"}]"#,
            r#"[{"id":{"x":1},"nanoid":["a"],"toolkit":"b"}]"#,
            r#"[{"id":"a","id":"b","toolkit":"t"}]"#,
            r#"[{"id":"a","id":null,"connectionId":"c","toolkit":"t"}]"#,
            r#"[{"id":"a","toolkit":{"slug":" s ","key":"k","name":"n","id":"i"}}]"#,
            r#"[{"id":"a","toolkit":{"id":"i","name":"n"}}]"#,
            r#"[{"id":"a","toolkit":{"slug":"","key":4}}]"#,
            r#"[{"id":"a","toolkit":{"x":"y"},"app":"z"}]"#,
            r#"[{"id":"a","toolkit":[],"toolkitSlug":null,"toolkit_slug":"ts","appName":"an"}]"#,
            r#"[{"id":"a","app_name":"an","appName":"AN"}]"#,
            r#"[{"id":"a","app":{"name":"x"}}]"#,
            r#"[{"id":"a","toolkit":"t","status":" ACTIVE ","createdAt":"","created_at":"2024"}]"#,
            r#"[{"id":"a","toolkit":"t","status":5,"createdAt":{"a":1}}]"#,
            r#"[{"id":"a","toolkit":"t","extra":{"deep":[{"id":"no"}]},"status":"S"}]"#,
            r#"[{"i\u0064":"escaped","toolkit":"t"}]"#,
            r#"[{"id":"caf\u00e9 \"q\"","toolkit":"t\n"}]"#,
        ];
        for shape in shapes {
            let value: Value = serde_json::from_str(shape).unwrap();
            let want = reference(value).map_err(|e| e.to_string());
            let got = one_pass(shape).map_err(|e| e.to_string());
            assert_eq!(got, want, "{shape}");
        }
    }

    #[test]
    fn reads_the_usual_answer() {
        let list = one_pass(
            &json!({"connections": [
                {"id": "ca_1", "toolkit": {"slug": "github", "name": "GitHub"}, "status": "ACTIVE",
                 "createdAt": "2024-01-01T00:00:00Z", "meta": {"scopes": ["repo"]}},
            ]})
            .to_string(),
        )
        .unwrap();
        assert_eq!(
            list.connections,
            [Connection {
                id: "ca_1".into(),
                toolkit: "github".into(),
                status: "ACTIVE".into(),
                created_at: Some("2024-01-01T00:00:00Z".into()),
            }]
        );
    }
}
