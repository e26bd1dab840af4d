//! The shared integration-test harness: a real mosquitto broker per test, test certificates, and
//! an MQTT test client. Test files use it with `mod common;`.
//!
//! Nothing here is mocked. Waits are for events or for polled conditions, always with a deadline;
//! a timeout panics with what was seen (and, for the broker, its log).

// Each test file uses a different part of the harness.
#![allow(dead_code)]

pub mod burst;
pub mod hub;
pub mod peer;
pub mod simbus;
pub mod status;

use std::collections::VecDeque;
use std::fmt;
use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use doorhub::config::MqttConfig;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS, Transport,
};
use serde_json::json;
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The mosquitto binary the tests run.
pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// How long the harness waits for a broker to listen, a connection, an acknowledgement.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Interval for polled conditions.
const POLL: Duration = Duration::from_millis(20);

/// A loopback TCP port that was free a moment ago (bind port 0, read it, close).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// `(host, port)` from `mqtt://host:port` or `mqtts://host:port` (default ports 1883 and 8883).
pub fn host_port(url: &str) -> (String, u16) {
    let (scheme, rest) = url
        .split_once("://")
        .unwrap_or_else(|| panic!("no scheme in {url:?}"));
    let default = if scheme.eq_ignore_ascii_case("mqtts") {
        8883
    } else {
        1883
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.strip_prefix('[') {
        // `[v6]` or `[v6]:port`
        Some(v6) => {
            let (host, after) = v6
                .split_once(']')
                .unwrap_or_else(|| panic!("unclosed [ in {url:?}"));
            (host, after.strip_prefix(':'))
        }
        None => match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        },
    };
    let port = port.map_or(default, |p| {
        p.parse().unwrap_or_else(|_| panic!("bad port in {url:?}"))
    });
    (host.to_owned(), port)
}

/// Whether the tests run as root (mosquitto then needs `user root` to keep its privileges).
fn running_as_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Polls `cond` every 20 ms until it holds; false once `deadline` has passed.
pub async fn wait_until(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Certificates

/// A CA, a server and a client certificate it signed, and a rogue CA with its own server
/// certificate, as PEM files in a temporary directory (removed on drop). Keys are mode 0600.
pub struct TestCerts {
    dir: TempDir,
    /// The hub id, the client certificate's common name.
    pub hub_id: String,
    /// CA certificate.
    pub ca: PathBuf,
    /// CA key (to sign more certificates in a test).
    pub ca_key: PathBuf,
    /// Server certificate for `127.0.0.1` and `localhost`, signed by the CA.
    pub server_cert: PathBuf,
    /// Its key.
    pub server_key: PathBuf,
    /// Client certificate, CN = hub id, signed by the CA.
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
    /// A CA the hub does not trust.
    pub rogue_ca: PathBuf,
    /// Server certificate for `127.0.0.1` and `localhost`, signed by the rogue CA.
    pub rogue_server_cert: PathBuf,
    /// Its key.
    pub rogue_server_key: PathBuf,
}

fn ca(name: &str) -> (rcgen::Certificate, Issuer<'static, KeyPair>, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    let key_copy = KeyPair::from_pem(&key.serialize_pem()).unwrap();
    (cert, Issuer::new(params, key), key_copy)
}

fn leaf(
    cn: &str,
    sans: &[&str],
    eku: ExtendedKeyUsagePurpose,
    issuer: &Issuer<'_, KeyPair>,
) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(sans).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![eku];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert, key)
}

