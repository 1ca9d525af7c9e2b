//! The access log: one JSON line per request, buffered per core, written by one thread.
//!
//! A core appends lines to its own buffer (no lock, no shared atomic per request) and hands a
//! full buffer — or, from housekeeping, one older than `flush_interval` — to the writer thread
//! over a bounded channel with `try_send`. When the writer is behind and the channel is full,
//! the buffer's lines are dropped and counted (`access_log.dropped_lines`): the data path never
//! waits for the disk. The writer appends to the file and reopens it when the path no longer
//! names the file it has open (log rotation by rename or delete), so no signal is needed.
//!
//! Owns: line format, per-core buffers, the writer thread. Must not touch: connections.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::keys::civil_from_days;
use crate::stats::CoreStats;

/// What goes from the cores to the writer.
pub enum Msg {
    Lines(Vec<u8>),
    /// Write what came before, then end (sent once, after every core has stopped).
    Stop,
}

/// The writer thread and the sending end the cores clone.
pub struct Writer {
    pub tx: SyncSender<Msg>,
    thread: JoinHandle<()>,
}

impl Writer {
    /// Opens (creating, appending) `path` and starts the writer thread; `queue` buffers may
    /// wait for it before cores start dropping lines.
    pub fn start(path: &Path, queue: usize) -> std::io::Result<Writer> {
        let file = open(path)?;
        let (tx, rx) = sync_channel(queue.max(1));
        let path = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(path, file, rx))?;
        Ok(Writer { tx, thread })
    }

    /// Writes everything the cores handed over, then stops the thread.
    pub fn finish(self) {
        let _ = self.tx.send(Msg::Stop);
        let _ = self.thread.join();
    }
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// (device, inode) of what `path` names now, if anything.
fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

fn write_loop(path: PathBuf, mut file: File, rx: Receiver<Msg>) {
    let mut ident = file.metadata().ok().map(|m| (m.dev(), m.ino()));
    let mut last_error: Option<Instant> = None;
    while let Ok(msg) = rx.recv() {
        let Msg::Lines(buf) = msg else { break };
        // Rotated (renamed or deleted) since the last write: continue in a new file.
        let now_ident = identity(&path);
        if now_ident.is_none() || now_ident != ident {
            match open(&path) {
                Ok(f) => {
                    file = f;
                    ident = file.metadata().ok().map(|m| (m.dev(), m.ino()));
                }
                Err(e) => log_error(&mut last_error, &path, &e),
            }
        }
        if let Err(e) = file.write_all(&buf) {
            log_error(&mut last_error, &path, &e);
        }
    }
    let _ = file.flush();
}

/// At most one error line per 10 s: a full disk must not flood the log either.
fn log_error(last: &mut Option<Instant>, path: &Path, e: &std::io::Error) {
    if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
        log::error!("access log {}: {e}", path.display());
        *last = Some(Instant::now());
    }
}

/// One core's buffer.
pub struct CoreLog {
    buf: Vec<u8>,
    lines: u64,
    /// When the oldest line in `buf` was added.
    since: Instant,
    cap: usize,
    flush_interval: Duration,
    tx: SyncSender<Msg>,
}

impl CoreLog {
    pub fn new(tx: SyncSender<Msg>, cap: usize, flush_interval: Duration) -> CoreLog {
        CoreLog {
            buf: Vec::with_capacity(cap + 1024),
            lines: 0,
            since: Instant::now(),
            cap,
            flush_interval,
            tx,
        }
    }

    /// Appends one request's line; hands the buffer over when it is full.
    pub fn add(&mut self, e: &Entry<'_>, stats: &CoreStats) {
        if self.buf.is_empty() {
            self.since = Instant::now();
        }
        write_line(&mut self.buf, e);
        self.lines += 1;
        if self.buf.len() >= self.cap {
            self.ship(stats);
        }
    }

    /// Housekeeping: hands over a buffer whose oldest line waited `flush_interval`.
    pub fn tick(&mut self, stats: &CoreStats) {
        if !self.buf.is_empty() && self.since.elapsed() >= self.flush_interval {
            self.ship(stats);
        }
    }

    /// Hands the buffer to the writer, or drops its lines (counted) if the writer is behind.
    pub fn ship(&mut self, stats: &CoreStats) {
        if self.buf.is_empty() {
            return;
        }
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(self.cap + 1024));
        let n = std::mem::take(&mut self.lines);
        match self.tx.try_send(Msg::Lines(full)) {
            Ok(()) => stats.access_log_lines.add(n),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                stats.access_log_dropped.add(n)
            }
        }
    }
}

