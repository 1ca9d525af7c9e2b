//! Deadlines for a core's socket operations without a timer per operation.
//!
//! Every read and write of the data path is bounded by a deadline (`bufio`). With monoio's
//! `timeout_at` each of them had its own timer: a 640-byte `Sleep` built, entered into the
//! runtime's timer wheel and taken out again — measured at saturation as 6.6 % of the CPU
//! per request (four or five operations per request; `bench/results/2026-12-01-deadlines.md`).
//! Here an operation's deadline is one slot of its core's [`Deadlines`] table (deadline,
//! waker), armed when the operation first has to wait and freed when it ends. One sweeper
//! task per core ([`sweep`]) sleeps until the earliest armed deadline, wakes the operations
//! whose deadline has passed and plans its next wake-up from the slots still armed.
//! Operations end long before their deadlines, so it mostly wakes once per timeout period,
//! finds nothing due and sleeps again; arming a deadline earlier than its plan wakes it to
//! plan again.
//!
//! Owns: the thread's table (installed by a worker for its lifetime, [`Installed`]), the
//! sweeper, and [`with_deadline`], the one way the data path bounds an operation. Without an
//! installed table (unit tests, other runtimes) `with_deadline` falls back to monoio's
//! `timeout_at`. Must not touch: sockets, buffers, other cores (a table is its own core's:
//! no locks, no atomics). Table logic takes `now` as a parameter ([`Deadlines::expire`]).
//!
//! Precision: a due operation is woken at its deadline, or [`MIN_SWEEP_GAP`] after the
//! previous sweep if that is later (sweeps are at least that far apart, so a table whose
//! connections time out at many different instants is not scanned once per expiry). An
//! operation polled while waiting after its deadline ends then, whatever the sweeper does
//! (one clock read per poll that finds the operation waiting).

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// Least time between two sweeps of a table.
pub const MIN_SWEEP_GAP: Duration = Duration::from_millis(5);

/// An operation's deadline passed before it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Free,
    Armed,
    Fired,
}

struct Slot {
    deadline: Instant,
    waker: Option<Waker>,
    state: State,
}

/// One core's armed deadlines: a slab of slots with a free list.
#[derive(Default)]
pub struct Deadlines {
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// No armed deadline is earlier than this (None: nothing armed since the last sweep).
    next: Option<Instant>,
    /// The sweeper, waiting; woken when `next` moves earlier.
    sweeper: Option<Waker>,
    /// `next` moved earlier since the sweeper planned.
    replan: bool,
}

impl Deadlines {
    /// Arms a slot for an operation that must end by `deadline`; `waker` is woken if it
    /// does not.
    pub fn arm(&mut self, deadline: Instant, waker: &Waker) -> u32 {
        let slot = Slot {
            deadline,
            waker: Some(waker.clone()),
            state: State::Armed,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        if self.next.is_none_or(|n| deadline < n) {
            self.next = Some(deadline);
            self.replan = true;
            if let Some(s) = &self.sweeper {
                s.wake_by_ref();
            }
        }
        i
    }

    /// Keeps the waker of armed slot `i` current (a task polled with another waker).
    pub fn refresh(&mut self, i: u32, waker: &Waker) {
        let s = &mut self.slots[i as usize];
        if !s.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            s.waker = Some(waker.clone());
        }
    }

    /// Whether slot `i`'s deadline has passed (a sweep found it due).
    pub fn fired(&self, i: u32) -> bool {
        self.slots[i as usize].state == State::Fired
    }

    /// Frees slot `i` (the operation ended, or was dropped).
    pub fn release(&mut self, i: u32) {
        let s = &mut self.slots[i as usize];
        s.state = State::Free;
        s.waker = None;
        self.free.push(i);
    }

    /// Wakes every armed slot due at `now` (marking it fired) and plans the next sweep:
    /// the earliest deadline still armed, also returned.
    pub fn expire(&mut self, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        for s in self.slots.iter_mut().filter(|s| s.state == State::Armed) {
            if s.deadline <= now {
                s.state = State::Fired;
                if let Some(w) = s.waker.take() {
                    w.wake();
                }
            } else if next.is_none_or(|n| s.deadline < n) {
                next = Some(s.deadline);
            }
        }
        self.next = next;
        next
    }

