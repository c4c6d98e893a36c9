//! Environment overrides, applied to the parsed TOML tree before it is read
//! into the typed shape.
//!
//! The one rule: `REGFEED_<SECTION>__<KEY>` sets `<section>.<key>`, and each
//! further `__<KEY>` goes one table deeper (`REGFEED_FEEDS__THL_DIABETES__SINK__RETRY__CAP`).
//! Names are matched in lower case. In an array of tables (`[[feeds]]`,
//! `[[sources]]`, `[[recipients]]`, `[[controllers]]`) the segment after the
//! array names one entry by its `name` (its `id` for controllers), in upper
//! case with `-` written `_`, or by its position from 0; an override never
//! adds an entry. The value is read as a TOML value when it is one (a number,
//! `true`, an array, a quoted string) unless the key is a string in the file;
//! otherwise it is the string as given.
//!
//! Each override's value is parsed at an offset past the end of the file's
//! text, so that the spans of what it set (and of problems found in it) are
//! told apart from the file's and reported under the variable's name.

use std::ops::Range;

use toml_edit::{ImDocument, InlineTable, Item, Key, Table, Value};

/// The span an override's text was given: problems located in it are the
/// variable's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Placed {
    pub(crate) span: Range<usize>,
    pub(crate) var: String,
}

/// An override that could not be applied: the variable and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) var: String,
    pub(crate) message: String,
}

/// Applies `vars` (only those [`super::is_env_override`] accepts) to `root`,
/// the tree of a file of `text_len` bytes.
pub(crate) fn apply(
    root: &mut Table,
    text_len: usize,
    vars: &[(String, String)],
) -> (Vec<Placed>, Vec<Refused>) {
    let mut placed = Vec::new();
    let mut refused = Vec::new();
    let mut cursor = text_len + 1;
    let mut vars: Vec<&(String, String)> = vars
        .iter()
        .filter(|(k, _)| super::is_env_override(k))
        .collect();
    vars.sort();
    for (var, value) in vars {
        let path = &var[super::ENV_PREFIX.len()..];
        let segs: Vec<&str> = path.split("__").collect();
        if let Some(bad) = segs.iter().find(|s| !segment_ok(s)) {
            refused.push(Refused {
                var: var.clone(),
                message: format!(
                    "{bad:?} is not a key: write REGFEED_<SECTION>__<KEY> with letters, digits and single `_` in each part"
                ),
            });
            continue;
        }
        let mut at = Snippet {
            start: cursor,
            len: 0,
        };
        match set(Node::Table(root), &segs, value, &mut at) {
            Ok(()) => {
                placed.push(Placed {
                    span: at.start..at.start + at.len,
                    var: var.clone(),
                });
                cursor = at.start + at.len + 1;
            }
            Err(message) => refused.push(Refused {
                var: var.clone(),
                message,
            }),
        }
    }
    (placed, refused)
}

