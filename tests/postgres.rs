//! A throw-away PostgreSQL server for tests: Debian's `postgresql` package (`.ci/run` installs
//! it), `initdb` into a temporary directory on a free port on 127.0.0.1, trust authentication,
//! stopped by its `pg_ctl` on drop. initdb refuses to run as root, so as root every command runs
//! as the package's unprivileged `postgres` user (`runuser`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

/// A running server; `url` is a sqlx connection URL to its `postgres` database.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub url: String,
}

/// The directory holding `initdb` and `pg_ctl`: Debian keeps them out of PATH.
fn bin_dir() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed (apt-get install postgresql)")?
        .filter_map(|entry| entry.ok().map(|entry| entry.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().context("no /usr/lib/postgresql/*/bin/initdb")
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").map(|meta| std::os::unix::fs::MetadataExt::uid(&meta) == 0).unwrap_or(false)
}

impl Postgres {
    fn command(&self, program: &str) -> Command {
        as_server_user(&self.bin.join(program))
    }

    pub async fn start() -> anyhow::Result<Postgres> {
        let bin = bin_dir()?;
        let dir = tempfile::Builder::new().prefix("wattle-pg-").tempdir()?;
        if is_root() {
            let status = Command::new("chown").arg("postgres:postgres").arg(dir.path()).status()?;
            anyhow::ensure!(status.success(), "chown of the PostgreSQL directory failed");
        }
        let data = dir.path().join("data");
        let port = crate::support::free_port();
        let server = Postgres { url: format!("postgres://wattle@127.0.0.1:{port}/postgres"), dir, bin };
        let output = server
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "wattle", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()?;
        anyhow::ensure!(output.status.success(), "initdb failed: {}", String::from_utf8_lossy(&output.stderr));
        let options =
            format!("-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", server.dir.path().display());
        let output = server
            .command("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-o", &options, "-l"])
            .arg(server.dir.path().join("server.log"))
            .args(["-w", "-t", "60", "start"])
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(server.dir.path().join("server.log")).unwrap_or_default()
        );
        Ok(server)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

fn as_server_user(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "fast", "-w", "stop"])
            .output();
    }
}
