//! The configuration contract: every fixture under tests/config/valid loads, every one under
//! tests/config/invalid fails naming the key (and line) its first comment line expects.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use doorhub::config::{Checked, Config, ConfigErrors};

const PASSWORD: &str = "pa55-Zebra-Quokka-71";
const SCBK: &str = "00112233445566778899aabbccddeeff";
/// Not a key, but secret all the same: an error about it must not show it.
const BAD_SCBK: &str = "secret-but-not-hex-d3adb33f";

/// A directory holding the files fixtures refer to by relative path, and `name` copied in as
/// `doorhub.toml` (or `text` written there).
fn stage(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("test setup: temp dir");
    let put = |name: &str, contents: &str, mode: u32| {
        let path = dir.path().join(name);
        fs::create_dir_all(path.parent().expect("test setup: joined path has a parent"))
            .expect("test setup: mkdir");
        fs::write(&path, contents).expect("test setup: write");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("test setup: chmod");
    };
    // Real certificates: the check builds the TLS setup the daemon would.
    let certs = common::TestCerts::new("hub-1");
    let read = |p: &Path| fs::read_to_string(p).expect("test setup: read certificate");
    put("ca.pem", &read(&certs.ca), 0o644);
    put("hub.crt", &read(&certs.client_cert), 0o644);
    put("hub.key", &read(&certs.client_key), 0o600);
    put("hub-loose.key", &read(&certs.client_key), 0o640);
    put("password-loose", PASSWORD, 0o644);
    put("password", PASSWORD, 0o600);
    put("keys/lobby.scbk", &format!("{SCBK}\n"), 0o600);
    put("keys/loose.scbk", &format!("{SCBK}\n"), 0o644);
    put("keys/bad.scbk", BAD_SCBK, 0o600);
    let config = dir.path().join("doorhub.toml");
    fs::write(&config, text).expect("test setup: write config");
    (dir, config)
}

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/config")
        .join(kind);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("fixture dir exists")
        .map(|e| e.expect("fixture dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files
}

fn load(text: &str, env: &[(&str, &str)]) -> (tempfile::TempDir, Result<Config, ConfigErrors>) {
    let (dir, path) = stage(text);
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    (dir, Config::load_with_env(&path, env))
}

#[test]
fn valid_fixtures_load() {
    for fixture in fixtures("valid") {
        let text = fs::read_to_string(&fixture).expect("read fixture");
        let (_dir, result) = load(&text, &[]);
        if let Err(e) = result {
            panic!("{} should load, got:\n{e}", fixture.display());
        }
    }
}

#[test]
fn invalid_fixtures_fail_naming_the_key() {
    for fixture in fixtures("invalid") {
        let text = fs::read_to_string(&fixture).expect("read fixture");
        // A misspelt key also leaves the real one missing, so other errors may come along.
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} lacks '# expect: KEY'", fixture.display()));
        let (key, line) = match expect.split_once(" at line ") {
            Some((key, line)) => (key, Some(line.parse::<usize>().expect("line number"))),
            None => (expect, None),
        };
        let key = if key == "(file)" { "" } else { key };
        let (_dir, result) = load(&text, &[]);
        let errors = match result {
            Ok(_) => panic!("{} should fail", fixture.display()),
            Err(e) => e,
        };
        eprintln!("{}:\n{errors}\n", fixture.display());
        let found = errors.iter().find(|e| e.key == key).unwrap_or_else(|| {
            panic!(
                "{}: expected an error naming {key:?}, got:\n{errors}",
                fixture.display()
            )
        });
        if let Some(line) = line {
            assert_eq!(found.line, Some(line), "{}: {found}", fixture.display());
        }
        assert!(found.file.is_some(), "{}: {found}", fixture.display());
    }
}

#[test]
fn full_fixture_values() {
    let text = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config/valid/full.toml"),
    )
    .expect("read fixture");
    let (dir, result) = load(&text, &[]);
    let config = result.expect("full.toml loads");
    // Relative paths are taken from the configuration file's directory.
    let base = fs::canonicalize(dir.path()).expect("canonical temp dir");
    let root = |p: &Path| fs::canonicalize(p).expect("resolved path exists");
    assert_eq!(
        root(config.mqtt.ca_file.as_deref().expect("ca_file set")),
        base.join("ca.pem")
    );
    assert!(config.hub.data_dir.is_absolute());
    assert!(config.hub.data_dir.ends_with("data"));
    assert_eq!(config.mqtt.client_id, "hub-1-client");
    assert_eq!(config.mqtt.username.as_deref(), Some("hub1"));
    let ep = config.mqtt.endpoint().expect("url is valid");
    assert_eq!(
        (ep.host.as_str(), ep.port, ep.tls),
        ("iot.example.com", 8883, true)
    );
    assert_eq!(config.bus.len(), 2);
    assert_eq!(config.bus[0].vendor_code_bytes(), [0x0A, 0x44, 0x48]);
    assert_eq!(config.bus[1].baud, 115_200);
    assert_eq!(config.bus[1].offline_after, 3);
    let key = config.door[0].read_scbk().expect("key readable");
    assert_eq!(key.map(hex::encode).as_deref(), Some(SCBK));
    assert_eq!(config.door[1].read_scbk().expect("no key"), None);
    assert_eq!(config.door[1].strike_ms, 3000);
}

