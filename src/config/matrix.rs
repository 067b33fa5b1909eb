//! The lab's CSV matrices: RTT in milliseconds, loss in percent, between named regions.
//!
//! This module parses the text of one matrix file into a [`NamedMatrix`] in the order of
//! its header, and reports every problem in the file as a [`Diagnostic`] located at
//! `FILE:LINE:COL` (the column of the cell's first character). It does no file input and
//! knows nothing of the configuration: matching names against `[[region]]` entries is
//! done by `lab`.
//!
//! The shape: a header `,name1,name2,...` (the first cell is a label and ignored), then
//! one row `name,v1,v2,...` per name, in any order. Cells are trimmed. An empty cell or
//! `-` is no value; the diagonal is ignored.

use std::collections::HashMap;

use super::RegionName;
use super::diag::{Diagnostic, LineIndex, shorten};

/// What a matrix holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unit {
    /// Round-trip time in milliseconds, `>= 0`.
    RttMs,
    /// Loss in percent, `0..=100`.
    LossPct,
}

impl Unit {
    /// The `[lab]` key that names a file of this unit.
    pub fn key(self) -> &'static str {
        match self {
            Unit::RttMs => "matrix",
            Unit::LossPct => "loss",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Unit::RttMs => "a number of milliseconds",
            Unit::LossPct => "a loss percentage",
        }
    }
}

/// A parsed matrix: `cells[i][j]` is the value from `names[i]` to `names[j]`, in header
/// order; `None` on the diagonal and where the cell is empty or `-`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct NamedMatrix {
    pub names: Vec<String>,
    pub cells: Vec<Vec<Option<f64>>>,
}

impl NamedMatrix {
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }
}

/// What [`parse`] found.
#[derive(Debug, Default)]
pub(super) struct Parsed {
    /// The header's names, when the header itself is valid (even if rows are not).
    pub header: Option<Vec<String>>,
    /// The matrix, when the whole file is valid.
    pub matrix: Option<NamedMatrix>,
    pub diagnostics: Vec<Diagnostic>,
}

/// One record as read: its cells (untrimmed) and where each cell starts.
struct Record {
    cells: Vec<String>,
    /// Byte offset of the record's first character in the text.
    start: usize,
    /// Byte offset of each cell's first non-blank character, when known.
    starts: Vec<usize>,
}

/// Parses a matrix file's `text`; `file` is used in diagnostics.
pub(super) fn parse(text: &str, file: &str, unit: Unit) -> Parsed {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut p = Parser {
        text,
        lines: LineIndex::new(text),
        file,
        diagnostics: Vec::new(),
    };
    let records = p.records();
    let header = p.header(records.first());
    let matrix = header
        .as_ref()
        .and_then(|names| p.rows(names, records.get(1..).unwrap_or(&[]), unit));
    let matrix = matrix.filter(|_| p.diagnostics.is_empty());
    Parsed {
        header: header.map(|h| h.into_iter().map(|(n, _)| n).collect()),
        matrix,
        diagnostics: p.diagnostics,
    }
}

struct Parser<'t> {
    text: &'t str,
    lines: LineIndex<'t>,
    file: &'t str,
    diagnostics: Vec<Diagnostic>,
}

