//! Per-core I/O buffers and the few ways the data path reads and writes with them.
//!
//! Owns: [`BufPool`] (a core's free lists of 64 KiB buffers and of a few large ones for
//! bodies), [`PoolBuf`] (a pooled buffer that
//! goes back to its pool when dropped, on every path), and the socket helpers every
//! connection uses: [`read_append`] (one read into the buffer's *spare capacity*, so bytes
//! that arrive in pieces accumulate behind what is already buffered instead of replacing it),
//! [`write_range`] and [`flush`], each bounded by a deadline (`deadline::with_deadline`: a
//! slot in the core's deadline table, no timer per operation) and reporting a small [`IoEnd`].
//!
//! Must not touch: HTTP framing, limits, upstream state. No locks: a pool belongs to one
//! core and is shared only between that core's tasks (`Rc`).
//!
//! Owned-buffer I/O hands the `Vec` to the kernel; when a deadline cancels the operation the
//! buffer stays with the cancelled operation. The helpers then leave an empty buffer of the
//! same capacity in its place — a cancelled read is always the end of that connection, so the
//! bytes it held are not needed.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut, Range};
use std::rc::Rc;
use std::time::Instant;

use monoio::buf::{IoBuf, IoBufMut};

use super::deadline::with_deadline;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

/// How a read or write ended when it did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoEnd {
    /// The peer closed its side (a read returned 0).
    Closed,
    /// The socket failed (reset, broken pipe, TLS error).
    Failed,
    /// The deadline passed first.
    TimedOut,
}

/// A core's free list of fixed-size I/O buffers: steady state allocates nothing.
#[derive(Clone)]
pub struct BufPool(Rc<RefCell<Free>>);

struct Free {
    bufs: Vec<Vec<u8>>,
    size: usize,
    max_free: usize,
    /// Buffers of at least [`BufPool::LARGE`] bytes (body relay), at most `MAX_FREE_LARGE`.
    large: Vec<Vec<u8>>,
}

/// Large buffers a pool keeps for reuse (each body relay in progress holds two).
const MAX_FREE_LARGE: usize = 8;

impl BufPool {
    /// Buffer size for bodies and upstream heads.
    pub const SIZE: usize = 64 * 1024;
    /// Buffer size for relaying a body that does not fit in one [`SIZE`](Self::SIZE) buffer:
    /// fewer, larger reads and writes per byte, each write waking the reader once (64 MiB
    /// GET: CPU per GB 0.95 s with 64 KiB pieces, 0.47 s with 1 MiB; 2 MiB is no better).
    /// A body being relayed (request or response) holds two of them.
    pub const LARGE: usize = 1024 * 1024;

    pub fn new(size: usize, max_free: usize) -> BufPool {
        BufPool(Rc::new(RefCell::new(Free {
            bufs: Vec::new(),
            size,
            max_free,
            large: Vec::new(),
        })))
    }

    /// An empty buffer of at least the pool's size, returned to the pool when dropped.
    pub fn get(&self) -> PoolBuf {
        let buf = {
            let mut f = self.0.borrow_mut();
            let size = f.size;
            f.bufs.pop().unwrap_or_else(|| Vec::with_capacity(size))
        };
        PoolBuf {
            buf,
            pool: self.clone(),
        }
    }

    /// An empty buffer of [`LARGE`](Self::LARGE) bytes (reused), returned to the pool
    /// when dropped.
    pub fn get_large(&self) -> PoolBuf {
        let popped = self.0.borrow_mut().large.pop();
        PoolBuf {
            buf: popped.unwrap_or_else(|| Vec::with_capacity(Self::LARGE)),
            pool: self.clone(),
        }
    }

    fn put(&self, mut b: Vec<u8>) {
        let mut f = self.0.borrow_mut();
        b.clear();
        if b.capacity() >= Self::LARGE {
            if f.large.len() < MAX_FREE_LARGE {
                f.large.push(b);
            }
        } else if b.capacity() >= f.size && f.bufs.len() < f.max_free {
            f.bufs.push(b);
        }
    }

    /// Buffers waiting in the free list (for tests).
    pub fn free_count(&self) -> usize {
        self.0.borrow().bufs.len()
    }
}

/// A buffer from a [`BufPool`]; derefs to its `Vec` and goes back to the pool on drop.
pub struct PoolBuf {
    buf: Vec<u8>,
    pool: BufPool,
}

impl Deref for PoolBuf {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.buf
    }
}

impl DerefMut for PoolBuf {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }
}

impl Drop for PoolBuf {
    fn drop(&mut self) {
        self.pool.put(std::mem::take(&mut self.buf));
    }
}

