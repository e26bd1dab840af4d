//! The daemon's side: a UNIX socket that answers each connection with one document, then
//! closes it.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, broadcast};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::{Sources, StatusError};

/// Clients answered at once; more are turned away until one finishes.
const MAX_CLIENTS: usize = 4;
/// How long one client may take to read its answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long to wait for an old socket to answer before taking it as stale.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// The pause after a failed accept (out of file descriptors), so the loop does not spin.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// The socket's mode: the service's user and group.
const MODE: u32 = 0o660;

/// The status socket's server.
pub struct StatusServer {
    path: PathBuf,
    sources: Sources,
    shutdown: broadcast::Receiver<()>,
}

/// The bound socket, and the file it was bound to.
struct Bound {
    listener: UnixListener,
    path: PathBuf,
    /// `(device, inode)` of the socket file, so only this socket is removed at the end.
    file: (u64, u64),
}

impl StatusServer {
    /// A server on `path` showing `sources`, stopping on `shutdown`.
    pub fn new(path: PathBuf, sources: Sources, shutdown: broadcast::Receiver<()>) -> Self {
        StatusServer {
            path,
            sources,
            shutdown,
        }
    }

    /// Serves until shutdown, then removes the socket. If the socket cannot be bound it says
    /// why and returns: the doors do not depend on it.
    pub async fn run(mut self) {
        let bound = match bind(&self.path).await {
            Ok(b) => b,
            Err(e) => {
                warn!("status socket unavailable, `doorhub status` will not answer: {e}");
                return;
            }
        };
        info!(path = %self.path.display(), "status socket listening");
        let permits = Arc::new(Semaphore::new(MAX_CLIENTS));
        let mut clients = JoinSet::new();
        loop {
            tokio::select! {
                _ = self.shutdown.recv() => break,
                accepted = bound.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        // Closed without an answer rather than queued, so a flood of clients
                        // costs nothing; the command then says to try again.
                        let Ok(permit) = permits.clone().try_acquire_owned() else {
                            debug!("status: {MAX_CLIENTS} clients already; closing a connection");
                            continue;
                        };
                        let sources = self.sources.clone();
                        clients.spawn(async move {
                            answer(stream, sources).await;
                            drop(permit);
                        });
                    }
                    Err(e) => {
                        warn!("status socket: cannot accept a connection: {e}");
                        tokio::time::sleep(ACCEPT_PAUSE).await;
                    }
                },
                Some(_) = clients.join_next(), if !clients.is_empty() => {}
            }
        }
        clients.shutdown().await;
        bound.remove();
    }
}

/// Writes the document, giving up after [`WRITE_TIMEOUT`].
async fn answer(mut stream: UnixStream, sources: Sources) {
    // Made off the runtime's one worker: thousands of doors take milliseconds (4 µs a door on
    // this machine's release build), which the buses' reply timers must not feel. Indented for
    // a person reading `--json`; plain strings, numbers and options of them always serialise.
    let made = tokio::task::spawn_blocking(move || {
        serde_json::to_vec_pretty(&sources.document()).unwrap_or_default()
    });
    let Ok(mut bytes) = made.await else { return };
    bytes.push(b'\n');
    let write = async {
        stream.write_all(&bytes).await?;
        stream.shutdown().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!("status: client went away: {e}"),
        Err(_) => debug!("status: client did not read its answer in {WRITE_TIMEOUT:?}"),
    }
}