impl Parser<'_> {
    fn at(&mut self, offset: usize, message: String) {
        let (line, column) = self.lines.line_col(offset);
        self.diagnostics.push(Diagnostic {
            file: self.file.to_string(),
            line,
            column,
            message: shorten(&message),
        });
    }

    fn cell_at(&mut self, record: &Record, index: usize, message: String) {
        let offset = record.starts.get(index).copied().unwrap_or(record.start);
        self.at(offset, message);
    }

    fn records(&mut self) -> Vec<Record> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .trim(csv::Trim::None)
            .from_reader(self.text.as_bytes());
        let mut records = Vec::new();
        for result in reader.records() {
            match result {
                Ok(record) => {
                    let pos = record
                        .position()
                        .map_or(0, |p| usize::try_from(p.byte()).unwrap_or(0));
                    // A record's position includes the blank lines skipped before it.
                    let skipped = self.text.get(pos..).map_or(0, |rest| {
                        rest.len() - rest.trim_start_matches(['\r', '\n']).len()
                    });
                    let start = pos + skipped;
                    let cells: Vec<String> = record.iter().map(str::to_string).collect();
                    let mut starts = cell_starts(self.text, start);
                    if starts.len() != cells.len() {
                        starts.clear();
                    }
                    records.push(Record {
                        cells,
                        start,
                        starts,
                    });
                }
                Err(e) => {
                    let offset = e
                        .position()
                        .map_or(0, |p| usize::try_from(p.byte()).unwrap_or(0));
                    self.at(
                        offset,
                        format!(
                            "cannot read this CSV file: {e}; save it as plain comma-separated text"
                        ),
                    );
                    break;
                }
            }
        }
        records
    }

    /// The header's names with their cells' offsets, or `None` after reporting why not.
    fn header(&mut self, record: Option<&Record>) -> Option<Vec<(String, usize)>> {
        let Some(record) = record else {
            self.at(
                0,
                "the file is empty; the first row lists region names: \",name1,name2,...\"".into(),
            );
            return None;
        };
        if record.cells.len() < 2 {
            self.at(
                record.start,
                "the header has no region names; write \",name1,name2,...\" (the first cell is a label)".into(),
            );
            return None;
        }
        let mut ok = true;
        let mut names: Vec<(String, usize)> = Vec::new();
        let mut first: HashMap<String, usize> = HashMap::new();
        for (i, cell) in record.cells.iter().enumerate().skip(1) {
            let name = cell.trim().to_string();
            let offset = record.starts.get(i).copied().unwrap_or(record.start);
            if let Some(why) = RegionName::problem(&name) {
                self.at(offset, format!("header: {why}"));
                ok = false;
            } else if let Some(&first) = first.get(&name) {
                let (_, col) = self.lines.line_col(first);
                self.at(
                    offset,
                    format!(
                        "{name:?} is in the header twice (first at column {col}); remove one column"
                    ),
                );
                ok = false;
            }
            first.entry(name.clone()).or_insert(offset);
            names.push((name, offset));
        }
        ok.then_some(names)
    }

    fn rows(
        &mut self,
        header: &[(String, usize)],
        rows: &[Record],
        unit: Unit,
    ) -> Option<NamedMatrix> {
        let n = header.len();
        let index: HashMap<&str, usize> = header
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (n.as_str(), i))
            .collect();
        let mut cells = vec![vec![None; n]; n];
        let mut seen: Vec<Option<usize>> = vec![None; n];
        for row in rows {
            let name = row.cells.first().map(|c| c.trim()).unwrap_or("");
            let Some(&i) = index.get(name) else {
                let message = if name.is_empty() {
                    "a row without a name; start each row with its region's name".to_string()
                } else {
                    format!(
                        "row {name:?} is not in the header; add it to the first row or remove the row"
                    )
                };
                self.cell_at(row, 0, message);
                continue;
            };
            if let Some(first) = seen[i] {
                let (line, _) = self.lines.line_col(first);
                self.cell_at(
                    row,
                    0,
                    format!("row {name:?} appears twice (first at line {line}); remove one"),
                );
                continue;
            }
            seen[i] = Some(row.start);
            if row.cells.len() != n + 1 {
                let got = row.cells.len() - 1;
                self.cell_at(
                    row,
                    (n + 1).min(row.cells.len() - 1),
                    format!(
                        "row {name:?} has {got} value{}, the header has {n} name{}; give one value per column \
                         (leave a cell empty for no path)",
                        plural(got),
                        plural(n)
                    ),
                );
                continue;
            }
            for (j, cell) in row.cells.iter().enumerate().skip(1) {
                if i == j - 1 {
                    continue; // The diagonal is ignored.
                }
                match value(cell.trim(), unit) {
                    Ok(v) => cells[i][j - 1] = v,
                    Err(message) => self.cell_at(row, j, message),
                }
            }
        }
        for (i, (name, offset)) in header.iter().enumerate() {
            if seen[i].is_none() {
                self.at(
                    *offset,
                    format!("{name:?} has a column but no row; add a row \"{name},...\""),
                );
            }
        }
        Some(NamedMatrix {
            names: header.iter().map(|(n, _)| n.clone()).collect(),
            cells,
        })
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// One cell's value: `None` for empty, `-`, `n/a` or `na`. A trailing unit that
/// matches the file (`ms` for RTTs, `%` for loss) is accepted, as published tables
/// often carry one.
fn value(cell: &str, unit: Unit) -> Result<Option<f64>, String> {
    if cell.is_empty()
        || cell == "-"
        || cell.eq_ignore_ascii_case("n/a")
        || cell.eq_ignore_ascii_case("na")
    {
        return Ok(None);
    }
    let cell = match unit {
        Unit::RttMs => cell.strip_suffix("ms"),
        Unit::LossPct => cell.strip_suffix('%'),
    }
    .map(str::trim_end)
    .unwrap_or(cell);
    let fix = match unit {
        Unit::RttMs => {
            "write a number of milliseconds from 0 to 60000, like 12.5 (a slower path is a lost one: give it a loss), or leave the cell empty for no path"
        }
        Unit::LossPct => "write a percentage from 0 to 100, like 0.5, or leave the cell empty",
    };
    let v: f64 = match cell.parse() {
        Ok(v) => v,
        Err(_) => return Err(format!("{cell:?} is not {}; {fix}", unit.noun())),
    };
    let ok = match unit {
        Unit::RttMs => v.is_finite() && (0.0..=super::keys::MAX_LAB_MS).contains(&v),
        Unit::LossPct => (0.0..=100.0).contains(&v),
    };
    if ok {
        Ok(Some(v))
    } else {
        Err(format!("{cell} is out of range; {fix}"))
    }
}

