//! The MQTT link: one task that owns the rumqttc event loop. It connects (TLS by default) with a
//! persistent session and a last will, re-subscribes when the broker kept no session, forwards
//! what arrives to the engine, and publishes each door's reported state, the outbox's events and
//! health.
//!
//! Events leave the outbox only once the broker has acknowledged them. rumqttc reports the packet
//! id it gave each publish (`Outgoing::Publish`) in the order the publishes were queued, then the
//! broker's `PubAck` for that id; the link pairs them with what it queued. That pairing is exact
//! because publishes are queued only through a gate that is open only while connected (the poll
//! task shuts it, and sweeps up anything queued, the moment the connection fails), and because
//! fewer publishes are outstanding than rumqttc has packet ids, so an id is never reused while
//! still in flight.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, Incoming, LastWill,
    MqttOptions, Outgoing, Publish, QoS, StateError, SubscribeFilter, SubscribeReasonCode,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc, oneshot};
use tokio::time::{Instant, sleep_until};
use tracing::{Instrument, debug, info, warn};

use crate::config::MqttConfig;
use crate::engine::{INBOUND_BYTES, Inbound, Shared};
use crate::logging::ratelimit::RateLimit;
use crate::notify::Beat;
use crate::reported::Status;
use crate::topics::Topics;

/// Publishes the link keeps outstanding at once, of every kind.
const WINDOW: usize = 256;
/// Of those, events.
const EVENT_WINDOW: usize = 128;
/// rumqttc's packet ids: more than [`WINDOW`], so none is reused while in flight.
const PACKET_IDS: u16 = 1024;
/// rumqttc's request queue. It must never fill: the engine queues its acks there, and only the
/// poll task drains it, so a full queue would close a loop of waits (poll task, link, engine,
/// queue). Unacknowledged incoming messages are bounded by the 65,535 packet ids (brokers need not
/// honour a smaller in-flight window: mosquitto 2.0.11 does not), and this link's own publishes by
/// [`WINDOW`]. The queue allocates as it fills, so the bound costs nothing while idle.
const REQUESTS: usize = 65_535 + WINDOW + 64;
/// Events from the poll task waiting for the link. Small: when the engine is busy, the backlog
/// belongs in the broker, not in the hub's memory. The messages among them hold their share of
/// [`INBOUND_BYTES`] already.
const EVENTS: usize = 64;
/// The longest door and part levels of a desired topic the hub reads in full: a door id has at
/// most 64 characters, and a valid part level 4 (a longer one, up to 64, is still read and
/// rejected with its reason).
const LEVELS: usize = 64 + 64;
/// What an MQTT PUBLISH carries besides its topic and payload, after the fixed header: the
/// topic's length (2 bytes) and the packet id (2 bytes).
const PUBLISH_FIELDS: usize = 2 + 2;
/// How long a clean shutdown waits for the broker to take the shutdown notice.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The link's errors (all at start-up; once running it retries forever).
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The password file could not be read.
    #[error("mqtt.password_file {path}: {source}")]
    Password {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The URL has no usable host and port.
    #[error("mqtt.url {0:?} has no usable host and port")]
    Url(String),
}

/// What the link needs to know.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// The `[mqtt]` section.
    pub mqtt: MqttConfig,
    /// The hub's id.
    pub hub: String,
    /// `health.interval_s`.
    pub health_interval: Duration,
    /// Subscribe on the first connection even if the broker kept the session.
    pub resubscribe: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tag {
    Event(u64),
    Reported,
    /// The clearing of a door's retained `reported`.
    Cleared(String),
    Health,
}

/// Pairs rumqttc's packet ids with what was published.
#[derive(Default)]
struct Tracker {
    queued: VecDeque<Tag>,
    in_flight: HashMap<u16, Tag>,
    events: usize,
    next_event: u64,
}

impl Tracker {
    fn reset(&mut self, next_event: u64) {
        *self = Tracker {
            next_event,
            ..Tracker::default()
        };
    }

    fn outstanding(&self) -> usize {
        self.queued.len() + self.in_flight.len()
    }