/// Writes `text` to `path`, created with `mode`.
fn write_file(path: &Path, text: &str, mode: u32) {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

impl TestCerts {
    /// Generates everything; the client certificate's CN is `hub_id`.
    pub fn new(hub_id: &str) -> TestCerts {
        let dir = tempfile::tempdir().unwrap();
        let (ca_cert, issuer, ca_key) = ca("doorhub test CA");
        let (rogue_cert, rogue_issuer, _) = ca("rogue CA");
        let server_sans = ["127.0.0.1", "localhost"];
        let (server, server_key) = leaf(
            "127.0.0.1",
            &server_sans,
            ExtendedKeyUsagePurpose::ServerAuth,
            &issuer,
        );
        let (client, client_key) = leaf(hub_id, &[], ExtendedKeyUsagePurpose::ClientAuth, &issuer);
        let (rogue_server, rogue_server_key) = leaf(
            "127.0.0.1",
            &server_sans,
            ExtendedKeyUsagePurpose::ServerAuth,
            &rogue_issuer,
        );
        let put = |name: &str, text: String, mode: u32| {
            let path = dir.path().join(name);
            write_file(&path, &text, mode);
            path
        };
        TestCerts {
            hub_id: hub_id.to_owned(),
            ca: put("ca.pem", ca_cert.pem(), 0o644),
            ca_key: put("ca.key", ca_key.serialize_pem(), 0o600),
            server_cert: put("server.pem", server.pem(), 0o644),
            server_key: put("server.key", server_key.serialize_pem(), 0o600),
            client_cert: put("client.pem", client.pem(), 0o644),
            client_key: put("client.key", client_key.serialize_pem(), 0o600),
            rogue_ca: put("rogue-ca.pem", rogue_cert.pem(), 0o644),
            rogue_server_cert: put("rogue-server.pem", rogue_server.pem(), 0o644),
            rogue_server_key: put("rogue-server.key", rogue_server_key.serialize_pem(), 0o600),
            dir,
        }
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// An `[mqtt]` config for `url` with this CA and the client certificate (mutual TLS).
    pub fn mqtt_config(&self, url: &str) -> MqttConfig {
        mqtt_config(json!({
            "url": url,
            "ca_file": self.ca,
            "cert_file": self.client_cert,
            "key_file": self.client_key,
        }))
    }
}

/// An `[mqtt]` config from `fields` over test defaults (`topic_prefix` `doorhub/v1`, keep-alive
/// 30 s, `max_payload` 256 KiB, `allow_plaintext` true for `mqtt://` URLs). Built by
/// deserialising, so fields that validation fills in later keep their defaults.
pub fn mqtt_config(fields: serde_json::Value) -> MqttConfig {
    let url = fields["url"].as_str().unwrap_or_default().to_owned();
    let mut value = json!({
        "url": url,
        "topic_prefix": "doorhub/v1",
        "keep_alive_s": 30,
        "max_payload": 262144,
        "allow_plaintext": url.starts_with("mqtt://"),
    });
    for (k, v) in fields.as_object().expect("fields must be a JSON object") {
        value[k] = v.clone();
    }
    serde_json::from_value(value).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Broker

/// A mosquitto broker of the test's own on a free loopback port, in a temporary directory with
/// persistence (a restart keeps sessions and retained messages) and a log file. Dropping it kills
/// the process; if the test is panicking, the log is printed first.
pub struct Broker {
    dir: TempDir,
    port: u16,
    tls: bool,
    conf: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// Which listener a broker gets.
enum Listener<'a> {
    Plain,
    Tls { certs: &'a TestCerts, rogue: bool },
}

impl Broker {
    /// A plain (`mqtt://`) broker, listening when this returns.
    pub fn start() -> Broker {
        Broker::launch(Listener::Plain)
    }

    /// A TLS broker (`mqtts://`) with the CA's server certificate that requires a client
    /// certificate signed by the CA (its CN becomes the user name).
    pub fn start_tls(certs: &TestCerts) -> Broker {
        Broker::launch(Listener::Tls {
            certs,
            rogue: false,
        })
    }

    /// Like [`Broker::start_tls`] but presenting the rogue CA's server certificate, which a hub
    /// trusting only the test CA must refuse. It still requires client certificates from the CA.
    pub fn start_tls_rogue(certs: &TestCerts) -> Broker {
        Broker::launch(Listener::Tls { certs, rogue: true })
    }

    fn launch(listener: Listener<'_>) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir(&data).unwrap();
        let log = dir.path().join("mosquitto.log");
        let conf = dir.path().join("mosquitto.conf");
        let mut tail = String::new();
        let tls = match listener {
            Listener::Plain => false,
            Listener::Tls { certs, rogue } => {
                // Copies, so the broker can be restarted after the certificates are dropped.
                let (cert, key) = if rogue {
                    (&certs.rogue_server_cert, &certs.rogue_server_key)
                } else {
                    (&certs.server_cert, &certs.server_key)
                };
                let copy = |from: &Path, name: &str, mode: u32| {
                    let to = dir.path().join(name);
                    write_file(&to, &fs::read_to_string(from).unwrap(), mode);
                    to
                };
                let cafile = copy(&certs.ca, "ca.pem", 0o644);
                let certfile = copy(cert, "server.pem", 0o644);
                let keyfile = copy(key, "server.key", 0o600);
                tail = format!(
                    "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n\
                     use_identity_as_username true\n",
                    cafile.display(),
                    certfile.display(),
                    keyfile.display()
                );
                true
            }
        };
        let user = if running_as_root() { "user root\n" } else { "" };
        let mut broker = Broker {
            dir,
            port: 0,
            tls,
            conf,
            log,
            child: None,
        };
        let mut failures = Vec::new();
        // The port was free a moment ago; another process may take it first, so retry.
        for _attempt in 0..3 {
            broker.port = free_port();
            let text = format!(
                "# written by tests/common\n\
                 {user}per_listener_settings false\n\
                 allow_anonymous true\n\
                 persistence true\n\
                 persistence_location {data}/\n\
                 log_dest file {log}\n\
                 log_type all\n\
                 connection_messages true\n\
                 log_timestamp_format %H:%M:%S\n\
                 max_queued_messages 100000\n\
                 max_inflight_messages 20\n\
                 set_tcp_nodelay true\n\
                 listener {port} 127.0.0.1\n\
                 {tail}",
                data = data.display(),
                log = broker.log.display(),
                port = broker.port,
            );
            fs::write(&broker.conf, text).unwrap();
            match broker.spawn_and_wait() {
                Ok(()) => return broker,
                Err(why) => failures.push(format!("port {}: {why}", broker.port)),
            }
        }
        // Drop prints the log.
        panic!("mosquitto did not start: {}", failures.join("; "));
    }

    /// Starts mosquitto and waits until it has logged that it is running (which it does only
    /// once every listener is open) and the port accepts TCP connections. The log check matters:
    /// a port taken by another process would accept connections while this mosquitto fails.
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "broker already running");
        let log_before = fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0) as usize;
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.path().join("stderr.log"))
                    .unwrap(),
            ))
            .spawn()
            .map_err(|e| format!("cannot run {MOSQUITTO}: {e}"))?;
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                self.child = None;
                return Err(format!("mosquitto exited with {status}"));
            }
            let running = fs::read(&self.log).is_ok_and(|log| {
                String::from_utf8_lossy(log.get(log_before..).unwrap_or_default())
                    .contains(" running")
            });
            if running && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= end {
                self.kill();
                return Err(format!(
                    "mosquitto not running and listening on {addr} after {DEADLINE:?}"
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// The listener's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mqtt://127.0.0.1:PORT` or `mqtts://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Whether the listener is TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The broker's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// SIGTERM, then waits (up to 10 s, then SIGKILL) for the exit, so persistence is written.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM {} failed", child.id());
        let end = Instant::now() + DEADLINE;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() >= end {
                let _ = child.kill();
                let _ = child.wait();
                panic!("mosquitto ignored SIGTERM for {DEADLINE:?} (its log follows)");
            }
            std::thread::sleep(POLL);
        }
    }

    /// Starts the broker again on the same port with the same configuration and data.
    pub fn start_again(&mut self) {
        if let Err(why) = self.spawn_and_wait() {
            panic!("mosquitto did not start again: {why} (its log follows)");
        }
    }

    /// SIGKILL: a crash, nothing written since the last autosave.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The broker's log so far, followed by its stderr if it wrote any (mosquitto reports
    /// problems there when it cannot open its log file).
    pub fn log(&self) -> String {
        let mut log = fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(no log: {e})\n"));
        let stderr = fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default();
        if !stderr.is_empty() {
            log.push_str("---- mosquitto stderr ----\n");
            log.push_str(&stderr);
        }
        log
    }

    /// Polls the log until it contains `needle`; panics with the log after `deadline`.
    pub async fn wait_for_log(&self, deadline: Duration, needle: &str) {
        if !wait_until(deadline, || self.log().contains(needle)).await {
            panic!("broker log has no {needle:?} after {deadline:?} (the log follows)");
        }
    }

    /// An endpoint for this broker: plain, or TLS with `certs`' CA and client certificate.
    pub fn endpoint(&self, certs: Option<&TestCerts>) -> Endpoint {
        match (self.tls, certs) {
            (false, _) => Endpoint::plain(&self.url()),
            (true, Some(c)) => Endpoint::tls(&self.url(), c),
            (true, None) => panic!("a TLS broker needs TestCerts for its endpoint"),
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- mosquitto log ({}) ----\n{}", self.url(), self.log());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// MQTT test clients

/// Where and how a test client connects.
#[derive(Clone)]
pub struct Endpoint {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// TCP or TLS.
    pub transport: Transport,
}

impl Endpoint {
    /// Plain TCP to `mqtt://host:port`.
    pub fn plain(url: &str) -> Endpoint {
        let (host, port) = host_port(url);
        Endpoint {
            host,
            port,
            transport: Transport::Tcp,
        }
    }

    /// TLS to `mqtts://host:port` with `certs`' CA and client certificate, built with
    /// `doorhub::tls::transport`.
    pub fn tls(url: &str, certs: &TestCerts) -> Endpoint {
        Endpoint::from_config(&certs.mqtt_config(url))
    }

    /// The hub's own way: host and port from `mqtt.url`, transport from `doorhub::tls`.
    pub fn from_config(mqtt: &MqttConfig) -> Endpoint {
        let (host, port) = host_port(&mqtt.url);
        let transport = doorhub::tls::transport(mqtt).unwrap();
        Endpoint {
            host,
            port,
            transport,
        }
    }

    /// Options for a client `client_id`: keep-alive 30 s, packets up to 16 MiB, clean session.
    pub fn options(&self, client_id: &str) -> MqttOptions {
        let mut o = MqttOptions::new(client_id, self.host.clone(), self.port);
        o.set_transport(self.transport.clone())
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(16 << 20, 16 << 20)
            .set_clean_session(true);
        o
    }
}

impl From<&str> for Endpoint {
    fn from(url: &str) -> Endpoint {
        Endpoint::plain(url)
    }
}

impl From<&String> for Endpoint {
    fn from(url: &String) -> Endpoint {
        Endpoint::plain(url)
    }
}

impl From<&Broker> for Endpoint {
    fn from(broker: &Broker) -> Endpoint {
        broker.endpoint(None)
    }
}

impl From<u16> for Endpoint {
    fn from(port: u16) -> Endpoint {
        Endpoint::plain(&format!("mqtt://127.0.0.1:{port}"))
    }
}

/// A unique client id with `prefix`.
pub fn client_id(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Connects once with `opts` and returns the first outcome: `Ok` on CONNACK, else the error
/// (TLS failure, refusal, timeout after 10 s).
pub async fn try_connect(opts: MqttOptions) -> Result<(), ConnectionError> {
    let (client, mut eventloop) = AsyncClient::new(opts, 10);
    let outcome = tokio::time::timeout(DEADLINE, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .unwrap_or(Err(ConnectionError::NetworkTimeout));
    if outcome.is_ok() {
        let _ = client.try_disconnect();
        // Let the DISCONNECT go out.
        let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
    }
    outcome
}

/// The rustls error somewhere inside a connection error (a failed handshake, an alert from the
/// server), if there is one.
pub fn rustls_error(err: &ConnectionError) -> Option<&rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        // `io::Error::source` skips the wrapped error itself.
        if let Some(tls) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls);
        }
        cur = e.source();
    }
    None
}

/// A received PUBLISH.
#[derive(Clone, PartialEq, Eq)]
pub struct Msg {
    /// Topic name.
    pub topic: String,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// Retain flag as delivered (set for retained messages sent on subscribe).
    pub retain: bool,
}

impl Msg {
    /// The payload as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    /// The payload as JSON; panics naming the topic if it is not.
    pub fn json(&self) -> serde_json::Value {
        json(self)
    }
}

impl fmt::Debug for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = self.text();
        if text.len() > 300 {
            let mut cut = 300;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text = format!("{}... ({} bytes)", &text[..cut], self.payload.len());
        }
        let r = if self.retain { " [retained]" } else { "" };
        write!(f, "{}{r}: {text}", self.topic)
    }
}

