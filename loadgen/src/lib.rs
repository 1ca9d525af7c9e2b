//! loadgen — tollgate's bundled open-loop load generator. Talks to targets only over
//! the network.
//!
//! Module map:
//! - [`units`]: "500ms", "60/s", "4KiB" parsing.
//! - [`scenario`]: scenario TOML (raw mirror → validated [`scenario::Scenario`]), `--scale`,
//!   the assert vocabulary (metric, scope).
//! - [`plan`]: rate profiles, per-key intended schedules (uniform/Poisson), op mix. Pure.
//! - [`sign`]: SigV4 / SigV2 (header and presigned), dates, URI encoding. Pure.
//! - [`request`]: target URLs and the exact bytes of each request per auth style.
//! - [`client`]: HTTP/1.1 response parsing and one keep-alive connection (TCP/TLS).
//! - [`engine`]: worker threads, monoio runtimes, clock threads, connections, measurement.
//! - [`stats`]: outcomes, per-key HdrHistograms, timeline.
//! - [`expect`]: exact sliding-window expectation and the accuracy check. Pure.
//! - [`report`]: tables, versioned JSON, self-contained HTML with inline SVG.
//! - [`asserts`]: `[[assert]]` evaluation against a report (exit code).
//! - [`bench`]: wrk-style saturation (`loadgen bench`).
//! - [`run`]: glue: scenario → engine → report → asserts; `prefill`.
//!
//! A module imports only modules before it in this order (the workspace's `tests/layering.rs`
//! rejects any cycle): `units`, `plan`, `sign`, `client`, `stats`; `request`, `expect`;
//! `scenario`; `engine`; `report`; `asserts`; `run`; `bench`, `main`.
#![forbid(unsafe_code)]
// No `Mutex`/`RwLock` in the sending machinery unless it says why (clippy.toml).
#![cfg_attr(not(test), deny(clippy::disallowed_types))]

pub mod asserts;
pub mod bench;
pub mod client;
pub mod engine;
pub mod expect;
pub mod plan;
pub mod report;
pub mod request;
pub mod run;
pub mod scenario;
pub mod sign;
pub mod stats;
pub mod units;