#[test]
fn defaults_and_empty_strings() {
    let text = "[hub]\nid = \"hub-1\"\n[mqtt]\nurl = \"mqtts://b.example.com\"\nusername = \"\"\n";
    let (_dir, result) = load(text, &[]);
    let config = result.expect("loads");
    assert_eq!(config.mqtt.client_id, "hub-1");
    assert_eq!(config.mqtt.username, None);
    assert_eq!(config.mqtt.topic_prefix, "doorhub/v1");
    assert_eq!(config.mqtt.keep_alive_s, 30);
    assert_eq!(config.mqtt.max_payload, 262_144);
    assert!(!config.mqtt.allow_plaintext);
    assert_eq!(config.hub.data_dir, Path::new("/var/lib/doorhub"));
    assert_eq!(config.health.interval_s, 60);
    assert_eq!(config.events.max_queued, 100_000);
    assert_eq!(config.limits.credentials_per_door, 100_000);
    assert_eq!(config.limits.unconfigured_doors, 64);
    assert!(config.bus.is_empty() && config.door.is_empty());
}

#[test]
fn several_errors_reported_at_once() {
    let text = r#"[hub]
id = "Bad Hub"
extra = 1

[mqtt]
url = "mqtt://broker"
keep_alive_s = "thirty"

[[bus]]
name = "a"
port = "/dev/ttyUSB0"
baud = 1200

[[door]]
id = "one"
bus = "a"
address = 130
mode = "hub"

[[door]]
id = "Two"
bus = "nowhere"
address = 3
mode = "hub"
"#;
    let (_dir, result) = load(text, &[]);
    let errors = result.expect_err("many problems");
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    for key in [
        "hub.extra",
        "hub.id",
        "mqtt.keep_alive_s",
        "bus[0].baud",
        "door[0].address",
        "door[1].id",
    ] {
        assert!(keys.contains(&key), "missing {key} in:\n{errors}");
    }
    // One line per problem.
    assert_eq!(errors.to_string().lines().count(), errors.len());
    // bus[0] failed, so whether "nowhere" exists is unknown and not claimed.
    assert!(!keys.contains(&"door[1].bus"), "{errors}");
    let address = errors
        .iter()
        .find(|e| e.key == "door[0].address")
        .expect("checked above");
    assert_eq!(address.line, Some(17));
    assert!(
        address
            .to_string()
            .ends_with("doorhub.toml:17: door[0].address: 130 is out of range; allowed 0..=126"),
        "{address}"
    );
}

#[test]
fn mqtt_and_hub_problems_together() {
    let text = "[hub]\nid = \"Bad Hub\"\n[mqtt]\nurl = \"mqtt://broker\"\ntopic_prefix = \"/x\"\n";
    let (_dir, result) = load(text, &[]);
    let errors = result.expect_err("three problems");
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        ["hub.id", "mqtt.url", "mqtt.topic_prefix"],
        "{errors}"
    );
    let url = &errors.errors[1];
    assert!(url.message.contains("mqtts://"), "{url}");
    assert!(url.message.contains("mqtt.allow_plaintext = true"), "{url}");
}

#[test]
fn environment_overrides_the_file() {
    let text = "[hub]\nid = \"hub-1\"\n[mqtt]\nurl = \"mqtt://lab\"\n";
    let (_dir, result) = load(
        text,
        &[
            ("DOORHUB__MQTT__URL", "mqtts://prod.example.com:9999"),
            // Looks like a number; an id must stay as written.
            ("DOORHUB__HUB__ID", "0123"),
            ("DOORHUB__MQTT__KEEP_ALIVE_S", "45"),
            ("DOORHUB__MQTT__ALLOW_PLAINTEXT", "false"),
            ("OTHER__MQTT__URL", "ignored"),
        ],
    );
    let config = result.expect("env fixes the plaintext url");
    let ep = config.mqtt.endpoint().expect("valid");
    assert_eq!(
        (ep.host.as_str(), ep.port, ep.tls),
        ("prod.example.com", 9999, true)
    );
    assert_eq!(config.hub.id, "0123");
    assert_eq!(config.mqtt.client_id, "0123");
    assert_eq!(config.mqtt.keep_alive_s, 45);
}