    fn sent(&mut self, pkid: u16) {
        // A publish resent after a reconnect keeps its id and is already paired.
        if self.in_flight.contains_key(&pkid) {
            return;
        }
        match self.queued.pop_front() {
            Some(tag) => {
                self.in_flight.insert(pkid, tag);
            }
            None => warn!(
                pkid,
                "broker link: a publish went out that the link did not queue"
            ),
        }
    }

    fn acked(&mut self, pkid: u16) -> Option<Tag> {
        let tag = self.in_flight.remove(&pkid)?;
        if let Tag::Event(_) = tag {
            self.events = self.events.saturating_sub(1);
        }
        Some(tag)
    }
}

/// The MQTT link task.
pub struct Link {
    settings: LinkSettings,
    beat: Beat,
    topics: Topics,
    shared: Shared,
    inbound: mpsc::Sender<Inbound>,
    shutdown: broadcast::Receiver<()>,
}

impl Link {
    /// A link that forwards what arrives to `inbound`.
    pub fn new(
        settings: LinkSettings,
        shared: Shared,
        inbound: mpsc::Sender<Inbound>,
        beat: Beat,
        shutdown: broadcast::Receiver<()>,
    ) -> Link {
        Link {
            beat,
            topics: Topics::new(&settings.mqtt.topic_prefix, &settings.hub),
            settings,
            shared,
            inbound,
            shutdown,
        }
    }

    fn options(&self) -> Result<MqttOptions, LinkError> {
        let mqtt = &self.settings.mqtt;
        let endpoint = mqtt
            .endpoint()
            .map_err(|_| LinkError::Url(mqtt.url.clone()))?;
        let client_id = if mqtt.client_id.is_empty() {
            self.settings.hub.clone()
        } else {
            mqtt.client_id.clone()
        };
        let mut o = MqttOptions::new(client_id, endpoint.host, endpoint.port);
        o.set_keep_alive(Duration::from_secs(mqtt.keep_alive_s))
            .set_clean_session(false)
            .set_manual_acks(true)
            .set_inflight(PACKET_IDS)
            // The bound on what one message can cost before the engine sees it. A bigger packet
            // breaks the connection; `poll` then reconnects with a clean session so the broker
            // drops it instead of redelivering it forever.
            .set_max_packet_size(max_incoming(mqtt.max_payload, &self.topics), 1 << 20)
            .set_last_will(LastWill::new(
                self.topics.health(),
                self.shared.health.will(),
                QoS::AtLeastOnce,
                true,
            ))
            .set_transport(crate::tls::transport(mqtt)?);
        if let Some(user) = mqtt.username.as_deref().filter(|u| !u.is_empty()) {
            let password = match &mqtt.password_file {
                Some(path) => std::fs::read_to_string(path)
                    .map_err(|source| LinkError::Password {
                        path: path.clone(),
                        source,
                    })?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
                None => String::new(),
            };
            o.set_credentials(user, password);
        }
        Ok(o)
    }

