//! Reading and writing latmap's JSON artifacts (region reports, runs).
//!
//! Files are written atomically: a temporary file in the same folder, flushed to disk,
//! then renamed over the target, so a reader never sees half a file and a crash never
//! leaves one. They are pretty-printed, except that an array of plain values (numbers,
//! strings, `null`) stays on one line, so a path's samples take one line rather than
//! one per sample. Both directions stream: a run of a million paths is never held as
//! text or as a generic JSON tree in memory. Readers deserialize straight into the
//! typed structure, then check the `schema` tag's major version; they accept unknown
//! fields, so newer minor versions stay readable. A file that does not parse is
//! reported as of another schema when its first bytes name one.

use std::fs;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::ser::{CompactFormatter, Formatter};

use crate::files;

/// How many bytes of a file that does not parse are searched for its schema tag.
const SCHEMA_HEAD_BYTES: u64 = 8 * 1024;

/// Errors reading or writing an artifact. The messages leave the cause out: it is the
/// error's `source`, which the CLI prints after it.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path} {}", schema_problem(.found.as_deref(), .expected))]
    Schema {
        path: PathBuf,
        found: Option<String>,
        expected: &'static str,
    },
    /// The file parses but holds a value that cannot be true (a forged or corrupt
    /// file); nothing of it is used.
    #[error("{path} holds impossible values and is not used")]
    Invalid { path: PathBuf, source: Invalid },
}

/// A value that cannot be true, with the field that holds it (`paths[3].rtt_us.p50`):
/// what the readers' checks (`report::check`, `run::check`) find.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct Invalid {
    pub field: String,
    pub problem: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Invalid {
        Invalid {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// The same problem, with `prefix` before the field (`report.` for a push).
    pub fn within(mut self, prefix: &str) -> Invalid {
        self.field = format!("{prefix}{}", self.field);
        self
    }
}

/// What is wrong with a schema tag, for [`ArtifactError::Schema`].
fn schema_problem(found: Option<&str>, expected: &str) -> String {
    let kind = |prefix: &str| match prefix {
        "latmap.run/" => Some("a run"),
        "latmap.report/" => Some("a region report"),
        "latmap.push/" => Some("a push"),
        _ => None,
    };
    let Some(found) = found else {
        return format!("has no schema tag, expected \"{expected}1\"; it is not a latmap file");
    };
    let found_prefix = found.split('/').next().map(|p| format!("{p}/"));
    match (found_prefix.as_deref().and_then(kind), kind(expected)) {
        (Some(is), Some(want)) if found_prefix.as_deref() != Some(expected) => {
            format!("is {is} (schema {found:?}), not {want}; pass {want} here")
        }
        _ => format!(
            "has schema {found:?}, expected \"{expected}1\"; it was written by another version of latmap or is not a latmap file"
        ),
    }
}

/// An artifact with a `schema` tag.
pub trait Versioned {
    /// The value of the `schema` field, e.g. `latmap.run/1`.
    fn schema(&self) -> &str;
}

/// Writes `value` as JSON to `path` atomically, pretty-printed with arrays of plain
/// values on one line (see [`ArrayLineFormatter`]), ending with a newline.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), ArtifactError> {
    write_atomic_with(path, |file| {
        let mut out = BufWriter::with_capacity(1 << 16, file);
        to_writer(&mut out, value)?;
        out.write_all(b"\n")?;
        out.flush()
    })
}

/// Serializes `value` to `out` in the artifact format (no final newline).
pub fn to_writer<W: Write, T: Serialize>(out: &mut W, value: &T) -> io::Result<()> {
    let mut ser = serde_json::Serializer::with_formatter(out, ArrayLineFormatter::default());
    value.serialize(&mut ser).map_err(io::Error::other)
}

/// Serializes `value` in the artifact format as it appears nested `depth` levels deep
/// (an element of a top-level array field is at depth 2): the bytes are those that
/// `value` takes inside the larger document, so they can be copied into one.
pub fn to_writer_at<W: Write, T: Serialize>(
    out: &mut W,
    value: &T,
    depth: usize,
) -> io::Result<()> {
    let f = ArrayLineFormatter {
        indent: depth,
        ..ArrayLineFormatter::default()
    };
    let mut ser = serde_json::Serializer::with_formatter(out, f);
    value.serialize(&mut ser).map_err(io::Error::other)
}

