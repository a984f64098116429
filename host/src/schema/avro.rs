//! Avro bodies read and written against their writer's schema, without
//! an intermediate value tree: a record is checked by walking it, one
//! field is read by skipping the fields before it, a whole record is
//! rendered straight into JSON.
//!
//! The JSON a record becomes is the natural one, what a consumer of JSON
//! expects: a union is its value (not wrapped in its branch's name),
//! `bytes` and `fixed` are strings of code points U+0000 to U+00FF (as in
//! Avro's own JSON encoding), an enum is its symbol, a `decimal` is a
//! string of its digits (`"12.30"`), a `uuid` is its text, and the other
//! logical types are their underlying numbers. Writing takes the same
//! JSON back, and also accepts a union's value wrapped in an object whose
//! one key names the branch (`{"long": 7}`), Avro's own JSON encoding.
//!
//! Schemas are parsed by `apache-avro`, named types of referenced schemas
//! included.

use std::collections::HashMap;
use std::fmt::Write as _;

use apache_avro::Schema;
use apache_avro::schema::{
    DecimalSchema, InnerDecimalSchema, RecordSchema, UnionSchema, UuidSchema,
};
use serde_json::{Map, Number, Value};

use super::wire::{read_zigzag, write_zigzag};

/// Nesting beyond this is refused: a recursive schema (a linked list) and
/// bytes that nest deeply would otherwise overflow the stack.
const MAX_DEPTH: usize = 128;
/// Items of one array or map block beyond the bytes left (plus this) are
/// refused: a zero-size item (`null`) lets a few bytes claim billions.
const SLACK_ITEMS: u64 = 4096;

/// A parsed Avro schema and the named types it may refer to.
#[derive(Debug)]
pub struct AvroSchema {
    root: Schema,
    named: HashMap<String, Schema>,
}

/// Where reading or writing went wrong, and at which field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvroError {
    /// The field, item or key where it went wrong (dotted; empty: the top).
    pub path: String,
    /// What went wrong.
    pub reason: String,
}

impl std::fmt::Display for AvroError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "at '{}': {}", self.path, self.reason)
        }
    }
}

type Result<T> = std::result::Result<T, AvroError>;

fn fail<T>(reason: impl Into<String>) -> Result<T> {
    Err(AvroError {
        path: String::new(),
        reason: reason.into(),
    })
}

/// Prefixes the path of an error from inside `segment`.
fn within<T>(segment: &str, result: Result<T>) -> Result<T> {
    result.map_err(|mut e| {
        e.path = if e.path.is_empty() {
            segment.to_owned()
        } else {
            format!("{segment}.{}", e.path)
        };
        e
    })
}

impl AvroSchema {
    /// Parses `schema`, whose named types may come from `references`
    /// (the texts of the schemas it references, in any order).
    ///
    /// # Errors
    /// The parser's reason when a text is not a valid schema or a name is
    /// undefined.
    pub fn parse(schema: &str, references: &[&str]) -> std::result::Result<Self, String> {
        let (root, referenced) = if references.is_empty() {
            (
                Schema::parse_str(schema).map_err(|e| e.to_string())?,
                Vec::new(),
            )
        } else {
            Schema::parse_str_with_list(schema, references).map_err(|e| e.to_string())?
        };
        let mut named = HashMap::new();
        for schema in referenced.iter().chain(std::iter::once(&root)) {
            collect_named(schema, &mut named);
        }
        let parsed = Self { root, named };
        parsed.check_refs(&parsed.root, 0)?;
        Ok(parsed)
    }

    /// Fails on a reference to a name nothing defines.
    fn check_refs(&self, schema: &Schema, depth: usize) -> std::result::Result<(), String> {
        if depth > MAX_DEPTH {
            return Err("the schema nests too deeply".to_owned());
        }
        match schema {
            Schema::Ref { name } => {
                let full = name.fullname(None);
                if self.named.contains_key(&full) {
                    Ok(())
                } else {
                    Err(format!(
                        "the schema refers to '{full}', which it does not define"
                    ))
                }
            }
            Schema::Array(a) => self.check_refs(&a.items, depth + 1),
            Schema::Map(m) => self.check_refs(&m.types, depth + 1),
            Schema::Union(u) => u
                .variants()
                .iter()
                .try_for_each(|v| self.check_refs(v, depth + 1)),
            Schema::Record(r) => r
                .fields
                .iter()
                .try_for_each(|f| self.check_refs(&f.schema, depth + 1)),
            _ => Ok(()),
        }
    }

