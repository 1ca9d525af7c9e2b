//! tollgate: a per-API-key rate-limiting reverse proxy for S3-compatible stores.
//!
//! Architecture map (one paragraph per module; see README "Repository structure"):
//!
//! - [`config`]: raw TOML mirror → validated immutable `Config`; keys file and its CLI.
//! - [`http`]: the HTTP/1.1 codec on httparse: request/response heads, body framing,
//!   chunked scanning, smuggling rejection, S3 XML error bodies, request methods. No I/O.
//! - [`identity`]: API-key extraction (5 methods, first match wins) → (key, auth method).
//! - [`limit`]: the exact trailing-window algorithm (`window`), the per-core shard
//!   (`table`) and key → owner-core routing (`route`). No I/O, time passed in.
//! - [`sigverify`]: optional S3 signature verification before the limiter (SigV4 header
//!   and presigned, SigV2 header and presigned) against a secrets table, with a per-core
//!   signing-key cache; S3 error codes for every refusal. No I/O, time passed in.
//! - [`runtime`]: worker threads (pinned, one monoio runtime each), the cross-core
//!   message types (`msg`) and the SPSC ring mesh between cores (`mesh`).
//! - [`proxy`]: the data path: accept, connection loop, limit decision, upstream pools
//!   (following reloads), health checks, TLS, the per-core background tasks. Never imports
//!   `control`.
//! - [`cluster`]: active-active, the I/O half: one sync thread per instance holding the
//!   Redis connection, exchanging batched deltas and views with the cores over rings (the
//!   algorithm itself is pure, in `limit::cluster`). Never imports `proxy` or `control`.
//! - [`control`]: the control threads: signals, reload (what applies, what needs a
//!   restart), the watchdog (heartbeats, history, retries), admin API (health, readiness,
//!   key view, page), metrics, and `tollgate top`. Never imports `proxy`.
//! - [`stats`]: per-core counters and latency histograms (written by their core only), read
//!   and merged by `control`.

#![forbid(unsafe_code)]
// No `Mutex`/`RwLock` in the library (clippy.toml): the data path takes no locks. Test code is
// exempt (it is not the data path); so are the binary and the integration tests (Cargo.toml).
#![cfg_attr(not(test), deny(clippy::disallowed_types))]

pub mod cluster;
pub mod config;
pub mod control;
pub mod http;
pub mod identity;
pub mod limit;
pub mod proxy;
pub mod rules;
pub mod runtime;
pub mod sigverify;
pub mod stats;
