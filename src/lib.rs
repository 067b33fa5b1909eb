//! latmap maps network latency and loss between the regions of a fleet.
//!
//! ```text
//! regions.toml ──▶ Config ──▶ Prober (one per region) ──▶ RegionReport ──┐
//!                                                                        ├──▶ Run (run.json)
//!                        Prober (another region) ──▶ RegionReport ──────┘
//!                                                                             │
//!                     LatencyGraph (per probe kind) ──▶ detectors ──▶ Vec<Anomaly> (in the run)
//!                                                                             │
//!                                         render: RTT table, report (text, Markdown, JSON)
//! ```
//!
//! Modules are declared in data-flow order; each imports only the ones above it (the
//! blank lines keep rustfmt from sorting them).

pub mod config;

pub mod stats;

pub mod sockopt;

pub mod probe;

pub mod reflector;

pub mod lab;

pub mod artifact;

pub mod report;

pub mod run;

pub mod sweep;

pub mod graph;

pub mod anomaly;

pub mod render;

pub mod cli;
