//! Transport security for the MQTT link (`cloud.md`, "Transport security").
//!
//! `mqtts://` uses rustls with the `ring` provider: the configured CA bundle (or the system's root
//! certificates) and, where configured, a client certificate and key for mutual TLS. `mqtt://` is
//! refused unless `mqtt.allow_plaintext` is set.
//!
//! This module only builds the rustls configuration and the rumqttc [`Transport`]; the broker's
//! host and port for `MqttOptions` are the caller's business. Error messages name the file and
//! what is wrong with it, never the contents of a key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rumqttc::{TlsConfiguration, Transport};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::config::MqttConfig;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// `mqtt://` without `mqtt.allow_plaintext = true`.
    #[error(
        "mqtt.url {url:?} is plaintext; use mqtts:// or set mqtt.allow_plaintext = true (lab brokers only)"
    )]
    PlaintextRefused {
        /// The configured URL.
        url: String,
    },
    /// The URL is neither `mqtts://` nor `mqtt://`.
    #[error("mqtt.url {url:?} must start with mqtts:// (or mqtt:// with mqtt.allow_plaintext)")]
    UnsupportedScheme {
        /// The configured URL.
        url: String,
    },
    /// Only one of `cert_file` and `key_file` is set.
    #[error("mqtt.cert_file and mqtt.key_file must be set together (mutual TLS needs both)")]
    IncompleteClientAuth,
    /// A certificate file could not be read or parsed as PEM.
    #[error("{what} {path}: {reason}")]
    CertificateFile {
        /// Which setting the file comes from, e.g. `mqtt.ca_file`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong, without the file's contents.
        reason: String,
    },
    /// A certificate file holds no `CERTIFICATE` PEM section.
    #[error("{what} {path}: no PEM certificates in file")]
    NoCertificates {
        /// Which setting the file comes from.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// A certificate in the CA bundle is not usable as a trust anchor.
    #[error("mqtt.ca_file {path}: certificate #{index} is not a usable CA certificate: {reason}")]
    BadCaCertificate {
        /// The CA bundle.
        path: PathBuf,
        /// Position of the certificate in the file, counting from 1.
        index: usize,
        /// What rustls/webpki reported.
        reason: String,
    },
    /// The key file could not be read, holds no PEM private key, or the key type is unsupported.
    #[error("mqtt.key_file {path}: unreadable private key: {reason}")]
    UnreadableKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong, without the key's contents.
        reason: String,
    },
    /// The private key does not belong to the client certificate.
    #[error("mqtt.key_file {key} does not match the certificate in mqtt.cert_file {cert}")]
    KeyMismatch {
        /// The client certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// No CA file is configured and the system has no usable root certificates.
    #[error("mqtt.ca_file is not set and no system root certificates could be loaded{detail}")]
    NoSystemRoots {
        /// Errors reported while loading, prefixed with `: `, or empty.
        detail: String,
    },
    /// rustls refused the configuration for another reason.
    #[error("TLS configuration: {0}")]
    Rustls(#[source] rustls::Error),
}

/// How the URL asks to connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Tls,
    Plain,
}

fn scheme(url: &str) -> Result<Scheme, TlsError> {
    let has_prefix = |prefix: &str| {
        url.get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
    };
    if has_prefix("mqtts://") {
        Ok(Scheme::Tls)
    } else if has_prefix("mqtt://") {
        Ok(Scheme::Plain)
    } else {
        Err(TlsError::UnsupportedScheme {
            url: url.to_owned(),
        })
    }
}

/// Describes a PEM parsing problem without quoting the data (the file may hold a key).
fn pem_reason(err: &pem::Error) -> String {
    match err {
        pem::Error::Io(e) => format!("cannot read: {e}"),
        pem::Error::NoItemsFound => "no matching PEM section".to_owned(),
        pem::Error::MissingSectionEnd { .. } => "PEM section without its END line".to_owned(),
        pem::Error::IllegalSectionStart { .. } => "malformed PEM BEGIN line".to_owned(),
        pem::Error::Base64Decode(_) => "PEM section is not valid base64".to_owned(),
        _ => "malformed PEM".to_owned(),
    }
}