    fn resolve<'a>(&'a self, schema: &'a Schema) -> Result<&'a Schema> {
        match schema {
            Schema::Ref { name } => match self.named.get(&name.fullname(None)) {
                Some(schema) => Ok(schema),
                None => fail(format!("undefined type '{}'", name.fullname(None))),
            },
            other => Ok(other),
        }
    }

    /// Checks that `body` is exactly one value of the schema.
    ///
    /// # Errors
    /// Where the bytes stop matching the schema.
    pub fn validate(&self, body: &[u8]) -> Result<()> {
        let mut reader = Reader { bytes: body };
        self.skip(&self.root, &mut reader, 0)?;
        reader.finish()
    }

    /// `body` (one value of the schema) as JSON.
    ///
    /// # Errors
    /// Where the bytes stop matching the schema.
    pub fn decode(&self, body: &[u8]) -> Result<Value> {
        let mut reader = Reader { bytes: body };
        let value = self.read(&self.root, &mut reader, 0)?;
        reader.finish()?;
        Ok(value)
    }

    /// The value at `path` in `body` as JSON, reading only as far as it:
    /// record fields by name, array items by number, map values by key,
    /// unions passed through. `None` when the path leads nowhere (no such
    /// field, an index past the end, a union holding `null` on the way).
    ///
    /// # Errors
    /// Where the bytes read stop matching the schema.
    pub fn field(&self, body: &[u8], path: &[&str]) -> Result<Option<Value>> {
        let mut reader = Reader { bytes: body };
        self.find(&self.root, &mut reader, path, 0)
    }

    /// Appends `value` written with the schema to `out`.
    ///
    /// # Errors
    /// Where `value` does not fit the schema.
    pub fn encode(&self, value: &Value, out: &mut Vec<u8>) -> Result<()> {
        self.write(&self.root, value, out, 0)
    }