fn segment_ok(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Where the next snippet goes, and how long the one placed was.
struct Snippet {
    start: usize,
    len: usize,
}

enum Node<'a> {
    Table(&'a mut Table),
    Inline(&'a mut InlineTable),
}

impl Node<'_> {
    fn is_string(&self, key: &str) -> bool {
        match self {
            Node::Table(t) => t.get(key).and_then(Item::as_str).is_some(),
            Node::Inline(t) => t.get(key).and_then(Value::as_str).is_some(),
        }
    }

    fn insert(self, key: &Key, item: Item) -> Result<(), String> {
        match self {
            Node::Table(t) => {
                t.insert_formatted(key, item);
            }
            Node::Inline(t) => {
                let v = item
                    .into_value()
                    .map_err(|_| "cannot set a table inside an inline table".to_owned())?;
                t.insert_formatted(key, v);
            }
        }
        Ok(())
    }
}

fn set(node: Node<'_>, segs: &[&str], raw: &str, at: &mut Snippet) -> Result<(), String> {
    let key = segs[0].to_ascii_lowercase();
    if segs.len() == 1 {
        let keep_string = node.is_string(&key);
        let (k, item) = snippet(&[key.as_str()], raw, keep_string, at)?;
        return node.insert(&k, item);
    }
    let exists = match &node {
        Node::Table(t) => t.contains_key(&key),
        Node::Inline(t) => t.contains_key(&key),
    };
    if !exists {
        // The table is not in the file: add it, holding only this key.
        let path: Vec<String> = segs.iter().map(|s| s.to_ascii_lowercase()).collect();
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        let (k, item) = snippet(&path, raw, false, at)?;
        return node.insert(&k, item);
    }
    let child = match node {
        Node::Table(t) => match t.get_mut(&key) {
            Some(Item::Table(t)) => Child::Node(Node::Table(t)),
            Some(Item::Value(Value::InlineTable(t))) => Child::Node(Node::Inline(t)),
            Some(Item::ArrayOfTables(a)) => Child::Tables(a.iter_mut().collect()),
            Some(Item::Value(Value::Array(a))) => Child::Inlines(
                a.iter_mut()
                    .filter_map(Value::as_inline_table_mut)
                    .collect(),
            ),
            _ => return Err(format!("{key} is a value, not a table")),
        },
        Node::Inline(t) => match t.get_mut(&key) {
            Some(Value::InlineTable(t)) => Child::Node(Node::Inline(t)),
            Some(Value::Array(a)) => Child::Inlines(
                a.iter_mut()
                    .filter_map(Value::as_inline_table_mut)
                    .collect(),
            ),
            _ => return Err(format!("{key} is a value, not a table")),
        },
    };
    match child {
        Child::Node(n) => set(n, &segs[1..], raw, at),
        Child::Tables(entries) => {
            let (i, rest) = pick(&key, entries.iter().map(|t| name_of_table(t)), segs)?;
            let t = entries.into_iter().nth(i).expect("picked");
            set(Node::Table(t), rest, raw, at)
        }
        Child::Inlines(entries) => {
            let (i, rest) = pick(&key, entries.iter().map(|t| name_of_inline(t)), segs)?;
            let t = entries.into_iter().nth(i).expect("picked");
            set(Node::Inline(t), rest, raw, at)
        }
    }
}

enum Child<'a> {
    Node(Node<'a>),
    Tables(Vec<&'a mut Table>),
    Inlines(Vec<&'a mut InlineTable>),
}

/// What names an entry: its `id` where it has one (controllers), else its
/// `name`.
fn name_of_table(t: &Table) -> Option<String> {
    t.get("id")
        .or_else(|| t.get("name"))
        .and_then(Item::as_str)
        .map(str::to_owned)
}

fn name_of_inline(t: &InlineTable) -> Option<String> {
    t.get("id")
        .or_else(|| t.get("name"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The entry of array `key` that `segs[1]` names, and the path after it.
fn pick<'s>(
    key: &str,
    names: impl Iterator<Item = Option<String>>,
    segs: &'s [&'s str],
) -> Result<(usize, &'s [&'s str]), String> {
    let want = segs[1];
    let names: Vec<Option<String>> = names.collect();
    let matching: Vec<usize> = names
        .iter()
        .enumerate()
        .filter(|(_, n)| {
            n.as_deref()
                .is_some_and(|n| n.replace('-', "_").eq_ignore_ascii_case(want))
        })
        .map(|(i, _)| i)
        .collect();
    let i = match matching.as_slice() {
        [i] => *i,
        [] => match want.parse::<usize>() {
            Ok(i) if i < names.len() => i,
            _ => {
                return Err(format!(
                    "no [[{key}]] entry is named {want} (name an entry by its name, or id, in upper case with `-` written `_`, or by its position from 0; an override adds no entry)"
                ));
            }
        },
        _ => return Err(format!("more than one [[{key}]] entry is named {want}")),
    };
    if segs.len() < 3 {
        return Err(format!(
            "names an entry of [[{key}]], not a key in it (add __<KEY>)"
        ));
    }
    Ok((i, &segs[2..]))
}

/// Parses `path = raw` (nested as inline tables) at `at.start`, padded with
/// spaces so that its spans lie past the file's text.
fn snippet(
    path: &[&str],
    raw: &str,
    keep_string: bool,
    at: &mut Snippet,
) -> Result<(Key, Item), String> {
    let value = value_text(raw, keep_string);
    let mut line = String::new();
    for (i, k) in path.iter().enumerate() {
        line.push_str(k);
        line.push_str(" = ");
        if i + 1 < path.len() {
            line.push_str("{ ");
        }
    }
    line.push_str(&value);
    for _ in 1..path.len() {
        line.push_str(" }");
    }
    let padded = format!("{}{line}", " ".repeat(at.start));
    let doc = ImDocument::parse(padded).map_err(|e| format!("cannot be read: {}", e.message()))?;
    let (k, item) = doc
        .as_table()
        .get_key_value(path[0])
        .ok_or_else(|| "cannot be read".to_owned())?;
    at.len = line.len();
    Ok((k.clone(), item.clone()))
}

/// The TOML text of an override's value.
fn value_text(raw: &str, keep_string: bool) -> String {
    if !keep_string
        && let Ok(doc) = format!("x = {raw}").parse::<toml_edit::DocumentMut>()
        && doc.len() == 1
        && doc.contains_key("x")
    {
        return raw.trim().to_owned();
    }
    Value::from(raw).to_string().trim().to_owned()
}