#[test]
fn environment_errors_name_the_variable() {
    let text = "[hub]\nid = \"hub-1\"\n[mqtt]\nurl = \"mqtts://b\"\n";
    let (_dir, result) = load(
        text,
        &[
            ("DOORHUB__HUB__ID", "Hub 1"),
            ("DOORHUB__MQTT__KEEP_ALIVE_S", "soon"),
            ("DOORHUB__MQTT__COLOUR", "blue"),
        ],
    );
    let errors = result.expect_err("three problems");
    assert_eq!(errors.len(), 3, "{errors}");
    for e in &errors {
        assert_eq!(e.file, None, "{e}");
        assert!(
            e.message.contains("(set by environment variable DOORHUB__"),
            "{e}"
        );
    }
}

#[test]
fn environment_cannot_set_list_entries() {
    let text = "[hub]\nid = \"hub-1\"\n[mqtt]\nurl = \"mqtts://b\"\n";
    let (_dir, result) = load(text, &[("DOORHUB__DOOR__0__ADDRESS", "5")]);
    let errors = result.expect_err("refused");
    assert_eq!(errors.len(), 1, "{errors}");
    assert_eq!(errors.errors[0].key, "door.0.address");
    assert!(
        errors.errors[0]
            .message
            .contains("DOORHUB__DOOR__0__ADDRESS")
    );
}

#[test]
fn errors_follow_file_order() {
    let text = "[hub]\nid = \"hub-1\"\n[mqtt]\nurl = \"mqtts://b\"\n\
                max_payload = 1\nkeep_alive_s = 1\n";
    let (_dir, result) = load(text, &[("DOORHUB__HEALTH__INTERVAL_S", "0")]);
    let errors = result.expect_err("three problems");
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        ["mqtt.max_payload", "mqtt.keep_alive_s", "health.interval_s"],
        "{errors}"
    );
}

#[test]
fn secrets_never_in_messages() {
    let text = r#"[hub]
id = "hub-1"
[mqtt]
url = "mqtts://b"
password_file = "password"
[[bus]]
name = "a"
port = "/dev/ttyUSB0"
[[door]]
id = "d1"
bus = "a"
address = 1
mode = "stored"
scbk_file = "keys/loose.scbk"
[[door]]
id = "d2"
bus = "a"
address = 2
mode = "stored"
scbk_file = "keys/bad.scbk"
"#;
    let (_dir, result) = load(text, &[]);
    let errors = result.expect_err("no username; loose key; bad key");
    let shown = format!("{errors}\n{errors:?}");
    assert_eq!(errors.len(), 3, "{shown}");
    for secret in [PASSWORD, SCBK, BAD_SCBK] {
        assert!(!shown.contains(secret), "secret shown in:\n{shown}");
    }
    assert!(shown.contains("chmod 600 "), "{shown}");

    // And a loaded configuration's Debug shows paths, never contents.
    let ok = text
        .replace(
            "scbk_file = \"keys/loose.scbk\"",
            "scbk_file = \"keys/lobby.scbk\"",
        )
        .replace("scbk_file = \"keys/bad.scbk\"", "")
        .replace("password_file", "username = \"u\"\npassword_file");
    let (_dir, result) = load(&ok, &[]);
    let config = result.expect("fixed");
    let debug = format!("{config:?}");
    for secret in [PASSWORD, SCBK] {
        assert!(!debug.contains(secret), "secret in Debug:\n{debug}");
    }
}

#[test]
fn missing_file_names_the_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nope.toml");
    let errors = Config::load_with_env(&path, Vec::new()).expect_err("no file");
    assert_eq!(errors.len(), 1);
    assert!(
        errors.to_string().contains(&path.display().to_string()),
        "{errors}"
    );
}

#[test]
fn example_file_is_valid() {
    let example = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/doorhub.example.toml"),
    )
    .expect("read example");
    // Its absolute /etc/doorhub/... and /var/lib/doorhub/... paths become relative, so the
    // staged files stand in.
    let text = example
        .replace("/etc/doorhub/", "")
        .replace("/var/lib/doorhub/keys/", "keys/");
    assert_ne!(text, example);
    let (_dir, result) = load(&text, &[]);
    let config = match result {
        Ok(c) => c,
        Err(e) => panic!("example should load:\n{e}"),
    };
    assert_eq!(config.hub.id, "bldg-12-hub-1");
    assert!(!config.door.is_empty());
}

/// `Config::check` on `text` staged as usual: the configuration's warnings, or its errors.
fn check(text: &str) -> (tempfile::TempDir, Result<Checked, ConfigErrors>) {
    let (dir, path) = stage(text);
    (dir, Config::check_with_env(&path, Vec::new()))
}

const HEAD: &str = "[hub]\nid = \"hub-1\"\n[mqtt]\nurl = \"mqtts://b.example.com\"\n";

