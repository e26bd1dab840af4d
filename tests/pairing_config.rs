//! Which doors pair a new reader (`install_key`, `scbk_file`): what the configuration accepts and
//! what `doorhub check-config` tells the technician.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Command;

use doorhub::config::Config;

/// A config with one bus and `doors` (each a `[[door]]` body after its id line), in `dir`.
fn write_config(dir: &Path, doors: &[(&str, &str)]) -> std::path::PathBuf {
    let mut text = format!(
        "[hub]\nid = \"hub-1\"\ndata_dir = \"{}\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n\
         allow_plaintext = true\n[[bus]]\nname = \"a\"\nport = \"/dev/ttyUSB0\"\n",
        dir.join("data").display()
    );
    for (i, (id, more)) in doors.iter().enumerate() {
        text.push_str(&format!(
            "[[door]]\nid = \"{id}\"\nbus = \"a\"\naddress = {i}\nmode = \"hub\"\n{more}"
        ));
    }
    let path = dir.join("doorhub.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A key file (mode 0600) at `dir/name`.
fn key_file(dir: &Path, name: &str) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.join(name))
        .unwrap();
    std::io::Write::write_all(&mut f, b"00112233445566778899aabbccddeeff\n").unwrap();
}

fn errors(path: &Path) -> String {
    Config::load_with_env(path, Vec::new())
        .expect_err("an invalid config")
        .to_string()
}

#[test]
fn check_config_names_the_doors_that_will_pair() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    key_file(&dir.path().join("keys"), "vault.scbk");
    let path = write_config(
        dir.path(),
        &[
            (
                "lobby",
                "scbk_file = \"keys/lobby.scbk\"\ninstall_key = true\n",
            ),
            (
                "vault",
                "scbk_file = \"keys/vault.scbk\"\ninstall_key = true\n",
            ),
            ("annex", "scbk_file = \"keys/vault.scbk\"\n"),
            ("gate", ""),
        ],
    );
    let out = Command::new(env!("CARGO_BIN_EXE_doorhub"))
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "lobby: will pair a new reader in install mode (install_key = true, no key file yet)",
        "vault: uses its key file",
        "annex: uses its key file",
        "gate: no Secure Channel",
    ] {
        assert!(
            stdout.lines().any(|l| l.trim() == line),
            "{line:?} missing:\n{stdout}"
        );
    }
}

#[test]
fn a_missing_key_file_is_an_error_unless_install_key_and_install_key_needs_a_file() {
    let dir = tempfile::tempdir().unwrap();
    // install_key = false (the default): the file must exist; the message says how to pair.
    let path = write_config(dir.path(), &[("lobby", "scbk_file = \"lobby.scbk\"\n")]);
    let e = errors(&path);
    assert!(e.contains("door[0].scbk_file"), "{e}");
    assert!(e.contains("lobby.scbk does not exist"), "{e}");
    assert!(e.contains("set install_key = true"), "{e}");
    let path = write_config(
        dir.path(),
        &[("lobby", "scbk_file = \"lobby.scbk\"\ninstall_key = false\n")],
    );
    assert!(errors(&path).contains("lobby.scbk does not exist"));
    // install_key = true: fine without the file, as long as it can be written there.
    let path = write_config(
        dir.path(),
        &[("lobby", "scbk_file = \"lobby.scbk\"\ninstall_key = true\n")],
    );
    let config = Config::load_with_env(&path, Vec::new()).expect("pairs");
    assert!(config.door[0].pairs());
    let path = write_config(
        dir.path(),
        &[(
            "lobby",
            "scbk_file = \"nodir/lobby.scbk\"\ninstall_key = true\n",
        )],
    );
    let e = errors(&path);
    assert!(e.contains("its directory is missing"), "{e}");
    // install_key without scbk_file has nowhere to put the key.
    let path = write_config(dir.path(), &[("lobby", "install_key = true\n")]);
    let e = errors(&path);
    assert!(e.contains("door[0].install_key"), "{e}");
    assert!(e.contains("needs scbk_file"), "{e}");
    // A boolean only.
    let path = write_config(
        dir.path(),
        &[(
            "lobby",
            "scbk_file = \"lobby.scbk\"\ninstall_key = \"yes\"\n",
        )],
    );
    assert!(errors(&path).contains("install_key"));
}