    fn skip(&self, schema: &Schema, r: &mut Reader<'_>, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return fail("the value nests too deeply");
        }
        match self.resolve(schema)? {
            Schema::Null => Ok(()),
            Schema::Boolean => r.boolean().map(drop),
            Schema::Int | Schema::Date | Schema::TimeMillis => r.int().map(drop),
            s if is_long(s) => r.long().map(drop),
            Schema::Float => r.take(4).map(drop),
            Schema::Double => r.take(8).map(drop),
            Schema::Bytes | Schema::BigDecimal => r.bytes().map(drop),
            Schema::String => r.string().map(drop),
            Schema::Uuid(UuidSchema::String) => r.string().map(drop),
            Schema::Uuid(UuidSchema::Bytes) => r.bytes().map(drop),
            Schema::Uuid(UuidSchema::Fixed(f)) | Schema::Fixed(f) | Schema::Duration(f) => {
                r.take(f.size).map(drop)
            }
            Schema::Decimal(d) => match &d.inner {
                InnerDecimalSchema::Bytes => r.bytes().map(drop),
                InnerDecimalSchema::Fixed(f) => r.take(f.size).map(drop),
            },
            Schema::Enum(e) => {
                let index = r.long()?;
                if usize::try_from(index).is_ok_and(|i| i < e.symbols.len()) {
                    Ok(())
                } else {
                    fail(format!(
                        "enum index {index} is not one of {} symbols",
                        e.symbols.len()
                    ))
                }
            }
            Schema::Array(a) => {
                r.blocks(|r, i| within(&i.to_string(), self.skip(&a.items, r, depth + 1)))
            }
            Schema::Map(m) => r.blocks(|r, _| {
                let key = r.string()?;
                within(key, self.skip(&m.types, r, depth + 1))
            }),
            Schema::Union(u) => {
                let branch = branch(u, r)?;
                self.skip(branch, r, depth + 1)
            }
            Schema::Record(rec) => rec
                .fields
                .iter()
                .try_for_each(|f| within(&f.name, self.skip(&f.schema, r, depth + 1))),
            // A reference to a reference (longs matched above).
            _ => fail("a reference to a reference"),
        }
    }

    fn read(&self, schema: &Schema, r: &mut Reader<'_>, depth: usize) -> Result<Value> {
        if depth > MAX_DEPTH {
            return fail("the value nests too deeply");
        }
        Ok(match self.resolve(schema)? {
            Schema::Null => Value::Null,
            Schema::Boolean => Value::Bool(r.boolean()?),
            Schema::Int | Schema::Date | Schema::TimeMillis => Value::from(r.int()?),
            s if is_long(s) => Value::from(r.long()?),
            Schema::Float => {
                let raw = r.take(4)?;
                float(f64::from(f32::from_le_bytes([
                    raw[0], raw[1], raw[2], raw[3],
                ])))
            }
            Schema::Double => {
                let raw = r.take(8)?;
                let mut le = [0; 8];
                le.copy_from_slice(raw);
                float(f64::from_le_bytes(le))
            }
            Schema::Bytes | Schema::BigDecimal | Schema::Uuid(UuidSchema::Bytes) => {
                Value::String(latin1(r.bytes()?))
            }
            Schema::Fixed(f) | Schema::Duration(f) => Value::String(latin1(r.take(f.size)?)),
            Schema::String | Schema::Uuid(UuidSchema::String) => {
                Value::String(r.string()?.to_owned())
            }
            Schema::Uuid(UuidSchema::Fixed(f)) => {
                let raw = r.take(f.size)?;
                if raw.len() == 16 {
                    Value::String(uuid_text(raw))
                } else {
                    Value::String(latin1(raw))
                }
            }
            Schema::Decimal(d) => {
                let raw = match &d.inner {
                    InnerDecimalSchema::Bytes => r.bytes()?,
                    InnerDecimalSchema::Fixed(f) => r.take(f.size)?,
                };
                decimal_text(raw, d.scale).map_or_else(|| Value::String(latin1(raw)), Value::String)
            }
            Schema::Enum(e) => {
                let index = r.long()?;
                match usize::try_from(index).ok().and_then(|i| e.symbols.get(i)) {
                    Some(symbol) => Value::String(symbol.clone()),
                    None => {
                        return fail(format!(
                            "enum index {index} is not one of {} symbols",
                            e.symbols.len()
                        ));
                    }
                }
            }
            Schema::Array(a) => {
                let mut items = Vec::new();
                r.blocks(|r, i| {
                    items.push(within(&i.to_string(), self.read(&a.items, r, depth + 1))?);
                    Ok(())
                })?;
                Value::Array(items)
            }
            Schema::Map(m) => {
                let mut entries = Map::new();
                r.blocks(|r, _| {
                    let key = r.string()?;
                    let value = within(key, self.read(&m.types, r, depth + 1))?;
                    entries.insert(key.to_owned(), value);
                    Ok(())
                })?;
                Value::Object(entries)
            }
            Schema::Union(u) => {
                let branch = branch(u, r)?;
                self.read(branch, r, depth + 1)?
            }
            Schema::Record(rec) => {
                let mut fields = Map::with_capacity(rec.fields.len());
                for f in &rec.fields {
                    let value = within(&f.name, self.read(&f.schema, r, depth + 1))?;
                    fields.insert(f.name.clone(), value);
                }
                Value::Object(fields)
            }
            // A reference to a reference (longs matched above).
            _ => return fail("a reference to a reference"),
        })
    }

    fn find(
        &self,
        schema: &Schema,
        r: &mut Reader<'_>,
        path: &[&str],
        depth: usize,
    ) -> Result<Option<Value>> {
        let Some((&segment, rest)) = path.split_first() else {
            return self.read(schema, r, depth).map(Some);
        };
        if depth > MAX_DEPTH {
            return fail("the value nests too deeply");
        }
        match self.resolve(schema)? {
            Schema::Record(rec) => {
                let Some(&index) = rec.lookup.get(segment) else {
                    return Ok(None);
                };
                for f in &rec.fields[..index] {
                    within(&f.name, self.skip(&f.schema, r, depth + 1))?;
                }
                let f = &rec.fields[index];
                within(&f.name, self.find(&f.schema, r, rest, depth + 1))
            }
            Schema::Union(u) => {
                let branch = branch(u, r)?;
                self.find(branch, r, path, depth + 1)
            }
            Schema::Array(a) => {
                let Ok(wanted) = segment.parse::<u64>() else {
                    return Ok(None);
                };
                let mut found = None;
                r.blocks_until(|r, i| {
                    if i == wanted {
                        found = within(segment, self.find(&a.items, r, rest, depth + 1))?;
                        Ok(true)
                    } else {
                        within(&i.to_string(), self.skip(&a.items, r, depth + 1)).map(|()| false)
                    }
                })?;
                Ok(found)
            }
            Schema::Map(m) => {
                let mut found = None;
                r.blocks_until(|r, _| {
                    let key = r.string()?;
                    if key == segment {
                        found = within(segment, self.find(&m.types, r, rest, depth + 1))?;
                        Ok(true)
                    } else {
                        within(key, self.skip(&m.types, r, depth + 1)).map(|()| false)
                    }
                })?;
                Ok(found)
            }
            _ => Ok(None),
        }
    }

    fn write(&self, schema: &Schema, value: &Value, out: &mut Vec<u8>, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return fail("the value nests too deeply");
        }
        let schema = self.resolve(schema)?;
        let mismatch = || fail(format!("{} is not {}", describe(value), expected(schema)));
        match schema {
            Schema::Null => {
                if !value.is_null() {
                    return mismatch();
                }
            }
            Schema::Boolean => match value {
                Value::Bool(b) => out.push(u8::from(*b)),
                _ => return mismatch(),
            },
            Schema::Int | Schema::Date | Schema::TimeMillis => {
                match value.as_i64().and_then(|i| i32::try_from(i).ok()) {
                    Some(i) => write_zigzag(out, i64::from(i)),
                    None => return mismatch(),
                }
            }
            s if is_long(s) => match value.as_i64() {
                Some(i) => write_zigzag(out, i),
                None => return mismatch(),
            },
            Schema::Float => match number(value) {
                #[allow(
                    clippy::cast_possible_truncation,
                    reason = "a float field holds an f32"
                )]
                Some(f) => out.extend_from_slice(&(f as f32).to_le_bytes()),
                None => return mismatch(),
            },
            Schema::Double => match number(value) {
                Some(f) => out.extend_from_slice(&f.to_le_bytes()),
                None => return mismatch(),
            },
            Schema::Bytes | Schema::BigDecimal | Schema::Uuid(UuidSchema::Bytes) => {
                match value.as_str().and_then(from_latin1) {
                    Some(bytes) => write_bytes(out, &bytes),
                    None => {
                        return fail(format!(
                            "{} is not bytes (a string of code points up to U+00FF)",
                            describe(value)
                        ));
                    }
                }
            }
            Schema::Fixed(f) | Schema::Duration(f) => match value.as_str().and_then(from_latin1) {
                Some(bytes) if bytes.len() == f.size => out.extend_from_slice(&bytes),
                _ => {
                    return fail(format!(
                        "{} is not {} bytes (a string of code points up to U+00FF)",
                        describe(value),
                        f.size
                    ));
                }
            },
            Schema::String | Schema::Uuid(UuidSchema::String) => match value {
                Value::String(s) => write_bytes(out, s.as_bytes()),
                _ => return mismatch(),
            },
            Schema::Uuid(UuidSchema::Fixed(f)) => {
                let bytes = value
                    .as_str()
                    .and_then(|s| uuid_bytes(s).map(Vec::from).or_else(|| from_latin1(s)));
                match bytes {
                    Some(bytes) if bytes.len() == f.size => out.extend_from_slice(&bytes),
                    _ => return mismatch(),
                }
            }
            Schema::Decimal(d) => write_decimal(d, value, out)?,
            Schema::Enum(e) => match value
                .as_str()
                .and_then(|s| e.symbols.iter().position(|x| x == s))
            {
                Some(index) => write_zigzag(out, i64::try_from(index).unwrap_or(i64::MAX)),
                None => {
                    return fail(format!(
                        "{} is not one of the symbols {:?}",
                        describe(value),
                        e.symbols
                    ));
                }
            },
            Schema::Array(a) => match value {
                Value::Array(items) => {
                    if !items.is_empty() {
                        write_zigzag(out, i64::try_from(items.len()).unwrap_or(i64::MAX));
                        for (i, item) in items.iter().enumerate() {
                            within(&i.to_string(), self.write(&a.items, item, out, depth + 1))?;
                        }
                    }
                    out.push(0);
                }
                _ => return mismatch(),
            },
            Schema::Map(m) => match value {
                Value::Object(entries) => {
                    if !entries.is_empty() {
                        write_zigzag(out, i64::try_from(entries.len()).unwrap_or(i64::MAX));
                        for (key, item) in entries {
                            write_bytes(out, key.as_bytes());
                            within(key, self.write(&m.types, item, out, depth + 1))?;
                        }
                    }
                    out.push(0);
                }
                _ => return mismatch(),
            },
            Schema::Union(u) => self.write_union(u, value, out, depth)?,
            Schema::Record(rec) => self.write_record(rec, value, out, depth)?,
            // A reference to a reference (longs matched above).
            _ => return fail("a reference to a reference"),
        }
        Ok(())
    }

    fn write_record(
        &self,
        rec: &RecordSchema,
        value: &Value,
        out: &mut Vec<u8>,
        depth: usize,
    ) -> Result<()> {
        let Value::Object(fields) = value else {
            return fail(format!(
                "{} is not a record {}",
                describe(value),
                rec.name.fullname(None)
            ));
        };
        if let Some(unknown) = fields.keys().find(|k| !rec.lookup.contains_key(k.as_str())) {
            return fail(format!(
                "record {} has no field '{unknown}'",
                rec.name.fullname(None)
            ));
        }
        for f in &rec.fields {
            match fields.get(&f.name).or(f.default.as_ref()) {
                Some(v) => within(&f.name, self.write(&f.schema, v, out, depth + 1))?,
                None => {
                    return fail(format!(
                        "record {} needs field '{}' (it has no default)",
                        rec.name.fullname(None),
                        f.name
                    ));
                }
            }
        }
        Ok(())
    }

    fn write_union(
        &self,
        u: &UnionSchema,
        value: &Value,
        out: &mut Vec<u8>,
        depth: usize,
    ) -> Result<()> {
        let variants = u.variants();
        // Avro's JSON encoding: {"branch name": value}.
        if let Value::Object(wrapped) = value
            && wrapped.len() == 1
            && let Some((name, inner)) = wrapped.iter().next()
            && let Some(index) = variants.iter().position(|v| self.branch_name(v) == *name)
        {
            write_zigzag(out, i64::try_from(index).unwrap_or(i64::MAX));
            return within(name, self.write(&variants[index], inner, out, depth + 1));
        }
        let mut scratch = Vec::new();
        for (index, variant) in variants.iter().enumerate() {
            scratch.clear();
            if self.write(variant, value, &mut scratch, depth + 1).is_ok() {
                write_zigzag(out, i64::try_from(index).unwrap_or(i64::MAX));
                out.extend_from_slice(&scratch);
                return Ok(());
            }
        }
        let names: Vec<String> = variants.iter().map(|v| self.branch_name(v)).collect();
        fail(format!(
            "{} fits none of the union's branches {names:?}",
            describe(value)
        ))
    }

    /// A union branch's name in Avro's JSON encoding.
    fn branch_name(&self, schema: &Schema) -> String {
        let schema = self.resolve(schema).unwrap_or(schema);
        match schema {
            Schema::Record(r) => r.name.fullname(None),
            Schema::Enum(e) => e.name.fullname(None),
            Schema::Fixed(f) => f.name.fullname(None),
            Schema::Decimal(DecimalSchema {
                inner: InnerDecimalSchema::Fixed(f),
                ..
            })
            | Schema::Duration(f)
            | Schema::Uuid(UuidSchema::Fixed(f)) => f.name.fullname(None),
            other => expected(other).to_owned(),
        }
    }
}

