//! Outputs for people: the RTT matrix as a terminal table, the report of a run's findings
//! (text, Markdown, JSON), SVG heatmaps, diffs (text, Markdown, JSON, JUnit), and a
//! path's history as a smoke chart (SVG, drawn with plotters).
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
pub mod smoke;
