//! Outputs for people: the RTT matrix as a terminal table, the report of a run's findings
//! (text, Markdown, JSON), SVG heatmaps, and diffs (text, Markdown, JSON, JUnit).
//!
//! Every string that came from outside is escaped for its format by `escape`.
//!
//! Reads runs; never probes, never runs a detector.

pub mod escape;
pub mod scale;
pub mod table;
pub mod report;
pub mod heatmap;
pub mod diff;
