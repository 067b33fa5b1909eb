//! Loading `regions.toml` into a [`Config`], with located diagnostics.
//!
//! This module owns the public entry points ([`load`], [`parse`]) and is the one
//! orchestrator: it reads the files (the configuration and the lab's CSV matrices),
//! runs the steps in order (`raw` reads the TOML's shape, types and ranges; `matrix`
//! parses CSV text; `validate`, `lab`, `thresholds` and `ops` give each part its
//! meaning), makes the one pass that checks what the parts name against the regions,
//! and turns spans into sorted `FILE:LINE:COL` diagnostics. It must not panic on any
//! input.

use std::path::{Path, PathBuf};

use toml::de::DeTable;

use super::diag::{ConfigError, Diagnostic, LineIndex, line_col, shorten};
use super::lab::{self, LabInput, MatrixInput};
use super::matrix::{self, Unit};
use super::raw::{self, Problem, RawConfig, Span};
use super::validate::{self, LabKinds};
use super::{Config, LabMode, Region, keys, thresholds};

/// Syntax errors beyond this many are summarised in one line.
const MAX_SYNTAX_ERRORS: usize = 10;

/// The largest configuration or matrix file read: a matrix of the most regions
/// ([`super::MAX_REGIONS`]) takes about 10 MiB; a larger file is refused before it
/// is read whole.
const MAX_FILE_BYTES: u64 = 64 << 20;

/// Reads and validates the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let bytes =
        crate::files::read_regular_at_most(path, MAX_FILE_BYTES).map_err(|e| ConfigError {
            diagnostics: vec![Diagnostic {
                file: file.clone(),
                line: 1,
                column: 1,
                message: format!(
                    "cannot read {file}: {e}; check the path and that the file is readable"
                ),
            }],
        })?;
    let text = utf8(&bytes, &file).map_err(|d| ConfigError {
        diagnostics: vec![d],
    })?;
    parse(text, path)
}

/// Validates configuration text as if read from `path` (relative lab files are resolved
/// against `path`'s folder).
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let (root, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        return Err(ConfigError {
            diagnostics: syntax_diagnostics(text, &file, &syntax),
        });
    }

    let mut problems = Vec::new();
    let raw = raw::read(root.get_ref(), &mut problems);
    let mut files = FileOrder::new(&file);
    let mut csv_diagnostics = Vec::new();

    let matrices = raw
        .lab
        .as_ref()
        .and_then(|l| l.text(&keys::lab::MATRIX))
        .map(|rtt_key| {
            let dir = path.parent().unwrap_or(Path::new(""));
            let mut read = |key: &raw::At<&str>, unit: Unit| {
                read_matrix(
                    dir,
                    &file,
                    key,
                    unit,
                    &mut problems,
                    &mut csv_diagnostics,
                    &mut files,
                )
            };
            let rtt = read(&rtt_key, Unit::RttMs);
            let loss = raw
                .lab
                .as_ref()
                .and_then(|l| l.text(&keys::lab::LOSS))
                .map(|k| read(&k, Unit::LossPct));
            LabInput { rtt, loss }
        });

    let config = assemble(&raw, text, path, matrices, &mut problems);

    let lines = LineIndex::new(text);
    let mut diagnostics: Vec<Diagnostic> = problems
        .into_iter()
        .map(|p| locate(&lines, &file, &p.span, p.message))
        .collect();
    diagnostics.extend(csv_diagnostics);
    for d in &mut diagnostics {
        d.message = shorten(&d.message);
    }
    match config {
        Some(config) if diagnostics.is_empty() => Ok(config),
        _ => {
            files.sort(&mut diagnostics);
            if diagnostics.is_empty() {
                // Defensive: `assemble` returns None only after reporting a problem.
                diagnostics.push(at(&file, 1, 1, "the configuration is invalid".into()));
            }
            Err(ConfigError { diagnostics })
        }
    }
}

/// Checks everything and builds the [`Config`]. Returns `None` when a part could not be
/// built; every problem found is in `out` (the caller must treat any problem as failure,
/// even when a `Config` comes back).
fn assemble(
    raw: &RawConfig,
    text: &str,
    path: &Path,
    matrices: Option<LabInput>,
    out: &mut Vec<Problem>,
) -> Option<Config> {
    let mode = raw.lab.as_ref().map(|l| lab::lab_mode(l, out));
    let kinds = match mode {
        None => LabKinds::NoLab,
        Some(Some(LabMode::Loopback)) => LabKinds::UdpOnly,
        Some(Some(LabMode::Netns)) => LabKinds::Any,
        Some(None) => LabKinds::Unknown,
    };
    let probe = validate::probe(raw.probe.as_ref(), kinds, out);
    let checked = validate::regions(raw, &probe.kinds, text, out);
    let (regions, lab) = match &raw.lab {
        None => {
            lab::enough_regions(raw, None, out);
            (Some(checked.into_iter().map(|c| c.region).collect()), None)
        }
        Some(lab) => {
            let (regions, settings) = lab::lab(
                lab,
                mode.flatten(),
                raw,
                checked,
                matrices.unwrap_or_default(),
                out,
            );
            (regions, Some(settings))
        }
    };
    let names: Option<Vec<&str>> = regions
        .as_ref()
        .map(|r: &Vec<Region>| r.iter().map(|r| r.name.as_str()).collect());
    // The one cross-reference pass: the region names every part may refer to.
    let thresholds = thresholds::check(raw.thresholds.as_ref(), &raw.pairs, names.as_deref(), out);
    let diff = super::ops::check_diff(raw.diff.as_ref());
    let schedule = super::ops::check_schedule(raw.schedule.as_ref(), out);
    let lab = match lab {
        Some(settings) => Some(settings?),
        None => None,
    };
    Some(Config {
        path: path.to_path_buf(),
        regions: regions?,
        probe,
        lab,
        thresholds: thresholds?,
        diff,
        schedule,
    })
}