/// The message's payload as JSON; panics naming the topic and payload if it is not.
pub fn json(msg: &Msg) -> serde_json::Value {
    serde_json::from_slice(&msg.payload)
        .unwrap_or_else(|e| panic!("payload is not JSON ({e}): {msg:?}"))
}

/// A publisher with its own event loop, polled only while a publish waits for its PUBACK
/// (so at most one QoS 1 publish is in flight, and any PUBACK is its own). It keeps a persistent
/// session, so a publish interrupted by a broker restart is retransmitted.
pub struct Publisher {
    client: AsyncClient,
    eventloop: EventLoop,
}

impl Publisher {
    /// A publisher for `endpoint` (connects on the first publish).
    pub fn new(endpoint: impl Into<Endpoint>) -> Publisher {
        let mut opts = endpoint.into().options(&client_id("test-pub"));
        opts.set_clean_session(false);
        let (client, eventloop) = AsyncClient::new(opts, 10);
        Publisher { client, eventloop }
    }

    /// Publishes QoS 1 and returns once the broker's PUBACK arrived (panics after 10 s).
    pub async fn publish(&mut self, topic: &str, payload: impl Into<Vec<u8>>, retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload.into())
            .await
            .unwrap();
        let eventloop = &mut self.eventloop;
        let mut last_error = None;
        let waited = tokio::time::timeout(DEADLINE, async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => return,
                    Ok(_) => {}
                    Err(e) => {
                        last_error = Some(e.to_string());
                        // Retry the connection; the session keeps the publish.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        })
        .await;
        if waited.is_err() {
            panic!("no PUBACK for {topic} within {DEADLINE:?} (last error: {last_error:?})");
        }
    }

    /// Clears the retained message on `topic` (an empty retained publish).
    pub async fn clear_retained(&mut self, topic: &str) {
        self.publish(topic, Vec::new(), true).await;
    }
}

/// A test subscriber: QoS 1 subscriptions, its event loop pumped in a task, messages queued for
/// [`Subscriber::wait_for`]. It resubscribes after any reconnect without a session.
pub struct Subscriber {
    rx: mpsc::UnboundedReceiver<Msg>,
    /// Received, not yet taken by `wait_for`/`next`, in arrival order.
    backlog: VecDeque<Msg>,
    /// Everything received, for failure messages.
    seen: Vec<Msg>,
    task: JoinHandle<()>,
    client: AsyncClient,
    endpoint: Endpoint,
    publisher: Option<Publisher>,
}

impl Subscriber {
    /// Connects (clean session) to `endpoint` (a `&Broker`, an `mqtt://` URL, a port, or an
    /// [`Endpoint`]) and returns once every topic's SUBACK has arrived.
    pub async fn connect(endpoint: impl Into<Endpoint>, topics: &[&str]) -> Subscriber {
        let endpoint = endpoint.into();
        let opts = endpoint.options(&client_id("test-sub"));
        Subscriber::connect_with(endpoint, opts, topics).await
    }

