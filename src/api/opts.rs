//! Options tables to typed structs, with messages in the form
//! `opts.cidr: expected string, got integer`.

use mlua::Value;
use serde::de::{self, DeserializeOwned, MapAccess, Visitor};
use serde::Deserialize;

use super::{ApiError, Context};
use crate::cloud::Scope;
use crate::network::ResourceRef;

pub(crate) fn lua_type(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Boolean(_) => "boolean",
        Value::Integer(_) | Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Table(_) => "table",
        Value::Function(_) => "function",
        Value::Thread(_) => "thread",
        Value::UserData(_) | Value::LightUserData(_) => "userdata",
        _ => "value",
    }
}

/// Reads a primitive's options table into `T` (which should deny unknown fields).
pub fn parse<T: DeserializeOwned>(prim: &str, v: Value) -> Result<T, ApiError> {
    if !matches!(v, Value::Table(_)) {
        return Err(ApiError::usage(
            prim,
            format!(
                "expected an options table {prim}{{…}}, got {}",
                lua_type(&v)
            ),
        ));
    }
    let de = mlua::serde::Deserializer::new(v);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let (path, msg) = crate::ops::parse::reword(
            &crate::ops::parse::path_of(e.path()),
            &e.inner().to_string(),
        );
        if path.is_empty() {
            ApiError::usage(prim, format!("opts: {msg}"))
        } else {
            ApiError::field(prim, &path, msg)
        }
    })
}

/// Removes a function-valued option before the rest is parsed (serde cannot read functions).
pub fn take_function(prim: &str, v: &Value, key: &str) -> Result<Option<mlua::Function>, ApiError> {
    let Value::Table(t) = v else { return Ok(None) };
    match t.get::<Value>(key) {
        Ok(Value::Nil) | Err(_) => Ok(None),
        Ok(Value::Function(f)) => {
            t.raw_set(key, Value::Nil).ok();
            Ok(Some(f))
        }
        Ok(other) => Err(ApiError::field(
            prim,
            key,
            format!("expected function, got {}", lua_type(&other)),
        )),
    }
}

/// A resource argument: an id string, or a table a primitive returned
/// (`{kind = "vpc", id = "vpc-…", region = …, account = …, …}`).
#[derive(Debug, Clone, Default)]
pub struct RefArg {
    pub id: String,
    pub kind: Option<String>,
    pub region: Option<String>,
    pub account: Option<String>,
}

impl<'de> Deserialize<'de> for RefArg {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RefArg;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a resource id or table")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RefArg, E> {
                Ok(RefArg {
                    id: s.to_string(),
                    ..Default::default()
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<RefArg, A::Error> {
                let mut r = RefArg::default();
                let mut has_id = false;
                while let Some(k) = m.next_key::<String>()? {
                    match k.as_str() {
                        "id" => {
                            r.id = m.next_value()?;
                            has_id = true;
                        }
                        "kind" => r.kind = m.next_value()?,
                        "region" => r.region = m.next_value()?,
                        "account" => r.account = m.next_value()?,
                        _ => {
                            m.next_value::<de::IgnoredAny>()?;
                        }
                    }
                }
                if !has_id {
                    return Err(de::Error::custom("this table has no `id`; pass a table returned by a skiff primitive or an id string"));
                }
                Ok(r)
            }
        }
        d.deserialize_any(V)
    }
}

fn article(kind: &str) -> String {
    let readable = match kind {
        "vpc" => "VPC".to_string(),
        other => other.replace('_', " "),
    };
    if readable.starts_with(['a', 'e', 'i', 'o', 'u']) {
        format!("an {readable}")
    } else {
        format!("a {readable}")
    }
}

