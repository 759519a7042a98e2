//! celery-operator: Redis, Celery workers and periodic tasks as Kubernetes resources.

pub mod api;
pub(crate) mod autoscale;
pub mod broker;
pub mod celery;
pub mod controller;
pub mod http;
pub mod import;
pub mod leader;
pub mod metrics;
pub mod schedule;
mod timer_queue;
pub mod webhook;
