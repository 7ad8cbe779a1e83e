//! A loopback TCP proxy for fault injection.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

/// A loopback TCP proxy that can refuse and cut connections, to simulate a database outage, or
/// freeze them, to simulate a client that went silent without closing anything.
#[derive(Clone)]
pub struct TcpProxy {
    pub addr: std::net::SocketAddr,
    up: Arc<AtomicBool>,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
    frozen: Arc<tokio::sync::watch::Sender<bool>>,
}

impl TcpProxy {
    pub async fn start(target: std::net::SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let up = Arc::new(AtomicBool::new(true));
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let generation = Arc::new(generation);
        let (frozen, _) = tokio::sync::watch::channel(false);
        let frozen = Arc::new(frozen);
        let proxy = Self {
            addr,
            up: up.clone(),
            generation: generation.clone(),
            frozen: frozen.clone(),
        };
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    break;
                };
                if !up.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let mut cut = generation.subscribe();
                let mut freeze = frozen.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let held = tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => false,
                        _ = cut.changed() => false,
                        _ = freeze.wait_for(|frozen| *frozen) => true,
                    };
                    if held {
                        // Neither end is read, written or closed until `down()`: the peers see
                        // silence, as with a hung process or a network partition.
                        let _ = cut.changed().await;
                    }
                    drop((inbound, outbound));
                });
            }
        });
        proxy
    }

    /// Cuts every open connection and refuses new ones.
    pub fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Accepts and forwards new connections again (after `down()` or `freeze()`).
    pub fn up(&self) {
        self.frozen.send_replace(false);
        self.up.store(true, Ordering::SeqCst);
    }

    /// Stops forwarding on every open connection, in both directions, and refuses new ones, but
    /// closes nothing: both sockets stay open and silent until [`TcpProxy::down`]. Whatever was
    /// in flight inside the proxy is lost, as in a partition.
    pub fn freeze(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.frozen.send_replace(true);
    }
}