    /// Runs until shutdown: connects, reconnects with backoff forever, and on shutdown publishes
    /// the `shutdown` health notice and disconnects.
    pub async fn run(mut self) -> Result<(), LinkError> {
        let options = self.options()?;
        let (client, eventloop) = AsyncClient::new(options, REQUESTS);
        let gate = Arc::new(Mutex::new(false));
        let (events_tx, mut events) = mpsc::channel(EVENTS);
        let (stop_tx, stop_rx) = oneshot::channel();
        let limit = max_incoming(self.settings.mqtt.max_payload, &self.topics);
        let configured_only = Arc::new(AtomicBool::new(false));
        let poller = tokio::spawn(
            poll(
                eventloop,
                LinkFlags {
                    gate: gate.clone(),
                    configured_only: configured_only.clone(),
                },
                self.shared.inbound_bytes.clone(),
                events_tx,
                stop_rx,
                limit,
            )
            .instrument(tracing::Span::current()),
        );
        let mut state = State {
            client,
            gate,
            configured_only,
            tracker: Tracker::default(),
            connected: false,
            ever_connected: false,
            health_pending: false,
        };
        let mut health_tick = tokio::time::interval(self.settings.health_interval);
        health_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut health_due: Option<Instant> = None;
        let mut last_health = Instant::now();
        loop {
            tokio::select! {
                _ = self.shutdown.recv() => break,
                _ = self.beat.raised() => self.beat.ack(),
                ev = events.recv() => match ev {
                    Some(Ok(Polled::Event(ev))) => self.on_event(&mut state, ev).await,
                    Some(Ok(Polled::Publish(publish, budget))) => {
                        let m = Inbound {
                            publish,
                            client: Some(state.client.clone()),
                            budget: Some(budget),
                        };
                        if self.inbound.send(m).await.is_err() {
                            debug!("engine gone; not forwarding");
                        }
                    }
                    Some(Err(e)) => {
                        // rumqttc's errors name the endpoint and the cause, never credentials.
                        self.shared.health.set_mqtt_error(&e.to_string());
                        if state.connected {
                            warn!("lost the broker connection: {e}");
                            state.connected = false;
                            self.shared.health.set_mqtt_connected(false);
                        } else {
                            warn!("cannot connect to the broker: {e}");
                        }
                    }
                    None => break,
                },
                _ = self.shared.board.changed.notified() => self.pump(&mut state),
                _ = self.shared.events_ready.notified() => self.pump(&mut state),
                _ = health_tick.tick() => {
                    state.health_pending = true;
                    last_health = Instant::now();
                    self.pump(&mut state);
                }
                _ = self.shared.health.changed.notified() => {
                    // At most one health message a second, and a change waits no longer.
                    health_due.get_or_insert((last_health + Duration::from_secs(1)).max(Instant::now()));
                }
                _ = sleep_until(health_due.unwrap_or_else(Instant::now)), if health_due.is_some() => {
                    health_due = None;
                    state.health_pending = true;
                    last_health = Instant::now();
                    self.pump(&mut state);
                }
            }
        }
        self.close(&mut state, &mut events).await;
        let _ = stop_tx.send(());
        let _ = poller.await;
        Ok(())
    }