/// The byte offsets where each cell of the record starting at `start` begins (after
/// leading blanks), following CSV quoting. Stops at the end of the record.
fn cell_starts(text: &str, start: usize) -> Vec<usize> {
    let Some(rest) = text.get(start..) else {
        return Vec::new();
    };
    let mut starts = Vec::new();
    let mut chars = rest.char_indices().peekable();
    loop {
        // Start of a cell: skip blanks.
        while let Some(&(_, c)) = chars.peek() {
            if c == ' ' || c == '\t' {
                chars.next();
            } else {
                break;
            }
        }
        let here = chars.peek().map_or(rest.len(), |&(i, _)| i);
        starts.push(start + here);
        let mut quoted = false;
        let mut at_start = true;
        loop {
            match chars.next() {
                None => return starts,
                Some((_, '"')) if at_start => quoted = true,
                Some((_, '"')) if quoted => {
                    if chars.peek().is_some_and(|&(_, c)| c == '"') {
                        chars.next();
                    } else {
                        quoted = false;
                    }
                }
                Some((_, ',')) if !quoted => break,
                Some((_, '\n' | '\r')) if !quoted => return starts,
                Some(_) => {}
            }
            at_start = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(text: &str, unit: Unit) -> Vec<String> {
        parse(text, "m.csv", unit)
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn parses_a_matrix_with_rows_in_any_order() {
        let text = " , a , b ,c\nb, 2,,3\r\na,x,1.5,-\n\nc,4,5,\n";
        let p = parse(text, "m.csv", Unit::RttMs);
        assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
        let m = p.matrix.expect("valid");
        assert_eq!(m.names, ["a", "b", "c"]);
        assert_eq!(
            m.cells,
            vec![
                vec![None, Some(1.5), None],
                vec![Some(2.0), None, Some(3.0)],
                vec![Some(4.0), Some(5.0), None],
            ]
        );
    }

    #[test]
    fn units_and_not_available_cells() {
        let text = ",a,b,c\na,,12.5 ms,N/A\nb,3ms,,na\nc,-,7,\n";
        let m = parse(text, "m.csv", Unit::RttMs).matrix.expect("valid");
        assert_eq!(
            m.cells,
            vec![
                vec![None, Some(12.5), None],
                vec![Some(3.0), None, None],
                vec![None, Some(7.0), None],
            ]
        );
        let loss = parse(",a,b\na,,2.5%\nb,0 %,\n", "l.csv", Unit::LossPct)
            .matrix
            .expect("valid");
        assert_eq!(
            loss.cells,
            vec![vec![None, Some(2.5)], vec![Some(0.0), None]]
        );
        // A unit of the other file is not accepted.
        assert!(
            !parse(",a,b\na,,2%\nb,1,\n", "m.csv", Unit::RttMs)
                .diagnostics
                .is_empty()
        );
    }

    #[test]
    fn quoted_cells_and_bom() {
        let text = "\u{feff}\"\",\"a\",\"b\"\n\"a\",,\"1\"\n\"b\",\"2\",\n";
        let m = parse(text, "m.csv", Unit::RttMs).matrix.expect("valid");
        assert_eq!(m.cells, vec![vec![None, Some(1.0)], vec![Some(2.0), None]]);
    }

    #[test]
    fn problems_are_located() {
        for (text, unit, expected) in [
            ("", Unit::RttMs, "m.csv:1:1: the file is empty"),
            (
                "label\n",
                Unit::RttMs,
                "m.csv:1:1: the header has no region names",
            ),
            (
                ",a,b\na,,abc\nb,1,\n",
                Unit::RttMs,
                "m.csv:2:4: \"abc\" is not a number of milliseconds",
            ),
            (
                ",a,b\na,, -3\nb,1,\n",
                Unit::RttMs,
                "m.csv:2:5: -3 is out of range",
            ),
            (
                ",a,b\na,,inf\nb,1,\n",
                Unit::RttMs,
                "m.csv:2:4: inf is out of range",
            ),
            (
                ",a,b\na,,101\nb,1,\n",
                Unit::LossPct,
                "m.csv:2:4: 101 is out of range",
            ),
            (
                ",a,b\na,,x\nb,1,\n",
                Unit::LossPct,
                "m.csv:2:4: \"x\" is not a loss percentage",
            ),
            (
                ",a,b\na,,1,2\nb,1,\n",
                Unit::RttMs,
                "m.csv:2:6: row \"a\" has 3 values, the header has 2 names",
            ),
            (
                ",a,b\na,\nb,1,\n",
                Unit::RttMs,
                "m.csv:2:3: row \"a\" has 1 value, the header has 2 names",
            ),
            (
                ",a,b\na,,1\nc,1,\nb,1,\n",
                Unit::RttMs,
                "m.csv:3:1: row \"c\" is not in the header",
            ),
            (
                ",a,b\na,,1\na,,1\nb,1,\n",
                Unit::RttMs,
                "m.csv:3:1: row \"a\" appears twice (first at line 2)",
            ),
            (
                ",a,b\na,,1\n",
                Unit::RttMs,
                "m.csv:1:4: \"b\" has a column but no row",
            ),
            (
                ",a,a\na,,1\n",
                Unit::RttMs,
                "m.csv:1:4: \"a\" is in the header twice (first at column 2)",
            ),
            (
                ",a,-b\n",
                Unit::RttMs,
                "m.csv:1:4: header: region name \"-b\"",
            ),
            (",a,\n", Unit::RttMs, "m.csv:1:4: header: "),
            (
                ",a,b\n,,1\n",
                Unit::RttMs,
                "m.csv:2:1: a row without a name",
            ),
            (
                ",a,b\na,,1\n\n\nb,\"x\",\n",
                Unit::RttMs,
                "m.csv:5:3: \"x\" is not",
            ),
        ] {
            let got = messages(text, unit);
            assert!(
                got.iter().any(|m| m.starts_with(expected)),
                "{text:?}: {got:?}"
            );
        }
    }

    #[test]
    fn header_survives_bad_rows() {
        let p = parse(",a,b\na,,x\nb,1,\n", "m.csv", Unit::RttMs);
        assert_eq!(
            p.header.as_deref(),
            Some(&["a".to_string(), "b".to_string()][..])
        );
        assert!(p.matrix.is_none());
    }

    #[test]
    fn cell_starts_follow_quotes() {
        let text = "a, \"b,\"\"c\"\" \",d\ne";
        assert_eq!(cell_starts(text, 0), vec![0, 3, 14]);
        assert_eq!(cell_starts(text, 16), vec![16]);
        assert_eq!(cell_starts(text, 99), Vec::<usize>::new());
    }
}
