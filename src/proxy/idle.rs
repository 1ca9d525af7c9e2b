//! Watched idle connections: while a keep-alive upstream connection waits in a core's pool,
//! a task of that core owns it and waits for it to become readable. An idle connection
//! that becomes readable was closed by the upstream or sent bytes that answer no request;
//! either way the task closes it at once, so it is never handed out and never lingers
//! half-closed in the pool. Taking the connection back wakes the task, which drops its
//! wait and hands the connection over within the same turn of the core's event loop: the
//! wait (an io_uring poll) and its cancellation ride on submissions the ring makes anyway,
//! so a reused connection costs no system call of its own (the check it replaces was a
//! `recv(MSG_PEEK)` per request).
//!
//! Owns: [`Watched`] (the pool's handle) and its watcher task. Must not touch: node state,
//! stats, expiry (the pool in `upstream` decides what to keep and for how long).

use std::cell::Cell;
use std::future::{Future, poll_fn};
use std::rc::Rc;
use std::task::{Poll, Waker};

/// A connection that can say when it has something to read.
pub trait Watchable: 'static {
    /// Completes when bytes (or the end of the stream, or an error) wait to be read.
    /// Consumes nothing; dropping the future cancels the wait.
    fn readable(&self) -> impl Future<Output = ()> + '_;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// In the pool, watched.
    Idle,
    /// A request asked for it; the watcher is to hand it over.
    Wanted,
    /// Handed over: in `Shared::conn` for the taker.
    Handed,
    /// Became readable while idle: closed.
    Dirty,
    /// The pool dropped it: closed.
    Gone,
}

struct Shared<T> {
    state: Cell<State>,
    conn: Cell<Option<T>>,
    watcher: Cell<Option<Waker>>,
    taker: Cell<Option<Waker>>,
}

/// The pool's handle on a watched idle connection. Dropping it closes the connection.
pub struct Watched<T: Watchable> {
    shared: Rc<Shared<T>>,
}

impl<T: Watchable> Watched<T> {
    /// Hands `conn` to a new watcher task on this core (inside a monoio runtime).
    pub fn new(conn: T) -> Watched<T> {
        let shared = Rc::new(Shared {
            state: Cell::new(State::Idle),
            conn: Cell::new(None),
            watcher: Cell::new(None),
            taker: Cell::new(None),
        });
        monoio::spawn(watch(conn, shared.clone()));
        Watched { shared }
    }

    /// Whether the connection became readable while idle (and is closed).
    pub fn is_dirty(&self) -> bool {
        self.shared.state.get() == State::Dirty
    }

