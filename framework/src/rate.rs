//! A token bucket: the one rate limiter of the node (sessions' event and
//! query rates, transports' message budgets).

use tokio::time::Instant;

/// `rate` tokens per second up to `burst`; a bucket with `rate <= 0` never
/// runs dry.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Take one token; `false` when there is none.
    pub fn take(&mut self) -> bool {
        self.take_n(1)
    }

    /// Take `n` tokens (at most a full burst); `false`, taking none, when
    /// there are fewer.
    pub fn take_n(&mut self, n: u32) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let n = f64::from(n.max(1)).min(self.burst);
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}