    /// Slots armed or fired and not yet released.
    #[cfg(test)]
    pub fn in_use(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

thread_local! {
    static TABLE: RefCell<Option<Deadlines>> = const { RefCell::new(None) };
}

fn with_table<T>(f: impl FnOnce(&mut Deadlines) -> T) -> Option<T> {
    TABLE.with(|t| t.borrow_mut().as_mut().map(f))
}

/// This thread's table, in use while the value lives; [`sweep`] must run on the same
/// runtime. Dropping it removes the table (and the wakers it holds).
pub struct Installed(());

impl Installed {
    pub fn new() -> Installed {
        TABLE.with(|t| *t.borrow_mut() = Some(Deadlines::default()));
        Installed(())
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        TABLE.with(|t| t.borrow_mut().take());
    }
}

/// The sweeper of this thread's table (see the module docs); runs until the table is
/// removed.
pub async fn sweep() {
    let mut last: Option<Instant> = None;
    loop {
        let Some(plan) = with_table(|t| {
            t.replan = false;
            t.next
        }) else {
            return;
        };
        let due = match plan {
            Some(at) => {
                let at = last.map_or(at, |l| at.max(l + MIN_SWEEP_GAP));
                wait(Some(at)).await
            }
            None => wait(None).await,
        };
        if due {
            let now = Instant::now();
            last = Some(now);
            with_table(|t| t.expire(now));
        }
    }
}

/// Until `at` (true) or until the table asks for a new plan or is gone (false).
async fn wait(at: Option<Instant>) -> bool {
    let mut sleep = at.map(|at| Box::pin(monoio::time::sleep_until(at.into())));
    poll_fn(|cx| {
        let asked = with_table(|t| {
            if t.replan {
                return true;
            }
            if !t.sweeper.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                t.sweeper = Some(cx.waker().clone());
            }
            false
        });
        match asked {
            None | Some(true) => Poll::Ready(false),
            Some(false) => match &mut sleep {
                Some(s) => s.as_mut().poll(cx).map(|_| true),
                None => Poll::Pending,
            },
        }
    })
    .await
}

/// A slot of this thread's table, released when dropped.
struct Armed(Option<u32>);

impl Drop for Armed {
    fn drop(&mut self) {
        if let Some(i) = self.0 {
            with_table(|t| t.release(i));
        }
    }
}

/// Runs `fut` until it ends or `deadline` passes (then it is dropped, cancelling its
/// operation). An operation that ends in the same turn its deadline fires still counts.
pub async fn with_deadline<F: Future>(deadline: Instant, fut: F) -> Result<F::Output, TimedOut> {
    if TABLE.with(|t| t.borrow().is_none()) {
        // Boxed: keeps monoio's 640-byte timer out of this future on the fast path.
        return Box::pin(monoio::time::timeout_at(deadline.into(), fut))
            .await
            .map_err(|_| TimedOut);
    }
    let mut fut = std::pin::pin!(fut);
    let mut slot = Armed(None);
    poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        // A deadline that has passed ends the operation at once, as monoio's timers do,
        // not at the next sweep: a caller that re-polls a waiting operation on a timer of its
        // own (the stalled-upload probe) would otherwise spin until then, and a runtime that
        // never parks never sweeps.
        if deadline <= Instant::now() {
            return Poll::Ready(Err(TimedOut));
        }
        let fired = with_table(|t| match slot.0 {
            Some(i) if t.fired(i) => true,
            Some(i) => {
                t.refresh(i, cx.waker());
                false
            }
            None => {
                slot.0 = Some(t.arm(deadline, cx.waker()));
                false
            }
        });
        match fired {
            Some(false) => Poll::Pending,
            // Fired, or the table is gone (the worker is ending): the deadline is over.
            _ => Poll::Ready(Err(TimedOut)),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn counter() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    /// Due slots are woken once and marked fired; the plan is the earliest deadline left;
    /// released slots are reused and never fire.
    #[test]
    fn expire_wakes_due_slots_and_plans_the_earliest_left() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut d = Deadlines::default();
        let (a, wa) = counter();
        let (b, wb) = counter();
        let (c, wc) = counter();
        let ia = d.arm(ms(10), &wa);
        let ib = d.arm(ms(30), &wb);
        let ic = d.arm(ms(20), &wc);
        assert_eq!(d.next, Some(ms(10)), "the earliest armed");
        d.release(ic);
        assert_eq!(d.expire(ms(5)), Some(ms(10)), "nothing due yet");
        assert_eq!(d.expire(ms(15)), Some(ms(30)), "a fired; c was released");
        assert!(d.fired(ia) && !d.fired(ib));
        assert_eq!(a.0.load(Ordering::SeqCst), 1);
        assert_eq!(c.0.load(Ordering::SeqCst), 0, "a released slot never fires");
        assert_eq!(d.expire(ms(16)), Some(ms(30)));
        assert_eq!(a.0.load(Ordering::SeqCst), 1, "woken once");
        d.release(ia);
        let again = d.arm(ms(100), &wa);
        assert!(again == ia || again == ic, "a freed slot is reused");
        assert_eq!(d.in_use(), 2);
        assert_eq!(d.expire(ms(40)), Some(ms(100)));
        assert_eq!(b.0.load(Ordering::SeqCst), 1);
        d.release(ib);
        d.release(again);
        assert_eq!((d.expire(ms(200)), d.in_use()), (None, 0));
    }

    /// Arming a deadline earlier than the plan asks the sweeper to plan again; a later one
    /// does not wake it.
    #[test]
    fn an_earlier_deadline_wakes_the_sweeper() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        let (s, ws) = counter();
        let (_, w) = counter();
        d.sweeper = Some(ws);
        d.arm(t0 + Duration::from_secs(60), &w);
        assert_eq!(s.0.load(Ordering::SeqCst), 1, "nothing was planned");
        d.replan = false;
        d.arm(t0 + Duration::from_secs(90), &w);
        assert!(!d.replan);
        assert_eq!(s.0.load(Ordering::SeqCst), 1, "later than the plan");
        d.arm(t0 + Duration::from_secs(1), &w);
        assert!(d.replan);
        assert_eq!(s.0.load(Ordering::SeqCst), 2);
        assert_eq!(d.next, Some(t0 + Duration::from_secs(1)));
    }

