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
//!                                                │
//!                          targets (stored doors)▼   ▲ DoorReport, events
//!  RS-485 ◀──OSDP──▶ bus task (one per bus: polls, pushes tables, decides hub doors)
//! ```
//!
//! - [`config`]: the config file, layered and validated.
//! - [`link`]: the MQTT link (rumqttc over rustls): connects, subscribes, publishes.
//! - [`engine`]: the owner of door state: assembles and adopts snapshots, stores events, takes
//!   what the buses report.
//! - [`store`]: sled; every change is one atomic batch, flushed before acknowledgement;
//!   [`credset`] is how a set is stored (sorted, searchable in place).
//! - [`bus`]: the OSDP control panel of one RS-485 bus; [`sync`] is what it and the engine
//!   tell each other; [`buses`]: runs one bus task per configured bus, and applies reloads.
//! - [`osdp`]: frames, messages, the stream reader and the Secure Channel; [`push`]: the table
//!   files and manufacturer-specific messages of the credential push.
//! - [`snapshot`], [`topics`], [`reported`], [`health`], [`events`]: the cloud contract's
//!   messages.
//! - [`daemon`]: starts the components, stops them in order, and reloads the config on SIGHUP
//!   ([`reload`]: what a new config changes); [`cli`]: the subcommands; [`logging`]: the log,
//!   to the journal under systemd, to stderr otherwise; [`scan`]: `doorhub scan`; [`sim`]: the
//!   reader simulator behind `doorhub-sim`.
//! - [`status`]: `doorhub status`, the daemon's state over a local UNIX socket, read from what
//!   the components share (health, the board, the store, the config, the last reload).

pub mod bus;
pub mod buses;
pub mod cli;
pub mod config;
pub mod credset;
pub mod daemon;
pub mod engine;
pub mod events;
pub mod health;
pub mod link;
pub mod logging;
pub mod notify;
pub mod osdp;
pub mod push;
pub mod reload;
pub mod reported;
pub mod scan;
pub mod sim;
pub mod snapshot;
pub mod status;
pub mod store;
pub mod sync;
pub mod time;
pub mod tls;
pub mod topics;
