//! doorhub: the gateway daemon on a building's hub.
pub mod config;
pub mod tls;
