//! The config loader (`Config::load_with_env`, `Config::status_socket_with_env`) on any file
//! text and environment. Input: the file's bytes, then optionally a NUL and environment
//! variables, one `NAME=value` a line.
//!
//! The file is written into a private, empty directory made once per process, so relative
//! paths in the input (certificates, key files) name nothing. The loader stats, opens and reads
//! (a key file at most 1 KiB) what a path names, and, as check-config must, checks that the
//! store's and the status socket's folders can be written: it makes and removes a probe file
//! named `.doorhub-check-PID-N` in them, or makes and removes the first missing folder. It
//! changes nothing else, but run as root an absolute path in the input reaches the real system,
//! so run this target on a machine (or in a container) of no value.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use doorhub::config::Config;
use libfuzzer_sys::fuzz_target;

/// The directory (kept alive for the process) and the config file's path in it.
fn config_file() -> &'static PathBuf {
    static FILE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = FILE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("doorhub.toml");
        small_root_store(dir.path());
        (dir, path)
    });
    path
}

/// A configuration without `mqtt.ca_file` makes the loader read the system's root certificates,
/// which takes milliseconds and dominated the target (about 700 inputs a second). The same code
/// runs on a bundle of one root, the first in the system's, named by the variables that
/// rustls-native-certs reads.
fn small_root_store(dir: &std::path::Path) {
    let system = std::fs::read_to_string("/etc/ssl/certs/ca-certificates.crt").unwrap_or_default();
    let end = "-----END CERTIFICATE-----";
    let first = system.find(end).map_or("", |at| &system[..at + end.len()]);
    let bundle = dir.join("roots.pem");
    std::fs::write(&bundle, format!("{first}\n")).expect("writing the root bundle");
    // SAFETY: called once, from the first input, before the target starts any thread.
    unsafe {
        std::env::set_var("SSL_CERT_FILE", &bundle);
        std::env::set_var("SSL_CERT_DIR", dir);
    }
}

fuzz_target!(|data: &[u8]| {
    let (text, env) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let env: Vec<(String, String)> = String::from_utf8_lossy(env)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let path = config_file();
    std::fs::write(path, text).expect("writing the config file");

    let loaded = Config::load_with_env(path, env.clone());
    let socket = Config::status_socket_with_env(path, env);
    match &loaded {
        Ok(config) => {
            // `doorhub status` must look where the daemon listens.
            assert_eq!(socket.as_ref().ok(), Some(&config.hub.status_socket));
            let _ = config.mqtt.endpoint();
            for door in &config.door {
                let _ = door.read_scbk();
            }
        }
        // Every failure says why.
        Err(errors) => assert!(!errors.is_empty()),
    }
});