/// Where an empty top-level array field `key` is in the artifact `text` (what
/// [`to_string`] writes): the index of its `[` and of its `]`. Only a top-level key is
/// indented by exactly two spaces after a line break, which no string can hold.
pub fn empty_array_field(text: &str, key: &str) -> Option<(usize, usize)> {
    let marker = format!("\n  \"{key}\": []");
    let at = text.find(&marker)?;
    let open = at + marker.len() - 2;
    Some((open, open + 1))
}

/// Writes the elements of a top-level array of objects as the artifact format lays
/// them out, each given as its own artifact text at depth 2 ([`to_writer_at`]).
pub struct ElementWriter<'w> {
    out: &'w mut dyn Write,
    first: bool,
}

impl ElementWriter<'_> {
    /// Appends one element.
    pub fn element(&mut self, json: &[u8]) -> io::Result<()> {
        if self.first {
            self.first = false;
            self.out.write_all(b"\n    ")?;
        } else {
            self.out.write_all(b",\n    ")?;
        }
        self.out.write_all(json)
    }
}

/// Writes `head` (an artifact whose top-level field `key` is an empty array) to `path`
/// atomically, with the elements `fill` gives in that array: the same bytes as
/// [`write_json_atomic`] of the document holding them, without ever holding them all.
pub fn write_atomic_spliced(
    path: &Path,
    head: &str,
    key: &str,
    fill: impl FnOnce(&mut ElementWriter<'_>) -> io::Result<()>,
) -> Result<(), ArtifactError> {
    let Some((open, close)) = empty_array_field(head, key) else {
        return Err(ArtifactError::Write {
            path: path.to_path_buf(),
            source: io::Error::other(format!("no empty \"{key}\" field to fill")),
        });
    };
    write_atomic_with(path, |file| {
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&head.as_bytes()[..=open])?;
        let mut elements = ElementWriter {
            out: &mut out,
            first: true,
        };
        fill(&mut elements)?;
        if !elements.first {
            out.write_all(b"\n  ")?;
        }
        out.write_all(&head.as_bytes()[close..])?;
        out.write_all(b"\n")?;
        out.flush()
    })
}

/// The artifact format of `value` as a string (no final newline).
pub fn to_string<T: Serialize>(value: &T) -> io::Result<String> {
    let mut out = Vec::new();
    to_writer(&mut out, value)?;
    String::from_utf8(out).map_err(io::Error::other)
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename, fsync folder).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ArtifactError> {
    write_atomic_with(path, |file| file.write_all(bytes))
}

/// Creates a temporary file beside `path`, lets `fill` write it, then syncs it and
/// renames it over `path`. On failure the temporary file is removed.
fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut fs::File) -> io::Result<()>,
) -> Result<(), ArtifactError> {
    let err = |source| ArtifactError::Write {
        path: path.to_path_buf(),
        source,
    };
    files::write_atomic(path, fill).map_err(err)
}

/// Reads a JSON artifact whose `schema` must start with `prefix` and have major version 1.
pub fn read_versioned<T: DeserializeOwned + Versioned>(
    path: &Path,
    prefix: &'static str,
) -> Result<T, ArtifactError> {
    let read_err = |source| ArtifactError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = files::open_regular(path).map_err(read_err)?;
    let schema_err = |found: Option<String>| ArtifactError::Schema {
        path: path.to_path_buf(),
        found,
        expected: prefix,
    };
    match serde_json::from_reader::<_, T>(BufReader::with_capacity(1 << 16, file)) {
        Ok(value) if major_is_1(value.schema(), prefix) => Ok(value),
        Ok(value) => Err(schema_err(Some(value.schema().to_string()))),
        Err(source) if source.is_io() => Err(read_err(io::Error::from(source))),
        Err(source) => {
            // The file's own words on what it is are better than a parse error deep
            // inside a structure of another version.
            let head = schema_in_head(path);
            match head {
                Some(found) if !major_is_1(&found, prefix) => Err(schema_err(Some(found))),
                None if source.is_data() => Err(schema_err(None)),
                _ => Err(ArtifactError::Json {
                    path: path.to_path_buf(),
                    source,
                }),
            }
        }
    }
}

fn major_is_1(schema: &str, prefix: &str) -> bool {
    schema
        .strip_prefix(prefix)
        .and_then(|v| v.split('.').next())
        .is_some_and(|major| major == "1")
}