    async fn on_event(&mut self, state: &mut State, ev: Event) {
        match ev {
            Event::Incoming(Incoming::ConnAck(ack)) => {
                if ack.code != ConnectReturnCode::Success {
                    warn!("the broker refused the connection: {:?}", ack.code);
                    return;
                }
                info!(
                    url = %self.settings.mqtt.url,
                    session_present = ack.session_present,
                    "connected to the broker"
                );
                let fresh = !ack.session_present || !state.ever_connected;
                if fresh {
                    // rumqttc resends nothing of an earlier session (or process): start over
                    // from the oldest event still in the outbox.
                    let first = self.shared.store.first_event_seq().unwrap_or_else(|e| {
                        warn!("cannot read the outbox: {e}");
                        state.tracker.next_event
                    });
                    state.tracker.reset(first);
                }
                if !ack.session_present || (self.settings.resubscribe && !state.ever_connected) {
                    self.subscribe(state);
                }
                state.connected = true;
                state.ever_connected = true;
                state.open_gate();
                self.shared.health.set_mqtt_connected(true);
                // A restarted broker may have lost every retained message: publish them all.
                self.shared.board.mark_all();
                state.health_pending = true;
                self.pump(state);
            }
            Event::Incoming(Incoming::PubAck(ack)) => {
                match state.tracker.acked(ack.pkid) {
                    Some(Tag::Event(seq)) => {
                        if let Err(e) = self.shared.store.remove_event(seq) {
                            warn!(seq, "cannot remove an acknowledged event: {e}");
                        }
                    }
                    Some(Tag::Cleared(door)) => {
                        self.shared.board.cleared(&door);
                        if let Err(e) = self.shared.store.cleared(&door) {
                            warn!(%door, "cannot note a cleared retained reported: {e}");
                        }
                    }
                    _ => {}
                }
                self.pump(state);
            }
            Event::Incoming(Incoming::SubAck(ack)) => {
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, SubscribeReasonCode::Failure))
                {
                    warn!("the broker refused the subscription to desired snapshots");
                } else if state.configured_only.load(Ordering::Relaxed) {
                    info!(
                        filters = ack.return_codes.len(),
                        "subscribed to the configured doors' desired snapshots"
                    );
                } else {
                    info!(filter = %self.topics.desired_filter(), "subscribed");
                }
            }
            Event::Outgoing(Outgoing::Publish(pkid)) => state.tracker.sent(pkid),
            Event::Outgoing(Outgoing::AwaitAck(pkid)) => {
                warn!(pkid, "broker link: packet id collision");
            }
            other => debug!("mqtt: {other:?}"),
        }
    }

    /// Subscribes to every door's desired parts; or, once a retained message too large to read
    /// keeps coming back with that subscription, to the configured doors' only.
    fn subscribe(&self, state: &State) {
        let queued = if state.configured_only.load(Ordering::Relaxed) {
            let filters: Vec<SubscribeFilter> = self
                .shared
                .board
                .snapshot()
                .iter()
                .filter(|r| r.status != Status::Unconfigured)
                .map(|r| {
                    SubscribeFilter::new(self.topics.door_desired_filter(&r.door), QoS::AtLeastOnce)
                })
                .collect();
            if filters.is_empty() {
                return;
            }
            state.client.try_subscribe_many(filters)
        } else {
            let filter = self.topics.desired_filter();
            state.client.try_subscribe(filter, QoS::AtLeastOnce)
        };
        if let Err(e) = queued {
            warn!("cannot subscribe: {e}");
        }
    }

    /// Queues what is waiting, within the window: health, then doors, then events.
    fn pump(&self, state: &mut State) {
        if !state.connected {
            return;
        }
        if state.health_pending && state.tracker.outstanding() < WINDOW {
            let payload = self.shared.health.to_json(
                self.shared.store.outbox_stats(),
                self.shared.store.size_on_disk(),
            );
            if state.publish(self.topics.health(), payload, true, Tag::Health) {
                state.health_pending = false;
            }
        }
        let room = WINDOW.saturating_sub(state.tracker.outstanding());
        if room > 0 {
            let at = crate::time::now();
            for r in self.shared.board.take_marked(room) {
                if !state.publish(
                    self.topics.reported(&r.door),
                    r.to_json(&at),
                    true,
                    Tag::Reported,
                ) {
                    self.shared.board.remark(&r.door);
                }
            }
        }
        let room = WINDOW.saturating_sub(state.tracker.outstanding());
        for door in self.shared.board.take_cleared(room) {
            // An empty retained publish removes the broker's retained message.
            let topic = self.topics.reported(&door);
            if !state.publish(topic, Vec::new(), true, Tag::Cleared(door.clone())) {
                self.shared.board.reclear(&door);
            }
        }
        let room = WINDOW
            .saturating_sub(state.tracker.outstanding())
            .min(EVENT_WINDOW.saturating_sub(state.tracker.events));
        if room == 0 {
            return;
        }
        let events = match self
            .shared
            .store
            .events_from(state.tracker.next_event, room)
        {
            Ok(events) => events,
            Err(e) => {
                warn!("cannot read the outbox: {e}");
                return;
            }
        };
        for (seq, payload) in events {
            if !state.publish(self.topics.events(), payload, false, Tag::Event(seq)) {
                break;
            }
            state.tracker.events += 1;
            state.tracker.next_event = seq + 1;
        }
    }

    /// Publishes the shutdown notice, waits briefly for the broker to take it, and disconnects.
    async fn close(&mut self, state: &mut State, events: &mut mpsc::Receiver<PollEvent>) {
        if !state.connected {
            return;
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        if !state.publish(
            self.topics.health(),
            self.shared.health.shutdown(),
            true,
            Tag::Health,
        ) {
            return;
        }
        let mut notice_pkid = None;
        while let Ok(Some(Ok(polled))) = tokio::time::timeout_at(deadline, events.recv()).await {
            let Polled::Event(ev) = polled else { continue };
            match ev {
                Event::Outgoing(Outgoing::Publish(pkid)) => {
                    state.tracker.sent(pkid);
                    if state.tracker.queued.is_empty() && notice_pkid.is_none() {
                        notice_pkid = Some(pkid);
                    }
                }
                Event::Incoming(Incoming::PubAck(ack)) => {
                    if let Some(Tag::Event(seq)) = state.tracker.acked(ack.pkid) {
                        // Still worth it: one event fewer to resend after the restart.
                        let _ = self.shared.store.remove_event(seq);
                    }
                    if Some(ack.pkid) == notice_pkid && state.client.try_disconnect().is_err() {
                        break;
                    }
                }
                Event::Outgoing(Outgoing::Disconnect) => {
                    info!("disconnected from the broker");
                    break;
                }
                _ => {}
            }
        }
    }
}