/// Collects the named types `schema` defines, by full name.
fn collect_named(schema: &Schema, named: &mut HashMap<String, Schema>) {
    match schema {
        Schema::Record(r) => {
            named.insert(r.name.fullname(None), schema.clone());
            for f in &r.fields {
                collect_named(&f.schema, named);
            }
        }
        Schema::Enum(e) => {
            named.insert(e.name.fullname(None), schema.clone());
        }
        Schema::Fixed(f) | Schema::Duration(f) | Schema::Uuid(UuidSchema::Fixed(f)) => {
            named.insert(f.name.fullname(None), schema.clone());
        }
        Schema::Decimal(DecimalSchema {
            inner: InnerDecimalSchema::Fixed(f),
            ..
        }) => {
            named.insert(f.name.fullname(None), schema.clone());
        }
        Schema::Array(a) => collect_named(&a.items, named),
        Schema::Map(m) => collect_named(&m.types, named),
        Schema::Union(u) => {
            for v in u.variants() {
                collect_named(v, named);
            }
        }
        _ => {}
    }
}

/// The branch a union value's index selects.
fn branch<'s>(u: &'s UnionSchema, r: &mut Reader<'_>) -> Result<&'s Schema> {
    let index = r.long()?;
    match usize::try_from(index)
        .ok()
        .and_then(|i| u.variants().get(i))
    {
        Some(schema) => Ok(schema),
        None => fail(format!(
            "union branch {index} is not one of {}",
            u.variants().len()
        )),
    }
}

