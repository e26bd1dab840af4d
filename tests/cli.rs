//! The `doorhub` command line as a technician uses it.

use std::os::unix::fs::{PermissionsExt, chown};
use std::path::Path;
use std::process::{Command, Stdio};

fn doorhub(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_doorhub"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_prints_every_error_at_once_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doorhub.toml");
    std::fs::write(
        &path,
        "[hub]\nid = \"Hub 1\"\n\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n\n[[bus]]\nname = \"a\"\nport = \"/dev/null\"\nbaud = 1200\n\n[[door]]\nid = \"lobby\"\nbus = \"a\"\naddress = 1\nmode = \"hub\"\ncolour = \"red\"\n",
    )
    .unwrap();
    let (code, _, stderr) = doorhub(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stderr}");
    for (key, line) in [
        ("hub.id", 2),
        ("mqtt.url", 5),
        ("bus[0].baud", 10),
        ("door[0].colour", 17),
    ] {
        let want = format!("{}:{line}: {key}:", path.display());
        assert!(stderr.contains(&want), "missing {want:?} in:\n{stderr}");
    }
    // The daemon refuses the same file.
    let (code, _, stderr) = doorhub(&["run", "--config", path.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("not starting"), "{stderr}");
}

#[test]
fn check_config_accepts_a_valid_file_and_names_a_missing_one() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/config/valid/minimal.toml"
    );
    let (code, stdout, stderr) = doorhub(&["check-config", "--config", example]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("OK"), "{stdout}");
    let (code, _, stderr) = doorhub(&["check-config", "--config", "/nonexistent/doorhub.toml"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("/nonexistent/doorhub.toml"), "{stderr}");
}

/// Runs `doorhub ARGS` with stdout a pipe whose read end is closed before the command starts, as
/// `doorhub status | head -1` leaves it once `head` has quit; returns the exit code and stderr.
fn with_closed_stdout(args: &[&str]) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_doorhub"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_closed_stdout_is_a_normal_end() {
    let valid = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/config/valid/minimal.toml"
    );
    for args in [
        &["check-config", "--config", valid][..],
        &["--help"],
        &["--version"],
        &["check-config", "--help"],
    ] {
        let (code, stderr) = with_closed_stdout(args);
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn check_config_prints_warnings_and_passes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doorhub.toml");
    std::fs::write(
        &path,
        "[hub]\nid = \"hub-1\"\ndata_dir = \"data\"\nstatus_socket = \"run/s.sock\"\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\nallow_plaintext = true\n\
         [[bus]]\nname = \"a\"\nport = \"/dev/ttyDOORHUB-ABSENT\"\n",
    )
    .unwrap();
    let (code, stdout, stderr) = doorhub(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("OK") && stdout.contains("2 warnings"),
        "{stdout}"
    );
    let shown = path.display();
    for want in [
        format!("warning: {shown}:4: hub.status_socket: "),
        format!("warning: {shown}:10: bus[0].port: /dev/ttyDOORHUB-ABSENT does not exist"),
    ] {
        assert!(stderr.contains(&want), "missing {want:?} in:\n{stderr}");
    }
}

/// Whether this runs as root, which can run a command as another user.
fn root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
}

/// The unprivileged user the checks run as.
const NOBODY: u32 = 65534;

#[test]
fn check_config_checks_the_store_folder_as_the_user_running_it() {
    if !root() {
        eprintln!("skipped: running the check as another user needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Everyone may enter the test folder and read the config; only root may write in it.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mkdir = |name: &str, mode: u32, owner: u32| {
        let path = dir.path().join(name);
        std::fs::create_dir(&path).unwrap();
        chown(&path, Some(owner), Some(owner)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    mkdir("read-only", 0o500, NOBODY);
    mkdir("roots", 0o777, 0);
    mkdir("own", 0o700, NOBODY);
    let check = |data_dir: &str| {
        let path = dir
            .path()
            .join(format!("{}.toml", data_dir.replace('/', "-")));
        std::fs::write(
            &path,
            format!(
                "[hub]\nid = \"hub-1\"\ndata_dir = \"{data_dir}\"\nstatus_socket = \"own/s.sock\"\n\
                 [mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\nallow_plaintext = true\n"
            ),
        )
        .unwrap();
        let out = Command::new("setpriv")
            .args([
                &format!("--reuid={NOBODY}"),
                &format!("--regid={NOBODY}"),
                "--clear-groups",
                "--",
                env!("CARGO_BIN_EXE_doorhub"),
                "check-config",
                "--config",
            ])
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let data_dir_error = |data_dir: &str, want: &str| {
        let (code, stderr) = check(data_dir);
        assert_eq!(code, Some(1), "{data_dir}: {stderr}");
        let line = stderr
            .lines()
            .find(|l| l.contains(":3: hub.data_dir: "))
            .unwrap_or_else(|| panic!("{data_dir}: no hub.data_dir error in:\n{stderr}"));
        assert!(line.contains(want), "{data_dir}: {line}");
    };
    // Mode 0500: its owner cannot write in it.
    data_dir_error("read-only", "cannot write in");
    // Writable, but root's: the daemon could not set its mode to 0700.
    data_dir_error("roots", "belongs to user id 0");
    // Missing, and its parent is root's 0755.
    data_dir_error("new/store", "cannot be created");
    // Missing, and its parent is the user's: the check made it and removed it again.
    let (code, stderr) = check("own/store");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!dir.path().join("own/store").exists());
    let (code, stderr) = check("own");
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        std::fs::read_dir(dir.path().join("own")).unwrap().count(),
        0
    );
    assert!(Path::new(env!("CARGO_BIN_EXE_doorhub")).exists());
}