/// The largest incoming packet the link reads, as MQTT counts it (the bytes after the fixed
/// header): a desired part of `max_payload` bytes on the longest desired topic the hub acts on.
/// rumqttc refuses a bigger one by breaking the connection, before reading it.
pub fn max_incoming(max_payload: usize, topics: &Topics) -> usize {
    // The filter's two `+` are the door and part levels.
    let topic = topics.desired_filter().len() - 2 + LEVELS;
    max_payload + topic + PUBLISH_FIELDS
}

/// What the poll task hands the link.
enum Polled {
    /// An event of the event loop (not an incoming message).
    Event(Event),
    /// An incoming message, with its share of [`INBOUND_BYTES`].
    Publish(Publish, OwnedSemaphorePermit),
}

/// What the poll task reports: an event, or a connection error (after which it backs off).
type PollEvent = Result<Polled, ConnectionError>;

/// Polls the event loop, never cancelled mid-operation (a cancelled poll can drop a packet), and
/// forwards what happens. An incoming message first takes its share of the inbound budget: until
/// there is room, rumqttc is not polled, so at most the packets it has already read ahead are
/// held outside the budget. After a connection error it closes the gate and moves every queued
/// request into rumqttc's own pending list, then backs off before reconnecting.
async fn poll(
    mut eventloop: EventLoop,
    flags: LinkFlags,
    budget: Arc<Semaphore>,
    events: mpsc::Sender<PollEvent>,
    mut stop: oneshot::Receiver<()>,
    limit: usize,
) {
    let mut backoff = Backoff::default();
    let mut oversized = RateLimit::default();
    let mut clean_connection = false;
    loop {
        let ev = tokio::select! {
            ev = eventloop.poll() => ev,
            _ = &mut stop => return,
        };
        let failed = ev.is_err();
        match &ev {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                clean_connection = eventloop.mqtt_options.clean_session();
                if clean_connection {
                    // The connection that dropped an oversized message: later ones are
                    // persistent again. Its backoff stays, in case the message is retained and
                    // comes back on every subscription.
                    eventloop.mqtt_options.set_clean_session(false);
                } else {
                    backoff = Backoff::default();
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                let _ = events.send(ev.map(Polled::Event)).await;
                return;
            }
            Err(e) => {
                let mut open = lock(&flags.gate);
                *open = false;
                // A request queued after rumqttc's own clean-up (the link had not yet heard of
                // the failure) joins the pending list too, so none is sent out of turn later.
                eventloop.clean();
                if let ConnectionError::MqttState(StateError::Deserialization(
                    rumqttc::Error::PayloadSizeLimitExceeded(size),
                )) = e
                {
                    // A persistent session would get the same message again at once: start a
                    // clean one, which the broker opens without it (nothing unacknowledged is
                    // lost: desired parts are retained, and the outbox is resent).
                    eventloop.mqtt_options.set_clean_session(true);
                    if clean_connection && !flags.configured_only.swap(true, Ordering::Relaxed) {
                        // A clean session did not drop it: it is retained, and the wildcard
                        // subscription brings it back every time, before the snapshots after it.
                        warn!(
                            size,
                            limit,
                            "a retained message on the desired topics is larger than mqtt.max_payload allows; following only the configured doors' snapshots until the daemon restarts (set the broker's max_packet_size)"
                        );
                    }
                    if let Some(more) = oversized.check(std::time::Instant::now()) {
                        warn!(
                            size,
                            limit,
                            "the broker sent a message larger than mqtt.max_payload allows; reconnecting with a clean session so the broker drops it{more}"
                        );
                    }
                }
            }
            _ => {}
        }
        let ev = match ev {
            Ok(Event::Incoming(Incoming::Publish(mut publish))) => {
                // Its own allocation, so that what the budget counts is what it holds: rumqttc's
                // payload shares the read buffer, which may be much larger.
                publish.payload = publish.payload.to_vec().into();
                let bytes = (publish.payload.len() + publish.topic.len()).clamp(1, INBOUND_BYTES);
                let permit = tokio::select! {
                    p = budget.clone().acquire_many_owned(bytes as u32) => p,
                    _ = &mut stop => return,
                };
                let Ok(permit) = permit else { return };
                Ok(Polled::Publish(publish, permit))
            }
            other => other.map(Polled::Event),
        };
        if events.send(ev).await.is_err() {
            return;
        }
        if failed {
            let delay = backoff.next();
            debug!("reconnecting in {delay:?}");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = &mut stop => return,
            }
        }
    }
}