/// The string value of the first `"schema"` key in the first few KB of the file, if any.
fn schema_in_head(path: &Path) -> Option<String> {
    let mut head = Vec::new();
    fs::File::open(path)
        .ok()?
        .take(SCHEMA_HEAD_BYTES)
        .read_to_end(&mut head)
        .ok()?;
    let text = String::from_utf8_lossy(&head);
    let at = text.find("\"schema\"")?;
    let rest = text[at + "\"schema\"".len()..].trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    let mut value = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(value),
            '\\' => value.push(chars.next()?),
            c => value.push(c),
        }
    }
    None
}

/// serde_json's pretty printer (two-space indent), except that an array whose first
/// element is a plain value (number, string, boolean, `null`) is written on one line:
/// `"samples_us": [1200, null, 1187]`. Arrays of objects or arrays stay one element per
/// line. The output is valid JSON and depends only on the value.
#[derive(Debug, Default)]
pub struct ArrayLineFormatter {
    indent: usize,
    /// Open containers, innermost last.
    stack: Vec<Open>,
    /// An array element has begun but its first token is not written yet:
    /// `Some(true)` for the array's first element.
    pending: Option<bool>,
}

#[derive(Debug)]
enum Open {
    /// `None` until the first element shows whether the array is one line.
    Array {
        one_line: Option<bool>,
    },
    Object {
        has_key: bool,
    },
}

const INDENT: &[u8] = b"  ";

impl ArrayLineFormatter {
    fn newline<W: ?Sized + Write>(&self, w: &mut W) -> io::Result<()> {
        w.write_all(b"\n")?;
        for _ in 0..self.indent {
            w.write_all(INDENT)?;
        }
        Ok(())
    }

    /// Called before any value's first byte: writes the separator an array element needs.
    fn value_start<W: ?Sized + Write>(&mut self, w: &mut W, container: bool) -> io::Result<()> {
        let Some(first) = self.pending.take() else {
            return Ok(());
        };
        let one_line = match self.stack.last_mut() {
            Some(Open::Array { one_line }) => *one_line.get_or_insert(!container),
            _ => false,
        };
        match (first, one_line) {
            (true, true) => Ok(()),
            (false, true) => w.write_all(b", "),
            (true, false) => self.newline(w),
            (false, false) => {
                w.write_all(b",")?;
                self.newline(w)
            }
        }
    }
}

macro_rules! scalar {
    ($($name:ident: $t:ty),* $(,)?) => {
        $(
            fn $name<W: ?Sized + Write>(&mut self, w: &mut W, value: $t) -> io::Result<()> {
                self.value_start(w, false)?;
                CompactFormatter.$name(w, value)
            }
        )*
    };
}

impl Formatter for ArrayLineFormatter {
    scalar!(
        write_bool: bool, write_i8: i8, write_i16: i16, write_i32: i32, write_i64: i64,
        write_i128: i128, write_u8: u8, write_u16: u16, write_u32: u32, write_u64: u64,
        write_u128: u128, write_f32: f32, write_f64: f64, write_number_str: &str,
    );

