//! A fast QoS 1 publisher for bursts: it does not wait for each PUBACK.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Packet, QoS};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Endpoint, client_id};

/// How long [`FastPublisher::wait_acked`] waits.
const TIMEOUT: Duration = Duration::from_secs(60);

/// A QoS 1 publisher that does not wait for each PUBACK: its event loop is pumped in a task, with
/// up to 1000 publishes in flight. Publishes are queued first and timed by the caller.
pub struct FastPublisher {
    client: AsyncClient,
    queued: std::sync::atomic::AtomicU64,
    acks: watch::Receiver<(u64, Instant)>,
    failed: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl FastPublisher {
    /// Connects to `endpoint` (a persistent session is not needed: it publishes only).
    pub async fn connect(endpoint: &Endpoint) -> FastPublisher {
        let mut opts = endpoint.options(&client_id("bench-pub"));
        opts.set_inflight(1000);
        let (client, mut eventloop) = AsyncClient::new(opts, 32 * 1024);
        tokio::time::timeout(super::DEADLINE, async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => return,
                    Ok(_) => {}
                    Err(e) => panic!("publisher: {e}"),
                }
            }
        })
        .await
        .expect("publisher: no CONNACK");
        let (tx, acks) = watch::channel((0, Instant::now()));
        let failed = Arc::new(AtomicBool::new(false));
        let failed2 = failed.clone();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        let now = Instant::now();
                        tx.send_modify(|(n, at)| {
                            *n += 1;
                            *at = now;
                        });
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("publisher: connection failed: {e}");
                        failed2.store(true, Ordering::Relaxed);
                        return;
                    }
                }
            }
        });
        FastPublisher {
            client,
            queued: 0.into(),
            acks,
            failed,
            task,
        }
    }

    /// Queues every message (QoS 1, retained), back to back.
    pub async fn publish_all(&self, messages: Vec<(String, Vec<u8>)>) {
        let n = messages.len() as u64;
        for (topic, payload) in messages {
            self.client
                .publish(topic, QoS::AtLeastOnce, true, payload)
                .await
                .expect("publisher: queue closed");
        }
        self.queued.fetch_add(n, Ordering::Relaxed);
    }

    /// Waits until everything queued is acknowledged; returns when the last PUBACK arrived.
    pub async fn wait_acked(&self) -> Instant {
        let target = self.queued.load(Ordering::Relaxed);
        let mut acks = self.acks.clone();
        let failed = self.failed.clone();
        match tokio::time::timeout(TIMEOUT, acks.wait_for(|(n, _)| *n >= target)).await {
            Ok(Ok(r)) => r.1,
            _ => panic!(
                "publisher: {} of {target} PUBACKs within {TIMEOUT:?} (connection failed: {})",
                self.acks.borrow().0,
                failed.load(Ordering::Relaxed)
            ),
        }
    }
}

impl Drop for FastPublisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}
