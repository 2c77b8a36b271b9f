//! Prometheus metrics (the `prometheus-client` crate), in the OpenMetrics
//! text format.
//!
//! One [`Metrics`] registry serves a node. The framework's own metrics (the
//! event pipeline, the store's size, connections) are made here. Components
//! make theirs through the [`ScopedMetrics`] in their
//! [`crate::BuildContext`]: every metric a component makes carries its
//! instance name as the `instance` label, so two instances of one type share
//! one metric family. Every name starts with `civkit_`.
//!
//! Values only known at scrape time (the store's size, the age of the last
//! notary attestation) are set by hooks ([`Metrics::on_scrape`]) that run
//! before each encoding.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry};

use crate::pipeline::lock;

pub use prometheus_client::metrics::counter::Counter as PromCounter;
pub use prometheus_client::metrics::gauge::Gauge as PromGauge;
pub use prometheus_client::metrics::histogram::Histogram as PromHistogram;

/// A gauge of seconds (or any fractional value).
pub type FloatGauge = Gauge<f64, AtomicU64>;

/// The `instance` label of component metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceLabel {
    pub instance: String,
}

/// Labels of the event counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// Instance name of the transport (`node` for the operator and services).
    pub transport: String,
    /// `regular`, `replaceable`, `ephemeral`, `addressable`, or `unknown`
    /// when the message did not parse as an event.
    pub kind_class: &'static str,
}

/// Labels of the rejection counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub transport: String,
    pub kind_class: &'static str,
    /// The NIP-01 prefix of the `OK` message (`invalid`, `rate-limited`, ...).
    pub reason: &'static str,
}

/// Labels of per-transport gauges.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabel {
    pub transport: String,
}

/// Bucket sets for component histograms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buckets {
    /// Durations from 50 µs to about 26 s.
    Seconds,
    /// Counts from 1 to 4,096.
    Count,
}

impl Buckets {
    fn constructor(self) -> fn() -> Histogram {
        match self {
            Buckets::Seconds => seconds_histogram,
            Buckets::Count => count_histogram,
        }
    }
}

fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

fn count_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 13))
}

/// The framework's own metrics.
pub(crate) struct CoreMetrics {
    pub received: Family<EventLabels, Counter>,
    pub accepted: Family<EventLabels, Counter>,
    pub rejected: Family<RejectLabels, Counter>,
    pub ingest_seconds: Histogram,
    pub fanout_seconds: Histogram,
    pub store_events: Gauge,
    pub store_bytes: Gauge,
    pub connections: Family<TransportLabel, Gauge>,
    pub subscriptions: Family<TransportLabel, Gauge>,
}

type Hook = Box<dyn Fn() + Send + Sync>;

struct Inner {
    registry: Mutex<Registry>,
    /// Component families by name (a `Family<InstanceLabel, _>`).
    families: Mutex<HashMap<String, Box<dyn Any + Send + Sync>>>,
    hooks: Mutex<Vec<Hook>>,
    core: CoreMetrics,
}

/// The node's metrics registry. Clones share it.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry holding the framework's metrics.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("civkit");
        let core = CoreMetrics {
            received: Family::default(),
            accepted: Family::default(),
            rejected: Family::default(),
            ingest_seconds: seconds_histogram(),
            fanout_seconds: seconds_histogram(),
            store_events: Gauge::default(),
            store_bytes: Gauge::default(),
            connections: Family::default(),
            subscriptions: Family::default(),
        };
        let r = &mut registry;
        r.register(
            "events_received",
            "Events received, by transport and kind class",
            core.received.clone(),
        );
        r.register(
            "events_accepted",
            "Events accepted (new or duplicate), by transport and kind class",
            core.accepted.clone(),
        );
        r.register(
            "events_rejected",
            "Events refused, by transport, kind class and the OK message's prefix",
            core.rejected.clone(),
        );
        r.register(
            "ingest_seconds",
            "Time from an event entering the pipeline to its OK (durable when accepted)",
            core.ingest_seconds.clone(),
        );
        r.register(
            "fanout_seconds",
            "Time to hand a new event to every matching subscription",
            core.fanout_seconds.clone(),
        );
        r.register(
            "store_events",
            "Events in the store",
            core.store_events.clone(),
        );
        r.register(
            "store_size_bytes",
            "Size of the store on disk",
            core.store_bytes.clone(),
        );
        r.register(
            "connections",
            "Open client sessions, by transport",
            core.connections.clone(),
        );
        r.register(
            "subscriptions",
            "Open subscriptions, by transport",
            core.subscriptions.clone(),
        );
        Metrics(Arc::new(Inner {
            registry: Mutex::new(registry),
            families: Mutex::default(),
            hooks: Mutex::default(),
            core,
        }))
    }

    pub(crate) fn core(&self) -> &CoreMetrics {
        &self.0.core
    }

    /// The view a component instance makes its metrics through.
    pub fn scoped(&self, instance: &str) -> ScopedMetrics {
        ScopedMetrics {
            metrics: self.clone(),
            label: InstanceLabel {
                instance: instance.to_string(),
            },
        }
    }

    /// Register a metric of any shape under `civkit_<name>`. A name is
    /// registered once; components use [`ScopedMetrics`], which does that.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        lock(&self.0.registry).register(name, help, metric);
    }

    /// Run `hook` before every encoding (to set values known only then).
    pub fn on_scrape(&self, hook: impl Fn() + Send + Sync + 'static) {
        lock(&self.0.hooks).push(Box::new(hook));
    }

    /// Run the hooks, then encode every metric (OpenMetrics text).
    pub fn encode(&self) -> String {
        for hook in lock(&self.0.hooks).iter() {
            hook();
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &lock(&self.0.registry));
        out
    }

    /// The family `name`, made and registered on first use.
    fn family<M, C>(
        &self,
        name: &str,
        help: &str,
        make: impl FnOnce() -> Family<InstanceLabel, M, C>,
    ) -> Option<Family<InstanceLabel, M, C>>
    where
        Family<InstanceLabel, M, C>: Metric + Clone,
    {
        let mut families = lock(&self.0.families);
        if let Some(existing) = families.get(name) {
            // Same name, other type: a programming error; the metric stays
            // out of the registry rather than break the exposition.
            let found = existing
                .downcast_ref::<Family<InstanceLabel, M, C>>()
                .cloned();
            if found.is_none() {
                tracing::warn!(metric = name, "metric made twice with different types");
            }
            return found;
        }
        let family = make();
        self.register(name, help, family.clone());
        families.insert(name.to_string(), Box::new(family.clone()));
        Some(family)
    }
}

