//! Real `redis-server` processes for the data-plane tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A redis-server on 127.0.0.1; stopped and its directory removed when dropped.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    pub password: Option<String>,
    pub dir: PathBuf,
    /// Program and arguments, kept for restarts.
    command: Vec<String>,
    env: Vec<(String, String)>,
}

impl RedisServer {
    /// `redis-server [conf] --port P --dir D [extra...]`, waiting until it answers PING.
    pub fn start(conf: Option<&Path>, password: Option<&str>, extra: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("e2e-redis-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let port = free_port();
        let mut args: Vec<String> = vec!["redis-server".into()];
        args.extend(conf.map(|c| c.display().to_string()));
        args.extend([
            "--port".into(),
            port.to_string(),
            "--dir".into(),
            dir.display().to_string(),
        ]);
        args.extend(["--bind".into(), "127.0.0.1".into()]);
        if let Some(p) = password {
            args.extend(["--requirepass".into(), p.into()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut server = Self {
            child: None,
            port,
            password: password.map(Into::into),
            dir,
            command: args,
            env: Vec::new(),
        };
        server.spawn();
        server
    }

    /// Runs a RedisCache pod's own start command (`sh -c <script>` with `env`) in `dir`,
    /// whose config makes it listen on `port`; `password` is the one clients then need.
    pub fn start_pod_command(
        script: &str,
        env: &[(&str, &str)],
        dir: PathBuf,
        port: u16,
        password: Option<&str>,
    ) -> Self {
        let mut server = Self {
            child: None,
            port,
            password: password.map(Into::into),
            dir,
            command: vec!["sh".into(), "-c".into(), script.into()],
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.join("redis.log")).expect("log");
        let child = Command::new(&self.command[0])
            .args(&self.command[1..])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("redis-server (installed by make deps)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cli(&["PING"]).stdout != b"PONG\n" {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start: {:?}",
                std::fs::read_to_string(self.dir.join("redis.log"))
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (SIGTERM, like a Redis outage) keeping its data directory.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// `redis://[default:password@]127.0.0.1:port/db`, the form of a connection Secret.
    pub fn url(&self, db: u8) -> String {
        match &self.password {
            Some(p) => format!("redis://default:{p}@127.0.0.1:{}/{db}", self.port),
            None => format!("redis://127.0.0.1:{}/{db}", self.port),
        }
    }

    /// Runs redis-cli against this server (authenticated when it has a password).
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-p", &self.port.to_string()]);
        if let Some(p) = &self.password {
            cmd.env("REDISCLI_AUTH", p);
        }
        cmd.args(args).output().expect("redis-cli")
    }

    /// Unauthenticated redis-cli.
    pub fn cli_anonymous(&self, args: &[&str]) -> Output {
        Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli")
    }

    /// `CONFIG GET key` → value.
    pub fn config_get(&self, key: &str) -> String {
        let out = String::from_utf8_lossy(&self.cli(&["CONFIG", "GET", key]).stdout).into_owned();
        out.lines().nth(1).unwrap_or_default().to_string()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
