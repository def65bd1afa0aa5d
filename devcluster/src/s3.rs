//! A local S3 server (versitygw, built with the control plane) on a loopback port, with one
//! bucket: the storage the kind backend talks to in tests and in `hack/up.sh`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Credentials of the test server.
pub const ACCESS_KEY: &str = "substratus-test";
pub const SECRET_KEY: &str = "substratus-test-secret";

/// A running S3 server; stopped and its data removed on drop.
pub struct S3Server {
    child: Option<Child>,
    pub root: PathBuf,
    pub port: u16,
    pub bucket: String,
    bin: PathBuf,
}

impl S3Server {
    /// Starts versitygw from `bin_dir` serving `bucket` on a free loopback port.
    pub fn start(bin_dir: &std::path::Path, bucket: &str) -> Result<S3Server> {
        let port = crate::ports::free_loopback_port()?;
        let root =
            std::env::temp_dir().join(format!("substratus-s3-{}-{port}", std::process::id()));
        std::fs::create_dir_all(root.join(bucket))?;
        let mut s = S3Server {
            child: None,
            root,
            port,
            bucket: bucket.to_owned(),
            bin: bin_dir.join("versitygw"),
        };
        s.resume()?;
        Ok(s)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops the server, keeping its data (storage down).
    pub fn pause(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port and data.
    pub fn resume(&mut self) -> Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let child = Command::new(&self.bin)
            .args([
                "--access",
                ACCESS_KEY,
                "--secret",
                SECRET_KEY,
                "--port",
                &format!("127.0.0.1:{}", self.port),
                "posix",
            ])
            .arg(&self.root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                bail!("versitygw did not listen on {} within 20s", self.port);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// The file holding `key` in the bucket (versitygw's posix backend).
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.root.join(&self.bucket).join(key)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.pause();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
