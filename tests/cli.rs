//! The `doorhub` command line as a technician uses it.

use std::process::Command;

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