/// Reads and parses one CSV matrix named by `key` (a path relative to `dir`). A file that
/// cannot be read is a problem at the key; a broken file gives diagnostics in the file.
fn read_matrix(
    dir: &Path,
    config_file: &str,
    key: &raw::At<&str>,
    unit: Unit,
    problems: &mut Vec<Problem>,
    csv_diagnostics: &mut Vec<Diagnostic>,
    files: &mut FileOrder,
) -> Option<MatrixInput> {
    let written = key.value;
    if written.trim().is_empty() {
        problems.push(Problem::new(
            key.span.clone(),
            format!(
                "{} is empty; give the path of a CSV file, relative to {config_file}",
                unit.key()
            ),
        ));
        return None;
    }
    if written.chars().any(char::is_control) {
        problems.push(Problem::new(
            key.span.clone(),
            format!(
                "{} {written:?} contains a control character; give the path of a CSV file",
                unit.key()
            ),
        ));
        return None;
    }
    let resolved: PathBuf = dir.join(written);
    let csv_file = resolved.display().to_string();
    files.add(&csv_file);
    let bytes = match crate::files::read_regular_at_most(&resolved, MAX_FILE_BYTES) {
        Ok(bytes) => bytes,
        Err(e) => {
            let hint = if Path::new(written).is_absolute() {
                "check the path".to_string()
            } else {
                format!("check the path, it is relative to {config_file}")
            };
            problems.push(Problem::new(
                key.span.clone(),
                format!("cannot read {written}: {e}; {hint}"),
            ));
            return None;
        }
    };
    let text = match utf8(&bytes, &csv_file) {
        Ok(text) => text,
        Err(d) => {
            csv_diagnostics.push(d);
            return None;
        }
    };
    let parsed = matrix::parse(text, &csv_file, unit);
    csv_diagnostics.extend(parsed.diagnostics);
    Some(MatrixInput {
        file: resolved,
        display: csv_file,
        header: parsed.header,
        matrix: parsed.matrix,
    })
}

/// The file's text, or a diagnostic at the first byte that is not UTF-8.
fn utf8<'a>(bytes: &'a [u8], file: &str) -> Result<&'a str, Diagnostic> {
    std::str::from_utf8(bytes).map_err(|e| {
        let valid = &bytes[..e.valid_up_to()];
        // The prefix is valid UTF-8 by definition of `valid_up_to`.
        let prefix = std::str::from_utf8(valid).unwrap_or("");
        let (line, column) = line_col(prefix, prefix.len());
        let byte = bytes.get(e.valid_up_to()).copied().unwrap_or(0);
        at(
            file,
            line,
            column,
            format!("the file is not UTF-8 (byte 0x{byte:02x} here); save it as UTF-8 text"),
        )
    })
}

fn syntax_diagnostics(text: &str, file: &str, errors: &[toml::de::Error]) -> Vec<Diagnostic> {
    let lines = LineIndex::new(text);
    let mut out: Vec<Diagnostic> = errors
        .iter()
        .map(|e| {
            let span = e.span().unwrap_or(0..0);
            let message = shorten(&syntax_message(text, &span, e.message()));
            locate(&lines, file, &span, message)
        })
        .collect();
    out.sort_by_key(|d| (d.line, d.column));
    out.dedup();
    if out.len() > MAX_SYNTAX_ERRORS {
        let rest = out.len() - MAX_SYNTAX_ERRORS;
        out.truncate(MAX_SYNTAX_ERRORS);
        let last = &out[MAX_SYNTAX_ERRORS - 1];
        let (line, column) = (last.line, last.column);
        out.push(at(
            file,
            line,
            column,
            format!("{rest} more TOML syntax errors after this one; fix the ones above first"),
        ));
    }
    out
}