/// A component instance's metrics: each carries `instance="<name>"`.
#[derive(Debug, Clone)]
pub struct ScopedMetrics {
    metrics: Metrics,
    label: InstanceLabel,
}

impl ScopedMetrics {
    /// The node's registry.
    pub fn node(&self) -> &Metrics {
        &self.metrics
    }

    /// A counter, exposed as `civkit_<name>_total`.
    pub fn counter(&self, name: &str, help: &str) -> Counter {
        self.metrics
            .family(name, help, Family::<InstanceLabel, Counter>::default)
            .map(|f| f.get_or_create_owned(&self.label))
            .unwrap_or_default()
    }

    /// A gauge, exposed as `civkit_<name>`.
    pub fn gauge(&self, name: &str, help: &str) -> Gauge {
        self.metrics
            .family(name, help, Family::<InstanceLabel, Gauge>::default)
            .map(|f| f.get_or_create_owned(&self.label))
            .unwrap_or_default()
    }

    /// A gauge of fractional values (seconds), exposed as `civkit_<name>`.
    pub fn float_gauge(&self, name: &str, help: &str) -> FloatGauge {
        self.metrics
            .family(name, help, Family::<InstanceLabel, FloatGauge>::default)
            .map(|f| f.get_or_create_owned(&self.label))
            .unwrap_or_default()
    }

    /// A counter whose value `read` gives at each scrape (a component's own
    /// monotonic counter, kept where it already was).
    pub fn counter_reading(
        &self,
        name: &str,
        help: &str,
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) {
        let counter = self.counter(name, help);
        self.metrics.on_scrape(move || {
            counter
                .inner()
                .store(read(), std::sync::atomic::Ordering::Relaxed)
        });
    }

    /// A gauge whose value `read` gives at each scrape.
    pub fn gauge_reading(
        &self,
        name: &str,
        help: &str,
        read: impl Fn() -> i64 + Send + Sync + 'static,
    ) {
        let gauge = self.gauge(name, help);
        self.metrics.on_scrape(move || {
            gauge.set(read());
        });
    }

    /// A histogram with `buckets`, exposed as `civkit_<name>`.
    pub fn histogram(&self, name: &str, help: &str, buckets: Buckets) -> Histogram {
        let make = buckets.constructor();
        self.metrics
            .family(name, help, || {
                Family::<InstanceLabel, Histogram, fn() -> Histogram>::new_with_constructor(make)
            })
            .map(|f| f.get_or_create_owned(&self.label))
            .unwrap_or_else(make)
    }
}

/// The two histograms every store writes: how many writes one durable
/// commit carries, and how long making it durable takes.
#[derive(Debug, Clone)]
pub struct StoreMetrics {
    pub batch_writes: Histogram,
    pub sync_seconds: Histogram,
}

impl StoreMetrics {
    /// Registered under the persister's instance.
    pub fn new(scope: &ScopedMetrics) -> Self {
        StoreMetrics {
            batch_writes: scope.histogram(
                "store_write_batch_size",
                "Writes committed together by one durable commit (group commit)",
                Buckets::Count,
            ),
            sync_seconds: scope.histogram(
                "store_fsync_seconds",
                "Time to make one commit durable (fsync, or the database's commit)",
                Buckets::Seconds,
            ),
        }
    }
}

impl Default for StoreMetrics {
    /// Histograms in no registry (stores opened outside a node).
    fn default() -> Self {
        StoreMetrics {
            batch_writes: count_histogram(),
            sync_seconds: seconds_histogram(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_share_a_family_and_types_do_not_clash() {
        let m = Metrics::new();
        m.scoped("a").counter("peers_seen", "help").inc();
        m.scoped("b").counter("peers_seen", "help").inc_by(2);
        // The same name as another type stays out of the registry.
        m.scoped("c").gauge("peers_seen", "help").set(7);
        let text = m.encode();
        assert_eq!(text.matches("# TYPE civkit_peers_seen counter").count(), 1);
        assert!(text.contains("civkit_peers_seen_total{instance=\"a\"} 1"));
        assert!(text.contains("civkit_peers_seen_total{instance=\"b\"} 2"));
        assert!(!text.contains("instance=\"c\""), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn hooks_run_before_each_encoding() {
        let m = Metrics::new();
        let g = m.scoped("n").float_gauge("age_seconds", "help");
        let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let c = calls.clone();
        m.on_scrape(move || {
            let n = c.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            g.set(n as f64 * 1.5);
        });
        assert!(m
            .encode()
            .contains("civkit_age_seconds{instance=\"n\"} 1.5"));
        assert!(m
            .encode()
            .contains("civkit_age_seconds{instance=\"n\"} 3.0"));
    }
}
