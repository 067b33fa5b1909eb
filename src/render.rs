//! Outputs for people: the RTT matrix as a terminal table, and the report of a run's
//! findings as text, Markdown or JSON.
//!
//! Reads runs; never probes, never runs a detector.

pub mod report;
pub mod table;
