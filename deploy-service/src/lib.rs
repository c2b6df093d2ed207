//! The deploy service: deployments and their steps, the queue, the runner of deploy
//! scripts and the event stream.

pub mod config;
pub mod server;
pub mod storage;

pub use config::Config;
pub use server::run;