    /// Like [`Subscriber::connect`] with a persistent session under `client_id`, so messages
    /// published while it is away are queued by the broker.
    pub async fn connect_persistent(
        endpoint: impl Into<Endpoint>,
        client_id: &str,
        topics: &[&str],
    ) -> Subscriber {
        let endpoint = endpoint.into();
        let mut opts = endpoint.options(client_id);
        opts.set_clean_session(false);
        Subscriber::connect_with(endpoint, opts, topics).await
    }

    /// Connects with `opts` (the endpoint is kept for [`Subscriber::publish`]).
    pub async fn connect_with(
        endpoint: Endpoint,
        opts: MqttOptions,
        topics: &[&str],
    ) -> Subscriber {
        let id = opts.client_id();
        let (client, mut eventloop) = AsyncClient::new(opts, 100);
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();

        // First connection and subscriptions, in the foreground so failures surface here.
        let setup = tokio::time::timeout(DEADLINE, async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => break,
                    Ok(_) => {}
                    Err(e) => return Err(format!("connect: {e}")),
                }
            }
            for t in &topics {
                client.try_subscribe(t.clone(), QoS::AtLeastOnce).unwrap();
            }
            let mut pending = topics.len();
            let mut early = Vec::new();
            while pending > 0 {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        for code in &ack.return_codes {
                            if matches!(code, rumqttc::SubscribeReasonCode::Failure) {
                                return Err(format!("subscription refused: {ack:?}"));
                            }
                        }
                        pending -= 1;
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => early.push(Msg {
                        topic: p.topic.clone(),
                        payload: p.payload.to_vec(),
                        retain: p.retain,
                    }),
                    Ok(_) => {}
                    Err(e) => return Err(format!("subscribe: {e}")),
                }
            }
            Ok(early)
        })
        .await;
        let early = match setup {
            Ok(Ok(early)) => early,
            Ok(Err(e)) => panic!(
                "subscriber {id} to {}:{}: {e}",
                endpoint.host, endpoint.port
            ),
            Err(_) => panic!(
                "subscriber {id} to {}:{}: not subscribed within {DEADLINE:?}",
                endpoint.host, endpoint.port
            ),
        };

        let (tx, rx) = mpsc::unbounded_channel();
        for m in early {
            let _ = tx.send(m);
        }
        let resubscribe = client.clone();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let msg = Msg {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                        };
                        if tx.send(msg).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Incoming(Packet::ConnAck(ack))) if !ack.session_present => {
                        for t in &topics {
                            let _ = resubscribe.try_subscribe(t.clone(), QoS::AtLeastOnce);
                        }
                    }
                    // `disconnect` was called: stop rather than reconnect.
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                    Ok(_) => {}
                    Err(_) => {
                        if tx.is_closed() {
                            return;
                        }
                        // The broker is away (e.g. restarting); retry shortly.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Subscriber {
            rx,
            backlog: VecDeque::new(),
            seen: Vec::new(),
            task,
            client,
            endpoint,
            publisher: None,
        }
    }

    fn take_arrived(&mut self) {
        while let Ok(m) = self.rx.try_recv() {
            self.seen.push(m.clone());
            self.backlog.push_back(m);
        }
    }

    fn failure(&self, what: &str) -> String {
        let shown = self.seen.len().saturating_sub(50);
        let mut s = format!(
            "{what}; received {} message(s){}:\n",
            self.seen.len(),
            if shown > 0 { " (last 50)" } else { "" }
        );
        for m in &self.seen[shown..] {
            s.push_str(&format!("  {m:?}\n"));
        }
        s
    }

    /// Waits for the first message (oldest first, including ones received earlier and not yet
    /// taken) matching `pred`, removes it and returns it. Non-matching messages stay queued.
    /// Panics after `deadline`, listing what was received.
    pub async fn wait_for(
        &mut self,
        deadline: Duration,
        mut pred: impl FnMut(&Msg) -> bool,
    ) -> Msg {
        let end = tokio::time::Instant::now() + deadline;
        let mut checked = 0;
        loop {
            self.take_arrived();
            if let Some(i) = self.backlog.iter().skip(checked).position(&mut pred) {
                return self.backlog.remove(checked + i).unwrap();
            }
            checked = self.backlog.len();
            match tokio::time::timeout_at(end, self.rx.recv()).await {
                Ok(Some(m)) => {
                    self.seen.push(m.clone());
                    self.backlog.push_back(m);
                }
                Ok(None) => panic!("{}", self.failure("subscriber task ended")),
                Err(_) => panic!(
                    "{}",
                    self.failure(&format!("no matching message within {deadline:?}"))
                ),
            }
        }
    }

    /// Waits for a message on exactly `topic`.
    pub async fn wait_for_topic(&mut self, deadline: Duration, topic: &str) -> Msg {
        self.wait_for(deadline, |m| m.topic == topic).await
    }

    /// The next message not yet taken, in arrival order; panics after `deadline`.
    pub async fn next(&mut self, deadline: Duration) -> Msg {
        self.wait_for(deadline, |_| true).await
    }

    /// Takes every message received so far and not yet taken, without waiting.
    pub fn drain(&mut self) -> Vec<Msg> {
        self.take_arrived();
        self.backlog.drain(..).collect()
    }

    /// Asserts that no message matching `pred` arrives within `window` (a negative check, so it
    /// always takes the whole window). Messages that do not match stay queued.
    pub async fn assert_none(&mut self, window: Duration, mut pred: impl FnMut(&Msg) -> bool) {
        let end = tokio::time::Instant::now() + window;
        loop {
            self.take_arrived();
            if let Some(m) = self.backlog.iter().find(|m| pred(m)) {
                let m = m.clone();
                panic!("{}", self.failure(&format!("unexpected message {m:?}")));
            }
            match tokio::time::timeout_at(end, self.rx.recv()).await {
                Ok(Some(m)) => {
                    self.seen.push(m.clone());
                    self.backlog.push_back(m);
                }
                Ok(None) | Err(_) => return,
            }
        }
    }

    /// Publishes QoS 1 through a companion publisher and waits for the PUBACK.
    pub async fn publish(&mut self, topic: &str, payload: impl Into<Vec<u8>>, retain: bool) {
        let endpoint = self.endpoint.clone();
        self.publisher
            .get_or_insert_with(|| Publisher::new(endpoint))
            .publish(topic, payload, retain)
            .await;
    }

    /// Clears the retained message on `topic`.
    pub async fn clear_retained(&mut self, topic: &str) {
        self.publish(topic, Vec::new(), true).await;
    }

    /// Disconnects cleanly (a DISCONNECT, so no last will and, for a persistent session, the
    /// broker queues what arrives meanwhile) and stops the event loop task.
    pub async fn disconnect(mut self) {
        self.client.disconnect().await.unwrap();
        if tokio::time::timeout(DEADLINE, &mut self.task)
            .await
            .is_err()
        {
            panic!("subscriber did not disconnect within {DEADLINE:?}");
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}