/// One request as the access log records it.
pub struct Entry<'a> {
    pub time: SystemTime,
    pub core: usize,
    pub client: SocketAddr,
    pub tls: bool,
    pub request_id: &'a str,
    /// Empty for a request whose head could not be parsed.
    pub method: &'a [u8],
    pub target: &'a [u8],
    pub status: u16,
    pub key: Option<&'a [u8]>,
    pub auth: &'a str,
    pub tier: Option<&'a str>,
    /// "admitted", "denied", "shadow_denied" or "unlimited" (method not limited), or "-".
    pub limit: &'a str,
    /// The `[[rules]]` entry that decided (denied, refused, exempted), if one did.
    pub rule: Option<&'a str>,
    /// The request's Content-Length; None when chunked or absent.
    pub request_length: Option<u64>,
    /// Bytes written to the client for this response (head and body).
    pub bytes_sent: u64,
    pub duration: Duration,
}

/// Appends `e` as one JSON object and a newline.
pub fn write_line(out: &mut Vec<u8>, e: &Entry<'_>) {
    out.extend_from_slice(b"{\"time\":\"");
    let since = e.time.duration_since(UNIX_EPOCH).unwrap_or_default();
    put_rfc3339(out, since);
    let _ = write!(
        out,
        "\",\"core\":{},\"client\":\"{}\",\"tls\":{}",
        e.core, e.client, e.tls
    );
    out.extend_from_slice(b",\"request_id\":");
    json_str(out, e.request_id.as_bytes());
    out.extend_from_slice(b",\"method\":");
    json_str(out, e.method);
    out.extend_from_slice(b",\"target\":");
    json_str(out, e.target);
    let _ = write!(out, ",\"status\":{}", e.status);
    out.extend_from_slice(b",\"key\":");
    json_opt(out, e.key);
    out.extend_from_slice(b",\"auth\":");
    json_str(out, e.auth.as_bytes());
    out.extend_from_slice(b",\"tier\":");
    json_opt(out, e.tier.map(str::as_bytes));
    out.extend_from_slice(b",\"limit\":");
    json_str(out, e.limit.as_bytes());
    out.extend_from_slice(b",\"rule\":");
    json_opt(out, e.rule.map(str::as_bytes));
    match e.request_length {
        Some(n) => {
            let _ = write!(out, ",\"request_length\":{n}");
        }
        None => out.extend_from_slice(b",\"request_length\":null"),
    }
    let us = e.duration.as_micros();
    let _ = writeln!(
        out,
        ",\"bytes_sent\":{},\"duration_ms\":{}.{:03}}}",
        e.bytes_sent,
        us / 1000,
        us % 1000
    );
}