    /// Raw JSON (a `RawValue`) is laid out as the value it holds: an object or an
    /// array breaks the line as one written here would, so text taken from another
    /// artifact of the same layout fits in unchanged.
    fn write_raw_fragment<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        self.value_start(w, fragment.starts_with(['{', '[']))?;
        w.write_all(fragment.as_bytes())
    }

    fn write_null<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.value_start(w, false)?;
        w.write_all(b"null")
    }

    fn begin_string<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.value_start(w, false)?;
        w.write_all(b"\"")
    }

    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.value_start(w, true)?;
        self.stack.push(Open::Array { one_line: None });
        self.indent += 1;
        w.write_all(b"[")
    }

    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.indent = self.indent.saturating_sub(1);
        self.pending = None;
        if let Some(Open::Array {
            one_line: Some(false),
        }) = self.stack.pop()
        {
            self.newline(w)?;
        }
        w.write_all(b"]")
    }

    fn begin_array_value<W: ?Sized + Write>(&mut self, _w: &mut W, first: bool) -> io::Result<()> {
        self.pending = Some(first);
        Ok(())
    }

    fn end_array_value<W: ?Sized + Write>(&mut self, _w: &mut W) -> io::Result<()> {
        Ok(())
    }

    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.value_start(w, true)?;
        self.stack.push(Open::Object { has_key: false });
        self.indent += 1;
        w.write_all(b"{")
    }

    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.indent = self.indent.saturating_sub(1);
        if let Some(Open::Object { has_key: true }) = self.stack.pop() {
            self.newline(w)?;
        }
        w.write_all(b"}")
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if let Some(Open::Object { has_key }) = self.stack.last_mut() {
            *has_key = true;
        }
        if !first {
            w.write_all(b",")?;
        }
        self.newline(w)
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn end_object_value<W: ?Sized + Write>(&mut self, _w: &mut W) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[test]
    fn arrays_of_plain_values_stay_on_one_line() {
        let value = json!({
            "schema": "x/1",
            "empty": [],
            "empty_object": {},
            "samples": [1200, null, 1187],
            "ci": [0.01, 0.25],
            "names": ["a", "b\"c"],
            "paths": [{"a": 1, "b": [true, false]}, {"c": []}],
            "nested": [[1, 2], [3]],
            "mixed": [1, {"x": null}],
        });
        let text = to_string(&value).unwrap();
        let expected = r#"{
  "ci": [0.01, 0.25],
  "empty": [],
  "empty_object": {},
  "mixed": [1, {
      "x": null
    }],
  "names": ["a", "b\"c"],
  "nested": [
    [1, 2],
    [3]
  ],
  "paths": [
    {
      "a": 1,
      "b": [true, false]
    },
    {
      "c": []
    }
  ],
  "samples": [1200, null, 1187],
  "schema": "x/1"
}"#;
        assert_eq!(text, expected);
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, value);
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Doc {
        schema: String,
        values: Vec<Option<u64>>,
    }

    impl Versioned for Doc {
        fn schema(&self) -> &str {
            &self.schema
        }
    }

    #[test]
    fn write_then_read_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/doc.json");
        let doc = Doc {
            schema: "latmap.test/1.2".into(),
            values: vec![Some(1), None, Some(u64::MAX)],
        };
        write_json_atomic(&path, &doc).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.ends_with("]\n}\n"), "{text}");
        let back: Doc = read_versioned(&path, "latmap.test/").unwrap();
        assert_eq!(back, doc);
        // Only the file itself is left in the folder.
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn schema_problems_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let read = |text: &str| {
            let path = dir.path().join("doc.json");
            fs::write(&path, text).unwrap();
            read_versioned::<Doc>(&path, "latmap.test/").unwrap_err()
        };
        // Parses, but another major version.
        let e = read(r#"{"schema": "latmap.test/2", "values": []}"#);
        assert!(
            matches!(&e, ArtifactError::Schema { found: Some(f), .. } if f == "latmap.test/2"),
            "{e}"
        );
        // Does not parse as this version: the tag in the head is named.
        let e = read(r#"{"schema": "latmap.test/9", "values": "new shape"}"#);
        assert!(
            matches!(&e, ArtifactError::Schema { found: Some(f), .. } if f == "latmap.test/9"),
            "{e}"
        );
        // Another kind of file.
        let e = read(r#"{"schema": "other/1", "paths": []}"#);
        assert!(matches!(&e, ArtifactError::Schema { .. }), "{e}");
        // Valid JSON without a schema.
        let e = read(r#"{"values": []}"#);
        assert!(
            matches!(&e, ArtifactError::Schema { found: None, .. }),
            "{e}"
        );
        // Our schema but a broken body: the parse error, with its position.
        let e = read("{\"schema\": \"latmap.test/1\",\n \"values\": [1, \"x\"]}");
        assert!(matches!(&e, ArtifactError::Json { .. }), "{e}");
        // The position is in the cause, which the CLI prints after the message.
        let cause = std::error::Error::source(&e)
            .map(|c| c.to_string())
            .unwrap_or_default();
        assert!(cause.contains("line 2"), "{e}: {cause}");
        // Not JSON at all.
        let e = read("{ not json");
        assert!(matches!(&e, ArtifactError::Json { .. }), "{e}");
        let e = read_versioned::<Doc>(&dir.path().join("absent.json"), "latmap.test/").unwrap_err();
        assert!(matches!(&e, ArtifactError::Read { .. }), "{e}");
    }

    #[test]
    fn schema_is_found_in_the_head_with_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.json");
        fs::write(&path, "{\n  \"schema\" :\t\"a\\\"b/3\", \"x\": 1}").unwrap();
        assert_eq!(schema_in_head(&path).as_deref(), Some("a\"b/3"));
        fs::write(&path, "{\"schema\": 5}").unwrap();
        assert_eq!(schema_in_head(&path), None);
    }
}