impl RefArg {
    /// Resolves the reference to an id in a scope: the table's own account and
    /// region first, then the primitive's `account`/`region` options, then defaults.
    pub fn resolve(
        &self,
        ctx: &Context,
        prim: &str,
        field: &str,
        kind: &str,
        account: Option<&str>,
        region: Option<&str>,
    ) -> Result<ResourceRef, ApiError> {
        if let Some(k) = &self.kind {
            if k != kind {
                return Err(ApiError::field(
                    prim,
                    field,
                    format!(
                        "expected {}, got {} ({})",
                        article(kind),
                        article(k),
                        self.id
                    ),
                ));
            }
        }
        let scope = self.scope(ctx, prim, field, account, region)?;
        Ok(ResourceRef {
            id: self.id.clone(),
            scope,
        })
    }

    fn scope(
        &self,
        ctx: &Context,
        prim: &str,
        field: &str,
        account: Option<&str>,
        region: Option<&str>,
    ) -> Result<Scope, ApiError> {
        let (acc, reg) = (
            self.account.as_deref().or(account),
            self.region.as_deref().or(region),
        );
        ctx.cloud.scope(acc, reg).map_err(|e| {
            let sub = if self.account.is_some() || self.region.is_some() {
                field.to_string()
            } else {
                String::new()
            };
            let which = match e {
                crate::cloud::ScopeError::UnknownAccount { .. } => "account",
                _ => "region",
            };
            let f = if sub.is_empty() {
                which.to_string()
            } else {
                format!("{sub}.{which}")
            };
            ApiError::field(prim, &f, e)
        })
    }
}

/// The scope of a primitive's own `account`/`region` options.
pub fn scope(
    ctx: &Context,
    prim: &str,
    account: Option<&str>,
    region: Option<&str>,
) -> Result<Scope, ApiError> {
    ctx.cloud.scope(account, region).map_err(|e| {
        let which = match e {
            crate::cloud::ScopeError::UnknownAccount { .. } => "account",
            _ => "region",
        };
        ApiError::field(prim, which, e)
    })
}

/// A list option (`subnets = { a, b }`). Unlike a plain `Vec`, a table with
/// named keys is refused instead of being read as an empty list.
#[derive(Debug, Clone)]
pub struct List<T>(pub Vec<T>);

impl<T> Default for List<T> {
    fn default() -> Self {
        List(Vec::new())
    }
}

impl<T> std::ops::Deref for List<T> {
    type Target = Vec<T>;
    fn deref(&self) -> &Vec<T> {
        &self.0
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = List<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<List<T>, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element()? {
                    out.push(v);
                }
                Ok(List(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<List<T>, A::Error> {
                let mut keys = Vec::new();
                while let Some(k) = m.next_key::<de::IgnoredAny>()? {
                    let _ = k;
                    m.next_value::<de::IgnoredAny>()?;
                    keys.push(());
                }
                if keys.is_empty() {
                    return Ok(List(Vec::new()));
                }
                Err(de::Error::custom(
                    "expected a list { … }, got a table with named keys (wrap a single item in braces)",
                ))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// A table of string tags as a map (for `tags = {…}` options).
pub type Tags = std::collections::BTreeMap<String, String>;

/// A script may not write tags in skiff's own namespace.
pub fn refuse_own_tags(prim: &str, tags: &Tags) -> Result<(), ApiError> {
    match crate::cloud::tags::own(tags.keys()) {
        Some(k) => Err(ApiError::field(
            prim,
            &format!("tags.{k}"),
            crate::cloud::tags::OWN_TAG,
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rewording() {
        use crate::ops::parse::reword;
        assert_eq!(
            reword("cidr", "invalid type: integer `5`, expected a string"),
            ("cidr".into(), "expected string, got number".into())
        );
        assert_eq!(
            reword("", "unknown field `cidrr`, expected one of `name`, `cidr`"),
            (
                "cidrr".into(),
                "unknown option; expected one of name, cidr".into()
            )
        );
        assert_eq!(
            reword("", "missing field `cidr`"),
            ("cidr".into(), "required".into())
        );
        assert_eq!(
            reword("ingress[1]", "missing field `cidr`"),
            ("ingress[1].cidr".into(), "required".into())
        );
    }
}