    fn runtime() -> monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>> {
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
    }

    /// With the table installed and its sweeper running: an operation that does not end
    /// times out at its deadline (not before), one that ends in time is not cut, and every
    /// slot is freed either way (also for an operation dropped while it waits).
    #[test]
    fn operations_time_out_at_their_deadline_through_the_sweeper() {
        runtime().block_on(async {
            let _table = Installed::new();
            monoio::spawn(sweep());
            let t0 = Instant::now();
            let never = std::future::pending::<()>();
            let r = with_deadline(t0 + Duration::from_millis(60), never).await;
            let took = t0.elapsed();
            assert_eq!(r, Err(TimedOut));
            assert!(took >= Duration::from_millis(60), "{took:?}");
            assert!(took < Duration::from_millis(500), "{took:?}");
            let soon = monoio::time::sleep(Duration::from_millis(20));
            let r = with_deadline(Instant::now() + Duration::from_secs(5), soon).await;
            assert_eq!(r, Ok(()));
            // A short deadline armed while a long one is planned is still kept; the long
            // one, dropped while it waits, frees its slot.
            monoio::spawn(async {
                monoio::select! {
                    _ = with_deadline(Instant::now() + Duration::from_secs(30), std::future::pending::<()>()) => {
                        panic!("cannot end");
                    }
                    _ = monoio::time::sleep(Duration::from_millis(150)) => {}
                }
            });
            monoio::time::sleep(Duration::from_millis(10)).await;
            assert_eq!(with_table(|t| t.in_use()), Some(1), "the long one is armed");
            let t1 = Instant::now();
            let r = with_deadline(t1 + Duration::from_millis(40), std::future::pending::<()>());
            assert_eq!(r.await, Err(TimedOut));
            assert!(t1.elapsed() < Duration::from_millis(140), "{:?}", t1.elapsed());
            monoio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(with_table(|t| t.in_use()), Some(0), "every slot freed");
        });
    }

    /// A deadline already past when the operation waits ends it at once, with no sweep
    /// (none runs here), also for an operation armed before its deadline and polled again
    /// after it: a loop that re-polls an operation on a timer of its own (the
    /// stalled-upload probe) must not spin waiting for a sweep.
    #[test]
    fn a_deadline_already_past_ends_the_operation_at_once() {
        runtime().block_on(async {
            let _table = Installed::new();
            let past = Instant::now() - Duration::from_millis(1);
            let r = monoio::select! {
                r = with_deadline(past, std::future::pending::<()>()) => Some(r),
                _ = monoio::time::sleep(Duration::from_secs(2)) => None,
            };
            assert_eq!(r, Some(Err(TimedOut)));
            assert_eq!(with_table(|t| t.in_use()), Some(0), "nothing armed");
            let ready = with_deadline(past, std::future::ready(7)).await;
            assert_eq!(ready, Ok(7), "an operation that is done is not cut");
            let soon = Instant::now() + Duration::from_millis(30);
            let mut op = std::pin::pin!(with_deadline(soon, std::future::pending::<()>()));
            let probes = std::cell::Cell::new(0);
            let r = loop {
                monoio::select! {
                    r = &mut op => break Some(r),
                    _ = monoio::time::sleep(Duration::from_millis(5)) => {
                        probes.set(probes.get() + 1);
                        if probes.get() > 400 {
                            break None;
                        }
                    }
                }
            };
            assert_eq!(r, Some(Err(TimedOut)), "after {} probes", probes.get());
        });
    }

    /// Without an installed table the fallback (monoio's own timer) keeps the same meaning.
    #[test]
    fn without_a_table_monoio_times_the_operation() {
        runtime().block_on(async {
            let t0 = Instant::now();
            let r =
                with_deadline(t0 + Duration::from_millis(30), std::future::pending::<()>()).await;
            assert_eq!(r, Err(TimedOut));
            assert!(t0.elapsed() >= Duration::from_millis(30));
        });
    }
}
