//! A throwaway redis-server for the tests that need a real broker.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{BrokerUrl, Connections};

/// A redis-server on a free loopback port (`make deps` installs it); killed when dropped.
pub(crate) struct Server {
    child: Child,
    pub(crate) port: u16,
    pub(crate) url: BrokerUrl,
    /// A connection of the test's own (it counts as one client).
    pub(crate) conn: redis::aio::ConnectionManager,
}

impl Server {
    pub(crate) async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// A replica of `primary`, once its copy is in sync.
    pub(crate) async fn replica_of(primary: &Server) -> Self {
        let port = primary.port.to_string();
        let replica = Self::start_with(&["--replicaof", "127.0.0.1", &port]).await;
        let mut conn = primary.conn.clone();
        for _ in 0..250 {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut conn)
                .await
                .expect("INFO");
            if info.contains("state=online") {
                return replica;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the replica did not come online");
    }

    /// SIGSTOP (`stop: true`) or SIGCONT: a server that hangs, then goes on.
    pub(crate) fn freeze(&self, stop: bool) {
        let signal = if stop { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    async fn start_with(args: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        // Killed on every path, a failed start included.
        let mut child = Reaped(Some(spawn(port, args).await));
        let url = BrokerUrl::new(format!("redis://127.0.0.1:{port}/0"));
        let conn = Connections::new().get(&url).await.expect("connect");
        let child = child.0.take().expect("child");
        Self {
            child,
            port,
            url,
            conn,
        }
    }

    /// Kills the server: an outage (clients get connection refused).
    pub(crate) fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port, empty, and waits until it listens.
    pub(crate) async fn restart(&mut self) {
        self.stop();
        self.child = spawn(self.port, &[]).await;
    }

    /// Connections open on the server (`CLIENT LIST`), the test's own included.
    pub(crate) async fn clients(&self) -> usize {
        let mut conn = self.conn.clone();
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut conn)
            .await
            .expect("CLIENT LIST");
        list.lines().count()
    }

    /// Waits (up to 5 s) until exactly `n` clients are connected.
    pub(crate) async fn wait_for_clients(&self, n: usize) {
        let mut seen = 0;
        for _ in 0..250 {
            seen = self.clients().await;
            if seen == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{seen} clients connected, expected {n}");
    }
}

/// A redis-server on `port` with more `args`, once it listens.
async fn spawn(port: u16, args: &[&str]) -> Child {
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--bind",
            "127.0.0.1",
            // A replica loads its copy from the socket instead of a dump.rdb in the cwd.
            "--repl-diskless-load",
            "swapdb",
        ])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (make deps installs it)");
    let mut child = Reaped(Some(child));
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return child.0.take().expect("child");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("redis-server did not listen on {port}");
}

/// A Sentinel watching a primary as master `m` (quorum 1); killed when dropped.
pub(crate) struct Sentinel {
    _child: Reaped,
    pub(crate) port: u16,
    conf: std::path::PathBuf,
    conn: redis::aio::MultiplexedConnection,
}

impl Sentinel {
    /// One watching `primary`, once it knows `replicas` replicas of it in sync.
    pub(crate) async fn watching(primary: &Server, replicas: usize) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        // Sentinel rewrites its config file: one of its own, in the temp directory.
        let conf = std::env::temp_dir().join(format!("test-sentinel-{port}.conf"));
        let text = format!(
            "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor m 127.0.0.1 {} 1\n\
             sentinel down-after-milliseconds m 1000\nsentinel failover-timeout m 4000\n",
            std::env::temp_dir().display(),
            primary.port
        );
        std::fs::write(&conf, text).expect("sentinel.conf");
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel (make deps installs it)");
        let child = Reaped(Some(child));
        let mut conn = None;
        for _ in 0..100 {
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("url");
            if let Ok(c) = client.get_multiplexed_async_connection().await {
                conn = Some(c);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let sentinel = Self {
            _child: child,
            port,
            conf,
            conn: conn.expect("the Sentinel did not listen"),
        };
        for _ in 0..500 {
            let known: Vec<Vec<String>> = sentinel.ask(&["REPLICAS", "m"]).await;
            let in_sync = known
                .iter()
                .filter(|fields| {
                    fields
                        .windows(2)
                        .any(|kv| kv[0] == "master-link-status" && kv[1] == "ok")
                })
                .count();
            if in_sync >= replicas {
                return sentinel;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the Sentinel did not learn the replicas");
    }

    async fn ask<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        redis::cmd("SENTINEL")
            .arg(args)
            .query_async(&mut self.conn.clone())
            .await
            .expect("SENTINEL")
    }

    /// Promotes a replica (`SENTINEL FAILOVER`) and waits until the Sentinel names `to`.
    pub(crate) async fn fail_over_to(&self, to: &Server) {
        let _: () = self.ask(&["FAILOVER", "m"]).await;
        for _ in 0..500 {
            let named: (String, u16) = self.ask(&["get-master-addr-by-name", "m"]).await;
            if named.1 == to.port {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the Sentinel did not promote the replica");
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.conf);
    }
}

/// A child process killed and waited for when dropped.
struct Reaped(Option<Child>);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