/// Rewrites the TOML parser's message into ours: what is wrong; what to do.
fn syntax_message(text: &str, span: &Span, message: &str) -> String {
    let message = message
        .trim()
        .trim_end_matches('.')
        .replace(['\n', '\r'], " ");
    if message == "duplicate key" {
        let key = text.get(span.clone()).unwrap_or("").trim();
        return format!(
            "invalid TOML: {key:?} is defined twice; define each key and [table] once \
             (a list of tables is written [[table]])"
        );
    }
    format!("invalid TOML: {message}; fix the syntax (see https://toml.io)")
}

fn at(file: &str, line: usize, column: usize, message: String) -> Diagnostic {
    Diagnostic {
        file: file.to_string(),
        line,
        column,
        message,
    }
}

fn locate(lines: &LineIndex<'_>, file: &str, span: &Span, message: String) -> Diagnostic {
    let (line, column) = lines.line_col(span.start);
    at(file, line, column, message)
}

/// The order files are reported in: the configuration, then the CSV files it names.
struct FileOrder {
    files: Vec<String>,
}

impl FileOrder {
    fn new(config_file: &str) -> Self {
        FileOrder {
            files: vec![config_file.to_string()],
        }
    }

    fn add(&mut self, file: &str) {
        if !self.files.iter().any(|f| f == file) {
            self.files.push(file.to_string());
        }
    }

    fn sort(&self, diagnostics: &mut Vec<Diagnostic>) {
        let rank = |d: &Diagnostic| {
            self.files
                .iter()
                .position(|f| *f == d.file)
                .unwrap_or(usize::MAX)
        };
        diagnostics.sort_by(|a, b| {
            (rank(a), &a.file, a.line, a.column).cmp(&(rank(b), &b.file, b.line, b.column))
        });
        diagnostics.dedup();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters() {
        let text = "ab\nçé = 1\n\nx";
        for (offset, expected) in [
            (0, (1, 1)),
            (2, (1, 3)),
            (3, (2, 1)),
            (5, (2, 2)), // after "ç" (2 bytes)
            (7, (2, 3)),
            (4, (2, 2)), // inside "ç": counted as past it
            (12, (3, 1)),
            (13, (4, 1)),
            (999, (4, 2)),
        ] {
            assert_eq!(line_col(text, offset), expected, "offset {offset}");
        }
    }

    #[test]
    fn non_utf8_is_located() {
        let d = utf8(b"[probe]\ncount = \xff\n", "x.toml").unwrap_err();
        assert_eq!((d.line, d.column), (2, 9));
        assert!(d.message.contains("not UTF-8"), "{}", d.message);
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let long = "a".repeat(1_000_000);
        let text = format!(
            "[[region]]\nname = \"{long}\"\ntargets = [\"127.0.0.1\"]\n\n[[region]]\nname = \"b\"\ntargets = [\"127.0.0.2\"]\n"
        );
        let e = parse(&text, Path::new("x.toml")).unwrap_err();
        let m = &e.diagnostics[0].message;
        assert!(m.chars().count() < 200, "{} characters", m.len());
        assert!(m.contains("…\" (1000000 characters)"), "{m}");
        // Escapes are never split, and short values are left alone.
        let s = shorten(&format!("name {:?} and {:?}", "\u{1b}".repeat(100), "ok"));
        assert!(s.contains("\"ok\""), "{s}");
        assert!(s.contains("\\u{1b}…\" (100 characters)"), "{s}");
    }

    #[test]
    fn many_problems_are_all_reported_in_order() {
        let mut text = String::from("[probe]\n");
        for i in 0..5000 {
            text.push_str(&format!("bogus_{i} = 1\n"));
        }
        let e = parse(&text, Path::new("x.toml")).unwrap_err();
        let unknown: Vec<&Diagnostic> = e
            .diagnostics
            .iter()
            .filter(|d| d.message.starts_with("unknown key"))
            .collect();
        assert_eq!(unknown.len(), 5000);
        assert_eq!((unknown[0].line, unknown[4999].line), (2, 5001));
    }

    #[test]
    fn line_index_agrees_with_counting() {
        let text = "ab\nçé = 1\n\nx".repeat(300);
        let index = LineIndex::new(&text);
        for offset in (0..text.len() + 3).step_by(7) {
            let clamped = offset.min(text.len());
            let before = &text.as_bytes()[..clamped];
            let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
            let start = before
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            let column = before[start..]
                .iter()
                .filter(|&&b| b & 0xC0 != 0x80)
                .count()
                + 1;
            assert_eq!(index.line_col(offset), (line, column), "offset {offset}");
        }
    }

    #[test]
    fn display_is_one_line_per_diagnostic() {
        let err = ConfigError {
            diagnostics: vec![
                at("a.toml", 1, 2, "one".into()),
                at("a.toml", 3, 4, "two".into()),
            ],
        };
        assert_eq!(err.to_string(), "a.toml:1:2: one\na.toml:3:4: two");
        assert_eq!(err.diagnostics[0].to_string(), "a.toml:1:2: one");
    }
}
