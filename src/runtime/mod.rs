//! Worker threads: one OS thread per configured core, pinned with `core_affinity`,
//! each running its own monoio runtime (io_uring, or the epoll driver where io_uring
//! is unavailable or `MONOIO_FORCE_LEGACY_DRIVER=1`), plus listener binding with
//! explicit `SO_REUSEPORT` and the cross-core mesh (`mesh`, `msg`).
//!
//! Owns: threads, runtimes, listener sockets, rings. Must not touch: HTTP, limits,
//! config parsing. It knows messages, not requests.

pub mod mesh;
pub mod msg;

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::thread::JoinHandle;

use monoio::{FusionDriver, RuntimeBuilder};

pub use mesh::{ControlHandle, CoreMesh};

/// Which I/O driver a worker ended up with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    IoUring,
    Epoll,
}

impl Driver {
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::IoUring => "io_uring",
            Driver::Epoll => "epoll",
        }
    }
}

/// What a worker thread receives.
pub struct WorkerInit {
    pub index: usize,
    pub mesh: CoreMesh,
    /// This worker's listeners (plain, then TLS), one per configured address.
    pub listeners: Vec<TcpListener>,
    pub tls_listeners: Vec<TcpListener>,
    pub driver: Driver,
}

/// Binds one `SO_REUSEPORT` listener per worker for every address.
///
/// Before binding, each address with a fixed port is probed *without* `SO_REUSEPORT`:
/// if that bind fails the port is held by another process (maybe another tollgate,
/// which would otherwise silently get half of the connections), and we refuse to start.
/// Port 0 picks a free port once; every worker then binds that same port.
pub fn bind_listeners(addrs: &[SocketAddr], workers: usize) -> io::Result<Vec<Vec<TcpListener>>> {
    let mut per_worker: Vec<Vec<TcpListener>> = (0..workers).map(|_| Vec::new()).collect();
    for addr in addrs {
        if addr.port() != 0 {
            let probe = new_socket(addr, false)?;
            if let Err(e) = probe.bind(&(*addr).into()) {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot listen on {addr}: {e} (is another process using it?)"),
                ));
            }
            drop(probe);
        }
        let mut bound = *addr;
        for slot in per_worker.iter_mut() {
            let sock = new_socket(&bound, true)?;
            sock.bind(&bound.into())
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {bound}: {e}")))?;
            sock.listen(4096)?;
            let l: TcpListener = sock.into();
            if bound.port() == 0 {
                bound = l.local_addr()?;
            }
            slot.push(l);
        }
    }
    Ok(per_worker)
}

fn new_socket(addr: &SocketAddr, reuse_port: bool) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(
        Domain::for_address(*addr),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(reuse_port)?;
    sock.set_nonblocking(true)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    Ok(sock)
}

/// File descriptors kept back from client connections: listeners, rings, the admin API,
/// health probes, the access log, logging.
const FD_RESERVE: u64 = 64;

/// How many client connections each of `workers` workers can hold without running out of
/// file descriptors, counting one upstream connection per client connection: the soft
/// open-file limit is first raised to the hard one. `usize::MAX` when there is no limit.
pub fn connection_budget(workers: usize) -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return usize::MAX;
    };
    let limit = if hard > soft && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    let per_worker = limit.saturating_sub(FD_RESERVE) / (2 * workers.max(1) as u64);
    usize::try_from(per_worker).unwrap_or(usize::MAX).max(1)
}

/// Spawns the worker threads; `run` builds each worker's future on its own thread.
pub fn spawn_workers<F, Fut>(
    inits: Vec<(CoreMesh, Vec<TcpListener>, Vec<TcpListener>)>,
    pin: bool,
    run: F,
) -> io::Result<Vec<JoinHandle<()>>>
where
    F: Fn(WorkerInit) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let cores = if pin {
        core_affinity::get_core_ids().unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut handles = Vec::new();
    for (index, (mesh, listeners, tls_listeners)) in inits.into_iter().enumerate() {
        let run = run.clone();
        let core = if cores.is_empty() {
            None
        } else {
            Some(cores[index % cores.len()])
        };
        let h = std::thread::Builder::new()
            .name(format!("tollgate-w{index}"))
            .spawn(move || {
                if let Some(core) = core {
                    if !core_affinity::set_for_current(core) {
                        log::warn!("worker {index}: could not pin to core {}", core.id);
                    }
                }
                let driver = if monoio::utils::detect_uring() {
                    Driver::IoUring
                } else {
                    Driver::Epoll
                };
                let mut rt = match build_runtime() {
                    Ok(rt) => rt,
                    Err(e) => {
                        log::error!("worker {index}: cannot build runtime: {e}");
                        return;
                    }
                };
                if driver == Driver::Epoll {
                    log::warn!("worker {index}: io_uring unavailable, using the epoll driver");
                } else {
                    log::info!("worker {index}: io_uring driver");
                }
                rt.block_on(run(WorkerInit {
                    index,
                    mesh,
                    listeners,
                    tls_listeners,
                    driver,
                }));
            })?;
        handles.push(h);
    }
    Ok(handles)
}

/// io_uring setup flags tried first: COOP_TASKRUN + TASKRUN_FLAG (completions are run when
/// the worker next enters the kernel, without an interrupt). Measured against the previous
/// COOP_TASKRUN + SINGLE_ISSUER + DEFER_TASKRUN at 15k req/s open loop, one worker: 2.0
/// instead of 2.7 `io_uring_enter` per request, CPU per request 6 % lower, same context
/// switches and latency; equal at saturation. TOLLGATE_URING_FLAGS=defer selects that
/// previous set, =0 no flags (comparison runs).
fn tuned_uring() -> Option<io_uring::Builder> {
    let mut b = io_uring::IoUring::builder();
    match std::env::var("TOLLGATE_URING_FLAGS").as_deref() {
        Ok("0") => return None,
        Ok("defer") => {
            b.setup_coop_taskrun()
                .setup_single_issuer()
                .setup_defer_taskrun();
        }
        _ => {
            b.setup_coop_taskrun().setup_taskrun_flag();
        }
    }
    Some(b)
}

fn build_runtime() -> std::io::Result<
    monoio::FusionRuntime<
        monoio::time::TimeDriver<monoio::IoUringDriver>,
        monoio::time::TimeDriver<monoio::LegacyDriver>,
    >,
> {
    if let Some(urb) = tuned_uring() {
        match RuntimeBuilder::<FusionDriver>::new()
            .with_entries(4096)
            .uring_builder(urb)
            .enable_timer()
            .build()
        {
            Ok(rt) => return Ok(rt),
            Err(e) => log::info!("io_uring setup flags unavailable ({e}); plain setup"),
        }
    }
    RuntimeBuilder::<FusionDriver>::new()
        .with_entries(4096)
        .enable_timer()
        .build()
}