/// Binds `path`, replacing a socket left by a crash but nothing else, and sets its mode.
async fn bind(path: &Path) -> Result<Bound, StatusError> {
    let io = |action, source| StatusError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(StatusError::NotASocket {
                path: path.to_path_buf(),
            });
        }
        Ok(_) => {
            // A socket that answers belongs to a running daemon; one that doesn't is stale.
            if let Ok(Ok(_)) = tokio::time::timeout(PROBE_TIMEOUT, UnixStream::connect(path)).await
            {
                return Err(StatusError::InUse {
                    path: path.to_path_buf(),
                });
            }
            std::fs::remove_file(path).map_err(|e| io("remove the stale socket", e))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("inspect", e)),
    }
    let listener = UnixListener::bind(path).map_err(|e| io("listen on", e))?;
    // Until this chmod the mode is 0777 less the umask. Connecting needs write permission, so
    // under the shipped unit's umask 0077 (or the usual 0022) only the owner can connect meanwhile.
    let bound = std::fs::set_permissions(path, std::fs::Permissions::from_mode(MODE))
        .and_then(|()| std::fs::symlink_metadata(path))
        .map(|meta| (meta.dev(), meta.ino()));
    match bound {
        Ok(file) => Ok(Bound {
            listener,
            path: path.to_path_buf(),
            file,
        }),
        Err(e) => {
            let _ = std::fs::remove_file(path);
            Err(io("set the mode of", e))
        }
    }
}

impl Bound {
    /// Removes the socket file, if it is still this socket's.
    fn remove(self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|meta| (meta.dev(), meta.ino()) == self.file);
        if ours && let Err(e) = std::fs::remove_file(&self.path) {
            warn!(path = %self.path.display(), "cannot remove the status socket: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::reported::Status;
    use crate::status::tests::{reported, sources};

    async fn read_all(mut stream: UnixStream) -> Vec<u8> {
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes).await;
        bytes
    }

    #[tokio::test]
    async fn bind_replaces_only_a_stale_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let bound = bind(&path).await.expect("a stale socket is replaced");
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, MODE);
        // A live socket is someone else's.
        assert!(matches!(bind(&path).await, Err(StatusError::InUse { .. })));
        bound.remove();
        assert!(!path.exists());

        std::fs::write(&path, "keep me").unwrap();
        assert!(matches!(
            bind(&path).await,
            Err(StatusError::NotASocket { .. })
        ));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
        let missing = dir.path().join("no-such-dir/s.sock");
        let message = bind(&missing).await.err().unwrap().to_string();
        assert!(message.contains("no-such-dir/s.sock"), "{message}");
    }

    #[tokio::test]
    async fn the_socket_is_removed_only_if_it_is_still_ours() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let bound = bind(&path).await.unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "another file since").unwrap();
        bound.remove();
        assert!(path.exists());
    }

    #[tokio::test]
    async fn stuck_clients_hold_their_places_only_until_the_write_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let s = sources(dir.path());
        // A document far larger than a socket's buffer, so a client that does not read stalls
        // its write.
        for i in 0..5000 {
            s.board
                .update(reported(&format!("door-{i:05}"), Status::Unconfigured));
        }
        let path = dir.path().join("s.sock");
        let (stop, shutdown) = broadcast::channel(1);
        let server = tokio::spawn(StatusServer::new(path.clone(), s, shutdown).run());
        let end = Instant::now() + Duration::from_secs(10);
        // Not probed by connecting: that would take a place of its own. The file appears when
        // the socket is bound and listening (one step on this single-threaded runtime).
        while !path.exists() {
            assert!(Instant::now() < end, "the server never listened");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let connect = || UnixStream::connect(&path);
        let stuck_at = Instant::now();
        let mut stuck = Vec::new();
        for _ in 0..MAX_CLIENTS {
            stuck.push(connect().await.unwrap());
        }
        // One more is turned away at once, with nothing written.
        let refused = read_all(connect().await.unwrap()).await;
        assert!(refused.is_empty(), "{} bytes", refused.len());
        assert!(stuck_at.elapsed() < WRITE_TIMEOUT);
        // Once the stuck writes time out, a client gets the whole document.
        let answer = loop {
            let bytes = read_all(connect().await.unwrap()).await;
            if !bytes.is_empty() {
                break bytes;
            }
            assert!(Instant::now() < end, "no answer after the stuck clients");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(stuck_at.elapsed() >= WRITE_TIMEOUT);
        let doc = crate::status::parse(&answer).unwrap();
        assert_eq!(doc.doors.len(), 5002);
        drop(stuck);

        stop.send(()).unwrap();
        server.await.unwrap();
        assert!(!path.exists(), "removed on shutdown");
    }
}