fn json_opt(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        Some(v) => json_str(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

/// A JSON string of raw bytes: `"` `\` and control characters escaped; a byte ≥ 0x80 (not
/// valid in a request target or key anyway) as `\u00XX`, so the line is always valid JSON.
fn json_str(out: &mut Vec<u8>, v: &[u8]) {
    out.push(b'"');
    for &b in v {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x20..=0x7E => out.push(b),
            _ => {
                let hex = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(hex[(b >> 4) as usize]);
                out.push(hex[(b & 0xF) as usize]);
            }
        }
    }
    out.push(b'"');
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for a time since the Unix epoch (UTC).
fn put_rfc3339(out: &mut Vec<u8>, since_epoch: Duration) {
    let secs = since_epoch.as_secs();
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        since_epoch.subsec_millis()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>() -> Entry<'a> {
        Entry {
            time: UNIX_EPOCH + Duration::from_millis(1_796_000_523_007),
            core: 1,
            client: "127.0.0.2:40000".parse().unwrap(),
            tls: false,
            request_id: "R1",
            method: b"GET",
            target: b"/b/a\"b\\c?x=1",
            status: 429,
            key: Some(b"AKIAEXAMPLE"),
            auth: "v4",
            tier: Some("premium"),
            limit: "denied",
            rule: Some("lists"),
            request_length: None,
            bytes_sent: 512,
            duration: Duration::from_micros(1_234),
        }
    }

    #[test]
    fn dates_match_the_calendar() {
        for (days, want) in [
            (0, (1970, 1, 1)),
            (59, (1970, 3, 1)),
            (11_016, (2000, 2, 29)),
            (11_017, (2000, 3, 1)),
            (-1, (1969, 12, 31)),
            (20_787, (2026, 11, 30)),
            (47_541, (2100, 3, 1)), // 2100 is not a leap year
        ] {
            assert_eq!(civil_from_days(days), want, "day {days}");
        }
        let mut s = Vec::new();
        put_rfc3339(&mut s, Duration::from_millis(1_796_000_523_007));
        assert_eq!(s, b"2026-11-30T01:02:03.007Z");
    }

    #[test]
    fn a_line_is_one_json_object_with_every_field() {
        let mut out = Vec::new();
        write_line(&mut out, &entry());
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches('\n').count(), 1);
        assert!(text.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(v["time"], "2026-11-30T01:02:03.007Z");
        assert_eq!(v["core"], 1);
        assert_eq!(v["client"], "127.0.0.2:40000");
        assert_eq!(v["tls"], false);
        assert_eq!(v["request_id"], "R1");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["target"], "/b/a\"b\\c?x=1");
        assert_eq!(v["status"], 429);
        assert_eq!(v["key"], "AKIAEXAMPLE");
        assert_eq!(v["auth"], "v4");
        assert_eq!(v["tier"], "premium");
        assert_eq!(v["limit"], "denied");
        assert_eq!(v["rule"], "lists");
        assert_eq!(v["request_length"], serde_json::Value::Null);
        assert_eq!(v["bytes_sent"], 512);
        assert_eq!(v["duration_ms"], 1.234);
        assert_eq!(v.as_object().unwrap().len(), 16);
    }

    #[test]
    fn odd_bytes_stay_valid_json() {
        let mut e = entry();
        e.target = b"/\x01\xff\t";
        e.key = None;
        e.tier = None;
        e.request_length = Some(7);
        let mut out = Vec::new();
        write_line(&mut out, &e);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["target"], "/\u{1}\u{ff}\t");
        assert_eq!(v["key"], serde_json::Value::Null);
        assert_eq!(v["tier"], serde_json::Value::Null);
        assert_eq!(v["request_length"], 7);
    }

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tollgate-alog-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn lines_reach_the_file_and_rotation_reopens_it() {
        let dir = tmp("rotate");
        let path = dir.join("access.log");
        let w = Writer::start(&path, 8).unwrap();
        let stats = CoreStats::default();
        let mut core = CoreLog::new(w.tx.clone(), 1 << 20, Duration::from_secs(3600));
        core.add(&entry(), &stats);
        core.add(&entry(), &stats);
        core.tick(&stats);
        assert_eq!(stats.access_log_lines.get(), 0, "not due: still buffered");
        core.ship(&stats);
        assert_eq!(stats.access_log_lines.get(), 2);
        // Rotate: the writer must notice and start a new file at the same path.
        let t0 = Instant::now();
        while std::fs::read_to_string(&path).unwrap().lines().count() < 2 {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "lines never written"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        std::fs::rename(&path, dir.join("access.log.1")).unwrap();
        core.add(&entry(), &stats);
        core.ship(&stats);
        w.finish();
        let old = std::fs::read_to_string(dir.join("access.log.1")).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert_eq!((old.lines().count(), new.lines().count()), (2, 1));
        for l in old.lines().chain(new.lines()) {
            serde_json::from_str::<serde_json::Value>(l).unwrap();
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        // No writer thread: a channel of one slot that nobody reads.
        let (tx, _rx) = sync_channel(1);
        let stats = CoreStats::default();
        let mut core = CoreLog::new(tx, 100, Duration::from_secs(3600));
        for _ in 0..3 {
            core.add(&entry(), &stats); // each line > 100 bytes: shipped at once
        }
        assert_eq!(stats.access_log_lines.get(), 1);
        assert_eq!(stats.access_log_dropped.get(), 2);
    }

    #[test]
    fn due_buffers_are_shipped_by_the_tick() {
        let (tx, rx) = sync_channel(4);
        let stats = CoreStats::default();
        let mut core = CoreLog::new(tx, 1 << 20, Duration::ZERO);
        core.add(&entry(), &stats);
        core.tick(&stats);
        match rx.try_recv() {
            Ok(Msg::Lines(b)) => assert_eq!(b.iter().filter(|&&c| c == b'\n').count(), 1),
            _ => panic!("nothing shipped"),
        }
        core.tick(&stats);
        assert!(rx.try_recv().is_err(), "an empty buffer is not shipped");
    }
}
