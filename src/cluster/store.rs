//! The Redis side of one instance: a connection (re-opened after any failure) with
//! connect, read and write timeouts on everything it sends (AUTH and SELECT included:
//! the crate's handshake is off), and the tick script (`sync.lua`, sent by SHA and
//! loaded again when the server lost it, e.g. after a restart).
//!
//! Owns: the connection and the argument / reply encoding of [`Batch`] and [`Reply`].
//! Must not touch: the cores, the bookkeeping (`limit::cluster::Tracker`).

use std::time::Duration;

use crate::config::ClusterConfig;
use crate::limit::cluster::{Batch, Reply};

/// The tick script; its semantics are `limit::cluster::MemStore::eval`.
pub const SCRIPT: &str = include_str!("sync.lua");

/// Why a tick's call failed (the connection is dropped and opened again next tick).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis: unexpected reply of {got} integers for {keys} keys")]
    Reply { got: usize, keys: usize },
}

pub struct Store {
    /// The server, without credentials or database: those are sent after the timeouts
    /// are set (the crate's own handshake would wait without one on a stopped server).
    client: redis::Client,
    auth: (Option<String>, Option<String>),
    db: i64,
    con: Option<redis::Connection>,
    script: redis::Script,
    connect_timeout: Duration,
    read_timeout: Duration,
    write_timeout: Duration,
}

impl Store {
    /// A store for `cfg.redis_url` (nothing connects yet).
    pub fn new(cfg: &ClusterConfig) -> Result<Store, StoreError> {
        use redis::IntoConnectionInfo;
        let mut info = cfg.redis_url.as_str().into_connection_info()?;
        let auth = (info.redis.username.take(), info.redis.password.take());
        let db = std::mem::take(&mut info.redis.db);
        Ok(Store {
            client: redis::Client::open(info)?,
            auth,
            db,
            con: None,
            script: redis::Script::new(SCRIPT),
            connect_timeout: cfg.connect_timeout,
            read_timeout: cfg.read_timeout,
            write_timeout: cfg.write_timeout,
        })
    }

    /// Whether a connection is open (it was when the last call succeeded).
    pub fn connected(&self) -> bool {
        self.con.is_some()
    }

    /// Opens the connection if none is open.
    fn connection(&mut self) -> Result<(), StoreError> {
        if self.con.is_none() {
            let con = self
                .client
                .get_connection_with_timeout(self.connect_timeout)?;
            con.set_read_timeout(Some(self.read_timeout))?;
            con.set_write_timeout(Some(self.write_timeout))?;
            let mut con = con;
            if let (user, Some(pass)) = &self.auth {
                let mut auth = redis::cmd("AUTH");
                if let Some(u) = user {
                    auth.arg(u);
                }
                auth.arg(pass).query::<()>(&mut con)?;
            }
            if self.db != 0 {
                redis::cmd("SELECT").arg(self.db).query::<()>(&mut con)?;
            }
            self.con = Some(con);
        }
        Ok(())
    }

    /// One tick of instance `inst`: pushes `b`'s deltas, reads the others' counts.
    pub fn call(&mut self, inst: &str, alive_ttl: u64, b: &Batch) -> Result<Reply, StoreError> {
        let r = self.try_call(inst, alive_ttl, b);
        if r.is_err() {
            self.con = None;
        }
        r
    }

    fn try_call(&mut self, inst: &str, alive_ttl: u64, b: &Batch) -> Result<Reply, StoreError> {
        self.connection()?;
        let con = self.con.as_mut().expect("connected");
        let mut inv = self.script.prepare_invoke();
        inv.arg(inst).arg(b.now).arg(alive_ttl).arg(b.keys.len());
        for k in &b.keys {
            inv.arg(&*k.subject)
                .arg(k.coarse.w[0])
                .arg(k.coarse.g[0])
                .arg(k.coarse.w[1])
                .arg(k.coarse.g[1]);
            for counts in &k.counts {
                inv.arg(counts.len());
                for &(sb, v) in counts {
                    inv.arg(sb).arg(v);
                }
            }
        }
        let v: Vec<i64> = inv.invoke(con)?;
        decode(&v, b.keys.len())
    }
}

/// `[alive, sustained_1, burst_1, …]` → [`Reply`].
fn decode(v: &[i64], keys: usize) -> Result<Reply, StoreError> {
    if v.len() != 1 + 2 * keys {
        return Err(StoreError::Reply { got: v.len(), keys });
    }
    let n = |x: i64| x.clamp(0, u32::MAX as i64) as u32;
    Ok(Reply {
        alive: n(v[0]),
        others: v[1..].chunks_exact(2).map(|c| [n(c[0]), n(c[1])]).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn replies_decode_or_fail() {
        let r = decode(&[2, 5, 1, 0, -3], 2).unwrap();
        assert_eq!(r.alive, 2);
        assert_eq!(r.others, vec![[5, 1], [0, 0]]);
        assert!(decode(&[2, 5], 2).is_err());
    }
}
