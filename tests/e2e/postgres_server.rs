//! A throwaway PostgreSQL cluster: `initdb` in a temp directory, a free
//! loopback port, password authentication, run as an unprivileged user
//! (PostgreSQL refuses root). `scripts/test` installs Debian's
//! `postgresql`; without it the test fails and says so.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

use crate::harness::free_port;

pub const USER: &str = "lookout";
pub const PASSWORD: &str = "s3cret-test-password";

pub struct Postgres {
    dir: TempDir,
    bin: PathBuf,
    pub port: u16,
    /// The uid and gid to run as when the tests run as root.
    run_as: Option<(u32, u32)>,
}

impl Postgres {
    /// A new cluster, started. fsync is off: these clusters test
    /// correctness, not durability (the benchmark keeps the defaults).
    pub fn start() -> Postgres {
        let dir = tempfile::tempdir().expect("temp dir");
        let run_as = unprivileged_user();
        if let Some((uid, gid)) = run_as {
            chown(dir.path(), uid, gid);
        }
        let postgres = Postgres {
            bin: binaries(),
            port: free_port(),
            dir,
            run_as,
        };
        let password_file = postgres.dir.path().join("password");
        std::fs::write(&password_file, PASSWORD).expect("write the password file");
        if let Some((uid, gid)) = run_as {
            chown(&password_file, uid, gid);
        }
        let data = postgres.data_dir();
        postgres.run(
            "initdb",
            &[
                "--no-sync",
                "--auth=scram-sha-256",
                "--username",
                USER,
                "--pwfile",
                &password_file.display().to_string(),
                "--pgdata",
                &data.display().to_string(),
            ],
        );
        postgres.start_again();
        postgres
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn url(&self) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/postgres",
            self.port
        )
    }

    /// Starts the server after `stop`, on the same port and data.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' \
             -c fsync=off -c full_page_writes=off -c max_connections=50",
            self.port
        );
        let log = self.dir.path().join("postgres.log");
        self.run(
            "pg_ctl",
            &[
                "start",
                "--wait",
                "--pgdata",
                &self.data_dir().display().to_string(),
                "--log",
                &log.display().to_string(),
                "-o",
                &options,
            ],
        );
    }

    /// Stops the server as a restart would: connections are cut and
    /// transactions in flight are rolled back.
    pub fn stop(&self) {
        self.run(
            "pg_ctl",
            &[
                "stop",
                "--wait",
                "--mode=fast",
                "--pgdata",
                &self.data_dir().display().to_string(),
            ],
        );
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        let mut command = Command::new(self.bin.join(program));
        command.args(args).current_dir(self.dir.path());
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        let output = command
            .output()
            .unwrap_or_else(|err| panic!("cannot run {program}: {err}"));
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}\n{}\nserver log:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
        );
        output
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let mut command = Command::new(self.bin.join("pg_ctl"));
        command.args(["stop", "--mode=immediate", "--pgdata"]);
        command.arg(self.data_dir());
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        let _ = command.output();
    }
}

/// The newest server under /usr/lib/postgresql, where Debian puts it.
fn binaries() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("pg_ctl").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).expect(
        "no PostgreSQL server under /usr/lib/postgresql: run the tests with scripts/test, \
         which installs Debian's postgresql package",
    )
}

/// `nobody` when running as root; PostgreSQL will not run as root.
fn unprivileged_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    // SAFETY: a NUL-terminated name; the result is read at once.
    let entry = unsafe { libc::getpwnam(c"nobody".as_ptr()) };
    assert!(!entry.is_null(), "no `nobody` user to run PostgreSQL as");
    // SAFETY: checked non-null above.
    let entry = unsafe { &*entry };
    Some((entry.pw_uid, entry.pw_gid))
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|err| panic!("cannot chown {}: {err}", path.display()));
}