#[test]
fn the_same_port_under_another_name_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let link = dir.path().join("ttyRS485");
    std::os::unix::fs::symlink("/dev/null", &link).expect("symlink");
    let text = format!(
        "{HEAD}[[bus]]\nname = \"a\"\nport = \"/dev/null\"\n\
         [[bus]]\nname = \"b\"\nport = \"{}\"\n",
        link.display()
    );
    let (_dir, result) = check(&text);
    let errors = result.expect_err("one port, two buses");
    assert_eq!(errors.len(), 1, "{errors}");
    let e = &errors.errors[0];
    assert_eq!((e.key.as_str(), e.line), ("bus[1].port", Some(10)), "{e}");
    assert!(e.message.contains("bus[0]"), "{e}");
    assert!(e.message.contains("(both are /dev/null)"), "{e}");
}

#[test]
fn a_missing_port_is_a_warning_because_run_retries_it() {
    let text = format!("{HEAD}[[bus]]\nname = \"a\"\nport = \"/dev/ttyDOORHUB-ABSENT\"\n");
    let (_dir, result) = check(&text);
    let checked = result.unwrap_or_else(|e| panic!("a missing port is no error:\n{e}"));
    let keys: Vec<(&str, Option<usize>)> = checked
        .warnings
        .iter()
        .map(|w| (w.key.as_str(), w.line))
        .collect();
    assert!(keys.contains(&("bus[0].port", Some(7))), "{keys:?}");
    let warning = checked
        .warnings
        .iter()
        .find(|w| w.key == "bus[0].port")
        .expect("checked above");
    assert!(warning.message.contains("keeps trying"), "{warning}");
}

#[test]
fn a_missing_status_socket_folder_is_a_warning() {
    let text = "[hub]\nid = \"hub-1\"\ndata_dir = \"data\"\nstatus_socket = \"run/doorhub/s.sock\"\n\
                [mqtt]\nurl = \"mqtts://b.example.com\"\n";
    let (dir, result) = check(text);
    let checked = result.unwrap_or_else(|e| panic!("the daemon runs without it:\n{e}"));
    let warning = checked
        .warnings
        .iter()
        .find(|w| w.key == "hub.status_socket")
        .unwrap_or_else(|| panic!("no warning in {:?}", checked.warnings));
    assert_eq!(warning.line, Some(4), "{warning}");
    assert!(warning.message.contains("will not answer"), "{warning}");
    // Neither the store nor the socket folder is left behind by the check.
    assert!(!dir.path().join("data").exists());
    assert!(!dir.path().join("run").exists());

    // A folder that is there: no warning, and no probe file left in it.
    fs::create_dir_all(dir.path().join("run/doorhub")).expect("mkdir");
    fs::create_dir(dir.path().join("data")).expect("mkdir");
    let config = dir.path().join("doorhub.toml");
    let checked = Config::check_with_env(&config, Vec::new()).expect("still fine");
    assert!(checked.warnings.is_empty(), "{:?}", checked.warnings);
    for folder in ["run/doorhub", "data"] {
        let left: Vec<_> = fs::read_dir(dir.path().join(folder))
            .expect("read dir")
            .collect();
        assert!(left.is_empty(), "{folder}: {left:?}");
    }
}

#[test]
fn a_password_that_is_not_text_is_refused_without_showing_it() {
    let text = format!("{HEAD}username = \"u\"\npassword_file = \"binary\"\n");
    let (dir, path) = stage(&text);
    let secret = b"\xff\xfehunter2";
    fs::write(dir.path().join("binary"), secret).expect("write");
    fs::set_permissions(dir.path().join("binary"), fs::Permissions::from_mode(0o600))
        .expect("chmod");
    let errors = Config::check_with_env(&path, Vec::new()).expect_err("not text");
    assert_eq!(errors.len(), 1, "{errors}");
    assert_eq!(errors.errors[0].key, "mqtt.password_file", "{errors}");
    assert!(!errors.to_string().contains("hunter2"), "{errors}");
}

#[test]
fn loose_secret_files_say_how_to_fix_them() {
    let text = format!(
        "{HEAD}cert_file = \"hub.crt\"\nkey_file = \"hub-loose.key\"\n\
         username = \"u\"\npassword_file = \"password-loose\"\n"
    );
    let (dir, result) = check(&text);
    let errors = result.expect_err("two loose files");
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["mqtt.key_file", "mqtt.password_file"], "{errors}");
    let base = std::path::absolute(dir.path()).expect("absolute");
    for (e, file, mode) in [
        (&errors.errors[0], "hub-loose.key", "0640"),
        (&errors.errors[1], "password-loose", "0644"),
    ] {
        let fix = format!("chmod 600 {}", base.join(file).display());
        assert!(e.message.contains(&fix), "{e}");
        assert!(e.message.contains(mode), "{e}");
    }
    assert!(!errors.to_string().contains(PASSWORD), "{errors}");
}
