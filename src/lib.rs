//! doorhub: the gateway daemon on a building's hub. The cloud publishes each door's desired
//! credential set over MQTT; doorhub stores it durably and makes the door enforce it, and reports
//! upstream what each door has applied.
//!
//! How data flows:
//!
//! ```text
//!  broker ──desired parts──▶ link ──Inbound──▶ engine ──▶ store (sled, flushed)
//!    ▲                        │                  │  then PUBACK to the broker
//!    │                        │                  ├─▶ board (latest reported per door)
//!    └──reported/events/health┘◀─────────────────┴─▶ outbox (events with seq)
//!  components ──EventSender──▶ engine
//! ```
//!
//! - [`config`]: the config file, layered and validated.
//! - [`link`]: the MQTT link (rumqttc over rustls): connects, subscribes, publishes.
//! - [`engine`]: the owner of door state: assembles and adopts snapshots, stores events.
//! - [`store`]: sled; every change is one atomic batch, flushed before acknowledgement.
//! - [`snapshot`], [`topics`], [`reported`], [`health`], [`events`]: the contract's messages.
//! - [`daemon`]: starts the components and stops them in order.
//! - [`sim`]: the reader simulator (`doorhub-sim`), OSDP PDs for tests and the demo.

pub mod bus;
pub mod cli;
pub mod config;
pub mod credset;
pub mod daemon;
pub mod engine;
pub mod events;
pub mod health;
pub mod link;
pub mod osdp;
pub mod push;
pub mod reported;
pub mod scan;
pub mod sim;
pub mod snapshot;
pub mod store;
pub mod sync;
pub mod time;
pub mod tls;
pub mod topics;
