//! The systemd notify protocol, spoken directly over `NOTIFY_SOCKET` (a datagram socket, path
//! or abstract `@name`). Every call is a no-op when the variable is unset.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends `READY=1`, `STATUS=…`, `STOPPING=1`, `WATCHDOG=1` and friends.
#[derive(Debug)]
pub struct Notifier {
    target: Option<Target>,
}

#[derive(Debug)]
enum Target {
    Path(std::path::PathBuf),
    Abstract(Vec<u8>),
}

impl Notifier {
    /// From the process environment.
    pub fn from_env() -> Self {
        Self::from_socket(
            std::env::var_os("NOTIFY_SOCKET").map(|s| s.to_string_lossy().into_owned()),
        )
    }

    pub fn from_socket(socket: Option<String>) -> Self {
        let target = socket
            .filter(|s| !s.is_empty())
            .map(|s| match s.strip_prefix('@') {
                Some(name) => Target::Abstract(name.as_bytes().to_vec()),
                None => Target::Path(s.into()),
            });
        Notifier { target }
    }

    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends one datagram of `KEY=VALUE` lines; failures are logged, never fatal.
    pub fn notify(&self, state: &str) {
        let Some(target) = &self.target else {
            return;
        };
        let result = UnixDatagram::unbound().and_then(|sock| match target {
            Target::Path(path) => sock.send_to(state.as_bytes(), path).map(|_| ()),
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(state.as_bytes(), &addr).map(|_| ())
            }
        });
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot notify systemd");
        }
    }

    /// `RELOADING=1` with the `MONOTONIC_USEC` systemd asks for.
    pub fn reloading(&self) {
        self.notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
    }
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// Runs `work`, telling systemd every `every` that start-up goes on (`EXTEND_TIMEOUT_USEC`,
/// three periods ahead, with `STATUS=` saying why), so migrating or indexing a large database
/// is not killed by the unit's `TimeoutStartSec`; a start that stops making calls still is.
pub async fn extending_start<T>(
    notifier: &Notifier,
    every: Duration,
    status: &str,
    work: impl std::future::Future<Output = T>,
) -> T {
    tokio::pin!(work);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            // Ticks first: every period that passed before the work is seen done is told.
            biased;
            _ = tick.tick() => notifier.notify(&format!(
                "EXTEND_TIMEOUT_USEC={}\nSTATUS={status}",
                every.as_micros() * 3
            )),
            out = &mut work => return out,
        }
    }
}

/// Half of `WATCHDOG_USEC`, when systemd asks this process for keep-alives.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Some(pid) = std::env::var("WATCHDOG_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
    {
        if pid != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifies_a_path_socket_and_is_silent_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::from_socket(Some(path.display().to_string()));
        n.notify("READY=1\nSTATUS=ok");
        let mut buf = [0u8; 256];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=ok");
        let silent = Notifier::from_socket(None);
        assert!(!silent.enabled());
        silent.notify("READY=1");
    }

    #[actix_rt::test]
    async fn a_long_start_extends_the_timeout_until_it_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let n = Notifier::from_socket(Some(path.display().to_string()));
        let every = Duration::from_millis(40);
        let out = extending_start(&n, every, "migrating", async {
            tokio::time::sleep(Duration::from_millis(150)).await;
            7
        })
        .await;
        assert_eq!(out, 7);
        let mut buf = [0u8; 256];
        let mut got = Vec::new();
        while let Ok(len) = listener.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..len]).into_owned());
        }
        assert!(got.len() >= 3, "one per 40 ms of a 150 ms start: {got:?}");
        assert!(got
            .iter()
            .all(|m| m == "EXTEND_TIMEOUT_USEC=120000\nSTATUS=migrating"));
        // A quick start says nothing.
        extending_start(&n, every, "migrating", async {}).await;
        assert!(listener.recv(&mut buf).is_err());
    }
}