/// Reads once from `io`, appending to the spare capacity of `buf` (which is grown by
/// `grow` bytes first when it is full). Returns the bytes read, never `Ok(0)`.
pub async fn read_append<R: AsyncReadRent>(
    io: &mut R,
    buf: &mut Vec<u8>,
    grow: usize,
    deadline: Instant,
) -> Result<usize, IoEnd> {
    if buf.len() == buf.capacity() {
        buf.reserve(grow.max(1));
    }
    let cap = buf.capacity();
    let start = buf.len();
    let owned = std::mem::take(buf).slice_mut(start..);
    // Pinned here and passed by reference: moving an operation's future into the wrapper
    // copied up to 800 bytes per read (callgrind: memcpy was the largest cost of a timeout).
    let op = std::pin::pin!(io.read(owned));
    match with_deadline(deadline, op).await {
        Ok((r, s)) => {
            *buf = s.into_inner();
            match r {
                Ok(0) => Err(IoEnd::Closed),
                Ok(n) => Ok(n),
                Err(_) => Err(IoEnd::Failed),
            }
        }
        Err(_) => {
            *buf = Vec::with_capacity(cap);
            Err(IoEnd::TimedOut)
        }
    }
}

/// Writes `buf[range]` completely.
pub async fn write_range<W: AsyncWriteRent>(
    io: &mut W,
    buf: &mut Vec<u8>,
    range: Range<usize>,
    deadline: Instant,
) -> Result<(), IoEnd> {
    if range.is_empty() {
        return Ok(());
    }
    let cap = buf.capacity();
    let owned = std::mem::take(buf).slice(range);
    let op = std::pin::pin!(io.write_all(owned));
    match with_deadline(deadline, op).await {
        Ok((r, s)) => {
            *buf = s.into_inner();
            r.map(|_| ()).map_err(|_| IoEnd::Failed)
        }
        Err(_) => {
            *buf = Vec::with_capacity(cap);
            Err(IoEnd::TimedOut)
        }
    }
}

/// Writes all of `buf`.
pub async fn write_all<W: AsyncWriteRent>(
    io: &mut W,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Result<(), IoEnd> {
    let n = buf.len();
    write_range(io, buf, 0..n, deadline).await
}

/// Flushes `io` (TLS streams hold written records until then).
pub async fn flush<W: AsyncWriteRent>(io: &mut W, deadline: Instant) -> Result<(), IoEnd> {
    let op = std::pin::pin!(io.flush());
    match with_deadline(deadline, op).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(IoEnd::Failed),
        Err(_) => Err(IoEnd::TimedOut),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    #[test]
    fn pool_buffers_come_back_on_drop_and_small_ones_are_not_kept() {
        let pool = BufPool::new(1024, 2);
        {
            let mut a = pool.get();
            let _b = pool.get();
            let _c = pool.get();
            a.extend_from_slice(b"data");
            assert_eq!(pool.free_count(), 0);
        }
        assert_eq!(pool.free_count(), 2, "capped at max_free");
        let a = pool.get();
        assert!(a.is_empty(), "a reused buffer comes back cleared");
        assert!(a.capacity() >= 1024);
        drop(a);
        let mut small = pool.get();
        small.buf = Vec::with_capacity(10); // a buffer lost to a cancelled op, replaced small
        drop(small);
        assert_eq!(
            pool.free_count(),
            1,
            "a buffer smaller than the pool's is not kept"
        );
    }

    #[test]
    fn large_buffers_are_reused_apart_from_the_small_ones_and_capped() {
        let pool = BufPool::new(1024, 4);
        let held: Vec<PoolBuf> = (0..MAX_FREE_LARGE + 2).map(|_| pool.get_large()).collect();
        assert!(
            held.iter()
                .all(|b| b.capacity() >= BufPool::LARGE && b.is_empty())
        );
        drop(held);
        assert_eq!(
            pool.free_count(),
            0,
            "large buffers do not fill the small list"
        );
        assert_eq!(pool.0.borrow().large.len(), MAX_FREE_LARGE, "capped");
        let mut a = pool.get_large();
        a.extend_from_slice(b"piece");
        drop(a);
        let a = pool.get_large();
        assert!(a.is_empty(), "a reused large buffer comes back cleared");
        assert_eq!(
            pool.0.borrow().large.len(),
            MAX_FREE_LARGE - 1,
            "it was reused"
        );
        let small = pool.get();
        assert!(
            small.capacity() < BufPool::LARGE,
            "a small request gets a small buffer"
        );
    }

    /// The bug this module exists for: every read into a `Vec` used to *replace* what was
    /// buffered, so a head arriving in two reads was parsed from its last piece only.
    #[test]
    fn reads_append_behind_buffered_bytes() {
        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            let writer = std::thread::spawn(move || {
                let (mut s, _) = l.accept().unwrap();
                for piece in [&b"GET / HT"[..], b"TP/1.1\r\n", b"Host: a\r\n\r\n"] {
                    s.write_all(piece).unwrap();
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
            let mut io = monoio::net::TcpStream::connect(addr).await.unwrap();
            let mut buf = Vec::with_capacity(4);
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut reads = 0;
            loop {
                match read_append(&mut io, &mut buf, 4, deadline).await {
                    Ok(_) => reads += 1,
                    Err(e) => {
                        assert_eq!(e, IoEnd::Closed);
                        break;
                    }
                }
            }
            writer.join().unwrap();
            assert_eq!(&buf[..], b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
            assert!(reads >= 3, "the pieces came in separate reads ({reads})");
        });
    }
}
