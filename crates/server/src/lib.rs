//! The `bedside` server: configuration, the HTTP surface (REST API, `/ws`, web client,
//! health, metrics), startup and graceful shutdown. Domain logic lives in the other crates;
//! handlers here stay thin.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod api;
pub mod app;
pub mod audit_cli;
mod client_ip;
pub mod config;
pub mod demo;
mod error;
pub mod limits;
mod ops;
mod prometheus;
mod routes;
pub mod runtime;
pub mod serve;
mod state;
pub mod telemetry;
pub mod turn_server;
mod web;
pub mod webhooks;
mod ws;

pub use app::Application;
pub use config::Config;