/// Bytes being read, from the front.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn finish(&self) -> Result<()> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            fail(format!(
                "{} byte(s) left over after the value",
                self.bytes.len()
            ))
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.bytes.len() {
            return fail(format!(
                "the body ends early: {n} byte(s) needed, {} left",
                self.bytes.len()
            ));
        }
        let (taken, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(taken)
    }

    fn long(&mut self) -> Result<i64> {
        match read_zigzag(self.bytes) {
            Some((value, rest)) => {
                self.bytes = rest;
                Ok(value)
            }
            None => fail("the body ends early or holds a malformed number"),
        }
    }

    fn int(&mut self) -> Result<i32> {
        let value = self.long()?;
        i32::try_from(value).or_else(|_| fail(format!("{value} is out of range for an int")))
    }

    fn boolean(&mut self) -> Result<bool> {
        match self.take(1)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            other => fail(format!("byte {other} is not a boolean")),
        }
    }

    fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = self.long()?;
        match usize::try_from(len) {
            Ok(len) => self.take(len),
            Err(_) => fail(format!("negative length {len}")),
        }
    }

    fn string(&mut self) -> Result<&'a str> {
        let bytes = self.bytes()?;
        std::str::from_utf8(bytes).or_else(|_| fail("a string that is not UTF-8"))
    }

    /// Reads array or map blocks, calling `item` with each item's index.
    fn blocks(&mut self, mut item: impl FnMut(&mut Self, u64) -> Result<()>) -> Result<()> {
        self.blocks_until(|r, i| item(r, i).map(|()| false))
    }

    /// Reads array or map blocks until `item` says it is done (returns
    /// `true`), or to their end.
    fn blocks_until(&mut self, mut item: impl FnMut(&mut Self, u64) -> Result<bool>) -> Result<()> {
        let mut index = 0_u64;
        loop {
            let count = self.long()?;
            if count == 0 {
                return Ok(());
            }
            if count < 0 {
                // A negative count is followed by the block's size in bytes.
                self.long()?;
            }
            let count = count.unsigned_abs();
            if count > self.bytes.len() as u64 + SLACK_ITEMS {
                return fail(format!(
                    "a block claims {count} items with {} byte(s) left",
                    self.bytes.len()
                ));
            }
            for _ in 0..count {
                if item(self, index)? {
                    return Ok(());
                }
                index += 1;
            }
        }
    }
}

fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_zigzag(out, i64::try_from(bytes.len()).unwrap_or(i64::MAX));
    out.extend_from_slice(bytes);
}

/// A float as JSON: a number, or a string for what JSON has no number for.
fn float(f: f64) -> Value {
    match Number::from_f64(f) {
        Some(n) => Value::Number(n),
        None if f.is_nan() => Value::from("NaN"),
        None if f > 0.0 => Value::from("Infinity"),
        None => Value::from("-Infinity"),
    }
}

/// A JSON number, or one of the strings [`float`] writes.
fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

fn from_latin1(s: &str) -> Option<Vec<u8>> {
    s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect()
}

fn uuid_text(raw: &[u8]) -> String {
    let mut text = String::with_capacity(36);
    for (i, b) in raw.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            text.push('-');
        }
        let _ = write!(text, "{b:02x}");
    }
    text
}

fn uuid_bytes(text: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = text.bytes().filter(|&b| b != b'-').collect();
    if hex.len() != 32 || text.len() != 36 {
        return None;
    }
    let mut out = [0; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

/// A decimal's two's-complement big-endian unscaled value as its digits
/// with `scale` of them after the point; `None` past 128 bits.
fn decimal_text(raw: &[u8], scale: usize) -> Option<String> {
    if raw.is_empty() || raw.len() > 16 {
        return None;
    }
    let negative = raw[0] & 0x80 != 0;
    let mut buf = [if negative { 0xff } else { 0 }; 16];
    buf[16 - raw.len()..].copy_from_slice(raw);
    let unscaled = i128::from_be_bytes(buf);
    let digits = unscaled.unsigned_abs().to_string();
    let mut text = String::new();
    if negative {
        text.push('-');
    }
    if scale == 0 {
        text.push_str(&digits);
    } else if digits.len() > scale {
        let (int, frac) = digits.split_at(digits.len() - scale);
        let _ = write!(text, "{int}.{frac}");
    } else {
        let _ = write!(text, "0.{}{digits}", "0".repeat(scale - digits.len()));
    }
    Some(text)
}

/// A decimal from its digits (a string or a number) with at most the
/// schema's scale of them after the point.
fn write_decimal(d: &DecimalSchema, value: &Value, out: &mut Vec<u8>) -> Result<()> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return fail(format!("{} is not a decimal", describe(value))),
    };
    let bad = || fail(format!("'{text}' is not a decimal of scale {}", d.scale));
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.as_str()),
    };
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    if int.is_empty()
        || frac.len() > d.scale
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return bad();
    }
    let digits = format!("{int}{frac}{}", "0".repeat(d.scale - frac.len()));
    let Ok(magnitude) = digits.parse::<i128>() else {
        return bad();
    };
    let unscaled = if negative { -magnitude } else { magnitude };
    let full = unscaled.to_be_bytes();
    // The shortest two's-complement form.
    let mut start = 0;
    while start < 15
        && ((full[start] == 0 && full[start + 1] & 0x80 == 0)
            || (full[start] == 0xff && full[start + 1] & 0x80 != 0))
    {
        start += 1;
    }
    match &d.inner {
        InnerDecimalSchema::Bytes => write_bytes(out, &full[start..]),
        InnerDecimalSchema::Fixed(f) => {
            if 16 - start > f.size {
                return bad();
            }
            let fill = if negative { 0xff } else { 0 };
            out.extend(std::iter::repeat_n(fill, f.size.saturating_sub(16)));
            out.extend_from_slice(&full[16 - f.size.min(16)..]);
        }
    }
    Ok(())
}

fn describe(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 40 {
        let cut: String = text.chars().take(40).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// Whether `schema` is written as a long: `long` and the logical types
/// over it.
fn is_long(schema: &Schema) -> bool {
    matches!(
        schema,
        Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos
    )
}

/// What a schema takes, in words.
fn expected(schema: &Schema) -> &'static str {
    match schema {
        Schema::Null => "null",
        Schema::Boolean => "boolean",
        Schema::Int | Schema::Date | Schema::TimeMillis => "int",
        s if is_long(s) => "long",
        Schema::Float => "float",
        Schema::Double => "double",
        Schema::Bytes | Schema::BigDecimal | Schema::Uuid(UuidSchema::Bytes) => "bytes",
        Schema::String | Schema::Uuid(UuidSchema::String) => "string",
        Schema::Array(_) => "array",
        Schema::Map(_) => "map",
        Schema::Union(_) => "union",
        Schema::Record(_) => "record",
        Schema::Enum(_) => "enum",
        Schema::Fixed(_) | Schema::Duration(_) | Schema::Uuid(UuidSchema::Fixed(_)) => "fixed",
        Schema::Decimal(_) => "decimal",
        // A reference (longs matched above).
        _ => "a named type",
    }
}
