//! Diagnostics: located problems, their text, and `LINE:COL` from byte offsets.
//!
//! A leaf of the configuration module: every step reports through these types, and
//! this module imports none of them.

use std::fmt;

/// The most characters of a value a message quotes; longer values are cut.
pub(super) const MAX_QUOTED: usize = 64;

/// `s` quoted for a message as `{:?}` writes it, cut to 64 characters
/// when longer: `"aaaa…" (52428800 characters)`.
pub fn quote(s: &str) -> String {
    match s.char_indices().nth(MAX_QUOTED) {
        None => format!("{s:?}"),
        Some(_) => {
            let end = s
                .char_indices()
                .nth(MAX_QUOTED - 1)
                .map_or(s.len(), |(i, _)| i);
            format!(
                "{:?} ({} characters)",
                format!("{}…", &s[..end]),
                s.chars().count()
            )
        }
    }
}

/// One problem found in a configuration file (or in a CSV file it names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file, as given by the caller (CSV files: joined to the config file's folder).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong; what to do.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Every problem found in a configuration, reported at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .diagnostics.iter().map(|d| format!("{}:{}:{}: {}", d.file, d.line, d.column, d.message)).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    pub diagnostics: Vec<Diagnostic>,
}

/// 1-based line and character column of byte `offset` in `text` (clamped to the text;
/// any offset is accepted, even one inside a character). For one lookup; many lookups
/// in one text use a [`LineIndex`].
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    LineIndex::new(text).line_col(offset)
}

/// Bytes between two character-count checkpoints of a [`LineIndex`].
const CHECKPOINT: usize = 256;

/// Where the lines of a text start, and how many characters come before every
/// 256th byte, so that each `LINE:COL` costs a binary search and at most 256 bytes of
/// counting: reporting many problems stays linear in the size of the file, even when
/// they share one long line.
pub(super) struct LineIndex<'t> {
    bytes: &'t [u8],
    /// Byte offset of each line's first byte.
    starts: Vec<usize>,
    /// Characters in `bytes[..k * CHECKPOINT]`, for every k.
    chars: Vec<usize>,
}

impl<'t> LineIndex<'t> {
    pub fn new(text: &'t str) -> LineIndex<'t> {
        let bytes = text.as_bytes();
        let mut starts = vec![0];
        starts.extend(
            bytes
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i + 1),
        );
        let mut chars = Vec::with_capacity(bytes.len() / CHECKPOINT + 1);
        let mut n = 0;
        for block in bytes.chunks(CHECKPOINT) {
            chars.push(n);
            n += count_chars(block);
        }
        chars.push(n);
        LineIndex {
            bytes,
            starts,
            chars,
        }
    }

    /// Characters before byte `offset`.
    fn chars_before(&self, offset: usize) -> usize {
        let k = offset / CHECKPOINT;
        self.chars[k] + count_chars(&self.bytes[k * CHECKPOINT..offset])
    }

    /// 1-based line and character column of byte `offset` (clamped to the text).
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.bytes.len());
        // The last line starting at or before `offset`.
        let line = self.starts.partition_point(|&s| s <= offset);
        let start = self.starts[line.saturating_sub(1)];
        let column = self.chars_before(offset) - self.chars_before(start) + 1;
        (line, column)
    }
}

/// Characters in UTF-8 bytes, counted by their first byte (continuation bytes are
/// 0b10xx_xxxx).
fn count_chars(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b & 0xC0 != 0x80).count()
}

/// `message` with every quoted value longer than [`MAX_QUOTED`] characters cut, and
/// the whole cut to a few thousand characters: a message names a value, it does not
/// echo a 50 MB one. Quoted values are what `{:?}` writes: `"..."` with backslash
/// escapes, which are never split.
pub(super) fn shorten(message: &str) -> String {
    /// A message longer than this is cut at the end.
    const MAX_MESSAGE: usize = 2000;
    let mut out = String::with_capacity(message.len().min(MAX_MESSAGE + 64));
    let mut chars = message.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c != '"' {
            continue;
        }
        // Inside a quoted value: copy up to MAX_QUOTED characters (an escape counts
        // as one), then skip to the closing quote.
        let mut shown = 0usize;
        let mut total = 0usize;
        let mut held: Option<String> = None;
        let mut closed = false;
        while let Some(c) = chars.next() {
            if c == '"' {
                closed = true;
                break;
            }
            let mut unit = String::from(c);
            if c == '\\'
                && let Some(e) = chars.next()
            {
                unit.push(e);
                if e == 'u' && chars.peek() == Some(&'{') {
                    for e in chars.by_ref() {
                        unit.push(e);
                        if e == '}' {
                            break;
                        }
                    }
                }
            }
            total += 1;
            if shown < MAX_QUOTED - 1 {
                out.push_str(&unit);
                shown += 1;
            } else if shown == MAX_QUOTED - 1 {
                // Held back: the 64th unit is shown only if it is the last.
                held = Some(unit);
                shown += 1;
            }
        }
        let long = total > MAX_QUOTED;
        if long {
            out.push('…');
        } else if let Some(unit) = held.take() {
            out.push_str(&unit);
        }
        if closed {
            out.push('"');
        }
        if long {
            out.push_str(&format!(" ({total} characters)"));
        }
    }
    match out.char_indices().nth(MAX_MESSAGE) {
        Some((end, _)) => format!("{}…", &out[..end]),
        None => out,
    }
}
