//! latmap maps network latency and loss between the regions of a fleet.
//!
//! ```text
//! regions.toml ──▶ Config ──▶ Prober (one per region) ──▶ RegionReport ──┐
//!                                                                        ├──▶ Run (run.json)
//!                        Prober (another region) ──▶ RegionReport ──────┘
//!                                                                             │
//!                     LatencyGraph (per probe kind) ──▶ detectors ──▶ Vec<Anomaly> (in the run)
//!                                                                             │
//!                                         render: RTT table, report (text, Markdown, JSON),
//!                                                 heatmaps (SVG), diff (text, Markdown, JSON, JUnit)
//!                          diff: Run (baseline) × Run (current) ──▶ RunDiff ──▶ exit code
//!
//!      remote: agent (schedule ──▶ sweep ──▶ spool ──▶ POST /v1/reports) ──▶ server
//!              (store ──▶ Run + detectors per epoch ──▶ runs, heatmaps, reports, /metrics)
//! ```
//!
//! Modules are declared in data-flow order; each imports only the ones above it
//! (`rustfmt.toml` keeps rustfmt from sorting them).

pub mod files;
pub mod config;
pub mod stats;
pub mod units;
pub mod sockopt;
pub mod probe;
pub mod reflector;
pub mod artifact;
pub mod lab;
pub mod report;
pub mod run;
pub mod history;
pub mod sweep;
pub mod schedule;
pub mod graph;
pub mod anomaly;
pub mod diff;
pub mod render;
pub mod remote;
pub mod cli;
