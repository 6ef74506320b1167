//! Tessera: a self-hosted server that issues Apple Wallet (and, later, Google Wallet) loyalty
//! cards and keeps them live. See ARCHITECTURE.md for the map.

pub mod api;
pub mod app;
#[cfg(feature = "bench")]
pub mod bench;
pub mod cockpit;
pub mod config;
pub mod demo;
pub mod designer;
pub mod domain;
pub mod email;
pub mod enrollment;
pub mod google;
pub mod jobs;
pub mod ledger;
pub mod memory;
pub mod metrics;
pub mod passes;
pub mod privacy;
pub mod proxy;
pub mod push;
pub mod ratelimit;
pub mod scanning;
pub mod secret;
pub mod server;
pub mod service;
pub mod storage;
pub mod supervisor;
pub mod web;
pub mod webhooks;
pub mod webservice;
