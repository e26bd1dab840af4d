//! Tests of the integration-test harness itself (`tests/common`), and of `doorhub::tls` against a
//! real mosquitto.

mod common;

use std::time::Duration;

use common::{Broker, Endpoint, Publisher, Subscriber, TestCerts, json, rustls_error, try_connect};

const WAIT: Duration = Duration::from_secs(5);

#[test]
fn host_port_parses_urls() {
    assert_eq!(
        common::host_port("mqtts://127.0.0.1:8884"),
        ("127.0.0.1".into(), 8884)
    );
    assert_eq!(
        common::host_port("mqtt://broker.example"),
        ("broker.example".into(), 1883)
    );
    assert_eq!(
        common::host_port("mqtts://broker.example/"),
        ("broker.example".into(), 8883)
    );
    assert_eq!(common::host_port("mqtts://[::1]:9"), ("::1".into(), 9));
    assert_eq!(common::host_port("mqtts://[::1]"), ("::1".into(), 8883));
}

#[tokio::test]
async fn retained_message_survives_broker_restart() {
    let mut broker = Broker::start();
    let mut sub = Subscriber::connect(&broker, &["t/#"]).await;
    sub.publish("t/retained", r#"{"v":1}"#, true).await;
    let live = sub.wait_for_topic(WAIT, "t/retained").await;
    assert_eq!(json(&live)["v"], 1);

    broker.stop();
    assert!(!broker.is_running());
    broker.start_again();

    // A new subscriber gets the retained message from the restarted broker.
    let mut fresh = Subscriber::connect(broker.port(), &["t/#"]).await;
    let again = fresh.wait_for_topic(WAIT, "t/retained").await;
    assert!(again.retain, "{again:?}");
    assert_eq!(again.json()["v"], 1);

    // The first subscriber reconnects by itself, resubscribes and gets it again (retained).
    let back = sub
        .wait_for(Duration::from_secs(10), |m| {
            m.topic == "t/retained" && m.retain
        })
        .await;
    assert_eq!(back.payload, br#"{"v":1}"#);

    // Clearing works and is not delivered as a message to a new subscriber.
    fresh.clear_retained("t/retained").await;
    let mut third = Subscriber::connect(&broker, &["t/#"]).await;
    third.publish("t/marker", "x", false).await;
    let first = third.next(WAIT).await;
    assert_eq!(first.topic, "t/marker", "retained message not cleared");
    assert!(broker.log().contains("mosquitto version"));
}

#[tokio::test]
async fn persistent_session_queues_messages_across_restart() {
    let mut broker = Broker::start();
    let sub = Subscriber::connect_persistent(&broker, "persist-1", &["q/#"]).await;
    sub.disconnect().await;
    let mut publisher = Publisher::new(&broker);
    publisher.publish("q/1", "queued", false).await;
    broker.stop();
    broker.start_again();
    let mut sub = Subscriber::connect_persistent(&broker, "persist-1", &[]).await;
    let m = sub.wait_for_topic(WAIT, "q/1").await;
    assert_eq!(m.text(), "queued");
}

#[tokio::test]
async fn mutual_tls_with_doorhub_transport() {
    let certs = TestCerts::new("hub-1");
    let broker = Broker::start_tls(&certs);
    assert!(broker.url().starts_with("mqtts://127.0.0.1:"));

    // The hub's way: an MqttConfig, deserialised, through doorhub::tls::transport.
    let cfg = certs.mqtt_config(&broker.url());
    let endpoint = Endpoint::from_config(&cfg);
    assert!(matches!(endpoint.transport, rumqttc::Transport::Tls(_)));
    try_connect(endpoint.options("hub-1")).await.unwrap();
    // use_identity_as_username: the client certificate's CN is the user name.
    broker.wait_for_log(WAIT, "u'hub-1'").await;

    // Round trip through the TLS broker.
    let mut sub = Subscriber::connect(endpoint, &["tls/#"]).await;
    sub.publish("tls/hello", "over tls", false).await;
    assert_eq!(
        sub.wait_for_topic(WAIT, "tls/hello").await.text(),
        "over tls"
    );
}

#[tokio::test]
async fn server_certificate_from_another_ca_is_refused() {
    let certs = TestCerts::new("hub-1");
    let broker = Broker::start_tls_rogue(&certs);
    let endpoint = broker.endpoint(Some(&certs));
    let err = try_connect(endpoint.options("hub-1"))
        .await
        .expect_err("connected to a broker whose certificate the CA did not sign");
    let tls = rustls_error(&err).unwrap_or_else(|| panic!("not a TLS error: {err:?}"));
    assert!(
        matches!(
            tls,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
        ),
        "{tls:?}"
    );
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let certs = TestCerts::new("hub-1");
    let broker = Broker::start_tls(&certs);
    let cfg = common::mqtt_config(serde_json::json!({
        "url": broker.url(),
        "ca_file": certs.ca,
    }));
    let endpoint = Endpoint::from_config(&cfg);
    let err = try_connect(endpoint.options("no-cert"))
        .await
        .expect_err("mutual-TLS broker accepted a client without a certificate");
    // TLS 1.3: the client finishes its side of the handshake before the server checks for a
    // certificate, so the refusal is an alert read while waiting for the CONNACK.
    let tls = rustls_error(&err).unwrap_or_else(|| panic!("not a TLS error: {err:?}"));
    assert!(
        matches!(
            tls,
            rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired)
        ),
        "{tls:?}"
    );
}

#[tokio::test]
async fn subscriber_wait_for_keeps_unmatched_messages() {
    let broker = Broker::start();
    let mut sub = Subscriber::connect(broker.url().as_str(), &["w/#"]).await;
    for i in 0..3 {
        sub.publish(&format!("w/{i}"), format!("{i}"), false).await;
    }
    assert_eq!(sub.wait_for_topic(WAIT, "w/2").await.text(), "2");
    assert_eq!(sub.next(WAIT).await.topic, "w/0");
    assert_eq!(sub.next(WAIT).await.topic, "w/1");
    assert!(sub.drain().is_empty());
    sub.assert_none(Duration::from_millis(100), |_| true).await;
}
