//! The deploy service: deployments and their steps, the queue, the runner of deploy
//! scripts and the event stream.

pub mod api;
pub mod backends;
pub mod config;
pub mod convert;
pub mod logs;
pub mod model;
pub mod plan;
pub mod queue;
pub mod retention;
pub mod runner;
pub mod server;
pub mod steps;
pub mod storage;

pub use config::Config;
pub use server::run;