    /// The connection back, or `None` if it became readable while idle.
    pub async fn take(self) -> Option<T> {
        let shared = self.shared.clone();
        if shared.state.get() == State::Idle {
            shared.state.set(State::Wanted);
            wake(&shared.watcher);
        }
        drop(self);
        poll_fn(|cx| match shared.state.get() {
            State::Handed => Poll::Ready(shared.conn.take()),
            State::Dirty | State::Gone => Poll::Ready(None),
            State::Idle | State::Wanted => {
                shared.taker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }
}

impl<T: Watchable> Drop for Watched<T> {
    fn drop(&mut self) {
        if self.shared.state.get() == State::Idle {
            self.shared.state.set(State::Gone);
            wake(&self.shared.watcher);
        }
    }
}

fn wake(slot: &Cell<Option<Waker>>) {
    if let Some(w) = slot.take() {
        w.wake();
    }
}

/// The watcher task: waits for readability or for the pool's word, whichever comes first
/// (readability wins a tie: a connection with bytes waiting is never handed out).
async fn watch<T: Watchable>(conn: T, shared: Rc<Shared<T>>) {
    let fired = shared.state.get() == State::Idle && {
        let readable = conn.readable();
        let asked = poll_fn(|cx| {
            if shared.state.get() == State::Idle {
                shared.watcher.set(Some(cx.waker().clone()));
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        });
        monoio::select! {
            biased;
            _ = readable => true,
            _ = asked => false,
        }
    };
    let next = match shared.state.get() {
        State::Wanted if !fired => {
            shared.conn.set(Some(conn));
            State::Handed
        }
        State::Idle | State::Wanted => State::Dirty,
        other => other,
    };
    shared.state.set(next);
    wake(&shared.taker);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
    use monoio::net::{TcpListener, TcpStream};

    use super::*;

    struct Conn(TcpStream);

    impl Watchable for Conn {
        async fn readable(&self) {
            let _ = self.0.readable(false).await;
        }
    }

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (c, s) = monoio::join!(TcpStream::connect(addr), l.accept());
        (c.unwrap(), s.unwrap().0)
    }

    /// Turns the loop until `done` (bounded: I/O completions, not time, decide the outcome).
    async fn until(done: impl Fn() -> bool) -> bool {
        for _ in 0..2000 {
            if done() {
                return true;
            }
            monoio::time::sleep(Duration::from_millis(1)).await;
        }
        done()
    }

    /// Reads until the peer closes; true if it did, with a FIN or (when it closed with
    /// bytes unread) a reset; false on timeout or data.
    async fn sees_close(s: &mut TcpStream) -> bool {
        let read = s.read(vec![0u8; 64]);
        matches!(
            monoio::time::timeout(Duration::from_secs(2), read).await,
            Ok((Ok(0) | Err(_), _))
        )
    }

    fn run(f: impl Future<Output = ()>) {
        monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(f);
    }

    #[test]
    fn a_quiet_connection_comes_back_and_still_works() {
        run(async {
            let (ours, mut peer) = pair().await;
            let w = Watched::new(Conn(ours));
            monoio::time::sleep(Duration::from_millis(5)).await;
            assert!(!w.is_dirty());
            let Conn(mut ours) = w.take().await.expect("clean connection handed back");
            let (r, _) = ours.write_all(b"ping").await;
            r.unwrap();
            let (r, buf) = peer.read(vec![0u8; 16]).await;
            assert_eq!(&buf[..r.unwrap()], b"ping");
        });
    }

    #[test]
    fn taken_in_the_same_turn_it_was_pooled() {
        run(async {
            let (ours, _peer) = pair().await;
            let w = Watched::new(Conn(ours));
            assert!(w.take().await.is_some());
        });
    }

    #[test]
    fn bytes_that_answer_no_request_close_it() {
        run(async {
            let (ours, mut peer) = pair().await;
            let w = Watched::new(Conn(ours));
            let (r, _) = peer
                .write_all(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
                .await;
            r.unwrap();
            assert!(
                until(|| w.is_dirty()).await,
                "readable idle connection flagged"
            );
            assert!(sees_close(&mut peer).await, "and closed at once");
            assert!(w.take().await.is_none(), "never handed out");
        });
    }

    #[test]
    fn an_upstream_close_closes_our_side_too() {
        run(async {
            let (ours, peer) = pair().await;
            let w = Watched::new(Conn(ours));
            drop(peer);
            assert!(until(|| w.is_dirty()).await, "FIN while idle flags it");
            assert!(w.take().await.is_none());
        });
    }

    #[test]
    fn dropping_the_handle_closes_the_connection() {
        run(async {
            let (ours, mut peer) = pair().await;
            let w = Watched::new(Conn(ours));
            monoio::time::sleep(Duration::from_millis(2)).await;
            drop(w);
            assert!(sees_close(&mut peer).await);
        });
    }

    #[test]
    fn readable_when_pooled_is_never_handed_out() {
        run(async {
            let (ours, mut peer) = pair().await;
            let (r, _) = peer.write_all(b"x").await;
            r.unwrap();
            monoio::time::sleep(Duration::from_millis(5)).await;
            // Bytes wait before the watcher's first poll: its poll completes at once.
            let w = Watched::new(Conn(ours));
            monoio::time::sleep(Duration::from_millis(5)).await;
            assert!(w.take().await.is_none());
        });
    }
}
