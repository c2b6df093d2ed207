//! A loopback TCP balancer, as a Kubernetes Service is to a backend's replicas: each
//! new connection goes to the next replica that accepts it (round robin), and is
//! spliced to it until either side closes; a replica that dies takes its connections
//! with it, so their clients see them break and connect again, to another replica.
//! It records where each open connection went, so a test can kill the replica a
//! client streams from; and it can hold new connections off for a while.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use tokio::net::{TcpListener, TcpStream};

pub struct Balancer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    replicas: Vec<SocketAddr>,
    next: AtomicUsize,
    /// Open connections per replica.
    open: Mutex<HashMap<SocketAddr, usize>>,
    /// New connections are closed at once while set.
    held: AtomicBool,
}

impl Balancer {
    /// Listens on a free loopback port in front of `replicas`.
    pub async fn start(replicas: Vec<SocketAddr>) -> Balancer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("balancer port");
        let addr = listener.local_addr().expect("balancer address");
        let shared = Arc::new(Shared {
            replicas,
            next: AtomicUsize::new(0),
            open: Mutex::new(HashMap::new()),
            held: AtomicBool::new(false),
        });
        let task = tokio::spawn({
            let shared = shared.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    tokio::spawn(shared.clone().splice(client));
                }
            }
        });
        Balancer { addr, shared, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The replicas with open connections now.
    pub fn connected(&self) -> Vec<SocketAddr> {
        let open = self.shared.open.lock().unwrap();
        let mut connected: Vec<SocketAddr> = open.iter().filter(|(_, n)| **n > 0).map(|(a, _)| *a).collect();
        connected.sort();
        connected
    }

    /// While `held`, new connections are closed at once (as when no replica is ready).
    pub fn hold(&self, held: bool) {
        self.shared.held.store(held, Ordering::SeqCst);
    }
}

impl Shared {
    async fn splice(self: Arc<Self>, mut client: TcpStream) {
        if self.held.load(Ordering::SeqCst) {
            return;
        }
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..self.replicas.len() {
            let replica = self.replicas[(first + i) % self.replicas.len()];
            let Ok(mut upstream) = TcpStream::connect(replica).await else {
                continue;
            };
            *self.open.lock().unwrap().entry(replica).or_default() += 1;
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            *self.open.lock().unwrap().entry(replica).or_default() -= 1;
            return;
        }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