/// Reads every certificate from a PEM file; fails if there is none.
fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_err = |e: &pem::Error| TlsError::CertificateFile {
        what,
        path: path.to_owned(),
        reason: pem_reason(e),
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(&e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificates {
            what,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn root_store(ca_file: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for (i, cert) in read_certs("mqtt.ca_file", path)?.into_iter().enumerate() {
                roots.add(cert).map_err(|e| TlsError::BadCaCertificate {
                    path: path.to_owned(),
                    index: i + 1,
                    reason: e.to_string(),
                })?;
            }
        }
        None => {
            let loaded = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(loaded.certs);
            if added == 0 {
                let detail = loaded
                    .errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(TlsError::NoSystemRoots {
                    detail: if detail.is_empty() {
                        String::new()
                    } else {
                        format!(": {detail}")
                    },
                });
            }
        }
    }
    Ok(roots)
}

/// Builds the rustls client configuration for `mqtt`.
///
/// Trusts the certificates in `mqtt.ca_file` (PEM) or, when it is unset, the system's root
/// certificates. Presents `mqtt.cert_file` with `mqtt.key_file` (PEM; PKCS#8, PKCS#1 or SEC1) when
/// both are set; setting only one of them is an error. The URL scheme is not looked at here.
pub fn client_config(mqtt: &MqttConfig) -> Result<ClientConfig, TlsError> {
    let roots = root_store(mqtt.ca_file.as_deref())?;
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Rustls)?
            .with_root_certificates(roots);
    match (&mqtt.cert_file, &mqtt.key_file) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert), Some(key)) => {
            let chain = read_certs("mqtt.cert_file", cert)?;
            let key_der =
                PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::UnreadableKey {
                    path: key.clone(),
                    reason: match e {
                        pem::Error::NoItemsFound => "no PEM private key in file".to_owned(),
                        other => pem_reason(&other),
                    },
                })?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| match e {
                    rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
                        cert: cert.clone(),
                        key: key.clone(),
                    },
                    // The ring provider refuses key types it cannot sign with (`General`); its
                    // message names the supported types, never the key material.
                    rustls::Error::General(reason) => TlsError::UnreadableKey {
                        path: key.clone(),
                        reason,
                    },
                    other => TlsError::Rustls(other),
                })
        }
        _ => Err(TlsError::IncompleteClientAuth),
    }
}