fn lock(gate: &Mutex<bool>) -> std::sync::MutexGuard<'_, bool> {
    // Only a bool is kept under this lock; a panic elsewhere cannot leave it inconsistent.
    gate.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the poll task changes in the link's state when a connection fails.
struct LinkFlags {
    /// [`State::gate`].
    gate: Arc<Mutex<bool>>,
    /// [`State::configured_only`].
    configured_only: Arc<AtomicBool>,
}

struct State {
    client: AsyncClient,
    /// Open while the link may queue publishes: the link opens it once it has handled a
    /// CONNACK, the poll task closes it on a connection error.
    gate: Arc<Mutex<bool>>,
    /// Set by the poll task when a retained message too large to read comes back with every
    /// subscription: the link then subscribes to the configured doors' topics only.
    configured_only: Arc<AtomicBool>,
    tracker: Tracker,
    connected: bool,
    ever_connected: bool,
    health_pending: bool,
}

impl State {
    fn open_gate(&self) {
        *lock(&self.gate) = true;
    }

    fn publish(&mut self, topic: String, payload: Vec<u8>, retain: bool, tag: Tag) -> bool {
        let open = lock(&self.gate);
        if !*open {
            return false;
        }
        match self
            .client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload)
        {
            Ok(()) => {
                self.tracker.queued.push_back(tag);
                true
            }
            Err(e) => {
                debug!("publish not queued: {e}");
                false
            }
        }
    }
}

/// Exponential backoff from 1 s to 60 s, with jitter so that many hubs do not reconnect in step.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: Duration::from_secs(1),
        }
    }
}

impl Backoff {
    const MAX: Duration = Duration::from_secs(60);

    fn next(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        // Between half and all of the step.
        base.mul_f64(0.5 + fastrand::f64() * 0.5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_packet_limit_is_max_payload_plus_the_longest_desired_topic() {
        let topics = Topics::new("doorhub/v1", &"h".repeat(64));
        let topic = format!(
            "doorhub/v1/{}/doors/{}/desired/{}",
            "h".repeat(64),
            "d".repeat(64),
            "9".repeat(64)
        );
        assert_eq!(max_incoming(262_144, &topics), 262_144 + topic.len() + 4);
        assert_eq!(max_incoming(262_144, &topics), 262_367);
    }

    #[test]
    fn backoff_doubles_to_a_minute_with_jitter() {
        let mut b = Backoff::default();
        let first = b.next();
        assert!(first >= Duration::from_millis(500) && first <= Duration::from_secs(1));
        for _ in 0..10 {
            b.next();
        }
        let late = b.next();
        assert!(late >= Duration::from_secs(30) && late <= Duration::from_secs(60));
    }

    #[test]
    fn tracker_pairs_ids_in_queue_order_and_ignores_resends() {
        let mut t = Tracker::default();
        t.queued.extend([Tag::Event(7), Tag::Health, Tag::Event(8)]);
        t.events = 2;
        t.sent(1);
        t.sent(2);
        t.sent(1); // a resend after reconnect
        t.sent(3);
        assert_eq!(t.acked(2), Some(Tag::Health));
        assert_eq!(t.acked(1), Some(Tag::Event(7)));
        assert_eq!(t.acked(3), Some(Tag::Event(8)));
        assert_eq!(t.acked(3), None);
        assert_eq!((t.outstanding(), t.events), (0, 0));
    }
}
