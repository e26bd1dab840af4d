//! Running `doorhub status` as a technician would, against a test's daemon.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::hub::WAIT;

/// Runs `doorhub status ARGS`; returns the exit code, stdout and stderr.
pub async fn status(args: &[&str]) -> (Option<i32>, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_doorhub"))
        .arg("status")
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn text(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `doorhub status --json` until the document satisfies `pred`; panics with the last one after
/// [`WAIT`].
pub async fn json_until(socket: &Path, what: &str, mut pred: impl FnMut(&Value) -> bool) -> Value {
    let end = Instant::now() + WAIT;
    loop {
        let (code, out, err) = status(&["--json", "--socket", text(socket)]).await;
        assert_eq!(code, Some(0), "{err}");
        let doc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        if pred(&doc) {
            return doc;
        }
        assert!(Instant::now() < end, "status never showed {what}:\n{doc:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The table, which must succeed.
pub async fn table(args: &[&str]) -> String {
    let (code, out, err) = status(args).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(err.is_empty(), "{err}");
    out
}