/// The rumqttc transport for `mqtt.url`: TLS per [`client_config`] for `mqtts://`, plain TCP for
/// `mqtt://` (only with `mqtt.allow_plaintext`). Any other scheme is an error.
pub fn transport(mqtt: &MqttConfig) -> Result<Transport, TlsError> {
    match scheme(&mqtt.url)? {
        Scheme::Tls => {
            let cfg = client_config(mqtt)?;
            Ok(Transport::tls_with_config(TlsConfiguration::Rustls(
                Arc::new(cfg),
            )))
        }
        Scheme::Plain if mqtt.allow_plaintext => Ok(Transport::Tcp),
        Scheme::Plain => Err(TlsError::PlaintextRefused {
            url: mqtt.url.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    use serde_json::json;
    use tempfile::TempDir;

    use super::*;

    /// A CA and a client certificate signed by it, plus a second unrelated key, as PEM files.
    struct Files {
        dir: TempDir,
        ca: PathBuf,
        cert: PathBuf,
        key: PathBuf,
        other_key: PathBuf,
    }

    fn files() -> Files {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "unit test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "hub-1");
        let cert = params.signed_by(&key, &issuer).unwrap();
        let other_key = KeyPair::generate().unwrap();
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            fs::write(&path, text).unwrap();
            path
        };
        Files {
            ca: write("ca.pem", ca_cert.pem()),
            cert: write("client.pem", cert.pem()),
            key: write("client.key", key.serialize_pem()),
            other_key: write("other.key", other_key.serialize_pem()),
            dir,
        }
    }

    fn mqtt(url: &str, ca: Option<&Path>, cert: Option<&Path>, key: Option<&Path>) -> MqttConfig {
        serde_json::from_value(json!({
            "url": url,
            "ca_file": ca,
            "cert_file": cert,
            "key_file": key,
            "topic_prefix": "doorhub/v1",
            "keep_alive_s": 30,
            "max_payload": 262144,
            "allow_plaintext": false,
        }))
        .unwrap()
    }

    fn err(mqtt: &MqttConfig) -> TlsError {
        match client_config(mqtt) {
            Ok(_) => panic!("expected an error for {mqtt:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn mutual_tls_config_builds() {
        let f = files();
        let cfg = client_config(&mqtt(
            "mqtts://127.0.0.1:8883",
            Some(&f.ca),
            Some(&f.cert),
            Some(&f.key),
        ))
        .unwrap();
        assert!(cfg.client_auth_cert_resolver.has_certs());
    }

    #[test]
    fn ca_only_config_has_no_client_cert() {
        let f = files();
        let cfg = client_config(&mqtt("mqtts://h:1", Some(&f.ca), None, None)).unwrap();
        assert!(!cfg.client_auth_cert_resolver.has_certs());
    }

    #[test]
    fn key_not_matching_cert_is_named() {
        let f = files();
        let e = err(&mqtt(
            "mqtts://h:1",
            Some(&f.ca),
            Some(&f.cert),
            Some(&f.other_key),
        ));
        assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains(&f.other_key.display().to_string()), "{msg}");
        assert!(msg.contains(&f.cert.display().to_string()), "{msg}");
        assert!(msg.contains("does not match"), "{msg}");
    }

    #[test]
    fn garbage_ca_file_has_no_certificates() {
        let f = files();
        let garbage = f.dir.path().join("garbage.pem");
        fs::write(&garbage, "this is not PEM\n").unwrap();
        let e = err(&mqtt("mqtts://h:1", Some(&garbage), None, None));
        assert!(matches!(e, TlsError::NoCertificates { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains("garbage.pem") && msg.contains("no PEM certificates"));
    }

    #[test]
    fn key_file_given_as_ca_has_no_certificates() {
        let f = files();
        let e = err(&mqtt("mqtts://h:1", Some(&f.key), None, None));
        assert!(matches!(e, TlsError::NoCertificates { .. }), "{e:?}");
    }

    #[test]
    fn missing_ca_file_names_path() {
        let f = files();
        let missing = f.dir.path().join("nope.pem");
        let msg = err(&mqtt("mqtts://h:1", Some(&missing), None, None)).to_string();
        assert!(
            msg.contains("nope.pem") && msg.contains("cannot read"),
            "{msg}"
        );
    }

    #[test]
    fn corrupt_key_is_reported_without_its_contents() {
        let f = files();
        let pem = fs::read_to_string(&f.key).unwrap();
        // Damage the base64 body but keep the markers.
        let secret_line = pem.lines().nth(1).unwrap().to_owned();
        let damaged = pem.replace(&secret_line, &format!("!!{}", &secret_line[2..]));
        let bad = f.dir.path().join("bad.key");
        fs::write(&bad, &damaged).unwrap();
        let e = err(&mqtt("mqtts://h:1", Some(&f.ca), Some(&f.cert), Some(&bad)));
        assert!(matches!(e, TlsError::UnreadableKey { .. }), "{e:?}");
        let msg = e.to_string();
        let debug = format!("{e:?}");
        assert!(msg.contains("bad.key"), "{msg}");
        for part in [&secret_line[2..20], &secret_line[20..40]] {
            assert!(!msg.contains(part) && !debug.contains(part), "{msg}");
        }
    }

    #[test]
    fn certificate_given_as_key_is_unreadable_key() {
        let f = files();
        let e = err(&mqtt(
            "mqtts://h:1",
            Some(&f.ca),
            Some(&f.cert),
            Some(&f.cert),
        ));
        assert!(matches!(e, TlsError::UnreadableKey { .. }), "{e:?}");
        assert!(e.to_string().contains("no PEM private key"), "{e}");
    }

    #[test]
    fn cert_without_key_is_refused() {
        let f = files();
        let e = err(&mqtt("mqtts://h:1", Some(&f.ca), Some(&f.cert), None));
        assert!(matches!(e, TlsError::IncompleteClientAuth), "{e:?}");
    }

    #[test]
    fn plaintext_needs_allow_plaintext() {
        let mut cfg = mqtt("mqtt://127.0.0.1:1883", None, None, None);
        let e = transport(&cfg).err().unwrap();
        assert!(matches!(e, TlsError::PlaintextRefused { .. }), "{e:?}");
        cfg.allow_plaintext = true;
        assert!(matches!(transport(&cfg).unwrap(), Transport::Tcp));
    }

    #[test]
    fn other_schemes_are_refused() {
        for url in ["tcp://h:1", "ws://h:1", "h:1", ""] {
            let mut cfg = mqtt(url, None, None, None);
            cfg.allow_plaintext = true;
            let e = transport(&cfg).err().unwrap();
            assert!(
                matches!(e, TlsError::UnsupportedScheme { .. }),
                "{url}: {e:?}"
            );
        }
    }

    #[test]
    fn mqtts_gives_tls_transport() {
        let f = files();
        let cfg = mqtt("MQTTS://h:1", Some(&f.ca), Some(&f.cert), Some(&f.key));
        assert!(matches!(
            transport(&cfg).unwrap(),
            Transport::Tls(TlsConfiguration::Rustls(_))
        ));
    }
}
